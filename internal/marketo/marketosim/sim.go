// Package marketosim is an in-process simulator of the Marketo Engage REST
// API as used by a Marketo Sales Insight non-native sync: identity, the
// Lead Database objects (sales persons, companies, leads, opportunities,
// opportunity roles), their limits, error codes and quirks. It is an
// http.Handler; tests, the demo sandbox and benchmarks run against it.
package marketosim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // the quota resets at midnight America/Chicago

	"github.com/google/uuid"

	"github.com/msisync/msisync/internal/clock"
)

// Options configure the simulator. The zero value of every field means the
// documented Marketo default.
type Options struct {
	ClientID, ClientSecret string // credentials the identity endpoint accepts
	// Persist, when set, receives the records each REST call (and SetMSI,
	// TickMSI) changed, before the call's response is written; a failure
	// answers the call with HTTP 500. The sandbox keeps its records durable
	// with it.
	Persist func([]Change) error
	// TickMSIEvery, when set, makes ListenAndServe change the MSI fields of
	// TickMSILeads random leads (default 5) this often, as Marketo does.
	TickMSIEvery time.Duration
	TickMSILeads int
	TokenTTL     time.Duration // access token lifetime; default 3600 s

	CallsPerWindow int           // default 100
	Window         time.Duration // default 20 s
	MaxConcurrent  int           // default 10
	DailyQuota     int           // default 50000

	// LookupExternalPersonID makes Sync Leads accept lookupField=externalPersonId
	// (UNCONFIRMED on real Marketo); otherwise the call fails with 1011.
	LookupExternalPersonID bool
	// CRMEnabled simulates native CRM sync: company, opportunity, role and
	// sales person writes are skipped with 1018.
	CRMEnabled bool
	// ScoreField is the MSI score field name: "relativeScore" (default) or
	// "relativeScoring" (UNCONFIRMED which one is real).
	ScoreField string
	// MSIWrites says what a write to a computed MSI field does: "ignore"
	// (default: dropped silently) or "reject" (record skipped with 1006).
	MSIWrites string
	// CaseInsensitiveIDs makes external id lookups and filters ignore case.
	CaseInsensitiveIDs bool
	// AcceptQueryToken accepts the deprecated access_token query parameter.
	AcceptQueryToken bool
	// InputCapCode is the request-level code for input > 300 records
	// (UNCONFIRMED; default "1003").
	InputCapCode string
	// MissingRefCode is the skip code for a role whose opportunity or lead
	// is missing, or a lead whose company or sales person is missing
	// (UNCONFIRMED; default "1013").
	MissingRefCode string
	// MissingSalesPersonCode is the code for an opportunity or company that
	// names an unknown externalSalesPersonId (default "718").
	MissingSalesPersonCode string
	// SalesPerson718RequestLevel makes 718 fail the whole Sync Opportunities
	// call instead of skipping the record (UNCONFIRMED which is real).
	SalesPerson718RequestLevel bool
	// IdentityErrorBody is the body of the identity 401 (UNCONFIRMED); the
	// default is {"error":"invalid_client","error_description":"Bad client credentials"}.
	IdentityErrorBody string
	// ExplicitNulls makes queries return requested fields that are null as
	// explicit nulls instead of leaving them out.
	ExplicitNulls bool
	// RaceDuplicates makes concurrent Sync Leads calls on one key create
	// duplicate leads, as Marketo warns they can.
	RaceDuplicates bool
	// OmitUnconfirmedFields drops fields the docs do not confirm (opportunity
	// closeDate/isWon/probability, company billing*, sales person phone …).
	OmitUnconfirmedFields bool
	// MSIChangeActivities makes computed MSI field changes (TickMSI, SetMSI)
	// appear as Data Value Change activities in the lead-changes feed
	// (UNCONFIRMED whether Marketo emits them).
	MSIChangeActivities bool
	// InterestingMomentTypeID is the activity type id of Interesting Moment
	// (UNCONFIRMED: Adobe's blog text says 41, its sample code queries 46;
	// default 46). Clients should look it up by name in types.json.
	InterestingMomentTypeID int
	// UrgencyHalfLife is how fast relativeUrgency and urgency decay on the
	// simulator's clock without new activity (default 24 h); the decay
	// emits no activity, as on Marketo (UNCONFIRMED).
	UrgencyHalfLife time.Duration
	// CustomFields adds fields per object (key: "leads", "companies", …).
	CustomFields map[string][]Field

	// ServerTimeout is how long a "timeout" fault holds a call before it
	// answers 604 (if the client has not given up first); default 30 s.
	ServerTimeout time.Duration

	Clock clock.Clock // default clock.System
	Seed  int64       // seeds ids, tokens, faults and TickMSI
}

func (o *Options) defaults() {
	if o.TokenTTL <= 0 {
		o.TokenTTL = 3600 * time.Second
	}
	if o.CallsPerWindow <= 0 {
		o.CallsPerWindow = 100
	}
	if o.Window <= 0 {
		o.Window = 20 * time.Second
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 10
	}
	if o.DailyQuota <= 0 {
		o.DailyQuota = 50000
	}
	if o.ScoreField == "" {
		o.ScoreField = "relativeScore"
	}
	if o.MSIWrites == "" {
		o.MSIWrites = "ignore"
	}
	if o.InputCapCode == "" {
		o.InputCapCode = "1003"
	}
	if o.MissingRefCode == "" {
		o.MissingRefCode = "1013"
	}
	if o.MissingSalesPersonCode == "" {
		o.MissingSalesPersonCode = "718"
	}
	if o.IdentityErrorBody == "" {
		o.IdentityErrorBody = `{"error":"invalid_client","error_description":"Bad client credentials"}`
	}
	if o.InterestingMomentTypeID <= 0 {
		o.InterestingMomentTypeID = 46
	}
	if o.UrgencyHalfLife <= 0 {
		o.UrgencyHalfLife = 24 * time.Hour
	}
	if o.ServerTimeout <= 0 {
		o.ServerTimeout = 30 * time.Second
	}
	if o.Clock == nil {
		o.Clock = clock.System{}
	}
}

// Stats counts what the simulator saw.
type Stats struct {
	Requests        map[string]int // by endpoint, e.g. "POST /rest/v1/leads.json" or "sync leads"
	Responses       map[string]int // by code: "ok", "606", "HTTP 413", …
	RecordReasons   map[string]int // per-record skip codes
	IdentityCalls   int
	MaxConcurrency  int // most calls in flight at once
	Throttled606    int
	Throttled615    int
	QueryTokenCalls int // requests that carried access_token in the query string
	CountedCalls    int // calls counted toward the daily quota (today)
	Dropped         int // connections dropped by fault injection
}

// State is a copy of all records, for tests and the sandbox.
type State struct {
	SalesPersons, Companies, Leads, Opportunities, Roles []map[string]any
}

type token struct {
	value   string
	expires time.Time
}

// Server is the simulator. Create it with New.
type Server struct {
	opts  Options
	specs map[string]*objSpec
	loc   *time.Location

	mu         sync.Mutex // guards everything below
	rnd        *rand.Rand
	tokens     map[string]*token // by value
	current    *token            // the live token of the one client
	inflight   int
	stamps     []time.Time // counted calls in the rolling window
	quotaDay   string
	used       int
	faults     map[string]float64
	failNext   []string
	latency    time.Duration
	dropRate   float64
	stats      Stats
	tables     map[string]*table
	activities []activity    // lead activity log, oldest first
	lastDecay  time.Time     // when urgency last decayed
	callLog    []time.Time   // arrival of every admitted call, for window checks
	hold       chan struct{} // non-nil: admitted calls wait for it to close
	raceGate   func()        // test hook between lookup and write when RaceDuplicates
}

// New returns a simulator with empty data.
func New(opts Options) *Server {
	opts.defaults()
	s := &Server{opts: opts, specs: buildSpecs(opts)}
	loc, err := time.LoadLocation("America/Chicago")
	if err != nil {
		loc = time.FixedZone("CST", -6*3600)
	}
	s.loc = loc
	s.Reset()
	return s
}

// Reset clears data, tokens, counters and faults.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rnd = rand.New(rand.NewSource(s.opts.Seed))
	s.tokens = map[string]*token{}
	s.current = nil
	s.stamps = nil
	s.used = 0
	s.quotaDay = ""
	s.faults = map[string]float64{}
	s.failNext = nil
	s.latency = 0
	s.dropRate = 0
	s.stats = Stats{Requests: map[string]int{}, Responses: map[string]int{}, RecordReasons: map[string]int{}}
	s.tables = map[string]*table{}
	s.activities = nil
	s.callLog = nil
	starts := map[string]int64{objSalesPersons: 101, objCompanies: 501, objLeads: 1001}
	for name, spec := range s.specs {
		s.tables[name] = newTable(spec, starts[name], s.opts.CaseInsensitiveIDs)
		if s.opts.Persist != nil {
			s.tables[name].changed = map[string]*record{}
		}
	}
}

// SetFault makes a fraction rate (0…1) of calls fail with code. Codes "502",
// "500", "503", "504" and "5xx" are HTTP statuses; "drop" closes the
// connection before the call is processed and "drop-after" after it was
// (the response is lost); "timeout" holds the call unprocessed and
// "timeout-after" holds it after processing, until the client gives up or
// ServerTimeout passes (then 604). Others are Marketo codes in an HTTP 200
// body. Rate 0 removes the fault.
func (s *Server) SetFault(code string, rate float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rate <= 0 {
		delete(s.faults, code)
		return
	}
	s.faults[code] = rate
}

// FailNext makes the next calls (after authentication) fail with these
// codes, in order. An injected 601 or 602 also invalidates the live token.
func (s *Server) FailNext(codes ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext = append(s.failNext, codes...)
}

// Hold makes admitted calls wait (in flight) until release is called, so a
// test can fill the concurrency limit deterministically.
func (s *Server) Hold() (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.hold = ch
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.hold == ch {
				s.hold = nil
			}
			s.mu.Unlock()
			close(ch)
		})
	}
}

// CallLog returns the arrival time of every call admitted past the
// concurrency and rate checks since the last Reset, oldest first.
func (s *Server) CallLog() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.callLog...)
}

// MaxInWindow is the most calls of the call log inside any interval of
// length window: what Marketo's rolling limit measures.
func MaxInWindow(log []time.Time, window time.Duration) int {
	best, j := 0, 0
	for i := range log {
		for log[i].Sub(log[j]) >= window {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

// InFlight returns the number of calls being processed now.
func (s *Server) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inflight
}

// SetLatency delays every REST call by d before it is processed.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	s.latency = d
	s.mu.Unlock()
}

// DropConnections makes a fraction rate of REST calls lose their connection
// without a response.
func (s *Server) DropConnections(rate float64) {
	s.mu.Lock()
	s.dropRate = rate
	s.mu.Unlock()
}

// ExpireTokens expires every issued token now: calls using one get 602 and
// the identity endpoint issues a new token.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Clock.Now()
	for _, t := range s.tokens {
		t.expires = now
	}
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Requests = copyCounts(s.stats.Requests)
	st.Responses = copyCounts(s.stats.Responses)
	st.RecordReasons = copyCounts(s.stats.RecordReasons)
	s.rollQuotaDay()
	st.CountedCalls = s.used
	return st
}

func copyCounts(m map[string]int) map[string]int {
	c := make(map[string]int, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// envelope is the standard Marketo response body.
type envelope struct {
	RequestID     string     `json:"requestId"`
	Success       bool       `json:"success"`
	Errors        []apiError `json:"errors,omitempty"`
	Warnings      []string   `json:"warnings,omitempty"`
	Result        any        `json:"result,omitempty"`
	MoreResult    *bool      `json:"moreResult,omitempty"`
	NextPageToken string     `json:"nextPageToken,omitempty"`
}

type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func fail(code, msg string) *envelope {
	return &envelope{Errors: []apiError{{Code: code, Message: msg}}}
}

func ok(result any) *envelope {
	if result == nil {
		result = []any{}
	}
	return &envelope{Success: true, Result: result}
}

func (e *envelope) code() string {
	if e.Success || len(e.Errors) == 0 {
		return "ok"
	}
	return e.Errors[0].Code
}

// notCounted are the codes the docs mark as not counted against the rate
// limit or daily quota.
var notCounted = map[string]bool{"601": true, "602": true, "604": true, "605": true, "608": true, "611": true}

var faultMessages = map[string]string{
	"601": "Access token invalid", "602": "Access token expired", "603": "Access denied",
	"604": "Request timed out", "605": "HTTP Method not supported", "606": "Max rate limit '100' exceeded with in '20' secs",
	"607": "Daily quota reached", "608": "API Temporarily Unavailable", "609": "Invalid JSON",
	"610": "Requested resource not found", "611": "System error", "612": "Invalid Content Type",
	"614": "Invalid Subscription", "615": "Concurrent access limit reached", "713": "Transient Error",
	"1018": "CRM Enabled",
}

func httpFault(code string) int {
	switch code {
	case "5xx", "500":
		return 500
	case "502":
		return 502
	case "503":
		return 503
	case "504":
		return 504
	}
	return 0
}

func (s *Server) requestID() string {
	return fmt.Sprintf("%x#%x", s.rnd.Int63()&0xffff, s.rnd.Int63()&0xffffffffffff)
}

func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.Header().Set("Server", "nginx")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// dropConn closes the connection without a response.
func dropConn(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler) // net/http closes the connection
}

func (s *Server) writeHTTPError(w http.ResponseWriter, status int) {
	w.Header().Set("Content-Type", "text/html")
	w.Header().Set("Server", "nginx")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<html><head><title>%d %s</title></head><body><center><h1>%d %s</h1></center><hr><center>nginx</center></body></html>\n",
		status, http.StatusText(status), status, http.StatusText(status))
}

const (
	maxURI  = 8 * 1024
	maxBody = 1 << 20
)

// ServeHTTP routes identity and REST calls.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/identity/") {
		s.identity(w, r)
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/rest/") {
		s.count("HTTP 404", "")
		s.writeHTTPError(w, http.StatusNotFound)
		return
	}
	s.mu.Lock()
	drop := s.dropRate > 0 && s.rnd.Float64() < s.dropRate
	if r.URL.Query().Has("access_token") {
		s.stats.QueryTokenCalls++
	}
	if drop {
		s.stats.Dropped++
	}
	s.mu.Unlock()
	if drop {
		dropConn(w)
		return
	}
	if len(r.RequestURI) > maxURI || len(r.URL.String()) > maxURI {
		s.count("HTTP 414", "")
		s.writeHTTPError(w, http.StatusRequestURITooLong)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		s.count("HTTP 400", "")
		s.writeHTTPError(w, http.StatusBadRequest)
		return
	}
	if len(body) > maxBody {
		s.count("HTTP 413", "")
		s.writeHTTPError(w, http.StatusRequestEntityTooLarge)
		return
	}
	status, env := s.admitAndHandle(r, body)
	if status == statusDrop {
		dropConn(w)
		return
	}
	if status != http.StatusOK {
		s.writeHTTPError(w, status)
		return
	}
	s.mu.Lock()
	env.RequestID = s.requestID()
	s.mu.Unlock()
	s.writeJSON(w, http.StatusOK, env)
}

// admitAndHandle applies auth, concurrency, rate, quota and faults, then
// runs the endpoint. The in-flight count drops before the response is
// written, so a client that starts its next call after reading a response
// never sees a stale 615.
func (s *Server) admitAndHandle(r *http.Request, body []byte) (int, *envelope) {
	ep := endpointName(r)
	s.mu.Lock()
	s.stats.Requests[ep]++
	if env := s.authenticate(r); env != nil {
		s.stats.Responses[env.code()]++
		s.mu.Unlock()
		return 200, env
	}
	s.inflight++
	if s.inflight > s.stats.MaxConcurrency {
		s.stats.MaxConcurrency = s.inflight
	}
	defer func() {
		s.mu.Lock()
		s.inflight--
		s.mu.Unlock()
	}()
	if s.inflight > s.opts.MaxConcurrent {
		s.stats.Throttled615++
		s.stats.Responses["615"]++
		s.mu.Unlock()
		return 200, fail("615", "Concurrent access limit reached")
	}
	now := s.opts.Clock.Now()
	cut := now.Add(-s.opts.Window)
	i := 0
	for i < len(s.stamps) && !s.stamps[i].After(cut) {
		i++
	}
	s.stamps = s.stamps[i:]
	if len(s.stamps) >= s.opts.CallsPerWindow {
		s.stats.Throttled606++
		s.stats.Responses["606"]++
		s.mu.Unlock()
		return 200, fail("606", fmt.Sprintf("Max rate limit '%d' exceeded with in '%d' secs",
			s.opts.CallsPerWindow, int(s.opts.Window/time.Second)))
	}
	s.rollQuotaDay()
	if s.used >= s.opts.DailyQuota {
		s.stats.Responses["607"]++
		s.mu.Unlock()
		return 200, fail("607", "Daily quota reached")
	}
	s.stamps = append(s.stamps, now)
	s.callLog = append(s.callLog, now)
	s.used++
	uncount := func() {
		// Remove this call's reservation: the docs say these codes are free.
		for j := len(s.stamps) - 1; j >= 0; j-- {
			if s.stamps[j].Equal(now) {
				s.stamps = append(s.stamps[:j], s.stamps[j+1:]...)
				break
			}
		}
		s.used--
	}
	fault := s.nextFault()
	switch fault {
	case "drop":
		s.stats.Dropped++
		uncount()
		s.mu.Unlock()
		return statusDrop, nil
	case "timeout", "timeout-after", "drop-after":
		// Handled below, around the endpoint's work.
	case "":
	default:
		code := fault
		if st := httpFault(code); st != 0 {
			s.stats.Responses["HTTP "+strconv.Itoa(st)]++
			s.mu.Unlock()
			return st, nil
		}
		if code == "601" || code == "602" {
			for _, t := range s.tokens {
				t.expires = now
			}
		}
		if notCounted[code] {
			uncount()
		}
		s.stats.Responses[code]++
		s.mu.Unlock()
		msg := faultMessages[code]
		if msg == "" {
			msg = "Injected fault"
		}
		return 200, fail(code, msg)
	}
	latency, hold := s.latency, s.hold
	s.mu.Unlock()
	if fault == "timeout" {
		return s.hang(r)
	}

	// Latency and Hold run while the call is in flight, as server work does.
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		}
	}
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
		}
	}
	env := s.route(r, body)
	if err := s.flush(); err != nil {
		s.mu.Lock()
		s.stats.Responses["HTTP 500"]++
		s.mu.Unlock()
		return http.StatusInternalServerError, nil
	}
	switch fault {
	case "timeout-after":
		return s.hang(r)
	case "drop-after":
		s.mu.Lock()
		s.stats.Dropped++
		s.mu.Unlock()
		return statusDrop, nil
	}

	s.mu.Lock()
	if notCounted[env.code()] {
		uncount()
	}
	s.stats.Responses[env.code()]++
	s.mu.Unlock()
	return 200, env
}

// statusDrop tells ServeHTTP to close the connection without a response.
const statusDrop = -1

// hang holds a call in flight until the client gives up or the server
// timeout passes, then answers 604 as Marketo does.
func (s *Server) hang(r *http.Request) (int, *envelope) {
	t := time.NewTimer(s.opts.ServerTimeout)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
	s.mu.Lock()
	s.stats.Responses["604"]++
	s.mu.Unlock()
	return 200, fail("604", "Request timed out")
}

func (s *Server) nextFault() string {
	if len(s.failNext) > 0 {
		c := s.failNext[0]
		s.failNext = s.failNext[1:]
		return c
	}
	codes := make([]string, 0, len(s.faults))
	for code := range s.faults {
		codes = append(codes, code)
	}
	sort.Strings(codes) // map order is random; keep a seed reproducible
	for _, code := range codes {
		if s.rnd.Float64() < s.faults[code] {
			return code
		}
	}
	return ""
}

// rollQuotaDay resets the daily count at midnight America/Chicago.
func (s *Server) rollQuotaDay() {
	day := s.opts.Clock.Now().In(s.loc).Format("2006-01-02")
	if day != s.quotaDay {
		s.quotaDay = day
		s.used = 0
	}
}

func (s *Server) count(code, ep string) {
	s.mu.Lock()
	if ep != "" {
		s.stats.Requests[ep]++
	}
	s.stats.Responses[code]++
	s.mu.Unlock()
}

// authenticate checks the bearer token; it returns an error envelope or nil.
// Called with s.mu held.
func (s *Server) authenticate(r *http.Request) *envelope {
	tok := ""
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		tok = strings.TrimSpace(strings.TrimPrefix(h, "Bearer "))
	} else if s.opts.AcceptQueryToken {
		tok = r.URL.Query().Get("access_token")
	}
	t, found := s.tokens[tok]
	if tok == "" || !found {
		return fail("601", "Access token invalid")
	}
	if !s.opts.Clock.Now().Before(t.expires) {
		return fail("602", "Access token expired")
	}
	return nil
}

// identity serves GET|POST /identity/oauth/token. Calls here are not
// counted toward rate or quota.
func (s *Server) identity(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.stats.IdentityCalls++
	s.stats.Requests["identity"]++
	s.mu.Unlock()
	if r.URL.Path != "/identity/oauth/token" || (r.Method != http.MethodGet && r.Method != http.MethodPost) {
		s.count("HTTP 404", "")
		s.writeHTTPError(w, http.StatusNotFound)
		return
	}
	_ = r.ParseForm() // query string, or a form body on POST
	q := r.Form
	if q.Get("grant_type") != "client_credentials" {
		s.count("HTTP 400", "")
		w.Header().Set("Content-Type", "application/json;charset=UTF-8")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":"unsupported_grant_type","error_description":"Unsupported grant type"}`)
		return
	}
	if q.Get("client_id") != s.opts.ClientID || q.Get("client_secret") != s.opts.ClientSecret {
		s.count("HTTP 401", "")
		w.Header().Set("Content-Type", "application/json;charset=UTF-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, s.opts.IdentityErrorBody)
		return
	}
	s.mu.Lock()
	now := s.opts.Clock.Now()
	if s.current == nil || !now.Before(s.current.expires) {
		u, _ := uuid.NewRandomFromReader(s.rnd)
		t := &token{value: u.String() + ":ab", expires: now.Add(s.opts.TokenTTL)}
		s.tokens[t.value] = t
		s.current = t
	}
	t := s.current
	remaining := int64(t.expires.Sub(now) / time.Second) // floor: 0 in the last second
	s.stats.Responses["ok"]++
	s.mu.Unlock()
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	s.writeJSON(w, http.StatusOK, map[string]any{
		"access_token": t.value, "token_type": "bearer", "expires_in": remaining,
		"scope": "apiuser@msisync.example",
	})
}

// endpointName names the endpoint for Stats.
func endpointName(r *http.Request) string {
	m := r.Method
	if r.URL.Query().Get("_method") == "GET" {
		m = "GET"
	}
	return m + " " + r.URL.Path
}
