package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/store"
)

// partTimeout bounds each source a page reads, so one slow port (a broker
// count, Marketo) shows "not available" instead of holding the page.
const partTimeout = 5 * time.Second

// Tables the console offers in its filters and record lookup.
var tables = []string{event.EntitySystemUser, event.EntityAccount, event.EntityContact, event.EntityLead, event.EntityOpportunity, event.EntityConnection}

var kindOf = map[string]string{
	event.EntitySystemUser: store.KindSalesPerson, event.EntityAccount: store.KindCompany,
	event.EntityContact: store.KindPerson, event.EntityLead: store.KindPerson,
	event.EntityOpportunity: store.KindOpportunity, event.EntityConnection: store.KindRole,
}

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"dur": fmtDur,
	"pct": func(a, b int) int {
		if b <= 0 {
			return 0
		}
		return min(100, a*100/b)
	},
	"short": func(s string, n int) string {
		if r := []rune(s); len(r) > n {
			return string(r[:n]) + "…"
		}
		return s
	},
}

func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0 s"
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%.1f min", d.Minutes())
	}
	return fmt.Sprintf("%.1f h", d.Hours())
}

// view is what every page template gets.
type view struct {
	Title string
	Nav   string
	CSRF  string
	Role  string
	Now   time.Time
	Data  any
}

func (s *server) render(w http.ResponseWriter, r *http.Request, status int, page string, v view) {
	v.Now = s.cfg.Clock.Now()
	v.Role = s.cfg.Role
	var buf bytes.Buffer
	if err := s.pages[page].ExecuteTemplate(&buf, "layout", v); err != nil {
		s.log.ErrorContext(r.Context(), "console: render", "page", page, "error", err)
		writeProblem(w, http.StatusInternalServerError, "Internal error", "cannot render the "+page+" page")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func writeProblem(w http.ResponseWriter, status int, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "urn:msisync:problem:console", "title": title, "status": status, "detail": detail})
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

// ---- login ----

type loginData struct {
	Nonce, Next, Error string
}

func safeNext(n string) string {
	if strings.HasPrefix(n, "/console/") && !strings.HasPrefix(n, "//") && !strings.Contains(n, "\\") {
		return n
	}
	return "/console/"
}

func (s *server) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.auth.session(r); ok {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, "login", view{Title: "Log in", Data: loginData{Nonce: s.auth.loginNonce(w, r), Next: safeNext(r.URL.Query().Get("next"))}})
}

func (s *server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	client := clientAddr(r)
	next := safeNext(r.PostFormValue("next"))
	if limited, retry := s.auth.limited(client); limited {
		s.log.WarnContext(r.Context(), "console login refused: too many failed attempts", "remote", client)
		w.Header().Set("Retry-After", strconv.Itoa(int(retry.Seconds())+1))
		s.render(w, r, http.StatusTooManyRequests, "login", view{Title: "Log in", Data: loginData{Nonce: s.auth.loginNonce(w, r), Next: next,
			Error: fmt.Sprintf("Too many failed attempts from your address: try again in %d s.", int(retry.Seconds())+1)}})
		return
	}
	if !s.auth.loginNonceOK(r) {
		s.log.WarnContext(r.Context(), "console login refused: the form's CSRF token is missing or stale", "remote", client)
		s.render(w, r, http.StatusForbidden, "login", view{Title: "Log in", Data: loginData{Nonce: s.auth.loginNonce(w, r), Next: next,
			Error: "The form expired (or cookies are off): enter the token again."}})
		return
	}
	if !s.auth.tokenOK(r.PostFormValue("token")) {
		s.auth.failed(client)
		// Never the token itself, not even a prefix.
		s.log.WarnContext(r.Context(), "console login failed: wrong admin token", "remote", client)
		s.render(w, r, http.StatusUnauthorized, "login", view{Title: "Log in", Data: loginData{Nonce: s.auth.loginNonce(w, r), Next: next,
			Error: "Wrong admin token. It is MSISYNC_ADMIN_TOKEN, or the admin.token file in the data folder."}})
		return
	}
	s.auth.newSession(w, r)
	s.log.InfoContext(r.Context(), "console login", "remote", client)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *server) logout(w http.ResponseWriter, r *http.Request, sess session) {
	s.auth.logout(w, r, sess)
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
}

// ---- overview ----

type part[T any] struct {
	OK    bool
	Error string // "" with !OK: not available in this process
	V     T
}

func get[T any](ctx context.Context, avail bool, fn func(context.Context) (T, error)) part[T] {
	if !avail {
		return part[T]{}
	}
	ctx, cancel := context.WithTimeout(ctx, partTimeout)
	defer cancel()
	v, err := fn(ctx)
	if err != nil {
		return part[T]{Error: err.Error()}
	}
	return part[T]{OK: true, V: v}
}

type reasonCount struct {
	Reason string
	Count  int
}

type deadSummary struct {
	Total   int
	Capped  bool
	Reasons []reasonCount
}

type purposeRow struct {
	Purpose string
	Calls   int
}

type overviewData struct {
	Queue    part[queue.Counts]
	Dead     part[deadSummary]
	Budget   part[Budget]
	Purposes []purposeRow
	Cycles   part[[]Cycle]
	Activity *Snapshot
	Chart    template.HTML
}

const deadScan = 1000

func (s *server) overviewData(ctx context.Context) overviewData {
	var d overviewData
	d.Queue = get(ctx, s.cfg.Queue != nil, func(ctx context.Context) (queue.Counts, error) { return s.cfg.Queue.Counts(ctx) })
	d.Dead = get(ctx, s.cfg.DeadLetters != nil, func(ctx context.Context) (deadSummary, error) {
		items, err := s.cfg.DeadLetters.ListDead(ctx, queue.Filter{Limit: deadScan})
		if err != nil {
			return deadSummary{}, err
		}
		by := map[string]int{}
		for _, it := range items {
			by[it.Reason]++
		}
		ds := deadSummary{Total: len(items), Capped: len(items) == deadScan}
		for r, n := range by {
			ds.Reasons = append(ds.Reasons, reasonCount{r, n})
		}
		sort.Slice(ds.Reasons, func(i, j int) bool {
			if ds.Reasons[i].Count != ds.Reasons[j].Count {
				return ds.Reasons[i].Count > ds.Reasons[j].Count
			}
			return ds.Reasons[i].Reason < ds.Reasons[j].Reason
		})
		return ds, nil
	})
	d.Budget = get(ctx, s.cfg.Budget != nil, func(ctx context.Context) (Budget, error) { return s.cfg.Budget.Budget(ctx) })
	for p, n := range d.Budget.V.ByPurpose {
		d.Purposes = append(d.Purposes, purposeRow{p, n})
	}
	slices.SortFunc(d.Purposes, func(a, b purposeRow) int { return b.Calls - a.Calls })
	d.Cycles = get(ctx, s.cfg.Cycles != nil || s.cfg.Gatherer != nil, s.cycles)
	if s.cfg.Activity != nil {
		snap := s.cfg.Activity.Snapshot()
		d.Activity = &snap
		d.Chart = chart(snap.Series)
	}
	return d
}

// cycles reports each loop's last cycle from the CycleSource, and the
// cycle counters of this process for a loop the source does not know.
func (s *server) cycles(ctx context.Context) ([]Cycle, error) {
	var out []Cycle
	if s.cfg.Gatherer != nil {
		var err error
		if out, err = s.cyclesFromMetrics(ctx); err != nil && s.cfg.Cycles == nil {
			return nil, err
		}
	}
	if s.cfg.Cycles == nil {
		return out, nil
	}
	last, err := s.cfg.Cycles.Cycles(ctx)
	if err != nil {
		return nil, err
	}
	for _, c := range last {
		if i := slices.IndexFunc(out, func(m Cycle) bool { return m.Name == c.Name }); i >= 0 {
			out[i] = c
		} else {
			out = append(out, c)
		}
	}
	return out, nil
}

// cyclesFromMetrics reports the loops' cycle counters: how many ran and how
// many failed in this process.
func (s *server) cyclesFromMetrics(context.Context) ([]Cycle, error) {
	mfs, err := s.cfg.Gatherer.Gather()
	if err != nil && len(mfs) == 0 {
		return nil, err
	}
	var out []Cycle
	for _, loop := range []struct{ metric, name string }{
		{"msisync_msi_cycles_total", "MSI write-back"},
		{"msisync_reconcile_cycles_total", "Reconcile"},
	} {
		for _, mf := range mfs {
			if mf.GetName() != loop.metric {
				continue
			}
			by := map[string]int{}
			for _, m := range mf.GetMetric() {
				by[label(m, "outcome")] += int(m.GetCounter().GetValue())
			}
			var parts []string
			for _, o := range slices.Sorted(mapsKeys(by)) {
				parts = append(parts, fmt.Sprintf("%s %d", o, by[o]))
			}
			out = append(out, Cycle{Name: loop.name, OK: by["error"] == 0, Detail: "cycles since start: " + strings.Join(parts, ", ")})
		}
	}
	return out, nil
}

func mapsKeys(m map[string]int) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func (s *server) overview(w http.ResponseWriter, r *http.Request, sess session) {
	s.render(w, r, http.StatusOK, "overview", view{Title: "Overview", Nav: "overview", CSRF: sess.csrf, Data: s.overviewData(r.Context())})
}

// ---- dead letters ----

type deadListData struct {
	Available bool
	Error     string
	Tables    []string
	Entity    string
	Reason    string
	Since     string
	Items     []queue.DeadLetter
	Limit     int
}

var sinceChoices = map[string]time.Duration{"1h": time.Hour, "24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour, "30d": 30 * 24 * time.Hour}

const deadPageLimit = 500

func (s *server) deadLetters(w http.ResponseWriter, r *http.Request, sess session) {
	q := r.URL.Query()
	d := deadListData{Available: s.cfg.DeadLetters != nil, Tables: tables, Entity: q.Get("entity"), Reason: strings.TrimSpace(q.Get("reason")), Since: q.Get("since"), Limit: deadPageLimit}
	status := http.StatusOK
	if d.Entity != "" && !slices.Contains(tables, d.Entity) {
		d.Error, d.Entity, status = fmt.Sprintf("table %q is not one msisync syncs; pick one of %s", d.Entity, strings.Join(tables, ", ")), "", http.StatusBadRequest
	}
	f := queue.Filter{Entity: d.Entity, Reason: d.Reason, Limit: deadPageLimit}
	if d.Since != "" {
		dur, ok := sinceChoices[d.Since]
		if !ok {
			d.Error, d.Since, status = fmt.Sprintf("since %q is not one of 1h, 24h, 7d, 30d", d.Since), "", http.StatusBadRequest
		} else {
			f.Since = s.cfg.Clock.Now().Add(-dur)
		}
	}
	if d.Available && status == http.StatusOK {
		ctx, cancel := context.WithTimeout(r.Context(), partTimeout)
		items, err := s.cfg.DeadLetters.ListDead(ctx, f)
		cancel()
		if err != nil {
			d.Error, status = "cannot list dead letters: "+err.Error(), http.StatusBadGateway
		}
		d.Items = items
	}
	s.render(w, r, status, "deadletters", view{Title: "Dead letters", Nav: "deadletters", CSRF: sess.csrf, Data: d})
}

type deadData struct {
	Item   queue.DeadLetter
	Body   string
	Entity string
	Record string
}

func (s *server) deadLetter(w http.ResponseWriter, r *http.Request, sess session) {
	if s.cfg.DeadLetters == nil {
		writeProblem(w, http.StatusNotFound, "Not available", "this process has no dead-letter queue")
		return
	}
	id := r.PathValue("id")
	ctx, cancel := context.WithTimeout(r.Context(), partTimeout)
	dl, err := s.cfg.DeadLetters.GetDead(ctx, id)
	cancel()
	if errors.Is(err, queue.ErrNotFound) {
		writeProblem(w, http.StatusNotFound, "Not found", fmt.Sprintf("no dead letter with id %q (replayed or purged already?)", id))
		return
	}
	if err != nil {
		writeProblem(w, http.StatusBadGateway, "Queue unavailable", "get dead letter: "+err.Error())
		return
	}
	d := deadData{Item: dl, Entity: dl.Properties[queue.PropEntity], Record: dl.Properties[queue.PropRecordID]}
	var pretty bytes.Buffer
	if json.Indent(&pretty, dl.Body, "", "  ") == nil {
		d.Body = pretty.String()
	} else {
		d.Body = fmt.Sprintf("(%d bytes, not JSON)", len(dl.Body))
	}
	s.render(w, r, http.StatusOK, "deadletter", view{Title: "Dead letter " + dl.ID, Nav: "deadletters", CSRF: sess.csrf, Data: d})
}

// maxBulkIDs bounds one replay or purge request; the page sends its
// selection in smaller chunks to show progress.
const maxBulkIDs = 1000

// bulk replays or purges the dead letters with the given ids, through the
// same queue.DeadLetters port as the admin API.
func (s *server) bulk(purge bool) func(http.ResponseWriter, *http.Request, session) {
	op, done := "replay", "replayed"
	if purge {
		op, done = "purge", "purged"
	}
	return func(w http.ResponseWriter, r *http.Request, _ session) {
		if s.cfg.DeadLetters == nil {
			writeProblem(w, http.StatusNotFound, "Not available", "this process has no dead-letter queue")
			return
		}
		var body struct {
			IDs []string `json:"ids"`
		}
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			writeProblem(w, http.StatusBadRequest, "Malformed JSON", `the body must be {"ids": ["…"]}: `+err.Error())
			return
		}
		if len(body.IDs) == 0 || len(body.IDs) > maxBulkIDs {
			writeProblem(w, http.StatusUnprocessableEntity, "Invalid selection", fmt.Sprintf("ids: give 1 to %d dead-letter ids", maxBulkIDs))
			return
		}
		for i, id := range body.IDs {
			if strings.TrimSpace(id) == "" {
				writeProblem(w, http.StatusUnprocessableEntity, "Invalid selection", fmt.Sprintf("ids[%d] is empty", i))
				return
			}
		}
		f := queue.Filter{IDs: body.IDs}
		var n int
		var err error
		if purge {
			n, err = s.cfg.DeadLetters.PurgeDead(r.Context(), f)
		} else {
			n, err = s.cfg.DeadLetters.ReplayDead(r.Context(), f)
		}
		if err != nil {
			s.log.ErrorContext(r.Context(), "console "+op+" failed", "ids", len(body.IDs), "error", err)
			writeProblem(w, http.StatusBadGateway, "Queue unavailable", op+" dead letters: "+err.Error())
			return
		}
		s.log.InfoContext(r.Context(), "console "+op+" of dead letters", "requested", len(body.IDs), "done", n, "remote", clientAddr(r))
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]int{done: n, "requested": len(body.IDs)})
	}
}

// ---- record ----

type recordData struct {
	Tables    []string
	Entity    string
	ID        string
	Email     string
	Error     string
	Matches   []store.Link // persons found by email
	Searched  bool
	Report    part[reportView]
	Links     part[[]store.Link]
	History   part[[]historyRow]
	HistoryOn bool
}

type reportView struct {
	Healthy bool
	Checks  []checkView
}

type checkView struct {
	Name, Status, Detail, Fix string
}

type historyRow struct {
	store.HistoryEntry
	Lag time.Duration
}

func (s *server) record(w http.ResponseWriter, r *http.Request, sess session) {
	q := r.URL.Query()
	d := recordData{Tables: tables, Entity: q.Get("entity"), ID: strings.TrimSpace(q.Get("id")), Email: strings.TrimSpace(q.Get("email")), HistoryOn: s.cfg.History != nil}
	status := http.StatusOK
	switch {
	case d.Email != "":
		d.Searched = true
		if !strings.Contains(d.Email, "@") {
			d.Error, status = fmt.Sprintf("email %q is not an email address", d.Email), http.StatusBadRequest
			break
		}
		if s.cfg.People == nil || s.cfg.Links == nil {
			d.Error, status = "finding a record by email needs Marketo and the store, which this process does not use (try the worker or serve)", http.StatusNotFound
			break
		}
		matches, err := s.byEmail(r.Context(), d.Email)
		if err != nil {
			d.Error, status = err.Error(), http.StatusBadGateway
			break
		}
		d.Matches = matches
		if len(matches) == 1 {
			d.Entity, d.ID = matches[0].Entity, matches[0].ExternalID
			s.lookup(r.Context(), &d)
		} else if len(matches) == 0 {
			d.Error = "no synced lead or contact has the email " + d.Email
		}
	case d.ID != "" || d.Entity != "":
		d.Searched = true
		if !slices.Contains(tables, d.Entity) {
			d.Error, status = fmt.Sprintf("table %q: pick one of %s", d.Entity, strings.Join(tables, ", ")), http.StatusBadRequest
			break
		}
		if !event.IsGUID(d.ID) {
			d.Error, status = fmt.Sprintf("id %q is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", d.ID), http.StatusBadRequest
			break
		}
		d.ID = event.NormalizeID(d.ID)
		s.lookup(r.Context(), &d)
	}
	s.render(w, r, status, "record", view{Title: "Record", Nav: "record", CSRF: sess.csrf, Data: d})
}

func (s *server) byEmail(ctx context.Context, email string) ([]store.Link, error) {
	ctx, cancel := context.WithTimeout(ctx, partTimeout)
	defer cancel()
	recs, err := s.cfg.People.Query(ctx, marketotype.Leads, "email", []string{email}, []string{"id", "email", "externalPersonId"})
	if err != nil {
		return nil, fmt.Errorf("find %s in Marketo: %w", email, err)
	}
	var ids []string
	for _, rec := range recs {
		if v, ok := rec["externalPersonId"].(string); ok && v != "" {
			ids = append(ids, event.NormalizeID(v))
		}
	}
	links, err := s.cfg.Links.GetLinks(ctx, store.KindPerson, ids)
	if err != nil {
		return nil, fmt.Errorf("read the store's links for %s: %w", email, err)
	}
	var out []store.Link
	for _, id := range ids {
		if l, ok := links[id]; ok {
			out = append(out, l)
		}
	}
	return out, nil
}

func (s *server) lookup(ctx context.Context, d *recordData) {
	d.Report = get(ctx, s.cfg.Doctor != nil, func(ctx context.Context) (reportView, error) {
		rep, err := s.cfg.Doctor.Diagnose(ctx, d.Entity, d.ID)
		if err != nil {
			return reportView{}, err
		}
		v := reportView{Healthy: rep.Healthy()}
		for _, c := range rep.Checks {
			v.Checks = append(v.Checks, checkView{Name: c.Name, Status: string(c.Status), Detail: c.Detail, Fix: c.Fix})
		}
		return v, nil
	})
	d.Links = get(ctx, s.cfg.Links != nil, func(ctx context.Context) ([]store.Link, error) {
		m, err := s.cfg.Links.GetLinks(ctx, kindOf[d.Entity], []string{d.ID})
		if err != nil {
			return nil, err
		}
		var out []store.Link
		if l, ok := m[d.ID]; ok {
			out = append(out, l)
		}
		return out, nil
	})
	d.History = get(ctx, s.cfg.History != nil, func(ctx context.Context) ([]historyRow, error) {
		hs, err := s.cfg.History.RecordHistory(ctx, d.Entity, d.ID, store.HistoryPerRecord)
		if err != nil {
			return nil, err
		}
		out := make([]historyRow, len(hs))
		for i, h := range hs {
			out[i] = historyRow{HistoryEntry: h, Lag: h.At.Sub(h.ReceivedAt)}
		}
		return out, nil
	})
}

// ---- settings ----

func (s *server) settings(w http.ResponseWriter, r *http.Request, sess session) {
	s.render(w, r, http.StatusOK, "settings", view{Title: "Settings", Nav: "settings", CSRF: sess.csrf, Data: s.cfg.Settings})
}
