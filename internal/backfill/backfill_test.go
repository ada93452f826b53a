package backfill

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/queue"
)

var t0 = time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// guid returns an upper-case GUID (Dataverse ids are case-insensitive; events
// must carry lower case).
func guid(entity string, i int) string {
	return strings.ToUpper(fmt.Sprintf("%08x-%04x-4000-8000-%012x", i, len(entity), i))
}

func row(entity string, i int, modified time.Time) event.Attributes {
	return event.Attributes{
		entity + "id": event.String(guid(entity, i)),
		"modifiedon":  event.Time(modified),
		"name":        event.String(fmt.Sprintf("%s %d", entity, i)),
		"internal":    event.String("not selected"),
	}
}

// seed fills n rows per entity, row i modified at t0 + i minutes.
func seed(l *fakeLister, counts map[string]int) {
	for entity, n := range counts {
		for i := range n {
			l.put(entity, row(entity, i, t0.Add(time.Duration(i)*time.Minute)))
		}
	}
}

func baseConfig(l *fakeLister, s *recordingSender, m *memMeta) Config {
	return Config{Dataverse: l, Sender: s, Store: m, PageSize: 3, Clock: clock.NewFake(t0.Add(24 * time.Hour)),
		Logger: quiet(), Columns: func(string) []string { return []string{"name"} }}
}

func decode(t *testing.T, m queue.Message) *event.Event {
	t.Helper()
	e, err := event.Decode(m.Body)
	if err != nil {
		t.Fatalf("decode %s: %v", m.ID, err)
	}
	return e
}

func TestEntitiesInDependencyOrderPagedWithEventShape(t *testing.T) {
	l, s, m := newFakeLister(), newRecordingSender(), newMemMeta()
	counts := map[string]int{"systemuser": 2, "account": 4, "contact": 7, "lead": 3, "opportunity": 1, "connection": 6}
	seed(l, counts)
	cfg := baseConfig(l, s, m)
	cfg.Entities = []string{"connection", "Lead", "account", "systemuser", "opportunity", "contact", "lead"}
	var progress []string
	cfg.OnProgress = func(entity string, done, total int) {
		progress = append(progress, fmt.Sprintf("%s %d/%d", entity, done, total))
	}

	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Entities in dependency order, each sent completely before the next.
	var order []string
	for _, msg := range s.msgs {
		e := msg.Properties[queue.PropEntity]
		if len(order) == 0 || order[len(order)-1] != e {
			order = append(order, e)
		}
	}
	if got := strings.Join(order, ","); got != "systemuser,account,contact,lead,opportunity,connection" {
		t.Fatalf("entity order = %s", got)
	}
	if rep.Rows != 23 || s.unique != 23 || len(rep.Entities) != 6 {
		t.Fatalf("report rows %d, unique sent %d, entities %d; want 23, 23, 6", rep.Rows, s.unique, len(rep.Entities))
	}
	for _, er := range rep.Entities {
		if want := (counts[er.Entity] + 2) / 3; er.Pages != want || er.Rows != counts[er.Entity] || er.Sent != counts[er.Entity] {
			t.Errorf("%s: %+v; want %d pages of 3 and %d rows", er.Entity, er, want, counts[er.Entity])
		}
	}
	if got := strings.Join(progress[:3], ";"); got != "systemuser 2/2;account 3/4;account 4/4" {
		t.Errorf("progress = %s", got)
	}

	// Every list asks for the mapped columns plus id, modifiedon and versionnumber, a page size, no filter.
	c := l.callsFor("contact")[0]
	if got := strings.Join(c.Opts.Select, ","); got != "contactid,modifiedon,versionnumber,name" || c.Opts.PageSize != 3 || c.Opts.Filter != "" {
		t.Fatalf("contact list options = %+v", c.Opts)
	}

	// Event shape.
	var first queue.Message
	for _, msg := range s.msgs {
		if msg.Properties[queue.PropEntity] == "contact" {
			first = msg
			break
		}
	}
	e := decode(t, first)
	wantID := strings.ToLower(guid("contact", 0))
	if e.Source != event.SourceBackfill || e.Message != event.MessageCreate || e.Entity != "contact" || e.RecordID != wantID ||
		e.Version != t0.UnixMilli() || !e.OccurredAt.Equal(t0) || e.ID != first.ID || e.DeriveID() != first.ID {
		t.Fatalf("event = %+v (message id %s)", e, first.ID)
	}
	if len(e.Attributes) != 3 || e.Attributes["name"].Str != "contact 0" {
		t.Fatalf("attributes = %v; want the selected row", e.Attributes)
	}
	if first.Properties[queue.PropRecordID] != wantID || first.Properties[queue.PropMessage] != "Create" {
		t.Fatalf("properties = %v", first.Properties)
	}

	// Checkpoints are complete.
	cps, err := Checkpoints(context.Background(), m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cp := cps["contact"]; !cp.Done || cp.Rows != 7 || cp.Pages != 3 || !cp.HighWater.Equal(t0.Add(6*time.Minute)) || cp.NextLink != "" {
		t.Fatalf("contact checkpoint = %+v", cp)
	}
}

func TestSenderFailureHalfWayResumes(t *testing.T) {
	l, s, m := newFakeLister(), newRecordingSender(), newMemMeta()
	seed(l, map[string]int{"account": 2, "contact": 10})
	s.failAt = 4 // account page, contact pages 1 and 2 succeed; contact page 3 fails
	cfg := baseConfig(l, s, m)
	cfg.Entities = []string{"account", "contact"}

	rep, err := Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "send 3 contact events (page 3)") {
		t.Fatalf("first run error = %v", err)
	}
	if rep.Rows != 2+9 || s.unique != 2+6 {
		t.Fatalf("first run: %d rows read, %d sent; want 11 read, 8 sent", rep.Rows, s.unique)
	}
	cps, _ := Checkpoints(context.Background(), m, nil)
	if cp := cps["contact"]; cp.Done || cp.Rows != 6 || cp.NextLink == "" {
		t.Fatalf("checkpoint after failure = %+v", cp)
	}
	saved := cps["contact"].NextLink

	// Rerun: accounts are complete (nothing changed since), contacts resume at page 3.
	callsBefore := len(l.callsFor("contact"))
	sentBefore := len(s.msgs)
	rep, err = Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	calls := l.callsFor("contact")[callsBefore:]
	if calls[0].Next != saved {
		t.Fatalf("resume fetched %q, want the saved link %q", calls[0].Next, saved)
	}
	ce := rep.Entities[1]
	if !ce.Resumed || ce.Rows != 4 || ce.Pages != 2 {
		t.Fatalf("contact resume report = %+v; want 4 rows in 2 pages", ce)
	}
	if s.unique != 12 {
		t.Fatalf("unique events = %d, want all 12 rows exactly once", s.unique)
	}
	// The completed account pass is re-run only from its high-water mark:
	// it reads the latest row, recognises it as sent, and sends nothing.
	if ae := rep.Entities[0]; ae.Resumed || ae.Rows != 1 || ae.Unchanged != 1 || ae.Sent != 0 || !ae.From.Equal(t0.Add(time.Minute)) {
		t.Fatalf("account rerun = %+v; want only rows since the last pass", ae)
	}
	if resent := len(s.msgs) - sentBefore; resent != 4 {
		t.Fatalf("rerun sent %d messages, want the 4 remaining contacts", resent)
	}
}

func TestCancelledHalfWayResumes(t *testing.T) {
	l, s, m := newFakeLister(), newRecordingSender(), newMemMeta()
	seed(l, map[string]int{"lead": 20})
	cfg := baseConfig(l, s, m)
	cfg.Entities = []string{"lead"}
	ctx, cancel := context.WithCancel(context.Background())
	cfg.OnProgress = func(_ string, done, _ int) {
		if done >= 9 {
			cancel() // killed after page 3
		}
	}
	if _, err := Run(ctx, cfg); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("cancelled run error = %v", err)
	}
	if s.unique != 9 {
		t.Fatalf("sent %d before the kill, want 9", s.unique)
	}
	cfg.OnProgress = nil
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Rows != 11 || s.unique != 20 || len(s.msgs) != 20 {
		t.Fatalf("resume read %d rows; sent %d unique of %d; want 11 read and 20 sent once each", rep.Rows, s.unique, len(s.msgs))
	}
}

func TestCompletedPassThenOnlyChanges(t *testing.T) {
	l, s, m := newFakeLister(), newRecordingSender(), newMemMeta()
	seed(l, map[string]int{"contact": 8})
	cfg := baseConfig(l, s, m)
	cfg.Entities = []string{"contact"}
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	// Two contacts change and one is created after the pass.
	later := t0.Add(48 * time.Hour)
	l.put("contact", row("contact", 2, later))
	l.put("contact", row("contact", 5, later.Add(time.Second)))
	l.put("contact", row("contact", 99, later.Add(2*time.Second)))
	before := s.unique
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	calls := l.callsFor("contact")
	if f := calls[len(calls)-1].Opts.Filter; f != "modifiedon ge "+t0.Add(7*time.Minute).Format(time.RFC3339) {
		t.Fatalf("rerun filter = %q", f)
	}
	if rep.Rows != 4 || s.unique-before != 3 || len(s.msgs) != 8+3 {
		t.Fatalf("rerun read %d rows, sent %d (%d new); want 4 read (3 changed + the high-water row) and only the 3 changed sent",
			rep.Rows, len(s.msgs)-8, s.unique-before)
	}
	// A third run with nothing changed reads only the latest row and sends nothing.
	if rep, err = Run(context.Background(), cfg); err != nil || rep.Rows != 1 || rep.Entities[0].Unchanged != 1 || len(s.msgs) != 11 {
		t.Fatalf("third run: %v rows %d sent %d", err, rep.Rows, len(s.msgs)-11)
	}
	// Two rows changed in the same second as the high-water mark: both sent.
	l.put("contact", row("contact", 3, later.Add(2*time.Second)))
	rep, err = Run(context.Background(), cfg)
	if err != nil || rep.Entities[0].Sent != 1 || rep.Entities[0].Unchanged != 1 {
		t.Fatalf("same-second change: %v %+v; want it sent and the known row skipped", err, rep.Entities[0])
	}
}

func TestSinceAndRestart(t *testing.T) {
	l, s, m := newFakeLister(), newRecordingSender(), newMemMeta()
	seed(l, map[string]int{"opportunity": 10})
	cfg := baseConfig(l, s, m)
	cfg.Entities = []string{"opportunity"}
	cfg.Since = t0.Add(6 * time.Minute)
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Rows != 4 || l.callsFor("opportunity")[0].Opts.Filter != "modifiedon ge 2026-11-01T09:06:00Z" {
		t.Fatalf("since run read %d rows with %+v", rep.Rows, l.callsFor("opportunity")[0].Opts)
	}
	cfg.Since = time.Time{}
	cfg.Restart = true
	if rep, err = Run(context.Background(), cfg); err != nil || rep.Rows != 10 {
		t.Fatalf("restart read %d rows (%v), want all 10", rep.Rows, err)
	}
}

func TestRefusedSavedLinkRestartsPass(t *testing.T) {
	l, s, m := newFakeLister(), newRecordingSender(), newMemMeta()
	seed(l, map[string]int{"account": 7})
	s.failAt = 2
	cfg := baseConfig(l, s, m)
	cfg.Entities = []string{"account"}
	if _, err := Run(context.Background(), cfg); err == nil {
		t.Fatal("want the failing send to stop the run")
	}
	l.failLink = "offset=3"
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Rows != 7 || s.unique != 7 {
		t.Fatalf("restarted pass read %d, unique %d; want all 7 once", rep.Rows, s.unique)
	}
}

func TestUnknownEntityAndBadConfig(t *testing.T) {
	l, s, m := newFakeLister(), newRecordingSender(), newMemMeta()
	cfg := baseConfig(l, s, m)
	cfg.Entities = []string{"contact", "invoice"}
	_, err := Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), `unknown entity "invoice"`) ||
		!strings.Contains(err.Error(), "allowed: systemuser, account, contact, lead, opportunity, connection") {
		t.Fatalf("error = %v", err)
	}
	if len(l.calls) != 0 {
		t.Fatal("listed before validating entities")
	}
	cfg.Entities = nil
	cfg.PageSize = 5001
	if _, err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "page size 5001") {
		t.Fatalf("error = %v", err)
	}
	if got, _ := Entities(nil); strings.Join(got, ",") != strings.Join(event.SyncedEntities, ",") {
		t.Fatalf("Entities(nil) = %v", got)
	}
}

func TestInvalidRowsAndLargeRows(t *testing.T) {
	l, s, m := newFakeLister(), newRecordingSender(), newMemMeta()
	l.put("account", row("account", 1, t0))
	l.put("account", event.Attributes{"accountid": event.String("nope"), "modifiedon": event.Time(t0)})
	big := row("account", 2, t0)
	big["description"] = event.String(strings.Repeat("x", 4000))
	l.put("account", big)
	cfg := baseConfig(l, s, m)
	cfg.Entities = []string{"account"}
	cfg.Columns = nil // all columns
	cfg.MaxMessageBytes = 2000
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	er := rep.Entities[0]
	if er.Rows != 3 || er.Invalid != 1 || er.Sent != 2 || er.Reduced != 1 {
		t.Fatalf("report %+v; want 3 rows, 1 invalid, 2 sent, 1 reduced", er)
	}
	for _, msg := range s.msgs {
		if msg.Size() > 2000 {
			t.Fatalf("message of %d bytes (body and properties) over the limit", msg.Size())
		}
		if e := decode(t, msg); e.RecordID == strings.ToLower(guid("account", 2)) && (!e.Truncated || e.Attributes != nil) {
			t.Fatalf("large row not reduced: %+v", e)
		}
	}
}

func TestProgressLinesWhenNotATerminal(t *testing.T) {
	l, s, m := newFakeLister(), newRecordingSender(), newMemMeta()
	seed(l, map[string]int{"systemuser": 5})
	fc := clock.NewFake(t0)
	cfg := baseConfig(l, s, m)
	cfg.Clock = fc
	cfg.Entities = []string{"systemuser"}
	var buf bytes.Buffer
	cfg.Progress = &buf
	cfg.Sender = senderFunc(func(ctx context.Context, msgs ...queue.Message) error {
		fc.Advance(time.Second) // each page takes a second
		return s.Send(ctx, msgs...)
	})
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if er := rep.Entities[0]; rep.Duration != 2*time.Second || er.Duration != 2*time.Second || er.Rate() != 2.5 {
		t.Fatalf("durations: run %s, entity %s at %v rows/s; want 2s and 2.5 rows/s", rep.Duration, er.Duration, er.Rate())
	}
	if !strings.HasSuffix(rep.String(), "backfill: 5 rows in 2s (2 rows/s)") {
		t.Fatalf("report = %q", rep.String())
	}
	want := "backfill systemuser: 3/5 rows, 3 rows/s, ETA 1s\nbackfill systemuser: 5/5 rows, 2 rows/s\n"
	if buf.String() != want {
		t.Fatalf("progress output:\n%s\nwant:\n%s", buf.String(), want)
	}
	l.noCount = true
	buf.Reset()
	cfg.Restart = true
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(buf.String(), "backfill systemuser: 3 rows,") {
		t.Fatalf("progress without a total: %q", buf.String())
	}
}

type senderFunc func(ctx context.Context, msgs ...queue.Message) error

func (f senderFunc) Send(ctx context.Context, msgs ...queue.Message) error { return f(ctx, msgs...) }

func TestCheckpointJSONIsReadable(t *testing.T) {
	l, s, m := newFakeLister(), newRecordingSender(), newMemMeta()
	seed(l, map[string]int{"lead": 4})
	cfg := baseConfig(l, s, m)
	cfg.Entities = []string{"lead"}
	s.failAt = 2
	Run(context.Background(), cfg)
	var raw map[string]any
	if err := json.Unmarshal([]byte(m.m["backfill/lead"]), &raw); err != nil {
		t.Fatal(err)
	}
	if raw["done"] != false || raw["rows"] != float64(3) || !strings.Contains(raw["nextLink"].(string), "offset=3") {
		t.Fatalf("checkpoint = %v", raw)
	}
}

// BenchmarkBackfill50k measures rows per second from a fake lister into a
// recording sender (the Dataverse simulator variant is in sim_test.go).
func BenchmarkBackfill50k(b *testing.B) {
	l := newFakeLister()
	for i := range 50000 {
		l.tables["contact"] = append(l.tables["contact"], row("contact", i, t0.Add(time.Duration(i)*time.Second)))
	}
	b.ResetTimer()
	var rows int
	start := time.Now()
	for i := 0; i < b.N; i++ {
		cfg := Config{Dataverse: l, Sender: newRecordingSender(), Store: newMemMeta(), Entities: []string{"contact"},
			PageSize: 5000, Logger: quiet()}
		rep, err := Run(context.Background(), cfg)
		if err != nil || rep.Rows != 50000 {
			b.Fatalf("rows %d err %v", rep.Rows, err)
		}
		rows += rep.Rows
	}
	b.ReportMetric(float64(rows)/time.Since(start).Seconds(), "rows/s")
}

func TestEntityReportString(t *testing.T) {
	r := EntityReport{Entity: "contact", Rows: 10, Pages: 2, Sent: 8, Unchanged: 1, Invalid: 1, Resumed: true,
		From: t0, Duration: 2 * time.Second}
	want := "contact: 10 rows in 2 pages, 8 sent, 1 already sent, 1 invalid, resumed, modified since 2026-11-01T09:00:00Z, 2s, 5 rows/s"
	if r.String() != want {
		t.Fatalf("String() = %q\nwant       %q", r.String(), want)
	}
}

func TestRelativeSinceResumesUnfinishedPass(t *testing.T) {
	l, s, m := newFakeLister(), newRecordingSender(), newMemMeta()
	seed(l, map[string]int{"account": 12})
	cfg := baseConfig(l, s, m)
	cfg.Entities = []string{"account"}
	cfg.Since = t0.Add(2 * time.Minute) // rows 2..11
	s.failAt = 2
	if _, err := Run(context.Background(), cfg); err == nil {
		t.Fatal("want the failing send to stop the run")
	}
	// "--since 30m" a few seconds later: still inside the unfinished pass.
	cfg.Since = cfg.Since.Add(5 * time.Second)
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if er := rep.Entities[0]; !er.Resumed || er.Rows != 7 || !er.From.Equal(t0.Add(2*time.Minute)) || s.unique != 10 {
		t.Fatalf("rerun %+v, %d unique sent; want the pass resumed for its last 7 rows", er, s.unique)
	}
	// An earlier since asks for more than the pass covers: start over.
	cfg.Since = t0
	if rep, err = Run(context.Background(), cfg); err != nil || rep.Entities[0].Resumed || rep.Rows != 12 {
		t.Fatalf("earlier since: %v %+v; want a new pass over all 12 rows", err, rep.Entities[0])
	}
}

type limitedSender struct {
	*recordingSender
	max int
}

func (l limitedSender) MaxMessageBytes() int { return l.max }

func TestMessageLimitTakenFromTheQueue(t *testing.T) {
	l, s, m := newFakeLister(), newRecordingSender(), newMemMeta()
	big := row("account", 2, t0)
	big["description"] = event.String(strings.Repeat("x", 5000))
	l.put("account", big)
	cfg := baseConfig(l, s, m)
	cfg.Entities = []string{"account"}
	cfg.Columns = nil
	cfg.Sender = limitedSender{s, 4096}
	rep, err := Run(context.Background(), cfg)
	if err != nil || rep.Entities[0].Reduced != 1 || s.msgs[0].Size() > 4096 {
		t.Fatalf("report %+v, err %v; want the row reduced under the queue's limit", rep.Entities[0], err)
	}
}

// TestMessageLimitCountsProperties: a row whose body alone fits but whose
// body and properties do not is reduced, as the queue would refuse it.
func TestMessageLimitCountsProperties(t *testing.T) {
	l, s, m := newFakeLister(), newRecordingSender(), newMemMeta()
	l.put("account", row("account", 1, t0))
	cfg := baseConfig(l, s, m)
	cfg.Entities = []string{"account"}
	if _, err := Run(context.Background(), cfg); err != nil || len(s.msgs) != 1 {
		t.Fatalf("unlimited run: %d messages, %v", len(s.msgs), err)
	}
	full := s.msgs[0]

	again := newRecordingSender()
	cfg.Sender, cfg.Store = again, newMemMeta()
	cfg.MaxMessageBytes = len(full.Body) + 1 // the body fits; body and properties do not
	rep, err := Run(context.Background(), cfg)
	if err != nil || len(again.msgs) != 1 || rep.Entities[0].Reduced != 1 {
		t.Fatalf("limited run: %d messages, report %+v, %v; want 1 reduced", len(again.msgs), rep.Entities, err)
	}
	if got := again.msgs[0]; got.Size() > cfg.MaxMessageBytes || !decode(t, got).Truncated {
		t.Errorf("message of %d bytes (limit %d), truncated=%v", got.Size(), cfg.MaxMessageBytes, decode(t, got).Truncated)
	}
}
