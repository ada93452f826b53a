// Package marketo is a Marketo Engage REST client for the Lead Database
// objects an MSI non-native sync writes (sales persons, companies, leads,
// opportunities, opportunity roles). It authenticates with client
// credentials, keeps every call inside Marketo's limits through a shared
// governor, retries what Marketo says may be retried, and classifies every
// error code in one place (marketotype.ClassOf).
package marketo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/marketo/marketotype"
)

// Config configures a Client. Zero values mean the defaults noted.
type Config struct {
	// BaseURL is the instance root, e.g. https://123-ABC-456.mktorest.com
	// (a trailing /rest or /identity is accepted and removed).
	BaseURL      string
	ClientID     string
	ClientSecret string

	CallsPerWindow int           // default 50 (Adobe's advice per integration), at most 100
	Window         time.Duration // default 20 s
	MaxConcurrent  int           // default 5, at most 10
	DailyQuota     int           // own daily call budget; 0 = unlimited

	HTTPClient *http.Client // default: 120 s timeout (Sync Leads may take 90 s)
	Clock      clock.Clock  // default clock.System
	Logger     *slog.Logger // default slog.Default()
	Registerer prometheus.Registerer

	MaxRetries     int           // retries of throttled/transient failures per call; default 8
	InitialBackoff time.Duration // default 1 s
	MaxBackoff     time.Duration // default 60 s
	// Sleep waits d or until ctx is done; tests replace it to drive a fake
	// clock. Default: a real timer.
	Sleep func(ctx context.Context, d time.Duration) error

	// Slots, when set, shares the governor (window, concurrency, daily
	// budget) with every msisync process using the same store; without it
	// the limits hold for this process only.
	Slots SlotStore
	// Holder names this process in the shared governor (default host/pid).
	Holder string
	// GrantCalls is how many call permits a process asks the store for at
	// once (default CallsPerWindow/10, at least 2): fewer round trips, at
	// the cost of permits idling in one process for up to 200 ms.
	GrantCalls int
	GrantTTL   time.Duration // lease of a grant; default DefaultGrantTTL
	Skew       time.Duration // clock skew tolerated between processes; default DefaultSkew
	// Priorities share the daily budget out by purpose.
	Priorities Priorities
}

// Client calls one Marketo instance. It is safe for concurrent use; all its
// calls share one governor, so create one Client per instance per process.
type Client struct {
	cfg  Config
	base string
	http *http.Client
	clk  clock.Clock
	log  *slog.Logger
	gov  *governor
	// shared replaces gov when Config.Slots is set.
	shared *sharedGovernor
	sleep  func(context.Context, time.Duration) error
	bm     *budgetMetrics

	tokMu    sync.Mutex
	tok      string
	tokUntil time.Time // use the cached token until then

	quotaMu    sync.Mutex
	quotaUntil time.Time // after a 607: no calls before this

	stats   *statsRecorder
	metrics *metrics
}

// tokenMargin: renew a token that has less than this left.
const tokenMargin = 60 * time.Second

// New validates cfg and returns a Client. The error names the bad field.
func New(cfg Config) (*Client, error) {
	if cfg.BaseURL == "" {
		return nil, errors.New("marketo: config: BaseURL is required (e.g. https://123-ABC-456.mktorest.com)")
	}
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("marketo: config: BaseURL %q is not an http(s) URL", cfg.BaseURL)
	}
	if cfg.ClientID == "" {
		return nil, errors.New("marketo: config: ClientID is required")
	}
	if cfg.ClientSecret == "" {
		return nil, errors.New("marketo: config: ClientSecret is required")
	}
	switch {
	case cfg.CallsPerWindow == 0:
		cfg.CallsPerWindow = 50
	case cfg.CallsPerWindow < 0 || cfg.CallsPerWindow > InstanceCallsPerWindow:
		return nil, fmt.Errorf("marketo: config: CallsPerWindow %d out of range 1..%d (Marketo allows %d per 20 s per instance)", cfg.CallsPerWindow, InstanceCallsPerWindow, InstanceCallsPerWindow)
	}
	switch {
	case cfg.Window == 0:
		cfg.Window = InstanceWindow
	case cfg.Window < 0:
		return nil, fmt.Errorf("marketo: config: Window %v must be positive", cfg.Window)
	}
	switch {
	case cfg.MaxConcurrent == 0:
		cfg.MaxConcurrent = 5
	case cfg.MaxConcurrent < 0 || cfg.MaxConcurrent > InstanceMaxConcurrent:
		return nil, fmt.Errorf("marketo: config: MaxConcurrent %d out of range 1..%d (Marketo allows %d concurrent calls)", cfg.MaxConcurrent, InstanceMaxConcurrent, InstanceMaxConcurrent)
	}
	if cfg.DailyQuota < 0 {
		return nil, fmt.Errorf("marketo: config: DailyQuota %d must not be negative", cfg.DailyQuota)
	}
	if cfg.MaxRetries < 0 {
		return nil, fmt.Errorf("marketo: config: MaxRetries %d must not be negative", cfg.MaxRetries)
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = 8
	}
	if cfg.InitialBackoff <= 0 {
		cfg.InitialBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 60 * time.Second
	}
	if cfg.MaxBackoff < cfg.InitialBackoff {
		return nil, fmt.Errorf("marketo: config: MaxBackoff %v is less than InitialBackoff %v", cfg.MaxBackoff, cfg.InitialBackoff)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 120 * time.Second}
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Sleep == nil {
		cfg.Sleep = defaultSleep
	}
	base := strings.TrimRight(cfg.BaseURL, "/")
	base = strings.TrimSuffix(strings.TrimSuffix(base, "/rest"), "/identity")
	c := &Client{cfg: cfg, base: base, http: cfg.HTTPClient, clk: cfg.Clock, log: cfg.Logger, sleep: cfg.Sleep,
		stats: newStatsRecorder()}
	if err := c.setupBudget(); err != nil {
		return nil, err
	}
	c.metrics, err = newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("marketo: config: Registerer: %w", err)
	}
	if c.bm, err = newBudgetMetrics(cfg.Registerer, c); err != nil {
		return nil, fmt.Errorf("marketo: config: Registerer: %w", err)
	}
	return c, nil
}

// identityResponse is the body of /identity/oauth/token.
type identityResponse struct {
	AccessToken      string      `json:"access_token"`
	TokenType        string      `json:"token_type"`
	ExpiresIn        json.Number `json:"expires_in"`
	Scope            string      `json:"scope"`
	Error            string      `json:"error"`
	ErrorDescription string      `json:"error_description"`
}

// token returns a usable access token, fetching one when the cached token
// is missing or near its end. Marketo hands back the same token with a
// shrinking expires_in until it lapses, so a token with little life left is
// used until just before it ends, and expires_in 0 means wait for the lapse
// and ask again.
func (c *Client) token(ctx context.Context, op string) (string, error) {
	c.tokMu.Lock()
	defer c.tokMu.Unlock()
	if c.tok != "" && c.clk.Now().Before(c.tokUntil) {
		return c.tok, nil
	}
	for attempt := 0; ; attempt++ {
		tok, expiresIn, err := c.fetchToken(ctx, op)
		if err != nil {
			return "", err
		}
		now := c.clk.Now()
		switch {
		case expiresIn >= 2*tokenMargin:
			c.tok, c.tokUntil = tok, now.Add(expiresIn-tokenMargin)
			return tok, nil
		case expiresIn > time.Second:
			c.tok, c.tokUntil = tok, now.Add(expiresIn-time.Second)
			return tok, nil
		case attempt >= 3:
			// Still no fresh token: use this one for a single call; 602
			// handling covers a lapse.
			c.tok, c.tokUntil = tok, now
			return tok, nil
		}
		// expires_in counts whole seconds: the token lapses within one more.
		if err := c.sleep(ctx, expiresIn+time.Second); err != nil {
			return "", &marketotype.Error{Op: op, Err: err}
		}
	}
}

// invalidate drops the cached token if it is still tok.
func (c *Client) invalidate(tok string) {
	c.tokMu.Lock()
	if c.tok == tok {
		c.tok, c.tokUntil = "", time.Time{}
	}
	c.tokMu.Unlock()
}

func (c *Client) fetchToken(ctx context.Context, op string) (string, time.Duration, error) {
	q := url.Values{"grant_type": {"client_credentials"}, "client_id": {c.cfg.ClientID},
		"client_secret": {c.cfg.ClientSecret}}
	b := backoff.WithMaxRetries(c.newBackoff(), uint64(c.cfg.MaxRetries))
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/identity/oauth/token?"+q.Encode(), nil)
		if err != nil {
			return "", 0, &marketotype.Error{Op: op + ": identity", Err: errors.New("cannot build identity request")}
		}
		c.stats.identity()
		resp, err := c.http.Do(req)
		var retryErr *marketotype.Error
		if err != nil {
			if ctx.Err() != nil {
				return "", 0, &marketotype.Error{Op: op + ": identity", Err: ctx.Err()}
			}
			// The URL holds the secret: never let it into the error.
			retryErr = &marketotype.Error{Op: op + ": identity", Err: errors.New(redactURLError(err))}
		} else {
			body, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			var ir identityResponse
			switch {
			case rerr != nil:
				retryErr = &marketotype.Error{Op: op + ": identity", Err: errors.New("reading identity response failed")}
			case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden ||
				resp.StatusCode == http.StatusBadRequest:
				_ = json.Unmarshal(body, &ir)
				msg := strings.TrimSpace(ir.Error + " " + ir.ErrorDescription)
				if msg == "" {
					msg = "bad client credentials"
				}
				return "", 0, &marketotype.Error{Op: op + ": identity (check ClientID and ClientSecret)", Code: fmt.Sprint(resp.StatusCode),
					Message: msg, HTTPStatus: resp.StatusCode}
			case resp.StatusCode >= 500:
				retryErr = &marketotype.Error{Op: op + ": identity", Code: fmt.Sprint(resp.StatusCode), HTTPStatus: resp.StatusCode}
			case resp.StatusCode != http.StatusOK:
				return "", 0, &marketotype.Error{Op: op + ": identity", Code: fmt.Sprint(resp.StatusCode), HTTPStatus: resp.StatusCode}
			default:
				if err := json.Unmarshal(body, &ir); err != nil || ir.AccessToken == "" {
					return "", 0, &marketotype.Error{Op: op + ": identity", Code: "200",
						Message: "response has no access_token", HTTPStatus: 200}
				}
				secs, _ := ir.ExpiresIn.Float64()
				return ir.AccessToken, time.Duration(secs * float64(time.Second)), nil
			}
		}
		d := b.NextBackOff()
		if d == backoff.Stop {
			return "", 0, retryErr
		}
		c.stats.retry(retryErr.Code)
		if err := c.sleep(ctx, d); err != nil {
			return "", 0, &marketotype.Error{Op: op + ": identity", Err: err}
		}
	}
}

// redactURLError keeps a network error's cause without the URL (which
// carries the client secret on identity calls).
func redactURLError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + " identity endpoint: " + ue.Err.Error()
	}
	return "identity call failed"
}

func (c *Client) newBackoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(c.cfg.InitialBackoff),
		backoff.WithMaxInterval(c.cfg.MaxBackoff),
		backoff.WithMaxElapsedTime(0), // bounded by MaxRetries instead
		backoff.WithClockProvider(c.clk),
	)
	b.Reset()
	return b
}

// envelope is Marketo's standard response body.
type envelope struct {
	RequestID     string          `json:"requestId"`
	Success       bool            `json:"success"`
	Errors        []apiError      `json:"errors"`
	Warnings      []any           `json:"warnings"`
	Result        json.RawMessage `json:"result"`
	MoreResult    bool            `json:"moreResult"`
	NextPageToken string          `json:"nextPageToken"`
}

type apiError struct {
	Code    flexString `json:"code"`
	Message string     `json:"message"`
}

// flexString accepts a JSON string or number (Marketo sends codes as
// strings, but be lenient).
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = flexString(s)
		return nil
	}
	*f = flexString(strings.TrimSpace(string(b)))
	return nil
}

// call is one REST request; body builds a fresh body for every attempt.
type call struct {
	op       string // for errors: "sync companies"
	endpoint string // for stats: "sync companies"
	method   string
	path     string // under base, e.g. /rest/v1/companies.json
	query    url.Values
	body     func() ([]byte, string) // bytes and content type; nil = no body
}

// do runs a call with token handling, the governor and retries, and
// returns the decoded envelope of a successful response.
func (c *Client) do(ctx context.Context, k call) (*envelope, error) {
	b := backoff.WithMaxRetries(c.newBackoff(), uint64(c.cfg.MaxRetries))
	reauthed := false
	for {
		if err := c.checkQuota(k.op); err != nil {
			return nil, err
		}
		env, err := c.attempt(ctx, k)
		if err == nil {
			return env, nil
		}
		var me *marketotype.Error
		if !errors.As(err, &me) {
			return nil, err // context or quota
		}
		class := me.Class()
		switch class {
		case marketotype.ClassReauth:
			if reauthed {
				return nil, err
			}
			reauthed = true
			c.stats.retry(me.Code)
			c.log.Debug("marketo: token rejected, renewing", "op", k.op, "code", me.Code)
			continue
		case marketotype.ClassQuota:
			reset := NextQuotaReset(c.clk.Now())
			c.quotaMu.Lock()
			c.quotaUntil = reset
			c.quotaMu.Unlock()
			c.log.Error("marketo: daily API quota exhausted; pausing all calls until the reset",
				"op", k.op, "reset_at", reset.Format(time.RFC3339))
			return nil, &QuotaError{Op: k.op, ResetAt: reset}
		case marketotype.ClassThrottled, marketotype.ClassTransient:
			if ctx.Err() != nil {
				return nil, &marketotype.Error{Op: k.op, Err: ctx.Err()}
			}
			d := b.NextBackOff()
			if d == backoff.Stop {
				return nil, err
			}
			c.stats.retry(me.Code)
			c.log.Debug("marketo: retrying", "op", k.op, "code", me.Code, "http_status", me.HTTPStatus, "after", d)
			if err := c.sleep(ctx, d); err != nil {
				return nil, &marketotype.Error{Op: k.op, Err: err}
			}
			continue
		default:
			return nil, err
		}
	}
}

func (c *Client) checkQuota(op string) error {
	c.quotaMu.Lock()
	defer c.quotaMu.Unlock()
	if !c.quotaUntil.IsZero() && c.clk.Now().Before(c.quotaUntil) {
		return &QuotaError{Op: op, ResetAt: c.quotaUntil}
	}
	return nil
}

// attempt sends the call once. On 601/602 it drops the token it used.
func (c *Client) attempt(ctx context.Context, k call) (*envelope, error) {
	purpose := purposeOf(ctx, k)
	var release func()
	var waited time.Duration
	var err error
	if c.shared != nil {
		release, waited, err = c.shared.acquire(ctx, k.op, purpose)
	} else {
		release, waited, err = c.gov.acquireFor(ctx, k.op, purpose)
	}
	if err != nil {
		var q *QuotaError
		if errors.As(err, &q) {
			return nil, err
		}
		return nil, &marketotype.Error{Op: k.op, Err: err}
	}
	defer release()
	c.bm.call(purpose)
	// Take the token after any wait for the window, so a short-lived token
	// cannot lapse while the call queues.
	tok, err := c.token(ctx, k.op)
	if err != nil {
		return nil, err
	}
	c.metrics.observeWait(waited)
	u := c.base + k.path
	if len(k.query) > 0 {
		u += "?" + k.query.Encode()
	}
	var rdr io.Reader
	ctype := ""
	if k.body != nil {
		var bs []byte
		bs, ctype = k.body()
		rdr = bytes.NewReader(bs)
	}
	req, err := http.NewRequestWithContext(ctx, k.method, u, rdr)
	if err != nil {
		return nil, &marketotype.Error{Op: k.op, Err: fmt.Errorf("build request: %w", err)}
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.stats.call(k.endpoint, "network")
		c.metrics.call(k.endpoint, "network")
		if ctx.Err() != nil {
			return nil, &marketotype.Error{Op: k.op, Err: ctx.Err()}
		}
		return nil, &marketotype.Error{Op: k.op, Err: err}
	}
	body, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	if rerr != nil {
		c.stats.call(k.endpoint, "network")
		c.metrics.call(k.endpoint, "network")
		return nil, &marketotype.Error{Op: k.op, Err: fmt.Errorf("read response: %w", rerr)}
	}
	if resp.StatusCode != http.StatusOK {
		code := fmt.Sprint(resp.StatusCode)
		c.stats.call(k.endpoint, "HTTP "+code)
		c.metrics.call(k.endpoint, "HTTP "+code)
		e := &marketotype.Error{Op: k.op, Code: code, HTTPStatus: resp.StatusCode, Message: http.StatusText(resp.StatusCode)}
		if resp.StatusCode == http.StatusUnauthorized {
			e.Code = "601"    // treat like an invalid token: renew once
			c.invalidate(tok) // so the retry fetches a new one instead of resending this one
		}
		return nil, e
	}
	var env envelope
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&env); err != nil {
		c.stats.call(k.endpoint, "bad-json")
		c.metrics.call(k.endpoint, "bad-json")
		// A truncated or garbled body from a proxy: worth another try.
		return nil, &marketotype.Error{Op: k.op, Err: fmt.Errorf("decode response: %w", err)}
	}
	if !env.Success {
		code, msg := "", "success:false without errors"
		if len(env.Errors) > 0 {
			code, msg = string(env.Errors[0].Code), env.Errors[0].Message
		}
		c.stats.call(k.endpoint, code)
		c.metrics.call(k.endpoint, code)
		if marketotype.ClassOf(code) == marketotype.ClassReauth {
			c.invalidate(tok)
		}
		if code == "" {
			return nil, &marketotype.Error{Op: k.op, Code: "611", Message: msg, HTTPStatus: 200}
		}
		return nil, &marketotype.Error{Op: k.op, Code: code, Message: msg, HTTPStatus: 200}
	}
	c.stats.call(k.endpoint, "ok")
	c.metrics.call(k.endpoint, "ok")
	if len(env.Warnings) > 0 {
		c.log.Warn("marketo: warnings", "op", k.op, "warnings", fmt.Sprint(env.Warnings))
	}
	return &env, nil
}
