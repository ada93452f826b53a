package marketo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/msisync/msisync/internal/marketo/marketotype"
)

type wireResult struct {
	Seq         *int        `json:"seq"`
	ID          json.Number `json:"id"`
	MarketoGUID string      `json:"marketoGUID"`
	Status      string      `json:"status"`
	Reasons     []struct {
		Code    flexString `json:"code"`
		Message string     `json:"message"`
	} `json:"reasons"`
}

func (w wireResult) result() marketotype.Result {
	r := marketotype.Result{MarketoGUID: w.MarketoGUID, Status: w.Status}
	if w.ID != "" {
		r.ID, _ = w.ID.Int64()
	}
	for _, rs := range w.Reasons {
		r.Reasons = append(r.Reasons, marketotype.Reason{Code: string(rs.Code), Message: rs.Message})
	}
	return r
}

// Marketo's documented per-instance limits (shared by every integration of
// the instance); the simulator and the benchmark default to them.
const (
	InstanceCallsPerWindow = 100
	InstanceWindow         = 20 * time.Second
	InstanceMaxConcurrent  = 10
	InstanceDailyQuota     = 50000
)

// Limits of one call.
const (
	MaxBatch       = 300
	maxBodyBytes   = 1<<20 - 4096 // 1 MB less room for the envelope
	maxURLBytes    = 8*1024 - 256 // 8 KB less room for proxies' additions
	maxFilterValue = 300
)

func objName(o marketotype.Object) string {
	if o == marketotype.Roles {
		return "opportunity roles"
	}
	return string(o)
}

// Sync creates or updates records. len(results) == len(req.Input) and
// results[i] is input i. Batches over 300 records or 1 MB are split into
// several calls, sent in order. On error, results of the calls already
// made are filled in and the rest have an empty Status.
func (c *Client) Sync(ctx context.Context, obj marketotype.Object, req marketotype.SyncRequest) ([]marketotype.Result, error) {
	op := "sync " + objName(obj)
	if !obj.Valid() {
		return nil, fmt.Errorf("marketo: %s: unknown object %q", op, obj)
	}
	switch req.Action {
	case "", "createOnly", "updateOnly", "createOrUpdate":
	case "createDuplicate":
		if obj != marketotype.Leads {
			return nil, fmt.Errorf("marketo: %s: action createDuplicate is for leads only", op)
		}
	default:
		return nil, fmt.Errorf("marketo: %s: unknown action %q", op, req.Action)
	}
	switch req.DedupeBy {
	case "", "dedupeFields", "idField":
	default:
		return nil, fmt.Errorf("marketo: %s: unknown dedupeBy %q", op, req.DedupeBy)
	}
	results := make([]marketotype.Result, len(req.Input))
	for i := range results {
		results[i].Seq = i
	}
	sizes := make([]int, len(req.Input))
	for i, rec := range req.Input {
		b, err := json.Marshal(rec)
		if err != nil {
			return nil, fmt.Errorf("marketo: %s: input %d: %w", op, i, err)
		}
		sizes[i] = len(b) + 1
		if len(b) > maxBodyBytes {
			results[i].Status = "skipped"
			results[i].Reasons = []marketotype.Reason{{Code: "413", Message: fmt.Sprintf("record is %d bytes; a call may carry 1 MB", len(b))}}
			sizes[i] = -1
		}
	}
	for _, ch := range chunks(sizes) {
		in := make([]marketotype.Record, 0, len(ch))
		for _, i := range ch {
			in = append(in, req.Input[i])
		}
		body := map[string]any{"input": in}
		if req.Action != "" {
			body["action"] = req.Action
		}
		if obj == marketotype.Leads {
			if req.LookupField != "" {
				body["lookupField"] = req.LookupField
			}
		} else if req.DedupeBy != "" {
			body["dedupeBy"] = req.DedupeBy
		}
		if _, err := json.Marshal(body); err != nil {
			return results, fmt.Errorf("marketo: %s: encode: %w", op, err)
		}
		if err := c.sendSplitting(ctx, op, obj, ch, len(req.Input), results, func(idx []int) call {
			in := make([]marketotype.Record, 0, len(idx))
			for _, i := range idx {
				in = append(in, req.Input[i])
			}
			body["input"] = in
			bs, _ := json.Marshal(body) // encoded whole above
			return call{op: op + span("records", idx[0], idx[len(idx)-1], len(req.Input)), endpoint: op,
				method: http.MethodPost, path: "/rest/v1/" + string(obj) + ".json",
				body: func() ([]byte, string) { return bs, "application/json" }}
		}); err != nil {
			return results, err
		}
	}
	return results, nil
}

// tooLarge reports whether Marketo (or a proxy before it) refused a call as
// too large: HTTP 413 for the body, 414 for the URL.
func tooLarge(err error) (int, bool) {
	var me *marketotype.Error
	if errors.As(err, &me) && (me.HTTPStatus == http.StatusRequestEntityTooLarge || me.HTTPStatus == http.StatusRequestURITooLong) {
		return me.HTTPStatus, true
	}
	return 0, false
}

// sendSplitting sends the records idx in one call built by build and maps
// the results. A call refused as too large (HTTP 413/414) is split in halves
// and each half retried, down to single records: a record refused alone is
// marked skipped with that status as its reason (the syncer dead-letters
// it), so one oversized record no longer fails the whole batch.
func (c *Client) sendSplitting(ctx context.Context, op string, obj marketotype.Object, idx []int, total int, results []marketotype.Result, build func(idx []int) call) error {
	c.stats.records(obj, len(idx))
	c.metrics.recordsPerCall(obj, len(idx))
	env, err := c.do(ctx, build(idx))
	if status, big := tooLarge(err); big {
		if len(idx) == 1 {
			results[idx[0]] = marketotype.Result{Seq: idx[0], Status: "skipped", Reasons: []marketotype.Reason{{Code: strconv.Itoa(status),
				Message: fmt.Sprintf("Marketo refused this record alone with HTTP %d %s (record %d of %d)", status, http.StatusText(status), idx[0], total)}}}
			return nil
		}
		c.log.Warn("marketo: call too large, splitting it in halves", "op", op, "records", len(idx), "http_status", status)
		half := len(idx) / 2
		if err := c.sendSplitting(ctx, op, obj, idx[:half], total, results, build); err != nil {
			return err
		}
		return c.sendSplitting(ctx, op, obj, idx[half:], total, results, build)
	}
	if err != nil {
		return err
	}
	return mapResults(op, obj, env.Result, idx, results)
}

// span names the inputs of one call in errors: " (records 300..599 of 650)".
func span(what string, first, last, total int) string {
	return fmt.Sprintf(" (%s %d..%d of %d)", what, first, last, total)
}

// chunks groups record indexes into calls of ≤300 records and ≤1 MB;
// negative sizes (records too big to send) are left out.
func chunks(sizes []int) [][]int {
	var out [][]int
	var cur []int
	total := 0
	for i, n := range sizes {
		if n < 0 {
			continue
		}
		if len(cur) == MaxBatch || (len(cur) > 0 && total+n > maxBodyBytes) {
			out = append(out, cur)
			cur, total = nil, 0
		}
		cur = append(cur, i)
		total += n
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// mapResults puts a call's results at their input positions: by seq for
// objects, by position for leads (which have no seq).
func mapResults(op string, obj marketotype.Object, raw json.RawMessage, idx []int, results []marketotype.Result) error {
	var ws []wireResult
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&ws); err != nil {
		return &marketotype.Error{Op: op, Err: fmt.Errorf("decode result: %w", err)}
	}
	if len(ws) != len(idx) {
		return &marketotype.Error{Op: op, Code: "611", Message: fmt.Sprintf("Marketo returned %d results for %d records", len(ws), len(idx))}
	}
	for pos, w := range ws {
		at := pos
		if obj != marketotype.Leads && w.Seq != nil {
			if *w.Seq < 0 || *w.Seq >= len(idx) {
				return &marketotype.Error{Op: op, Code: "611", Message: fmt.Sprintf("result seq %d out of range 0..%d", *w.Seq, len(idx)-1)}
			}
			at = *w.Seq
		}
		r := w.result()
		r.Seq = idx[at]
		results[idx[at]] = r
	}
	return nil
}

// Query reads records whose filterType field matches one of values. Values
// are sent in groups of ≤300, pages are followed, and a URL over 8 KB is
// sent as POST …?_method=GET with a form body. fields nil = Marketo's
// default fields. Missing fields in a record mean null.
func (c *Client) Query(ctx context.Context, obj marketotype.Object, filterType string, values []string, fields []string) ([]marketotype.Record, error) {
	op := "query " + objName(obj) + " by " + filterType
	if !obj.Valid() {
		return nil, fmt.Errorf("marketo: %s: unknown object %q", op, obj)
	}
	if filterType == "" {
		return nil, fmt.Errorf("marketo: %s: filterType is required", op)
	}
	for i, v := range values {
		if strings.Contains(v, ",") {
			return nil, fmt.Errorf("marketo: %s: value %d %q contains a comma", op, i, v)
		}
	}
	var out []marketotype.Record
	path := "/rest/v1/" + string(obj) + ".json"
	var query func(lo, hi int) error
	query = func(lo, hi int) error {
		group := values[lo:hi]
		c.stats.records(obj, len(group))
		c.metrics.recordsPerCall(obj, len(group))
		recs, err := c.pages(ctx, op, func(token string) (call, error) {
			q := url.Values{"filterType": {filterType}, "filterValues": {strings.Join(group, ",")}}
			if len(fields) > 0 {
				q.Set("fields", strings.Join(fields, ","))
			}
			if token != "" {
				q.Set("nextPageToken", token)
			}
			k := call{op: op + span("values", lo, hi-1, len(values)), endpoint: "query " + objName(obj),
				method: http.MethodGet, path: path, query: q}
			if len(c.base)+len(path)+1+len(q.Encode()) > maxURLBytes {
				form := []byte(q.Encode())
				k.method, k.query = http.MethodPost, url.Values{"_method": {"GET"}}
				k.body = func() ([]byte, string) { return form, "application/x-www-form-urlencoded" }
			}
			return k, nil
		})
		if _, big := tooLarge(err); big && len(recs) == 0 && hi-lo > 1 {
			// Refused as too large before any page: split the values.
			mid := lo + (hi-lo)/2
			if err := query(lo, mid); err != nil {
				return err
			}
			return query(mid, hi)
		}
		out = append(out, recs...)
		return err
	}
	for lo := 0; lo < len(values); lo += maxFilterValue {
		if err := query(lo, min(lo+maxFilterValue, len(values))); err != nil {
			return out, err
		}
	}
	return out, nil
}

// pages sends the call build makes for each page, following nextPageToken
// until Marketo has no more (or repeats a token, or sends an empty page), and
// returns the records of every page read, also when a later page fails.
func (c *Client) pages(ctx context.Context, op string, build func(token string) (call, error)) ([]marketotype.Record, error) {
	var out []marketotype.Record
	token := ""
	for page := 0; ; page++ {
		if page == maxPages {
			// A short list would look complete to the caller (a lead taken
			// for absent is created twice): fail instead.
			return out, &marketotype.Error{Op: op, Code: "paging", Message: fmt.Sprintf("stopped after %d pages (%d records): Marketo kept sending nextPageToken, the result would be incomplete", maxPages, len(out))}
		}
		k, err := build(token)
		if err != nil {
			return out, err
		}
		env, err := c.do(ctx, k)
		if err != nil {
			return out, err
		}
		recs, err := decodeRecords(op, env.Result)
		if err != nil {
			return out, err
		}
		out = append(out, recs...)
		if env.NextPageToken == "" || env.NextPageToken == token || len(recs) == 0 {
			break
		}
		token = env.NextPageToken
	}
	return out, nil
}

// maxPages bounds a query's pages against a server that never stops
// sending nextPageToken (a variable so tests can lower it).
var maxPages = 10000

func decodeRecords(op string, raw json.RawMessage) ([]marketotype.Record, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var recs []marketotype.Record
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&recs); err != nil {
		return nil, &marketotype.Error{Op: op, Err: fmt.Errorf("decode result: %w", err)}
	}
	return recs, nil
}

// QueryRoles reads opportunity roles by their compound key
// {externalOpportunityId, leadId, role}, ≤300 keys per call, following
// pages (resending the keys with nextPageToken as Marketo requires).
func (c *Client) QueryRoles(ctx context.Context, keys []marketotype.Record, fields []string) ([]marketotype.Record, error) {
	op := "query opportunity roles by dedupeFields"
	var out []marketotype.Record
	for lo := 0; lo < len(keys); lo += MaxBatch {
		hi := min(lo+MaxBatch, len(keys))
		group := keys[lo:hi]
		c.stats.records(marketotype.Roles, len(group))
		c.metrics.recordsPerCall(marketotype.Roles, len(group))
		recs, err := c.pages(ctx, op, func(token string) (call, error) {
			body := map[string]any{"filterType": "dedupeFields", "input": group}
			if len(fields) > 0 {
				body["fields"] = fields
			}
			if token != "" {
				body["nextPageToken"] = token
			}
			bs, err := json.Marshal(body)
			if err != nil {
				return call{}, fmt.Errorf("marketo: %s: encode keys %d..%d: %w", op, lo, hi-1, err)
			}
			return call{op: op + span("keys", lo, hi-1, len(keys)), endpoint: "query opportunity roles", method: http.MethodPost,
				path: "/rest/v1/opportunities/roles.json", query: url.Values{"_method": {"GET"}},
				body: func() ([]byte, string) { return bs, "application/json" }}, nil
		})
		out = append(out, recs...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// Delete deletes records, ≤300 per call. deleteBy: dedupeFields (default)
// or idField; leads are deleted by Marketo id only (input [{"id": n}]). A
// skipped result with 1013 means the record was already gone.
func (c *Client) Delete(ctx context.Context, obj marketotype.Object, deleteBy string, input []marketotype.Record) ([]marketotype.Result, error) {
	op := "delete " + objName(obj)
	if !obj.Valid() {
		return nil, fmt.Errorf("marketo: %s: unknown object %q", op, obj)
	}
	switch deleteBy {
	case "", "dedupeFields", "idField":
	default:
		return nil, fmt.Errorf("marketo: %s: unknown deleteBy %q", op, deleteBy)
	}
	results := make([]marketotype.Result, len(input))
	for i := range results {
		results[i].Seq = i
	}
	for lo := 0; lo < len(input); lo += MaxBatch {
		hi := min(lo+MaxBatch, len(input))
		idx := make([]int, 0, hi-lo)
		for i := lo; i < hi; i++ {
			idx = append(idx, i)
		}
		body := map[string]any{"input": input[lo:hi]}
		if obj != marketotype.Leads && deleteBy != "" {
			body["deleteBy"] = deleteBy
		}
		if _, err := json.Marshal(body); err != nil {
			return results, fmt.Errorf("marketo: %s: encode input %d..%d: %w", op, lo, hi-1, err)
		}
		if err := c.sendSplitting(ctx, op, obj, idx, len(input), results, func(part []int) call {
			in := make([]marketotype.Record, 0, len(part))
			for _, i := range part {
				in = append(in, input[i])
			}
			body["input"] = in
			bs, _ := json.Marshal(body)
			return call{op: op + span("records", part[0], part[len(part)-1], len(input)), endpoint: op,
				method: http.MethodPost, path: "/rest/v1/" + string(obj) + "/delete.json",
				body: func() ([]byte, string) { return bs, "application/json" }}
		}); err != nil {
			return results, err
		}
	}
	return results, nil
}

// Describe returns an object's schema. For leads it uses describe2.json
// (which lists searchable fields) and falls back to describe.json.
func (c *Client) Describe(ctx context.Context, obj marketotype.Object) (*Description, error) {
	op := "describe " + objName(obj)
	if !obj.Valid() {
		return nil, fmt.Errorf("marketo: %s: unknown object %q", op, obj)
	}
	path := "/rest/v1/" + string(obj) + "/describe.json"
	if obj == marketotype.Leads {
		env, err := c.do(ctx, call{op: op, endpoint: op, method: http.MethodGet, path: "/rest/v1/leads/describe2.json"})
		if err == nil {
			return decodeDescription(op, env.Result)
		}
		var me *marketotype.Error
		if !errors.As(err, &me) || me.Code != "610" {
			return nil, err
		}
		env, err = c.do(ctx, call{op: op, endpoint: op, method: http.MethodGet, path: path})
		if err != nil {
			return nil, err
		}
		var v1 []struct {
			DisplayName string `json:"displayName"`
			DataType    string `json:"dataType"`
			Length      int    `json:"length"`
			Rest        struct {
				Name     string `json:"name"`
				ReadOnly bool   `json:"readOnly"`
			} `json:"rest"`
		}
		if err := json.Unmarshal(env.Result, &v1); err != nil {
			return nil, &marketotype.Error{Op: op, Err: fmt.Errorf("decode result: %w", err)}
		}
		d := &Description{Name: "Lead", IDField: "id"}
		for _, f := range v1 {
			d.Fields = append(d.Fields, FieldInfo{Name: f.Rest.Name, DisplayName: f.DisplayName,
				DataType: f.DataType, Length: f.Length, Updateable: !f.Rest.ReadOnly})
		}
		return d, nil
	}
	env, err := c.do(ctx, call{op: op, endpoint: op, method: http.MethodGet, path: path})
	if err != nil {
		return nil, err
	}
	return decodeDescription(op, env.Result)
}

func decodeDescription(op string, raw json.RawMessage) (*Description, error) {
	var ds []struct {
		Name             string      `json:"name"`
		IDField          string      `json:"idField"`
		DedupeFields     []string    `json:"dedupeFields"`
		SearchableFields [][]string  `json:"searchableFields"`
		Fields           []FieldInfo `json:"fields"`
	}
	if err := json.Unmarshal(raw, &ds); err != nil {
		return nil, &marketotype.Error{Op: op, Err: fmt.Errorf("decode result: %w", err)}
	}
	if len(ds) == 0 {
		return nil, &marketotype.Error{Op: op, Code: "610", Message: "describe returned no object"}
	}
	d := ds[0]
	return &Description{Name: d.Name, IDField: d.IDField, DedupeFields: d.DedupeFields,
		SearchableFields: d.SearchableFields, Fields: d.Fields}, nil
}

// InstanceError lists what an MSI non-native sync needs but the instance
// lacks.
type InstanceError struct {
	Missing []string // lead fields not found
}

func (e *InstanceError) Error() string {
	return fmt.Sprintf("marketo: check instance: lead fields missing on the Marketo instance: %s "+
		"(externalPersonId, externalCompanyId and externalSalesPersonId come with the \"MSI Non-Native\" feature, "+
		"which Marketo Support enables; the MSI fields come with Marketo Sales Insight; the score field is "+
		"relativeScore on most instances, relativeScoring on some: check the configured name)",
		strings.Join(e.Missing, ", "))
}

// Class is ClassConfig.
func (e *InstanceError) Class() marketotype.Class { return marketotype.ClassConfig }

// CheckInstance verifies at start-up that the lead schema has
// externalPersonId, the other MSI keys and msiFields. It returns an
// *InstanceError listing every missing field.
func (c *Client) CheckInstance(ctx context.Context, msiFields []string) error {
	d, err := c.Describe(ctx, marketotype.Leads)
	if err != nil {
		return err
	}
	var missing []string
	seen := map[string]bool{}
	for _, f := range append([]string{"externalPersonId", "externalCompanyId", "externalSalesPersonId"}, msiFields...) {
		if seen[f] {
			continue
		}
		seen[f] = true
		if _, ok := d.Field(f); !ok {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return &InstanceError{Missing: missing}
	}
	if len(d.SearchableFields) > 0 && !d.Searchable("externalPersonId") {
		c.log.Warn("marketo: externalPersonId is not listed as a searchable lead field; MSI read-back queries by it may fail")
	}
	return nil
}

// Int64 reads an integer field of a record (json.Number, float64, string).
func Int64(r marketotype.Record, field string) (int64, bool) {
	switch v := r[field].(type) {
	case json.Number:
		n, err := v.Int64()
		if err != nil {
			f, ferr := v.Float64()
			return int64(f), ferr == nil
		}
		return n, true
	case float64:
		return int64(v), true
	case int64:
		return v, true
	case int:
		return int64(v), true
	case string:
		n, err := strconv.ParseInt(v, 10, 64)
		return n, err == nil
	}
	return 0, false
}

// String reads a field as text; numbers are formatted, null is "".
func String(r marketotype.Record, field string) string {
	switch v := r[field].(type) {
	case nil:
		return ""
	case string:
		return v
	case json.Number:
		return v.String()
	default:
		return fmt.Sprint(v)
	}
}
