package syncer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/msisync/msisync/internal/marketo/marketotype"
)

// Marketo is what the syncer needs from the Marketo client; the client in
// internal/marketo satisfies it.
type Marketo interface {
	// Sync upserts records; results are aligned with the input.
	Sync(ctx context.Context, obj marketotype.Object, req marketotype.SyncRequest) ([]marketotype.Result, error)
	// Query finds records by a filter (≤ 300 values per call is the client's job).
	Query(ctx context.Context, obj marketotype.Object, filterType string, values, fields []string) ([]marketotype.Record, error)
	// Delete removes records; results are aligned with the input.
	Delete(ctx context.Context, obj marketotype.Object, deleteBy string, input []marketotype.Record) ([]marketotype.Result, error)
}

// marketoID renders a Marketo id from a decoded JSON value.
func marketoID(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case float64:
		return strconv.FormatInt(int64(x), 10)
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case interface{ String() string }:
		return x.String()
	}
	return fmt.Sprint(v)
}

// classOfErr returns the class of a Marketo call error.
func classOfErr(err error) marketotype.Class {
	if errors.Is(err, marketotype.ErrQuotaExhausted) {
		return marketotype.ClassQuota
	}
	return marketotype.ClassOfError(err)
}

// codeOfErr returns the Marketo code and message of a call error, if any.
func codeOfErr(err error) (string, string) {
	var me *marketotype.Error
	if errors.As(err, &me) {
		return me.Code, me.Message
	}
	return "", err.Error()
}

// marketoCalls is how a batch calls Marketo to write: calls of ≤ BatchSize,
// each result mapped back to its record, failures classified (callFailure,
// recordFailure). Quota and configuration errors pause it: no more calls
// for the rest of the batch (paused), everything is rescheduled.
type marketoCalls struct {
	s      *Syncer
	stats  *Stats
	paused bool
}

// upsert writes recs of one kind in calls of ≤ BatchSize and maps the
// results back; build makes each record's Marketo input, and stale (may be
// nil) takes a skipped record's result first (see applyResults).
func (c *marketoCalls) upsert(ctx context.Context, kind string, recs []*rec, req marketotype.SyncRequest, build func(*rec) marketotype.Record, stale func(*rec, marketotype.Result) bool) error {
	obj := objectOf[kind]
	chunks := slices.Collect(slices.Chunk(recs, c.s.cfg.BatchSize))
	ins := make([][]marketotype.Record, len(chunks))
	for n, chunk := range chunks {
		ins[n] = make([]marketotype.Record, len(chunk))
		for i, r := range chunk {
			ins[n][i] = build(r)
		}
	}
	sent := c.syncCalls(ctx, obj, req, ins)
	for n, chunk := range chunks {
		res, ok, err := c.syncResult(ctx, obj, chunk, sent[n])
		if err != nil {
			return err
		}
		if ok {
			c.applyResults(obj, chunk, res, stale)
		}
	}
	return nil
}

// sent is the outcome of one Sync call.
type sent struct {
	res []marketotype.Result
	err error
}

// syncCalls sends one Sync call per input, CallConcurrency at a time, and
// returns their outcomes in input order. It touches no batch state: the
// caller applies the outcomes in order (syncResult), so what a batch
// records does not depend on which call ended first.
func (c *marketoCalls) syncCalls(ctx context.Context, obj marketotype.Object, req marketotype.SyncRequest, ins [][]marketotype.Record) []sent {
	out := make([]sent, len(ins))
	for n := range out {
		out[n].err = errNotSent
	}
	concurrently(c.s.cfg.CallConcurrency, len(ins), func(n int) bool {
		r := req
		r.Input = ins[n]
		out[n].res, out[n].err = c.s.cfg.Marketo.Sync(ctx, obj, r)
		return ctx.Err() == nil
	})
	return out
}

// errNotSent marks a call not sent because an earlier one of the same
// kind failed (a query) or the batch was cancelled.
var errNotSent = errors.New("not sent: an earlier call of the batch failed")

// queried is the outcome of one Query call.
type queried struct {
	recs []marketotype.Record
	err  error
}

// queries sends one Query per chunk of values, CallConcurrency at a time,
// and returns their outcomes in chunk order; like syncCalls it touches no
// batch state.
func (c *marketoCalls) queries(ctx context.Context, obj marketotype.Object, filterType string, chunks [][]string, fields []string) []queried {
	out := make([]queried, len(chunks))
	for n := range out {
		out[n].err = errNotSent
	}
	concurrently(c.s.cfg.CallConcurrency, len(chunks), func(n int) bool {
		out[n].recs, out[n].err = c.s.cfg.Marketo.Query(ctx, obj, filterType, chunks[n], fields)
		return out[n].err == nil // the caller stops at the first failed query
	})
	for _, q := range out {
		if q.err != errNotSent {
			c.stats.Calls[string(obj)+" query"]++
		}
	}
	return out
}

// concurrently runs call(0) … call(n-1), at most limit at once, and returns
// when all it started have returned. Once a call returns false no further
// call starts (those already running finish).
func concurrently(limit, n int, call func(int) bool) {
	if limit <= 1 || n <= 1 {
		for i := range n {
			if !call(i) {
				return
			}
		}
		return
	}
	sem := make(chan struct{}, limit)
	var (
		wg      sync.WaitGroup
		stopped atomic.Bool
	)
	for i := range n {
		sem <- struct{}{}
		if stopped.Load() {
			<-sem
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if !call(i) {
				stopped.Store(true)
			}
		}()
	}
	wg.Wait()
}

// syncCall sends one Sync call of in (aligned with recs). A failed call
// fails every record of recs and reports ok false.
func (c *marketoCalls) syncCall(ctx context.Context, obj marketotype.Object, recs []*rec, req marketotype.SyncRequest, in []marketotype.Record) (res []marketotype.Result, ok bool, err error) {
	return c.syncResult(ctx, obj, recs, c.syncCalls(ctx, obj, req, [][]marketotype.Record{in})[0])
}

// syncResult counts one Sync call and takes its outcome: a failed call
// fails every record of recs and reports ok false.
func (c *marketoCalls) syncResult(ctx context.Context, obj marketotype.Object, recs []*rec, s sent) (res []marketotype.Result, ok bool, err error) {
	c.stats.Calls[string(obj)+" sync"]++
	if s.err != nil {
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
		c.noteCallError(s.err)
		f := c.callFailure(s.err, "sync "+string(obj))
		for _, r := range recs {
			r.fail = f
		}
		return nil, false, nil
	}
	return s.res, true, nil
}

// applyResults maps the results of one Sync call back to its records;
// stale (may be nil) takes a skipped record's result first.
func (c *marketoCalls) applyResults(obj marketotype.Object, recs []*rec, res []marketotype.Result, stale func(*rec, marketotype.Result) bool) {
	for i, r := range recs {
		if i >= len(res) {
			r.fail = &failure{act: actRequeue, reason: ReasonGaveUp, desc: fmt.Sprintf("marketo returned %d results for %d %s", len(res), len(recs), obj)}
			continue
		}
		x := res[i]
		switch x.Status {
		case "created", "updated":
			r.written = true
			r.marketoID = x.MarketoGUID
			if x.ID != 0 {
				r.marketoID = strconv.FormatInt(x.ID, 10)
			}
			c.stats.Written[obj]++
		default:
			if stale != nil && stale(r, x) {
				continue
			}
			r.fail = c.recordFailure(r, obj, x)
		}
	}
}

// noteCallError pauses Marketo calls for the rest of the batch on quota and
// configuration errors, loudly.
func (c *marketoCalls) noteCallError(err error) {
	switch classOfErr(err) {
	case marketotype.ClassQuota, marketotype.ClassConfig:
		if !c.paused {
			c.s.log.Error("syncer: Marketo refuses calls (quota or configuration); pausing and rescheduling, nothing is dropped", "err", err)
		}
		c.paused = true
	}
}

// callFailure decides what a failed Marketo call means for its records.
func (c *marketoCalls) callFailure(err error, what string) *failure {
	var pe *pausedError
	if errors.As(err, &pe) {
		return &failure{act: actReschedule, delay: c.s.cfg.RequeueMax}
	}
	code, message := codeOfErr(err)
	switch classOfErr(err) {
	case marketotype.ClassQuota, marketotype.ClassConfig:
		return &failure{act: actReschedule, delay: c.s.cfg.RequeueMax}
	case marketotype.ClassPermanent:
		return &failure{act: actDead, reason: ReasonRejected, desc: fmt.Sprintf("%s: marketo %s: %s", what, code, message)}
	case marketotype.ClassDependency:
		return &failure{act: actRequeue, reason: ReasonMissingDependency, desc: fmt.Sprintf("%s: marketo %s: %s", what, code, message)}
	}
	return &failure{act: actRequeue, reason: ReasonGaveUp, desc: fmt.Sprintf("%s: %v", what, err)}
}

// recordFailure decides what a skipped record means.
func (c *marketoCalls) recordFailure(r *rec, obj marketotype.Object, res marketotype.Result) *failure {
	code, message := "", "skipped without a reason"
	if len(res.Reasons) > 0 {
		code, message = res.Reasons[0].Code, res.Reasons[0].Message
	}
	desc := fmt.Sprintf("marketo %s: %s (%s %s)", code, message, obj, r.name())
	switch marketotype.ClassOf(code) {
	case marketotype.ClassQuota, marketotype.ClassConfig:
		c.paused = true
		c.s.log.Error("syncer: Marketo refuses writes (quota or configuration); rescheduling", "object", obj, "code", code, "message", message)
		return &failure{act: actReschedule, delay: c.s.cfg.RequeueMax}
	case marketotype.ClassThrottled, marketotype.ClassTransient, marketotype.ClassReauth:
		return &failure{act: actRequeue, reason: ReasonGaveUp, desc: desc}
	case marketotype.ClassDependency:
		return &failure{act: actRequeue, reason: ReasonMissingDependency, desc: desc}
	}
	return &failure{act: actDead, reason: ReasonRejected, desc: desc}
}

// deleteObjects deletes input (aligned with recs); a record already gone
// counts as deleted.
func (c *marketoCalls) deleteObjects(ctx context.Context, obj marketotype.Object, deleteBy string, recs []*rec, input []marketotype.Record) error {
	for start := 0; start < len(input); start += 300 {
		end := min(start+300, len(input))
		c.stats.Calls[string(obj)+" delete"]++
		res, err := c.s.cfg.Marketo.Delete(ctx, obj, deleteBy, input[start:end])
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.noteCallError(err)
			f := c.callFailure(err, "delete "+string(obj))
			for _, r := range recs[start:end] {
				if r.fail == nil {
					r.fail = f
				}
			}
			continue
		}
		for i, r := range recs[start:end] {
			if i >= len(res) {
				r.fail = &failure{act: actRequeue, reason: ReasonGaveUp, desc: "marketo returned too few delete results"}
				continue
			}
			x := res[i]
			gone := x.Status == "deleted" || (len(x.Reasons) > 0 && (x.Reasons[0].Code == "1013" || x.Reasons[0].Code == "1004"))
			if gone {
				if x.Status == "deleted" {
					c.stats.Deleted[obj]++
				}
				continue
			}
			if r.fail == nil {
				r.fail = c.recordFailure(r, obj, x)
			}
		}
	}
	return nil
}
