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
		body, ok := s.readBody(w, r, s.cfg.MaxBodyBytes)
		if !ok {
			s.m.event(src.label(), nil, OutcomeRejected)
			return
		}
		// Parsing and encoding are pure CPU: run at most GOMAXPROCS of them
		// at once, so that the queue's single writer goroutine is not starved
		// by dozens of runnable handlers (it commits everyone's events).
		done := s.cpu.acquire(ctx)
		defer done()

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
		// Attributes are added only when a line is written: With would
		// pre-render them on every request, logged or not.
		log := lazyLogger{l: s.log, attrs: []any{"source", src.label(), "correlation_id", firstNonEmpty(h.CorrelationID, eventCorrelation(e))}}
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
		reduced, err := s.enqueue(r, e, done)
		log.attrs = append(log.attrs, "event_id", e.ID, "entity", e.Entity, "record_id", e.RecordID, "message", e.Message)
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
		writeJSON(w, http.StatusAccepted, Accepted{Status: "queued", ID: e.ID, Reduced: reduced})
	}
}

// enqueue sends the event, in reduced form when it is too large for the
// queue, and returns only once Send has returned (the queue is durable then).
func (s *server) enqueue(r *http.Request, e *event.Event, cpuDone func()) (reduced bool, err error) {
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
	cpuDone() // waiting for the queue takes no CPU
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

// acquire waits for a slot (or for ctx to end, then runs without one) and
// returns its release, which may be called more than once.
func (c cpuSlots) acquire(ctx context.Context) func() {
	select {
	case c <- struct{}{}:
	case <-ctx.Done():
		return func() {}
	}
	var once sync.Once
	return func() { once.Do(func() { <-c }) }
}

// readBody reads at most limit bytes, answering 413 beyond and 400 when the
// body cannot be read.
func (s *server) readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
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
	buf := make([]byte, 0, size+1)
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
	if strings.TrimSpace(ct) == "" {
		return true
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

// lazyLogger carries request attributes and renders them only for lines the
// handler's level lets through.
type lazyLogger struct {
	l     *slog.Logger
	attrs []any
}

func (ll lazyLogger) log(ctx context.Context, level slog.Level, msg string, args ...any) {
	if !ll.l.Enabled(ctx, level) {
		return
	}
	ll.l.Log(ctx, level, msg, append(append([]any(nil), ll.attrs...), args...)...)
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
