package receiver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/queue"
)

const (
	adminMaxBody     = 64 << 10
	defaultDLQLimit  = 100
	maxDLQLimit      = 1000
	maxSelectorIDs   = 10000
	problemAdminBody = "Invalid request"
)

// DeadLetterDetail is a dead letter with its body, as GET /admin/v1/dlq/{id}
// returns it: Body is the message as JSON when it is JSON (an event), else
// BodyBase64 holds the raw bytes.
type DeadLetterDetail struct {
	queue.DeadLetter
	Body       json.RawMessage `json:"body,omitempty"`
	BodyBase64 []byte          `json:"bodyBase64,omitempty"`
}

// DeadLetterList is the answer of GET /admin/v1/dlq.
type DeadLetterList struct {
	Items []queue.DeadLetter `json:"items"`
	Count int                `json:"count"`
	Limit int                `json:"limit"`
	// Next, when set, is the after= value of the next page.
	Next string `json:"next,omitempty"`
}

// Selector chooses dead letters for replay and purge: explicit ids, or all
// (optionally narrowed by entity, reason, since, limit). DryRun only lists
// what would be affected; purge needs Confirm.
type Selector struct {
	IDs     []string `json:"ids,omitempty"`
	All     bool     `json:"all,omitempty"`
	Entity  string   `json:"entity,omitempty"`
	Reason  string   `json:"reason,omitempty"`
	Since   string   `json:"since,omitempty"` // Go duration ("24h") or RFC 3339 time
	Limit   int      `json:"limit,omitempty"`
	DryRun  bool     `json:"dryRun,omitempty"`
	Confirm bool     `json:"confirm,omitempty"`
}

// BulkResult is the answer of replay and purge.
type BulkResult struct {
	DryRun   bool     `json:"dryRun,omitempty"`
	Matched  int      `json:"matched,omitempty"`  // dry run: how many match
	IDs      []string `json:"ids,omitempty"`      // dry run: which
	Replayed *int     `json:"replayed,omitempty"` // replay
	Purged   *int     `json:"purged,omitempty"`   // purge
}

func (s *server) dlqList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	// A page of metadata (no bodies); ?after=<next> reads the following one.
	f := queue.Filter{Entity: q.Get("entity"), Reason: q.Get("reason"), Limit: defaultDLQLimit, After: q.Get("after"), NoBody: true}
	var issues []FieldIssue
	if is := entityIssue(f.Entity); is != nil {
		issues = append(issues, *is)
	}
	if v := q.Get("since"); v != "" {
		t, err := s.since(v)
		if err != nil {
			issues = append(issues, FieldIssue{Field: "since", Reason: err.Error()})
		}
		f.Since = t
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxDLQLimit {
			issues = append(issues, FieldIssue{Field: "limit", Reason: fmt.Sprintf("must be an integer from 1 to %d", maxDLQLimit)})
		}
		f.Limit = n
	}
	if f.After != "" {
		if n, err := strconv.ParseInt(f.After, 10, 64); err != nil || n < 0 {
			issues = append(issues, FieldIssue{Field: "after", Reason: "must be a dead-letter id (the previous page's next)"})
		}
	}
	if len(issues) > 0 {
		writeProblem(w, http.StatusBadRequest, probBadRequest, problemAdminBody, "invalid query parameters", issues...)
		return
	}
	items, err := s.cfg.DeadLetters.ListDead(r.Context(), f)
	if err != nil {
		s.adminFailure(w, r, "list dead letters", err)
		return
	}
	if items == nil {
		items = []queue.DeadLetter{}
	}
	list := DeadLetterList{Items: items, Count: len(items), Limit: f.Limit}
	if len(items) == f.Limit {
		list.Next = items[len(items)-1].ID
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *server) dlqGet(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	dl, err := s.cfg.DeadLetters.GetDead(r.Context(), id)
	if errors.Is(err, queue.ErrNotFound) {
		writeProblem(w, http.StatusNotFound, probNotFound, "Not found", "no dead letter with id "+strconv.Quote(id),
			FieldIssue{Field: "id", Reason: "does not exist"})
		return
	}
	if err != nil {
		s.adminFailure(w, r, "get dead letter", err)
		return
	}
	d := DeadLetterDetail{DeadLetter: dl}
	if json.Valid(dl.Body) {
		d.Body = json.RawMessage(dl.Body)
	} else if len(dl.Body) > 0 {
		d.BodyBase64 = dl.Body
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *server) dlqReplay(w http.ResponseWriter, r *http.Request) {
	sel, f, ok := s.selector(w, r, false)
	if !ok {
		return
	}
	if sel.DryRun {
		s.dryRun(w, r, f)
		return
	}
	n, err := s.cfg.DeadLetters.ReplayDead(r.Context(), f)
	if err != nil {
		s.adminFailure(w, r, "replay dead letters", err)
		return
	}
	s.log.InfoContext(r.Context(), "replayed dead letters", "count", n, "ids", len(f.IDs), "entity", f.Entity, "reason", f.Reason)
	writeJSON(w, http.StatusOK, BulkResult{Replayed: &n})
}

func (s *server) dlqPurge(w http.ResponseWriter, r *http.Request) {
	sel, f, ok := s.selector(w, r, true)
	if !ok {
		return
	}
	if sel.DryRun {
		s.dryRun(w, r, f)
		return
	}
	n, err := s.cfg.DeadLetters.PurgeDead(r.Context(), f)
	if err != nil {
		s.adminFailure(w, r, "purge dead letters", err)
		return
	}
	s.log.InfoContext(r.Context(), "purged dead letters", "count", n, "ids", len(f.IDs), "entity", f.Entity, "reason", f.Reason)
	writeJSON(w, http.StatusOK, BulkResult{Purged: &n})
}

func (s *server) dryRun(w http.ResponseWriter, r *http.Request, f queue.Filter) {
	items, err := s.cfg.DeadLetters.ListDead(r.Context(), f)
	if err != nil {
		s.adminFailure(w, r, "list dead letters", err)
		return
	}
	ids := make([]string, len(items))
	for i, d := range items {
		ids[i] = d.ID
	}
	// Always the count and the list, zero and [] included: a dry run that
	// matches nothing must say so, not answer {"dryRun":true}.
	writeJSON(w, http.StatusOK, struct {
		DryRun  bool     `json:"dryRun"`
		Matched int      `json:"matched"`
		IDs     []string `json:"ids"`
	}{true, len(items), ids})
}

// entityIssue checks an entity filter as the dlq command does: a table
// msisync syncs, or nothing (a typo would silently match no dead letter).
func entityIssue(entity string) *FieldIssue {
	if entity == "" || event.IsSyncedEntity(entity) {
		return nil
	}
	return &FieldIssue{Field: "entity", Reason: fmt.Sprintf("%q is not one of %s", clip(entity, maxLoggedHeader), strings.Join(event.SyncedEntities, ", "))}
}

// selector reads and checks a replay/purge body. Unknown members are refused
// so that a typo ("dryrun") cannot turn a dry run into the real thing.
func (s *server) selector(w http.ResponseWriter, r *http.Request, purge bool) (Selector, queue.Filter, bool) {
	var sel Selector
	if ct := r.Header.Get("Content-Type"); !isJSON(ct) {
		writeProblem(w, http.StatusUnsupportedMediaType, probMediaType, "Unsupported media type",
			fmt.Sprintf("the body must be JSON, not %q", clip(ct, maxLoggedHeader)), FieldIssue{Field: "Content-Type", Reason: "must be application/json"})
		return sel, queue.Filter{}, false
	}
	body, ok := s.readBody(w, r, adminMaxBody, new([]byte))
	if !ok {
		return sel, queue.Filter{}, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sel); err != nil {
		writeProblem(w, http.StatusBadRequest, probMalformed, "Malformed JSON", err.Error(), FieldIssue{Field: "body", Reason: err.Error()})
		return sel, queue.Filter{}, false
	}
	f := queue.Filter{IDs: sel.IDs, Entity: sel.Entity, Reason: sel.Reason, Limit: sel.Limit}
	var issues []FieldIssue
	if is := entityIssue(sel.Entity); is != nil {
		issues = append(issues, *is)
	}
	switch {
	case len(sel.IDs) == 0 && !sel.All:
		issues = append(issues, FieldIssue{Field: "ids", Reason: `give "ids", or "all": true (optionally with entity, reason, since, limit)`})
	case len(sel.IDs) > 0 && sel.All:
		issues = append(issues, FieldIssue{Field: "all", Reason: `cannot be combined with "ids"`})
	case len(sel.IDs) > maxSelectorIDs:
		issues = append(issues, FieldIssue{Field: "ids", Reason: fmt.Sprintf("at most %d ids per request", maxSelectorIDs)})
	}
	for i, id := range sel.IDs {
		if strings.TrimSpace(id) == "" {
			issues = append(issues, FieldIssue{Field: fmt.Sprintf("ids[%d]", i), Reason: "is empty"})
		}
	}
	if sel.Since != "" {
		t, err := s.since(sel.Since)
		if err != nil {
			issues = append(issues, FieldIssue{Field: "since", Reason: err.Error()})
		}
		f.Since = t
	}
	if sel.Limit < 0 {
		issues = append(issues, FieldIssue{Field: "limit", Reason: "must not be negative"})
	}
	if purge && !sel.DryRun && !sel.Confirm {
		issues = append(issues, FieldIssue{Field: "confirm", Reason: `must be true to purge (or use "dryRun": true to preview)`})
	}
	if len(issues) > 0 {
		writeProblem(w, http.StatusUnprocessableEntity, probInvalid, problemAdminBody, "invalid selector", issues...)
		return sel, queue.Filter{}, false
	}
	return sel, f, true
}

// since reads a look-back: a Go duration ("24h", "90m") or an RFC 3339 time.
func (s *server) since(v string) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return time.Time{}, errors.New("must be a positive duration")
		}
		return s.cfg.Clock.Now().Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is neither a duration (e.g. 24h) nor an RFC 3339 time", v)
}

func (s *server) adminFailure(w http.ResponseWriter, r *http.Request, op string, err error) {
	s.log.ErrorContext(r.Context(), "admin "+op+" failed", "error", err)
	writeProblem(w, http.StatusServiceUnavailable, probQueueUnavailable, "Queue unavailable", op+": "+err.Error())
}
