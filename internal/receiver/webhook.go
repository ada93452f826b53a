package receiver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/msisync/msisync/internal/dataverse/remotecontext"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/queue"
)

type source int

const (
	sourceDataverse source = iota // RemoteExecutionContext
	sourceCustom                  // the simple envelope
)

func (s source) label() string {
	if s == sourceCustom {
		return event.SourceCustom
	}
	return event.SourceWebhook
}

// Accepted is the body of a 202 answer.
type Accepted struct {
	Status string `json:"status"`           // "queued" or "ignored"
	ID     string `json:"id,omitempty"`     // the event (and queue message) id, when queued
	Reason string `json:"reason,omitempty"` // why it was ignored
	// Reduced is true when the event was too large for the queue and was sent
	// as a record reference only (the worker re-reads the record).
	Reduced bool `json:"reduced,omitempty"`
}

func (s *server) webhook(src source) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if !s.authorized(r) {
			s.m.event(src.label(), nil, OutcomeRejected)
			writeProblem(w, http.StatusUnauthorized, probUnauthorized, "Unauthorized", "the request is not authenticated")
			return
		}
		if ct := r.Header.Get("Content-Type"); !isJSON(ct) {
			s.m.event(src.label(), nil, OutcomeRejected)
			writeProblem(w, http.StatusUnsupportedMediaType, probMediaType, "Unsupported media type",
				fmt.Sprintf("the body must be JSON, not %q", clip(ct, maxLoggedHeader)),
				FieldIssue{Field: "Content-Type", Reason: "must be application/json"})
			return
		}
		buf := getBody()
		defer putBody(buf)
		body, ok := s.readBody(w, r, s.cfg.MaxBodyBytes, buf)
		if !ok {
			s.m.event(src.label(), nil, OutcomeRejected)
			return
		}
		*buf = body[:0] // keep what growth the read made, for the next request
		// Parsing and encoding are pure CPU: run at most GOMAXPROCS of them
		// at once, so that the queue's single writer goroutine is not starved
		// by dozens of runnable handlers (it commits everyone's events).
		slot := s.cpu.acquire(ctx)
		defer slot.release()

		var (
			e   *event.Event
			err error
			h   remotecontext.Headers
		)
		if src == sourceDataverse {
			h = remotecontext.HeadersFrom(r.Header)
			e, err = remotecontext.Parse(body, h)
		} else {
			e, err = remotecontext.ParseCustom(body)
		}
		// Attributes are built only when a line is written: With would
		// pre-render them on every request, logged or not.
		log := lazyLogger{l: s.log, source: src.label(), correlation: h.CorrelationID, e: e}
		var se *remotecontext.SyntaxError
		if errors.As(err, &se) {
			s.m.event(src.label(), nil, OutcomeRejected)
			log.WarnContext(ctx, "rejected malformed JSON", "error", err)
			writeProblem(w, http.StatusBadRequest, probMalformed, "Malformed JSON", se.Error(),
				FieldIssue{Field: "body", Reason: se.Error()})
			return
		}
		if e != nil && !s.orgAllowed(e, h.Organization) {
			s.m.event(src.label(), e, OutcomeRejected)
			log.WarnContext(ctx, "rejected organisation", "org_id", clip(e.OrgID, maxLoggedHeader), "org_name", clip(e.OrgName, maxLoggedHeader), "org_header", clip(h.Organization, maxLoggedHeader))
			field := "OrganizationId"
			if src == sourceCustom {
				field = "organization"
			}
			writeProblem(w, http.StatusForbidden, probForbiddenOrg, "Organization not allowed",
				"events from this organization are not accepted (see MSISYNC_ORGS)",
				FieldIssue{Field: field, Reason: "is not in the allow-list"})
			return
		}
		if reason := ignoreReason(e); reason != "" {
			// Anything we do not sync is acknowledged, never failed: Dataverse
			// would otherwise mark its system job failed. This includes
			// well-formed events for other entities that lack fields we would
			// require of a synced one.
			s.m.event(src.label(), e, OutcomeIgnored)
			log.DebugContext(ctx, "ignored event", "entity", e.Entity, "message", e.Message, "reason", reason)
			writeJSON(w, http.StatusAccepted, Accepted{Status: "ignored", Reason: reason})
			return
		}
		if err != nil {
			s.m.event(src.label(), e, OutcomeRejected)
			issues := fieldIssues(err)
			log.WarnContext(ctx, "rejected invalid event", "error", err)
			writeProblem(w, http.StatusUnprocessableEntity, probInvalid, "Invalid event", err.Error(), issues...)
			return
		}
		if e.OccurredAt.IsZero() {
			e.OccurredAt = s.cfg.Clock.Now().UTC().Truncate(time.Millisecond)
		}
		reduced, err := s.enqueue(r, e, &slot)
		log.queued = true
		if err != nil {
			s.m.event(src.label(), e, OutcomeFailed)
			log.ErrorContext(ctx, "enqueue failed", "error", err)
			writeProblem(w, http.StatusServiceUnavailable, probQueueUnavailable, "Queue unavailable",
				"the event could not be stored; retry later")
			return
		}
		outcome := OutcomeQueued
		if reduced {
			outcome = OutcomeReduced
		}
		s.m.event(src.label(), e, outcome)
		log.DebugContext(ctx, "queued event", "reduced", reduced, "truncated", e.Truncated)
		writeQueued(w, e.ID, reduced)
	}
}

// enqueue sends the event, in reduced form when it is too large for the
// queue, and returns only once Send has returned (the queue is durable then).
func (s *server) enqueue(r *http.Request, e *event.Event, slot *cpuSlot) (reduced bool, err error) {
	msg, err := message(e)
	if err != nil {
		return false, err
	}
	if s.cfg.MaxMessageBytes > 0 && msg.Size() > s.cfg.MaxMessageBytes {
		if msg, err = message(e.Reduced()); err != nil {
			return false, err
		}
		reduced = true
	}
	slot.release() // waiting for the queue takes no CPU
	start := time.Now()
	err = s.cfg.Queue.Send(r.Context(), msg)
	if err != nil && !reduced && errors.Is(err, queue.ErrTooLarge) {
		// The adapter's own limit was lower than configured: still never refuse.
		if msg, err = message(e.Reduced()); err != nil {
			return false, err
		}
		reduced = true
		err = s.cfg.Queue.Send(r.Context(), msg)
	}
	s.m.enqueue.Observe(time.Since(start).Seconds())
	if err != nil {
		return reduced, fmt.Errorf("receiver: enqueue %s %s (%s): %w", e.Message, e.Key(), e.ID, err)
	}
	return reduced, nil
}

func message(e *event.Event) (queue.Message, error) {
	b, err := event.Encode(e)
	if err != nil {
		return queue.Message{}, err
	}
	return queue.Message{
		ID:   e.ID,
		Body: b,
		Properties: map[string]string{
			queue.PropEntity:   e.Entity,
			queue.PropRecordID: e.RecordID,
			queue.PropMessage:  e.Message,
		},
	}, nil
}

// cpuSlots bounds how many requests parse and encode at once.
type cpuSlots chan struct{}

// cpuSlot is one held slot (or none); a value on the handler's stack, where
// a released-once closure would be an allocation per request.
type cpuSlot struct {
	c    cpuSlots
	held bool
}

// acquire waits for a slot (or for ctx to end, then runs without one).
func (c cpuSlots) acquire(ctx context.Context) cpuSlot {
	select {
	case c <- struct{}{}:
		return cpuSlot{c: c, held: true}
	case <-ctx.Done():
		return cpuSlot{}
	}
}

// release frees the slot; it may be called more than once (only the one
// goroutine holding it calls it).
func (s *cpuSlot) release() {
	if s.held {
		s.held = false
		<-s.c
	}
}

// Request bodies are read into pooled buffers: Parse copies what the event
// keeps, so the buffer is free again once the handler returns. Buffers grown
// beyond maxPooledBody (rare, large events) are left to the GC.
const maxPooledBody = 64 << 10

var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func getBody() *[]byte { return bodyPool.Get().(*[]byte) }

func putBody(b *[]byte) {
	if cap(*b) <= maxPooledBody {
		*b = (*b)[:0]
		bodyPool.Put(b)
	}
}

// readBody reads at most limit bytes, answering 413 beyond and 400 when the
// body cannot be read.
func (s *server) readBody(w http.ResponseWriter, r *http.Request, limit int64, into *[]byte) ([]byte, bool) {
	tooLarge := func() {
		writeProblem(w, http.StatusRequestEntityTooLarge, probTooLarge, "Body too large",
			fmt.Sprintf("the body exceeds %d bytes", limit),
			FieldIssue{Field: "body", Reason: fmt.Sprintf("must be at most %d bytes", limit)})
	}
	if r.ContentLength > limit {
		tooLarge()
		return nil, false
	}
	size := r.ContentLength
	if size < 0 || size > limit {
		size = 512
	}
	buf := (*into)[:0]
	if int64(cap(buf)) < size+1 {
		buf = make([]byte, 0, size+1)
	}
	body, err := readAll(http.MaxBytesReader(w, r.Body, limit), buf)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			tooLarge()
			return nil, false
		}
		writeProblem(w, http.StatusBadRequest, probBadRequest, "Unreadable body", "the body could not be read",
			FieldIssue{Field: "body", Reason: "could not be read"})
		return nil, false
	}
	return body, true
}

// readAll is io.ReadAll into a buffer sized from Content-Length.
func readAll(r io.Reader, b []byte) ([]byte, error) {
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF {
				return b, nil
			}
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}

// isJSON accepts application/json and any application/*+json, with any
// parameters, and a missing Content-Type: Dataverse's is undocumented and we
// would rather parse than refuse a real delivery.
func isJSON(ct string) bool {
	if ct == "application/json" || strings.TrimSpace(ct) == "" {
		return true // the common case, without ParseMediaType's map
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")
}

// orgAllowed checks the allow-list against the event's organisation id and
// name and the x-ms-dynamics-organization host (and its first label, so
// "contoso" allows "contoso.crm.dynamics.com").
func (s *server) orgAllowed(e *event.Event, header string) bool {
	if len(s.orgs) == 0 {
		return true
	}
	header = strings.ToLower(header)
	first, _, _ := strings.Cut(header, ".")
	for _, c := range []string{e.OrgID, strings.ToLower(e.OrgName), header, first} {
		if c != "" && s.orgs[c] {
			return true
		}
	}
	return false
}

// ignoreReason says why an event is not for msisync ("" when it is).
func ignoreReason(e *event.Event) string {
	if e == nil || e.Entity == "" || e.Message == "" {
		return ""
	}
	if !event.IsSyncedEntity(e.Entity) {
		return fmt.Sprintf("entity %q is not synchronised", e.Entity)
	}
	if !event.IsSyncedMessage(e.Message) {
		return fmt.Sprintf("message %q is not synchronised", e.Message)
	}
	return ""
}

func fieldIssues(err error) []FieldIssue {
	var out []FieldIssue
	for _, fe := range remotecontext.FieldErrors(err) {
		out = append(out, FieldIssue{Field: fe.Field, Reason: fe.Reason})
	}
	return out
}

func eventCorrelation(e *event.Event) string {
	if e == nil {
		return ""
	}
	return e.CorrelationID
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// lazyLogger carries what a request's lines say and renders it only for
// lines the handler's level lets through.
type lazyLogger struct {
	l           *slog.Logger
	source      string
	correlation string // the header's; else the event's
	e           *event.Event
	queued      bool // the event's id and key are known
}

func (ll lazyLogger) log(ctx context.Context, level slog.Level, msg string, args ...any) {
	if !ll.l.Enabled(ctx, level) {
		return
	}
	attrs := []any{"source", ll.source, "correlation_id", firstNonEmpty(ll.correlation, eventCorrelation(ll.e))}
	if ll.queued {
		attrs = append(attrs, "event_id", ll.e.ID, "entity", ll.e.Entity, "record_id", ll.e.RecordID, "message", ll.e.Message)
	}
	ll.l.Log(ctx, level, msg, append(attrs, args...)...)
}

func (ll lazyLogger) DebugContext(ctx context.Context, msg string, args ...any) {
	ll.log(ctx, slog.LevelDebug, msg, args...)
}

func (ll lazyLogger) WarnContext(ctx context.Context, msg string, args ...any) {
	ll.log(ctx, slog.LevelWarn, msg, args...)
}

func (ll lazyLogger) ErrorContext(ctx context.Context, msg string, args ...any) {
	ll.log(ctx, slog.LevelError, msg, args...)
}
