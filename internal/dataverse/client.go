// Package dataverse is the Dataverse Web API client msisync uses to read
// records (re-reads and backfill), write MSI values back, and register the
// webhook and its steps.
package dataverse

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
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/msisync/msisync/internal/clock"
)

// APIPath is the Web API root below the environment URL.
const APIPath = "/api/data/v9.2/"

// Errors callers test with errors.Is.
var (
	ErrNotFound           = errors.New("dataverse: record not found")
	ErrPreconditionFailed = errors.New("dataverse: precondition failed")
	ErrUnauthorized       = errors.New("dataverse: unauthorized")
	ErrThrottled          = errors.New("dataverse: throttled")
)

// IsNotFound reports whether err means the record does not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// Config configures a Client.
type Config struct {
	// URL is the environment, e.g. https://org.crm.dynamics.com.
	URL string
	// Token is a static bearer token (MSISYNC_DATAVERSE_TOKEN), for
	// simulators and tests. When empty, an Entra ID token is obtained with
	// a client secret (TenantID, ClientID, ClientSecret) or, without a
	// secret, DefaultAzureCredential; the scope is <URL>/.default.
	Token                            string
	TenantID, ClientID, ClientSecret string
	HTTPClient                       *http.Client
	Clock                            clock.Clock
	Logger                           *slog.Logger
	// MaxRetries bounds the retries of a throttled (429) or failed (5xx)
	// request (default 8).
	MaxRetries int
	// Sleep waits between retries (default: a timer); tests pass a hook
	// that advances a fake clock.
	Sleep func(ctx context.Context, d time.Duration) error
	// AuthorityHost is the Entra ID authority (default
	// https://login.microsoftonline.com/; sovereign clouds and the
	// simulator's token endpoint use others).
	AuthorityHost string
	// Credential overrides the token source (tests).
	Credential azcore.TokenCredential
	// MaxResponseBytes caps how much of a response is read (default
	// DefaultMaxResponseBytes): a larger one is an error, not a memory spike.
	MaxResponseBytes int64
}

// DefaultMaxResponseBytes bounds one Web API response: a page of 5000 rows
// with annotations stays far below it, a $batch of 1000 reads too.
const DefaultMaxResponseBytes = 64 << 20

// Client calls the Dataverse Web API.
type Client struct {
	base     string // https://org.crm.dynamics.com/api/data/v9.2/
	origin   string // scheme://host, for checking nextLinks
	hc       *http.Client
	clk      clock.Clock
	log      *slog.Logger
	token    string
	cred     azcore.TokenCredential
	scope    string
	authDesc string
	retries  int
	sleep    func(ctx context.Context, d time.Duration) error
	maxBody  int64
}

// New checks the configuration and returns a client. It makes no request.
func New(cfg Config) (*Client, error) {
	raw := strings.TrimRight(strings.TrimSpace(cfg.URL), "/")
	if raw == "" {
		return nil, errors.New("dataverse: URL (MSISYNC_DATAVERSE_URL) is required, e.g. https://org.crm.dynamics.com")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("dataverse: URL (MSISYNC_DATAVERSE_URL) %q is not an absolute http(s) URL like https://org.crm.dynamics.com", cfg.URL)
	}
	raw = strings.TrimSuffix(raw, strings.TrimSuffix(APIPath, "/"))
	c := &Client{base: raw + APIPath, origin: u.Scheme + "://" + u.Host, hc: cfg.HTTPClient, clk: cfg.Clock, log: cfg.Logger,
		token: cfg.Token, retries: cfg.MaxRetries, sleep: cfg.Sleep, scope: raw + "/.default", maxBody: cfg.MaxResponseBytes}
	if c.maxBody <= 0 {
		c.maxBody = DefaultMaxResponseBytes
	}
	if c.hc == nil {
		c.hc = &http.Client{Timeout: 2 * time.Minute}
	}
	if c.clk == nil {
		c.clk = clock.System{}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.retries <= 0 {
		c.retries = 8
	}
	if c.sleep == nil {
		c.sleep = sleepCtx
	}
	switch {
	case cfg.Credential != nil:
		c.cred, c.authDesc = cfg.Credential, "the configured credential"
	case cfg.Token != "":
		c.authDesc = "the static token MSISYNC_DATAVERSE_TOKEN"
	case cfg.ClientSecret != "":
		if cfg.TenantID == "" || cfg.ClientID == "" {
			return nil, errors.New("dataverse: a client secret (AZURE_CLIENT_SECRET) needs AZURE_TENANT_ID and AZURE_CLIENT_ID")
		}
		cred, err := azidentity.NewClientSecretCredential(cfg.TenantID, cfg.ClientID, cfg.ClientSecret,
			&azidentity.ClientSecretCredentialOptions{ClientOptions: identityOptions(cfg), DisableInstanceDiscovery: cfg.AuthorityHost != ""})
		if err != nil {
			return nil, fmt.Errorf("dataverse: client secret credential for client %s: %w", cfg.ClientID, err)
		}
		c.cred = cred
		c.authDesc = fmt.Sprintf("client credentials of app %s in tenant %s (AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET)", cfg.ClientID, cfg.TenantID)
	default:
		opts := &azidentity.DefaultAzureCredentialOptions{TenantID: cfg.TenantID, ClientOptions: identityOptions(cfg),
			DisableInstanceDiscovery: cfg.AuthorityHost != ""}
		cred, err := azidentity.NewDefaultAzureCredential(opts)
		if err != nil {
			return nil, fmt.Errorf("dataverse: no MSISYNC_DATAVERSE_TOKEN or AZURE_CLIENT_SECRET, and DefaultAzureCredential failed: %w", err)
		}
		c.cred = cred
		c.authDesc = "DefaultAzureCredential (no MSISYNC_DATAVERSE_TOKEN or AZURE_CLIENT_SECRET set)"
	}
	return c, nil
}

func identityOptions(cfg Config) azcore.ClientOptions {
	var o azcore.ClientOptions
	if cfg.AuthorityHost != "" {
		o.Cloud = cloud.Configuration{ActiveDirectoryAuthorityHost: cfg.AuthorityHost}
	}
	if cfg.HTTPClient != nil {
		o.Transport = cfg.HTTPClient
	}
	return o
}

// BaseURL is the Web API root the client calls.
func (c *Client) BaseURL() string { return c.base }

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) bearer(ctx context.Context) (string, error) {
	if c.cred == nil {
		return c.token, nil
	}
	tok, err := c.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{c.scope}})
	if err != nil {
		return "", fmt.Errorf("dataverse: get token for %s with %s: %w", c.scope, c.authDesc, err)
	}
	return tok.Token, nil
}

// APIError is a Web API error answer.
type APIError struct {
	Method, Path string
	Status       int
	Code         string // Dataverse error code, e.g. 0x80040217
	Message      string
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Code != "" {
		return fmt.Sprintf("dataverse: %s %s: %d %s (%s)", e.Method, e.Path, e.Status, msg, e.Code)
	}
	return fmt.Sprintf("dataverse: %s %s: %d %s", e.Method, e.Path, e.Status, msg)
}

// Is maps statuses to the package's sentinel errors.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrPreconditionFailed:
		return e.Status == http.StatusPreconditionFailed
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrThrottled:
		return e.Status == http.StatusTooManyRequests
	}
	return false
}

func parseAPIError(method, path string, status int, body []byte) *APIError {
	e := &APIError{Method: method, Path: path, Status: status}
	var env struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &env) == nil {
		e.Code, e.Message = env.Error.Code, env.Error.Message
	}
	return e
}

// request is one Web API call.
type request struct {
	method string
	target string // path below the API root, or an absolute URL (nextLink)
	header http.Header
	body   []byte
	// retryUnsafe allows retrying after a transport error or 5xx (the
	// request is idempotent).
	idempotent bool
}

// displayPath shortens a target for errors and logs.
func (c *Client) displayPath(target string) string {
	p := strings.TrimPrefix(target, c.base)
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	return p
}

// do sends a request with OData headers, retrying 429 after Retry-After and
// idempotent requests after 5xx or transport errors, and returns the
// response with its body read. Statuses ≥ 400 become *APIError.
func (c *Client) do(ctx context.Context, r request) (*http.Response, []byte, error) {
	full := r.target
	if !strings.HasPrefix(full, "http://") && !strings.HasPrefix(full, "https://") {
		full = c.base + strings.TrimPrefix(full, "/")
	} else if !strings.HasPrefix(full, c.origin+"/") {
		return nil, nil, fmt.Errorf("dataverse: refusing to send the token to %q, which is not %s", full, c.origin)
	}
	path := c.displayPath(full)
	backoff := time.Second
	var lastErr error
	for attempt := 0; ; attempt++ {
		if attempt > c.retries {
			return nil, nil, fmt.Errorf("dataverse: %s %s: gave up after %d attempts: %w", r.method, path, attempt, lastErr)
		}
		tok, err := c.bearer(ctx)
		if err != nil {
			return nil, nil, err
		}
		req, err := http.NewRequestWithContext(ctx, r.method, full, bytes.NewReader(r.body))
		if err != nil {
			return nil, nil, fmt.Errorf("dataverse: %s %s: %w", r.method, path, err)
		}
		req.Header.Set("Accept", "application/json")
		req.Header.Set("OData-MaxVersion", "4.0")
		req.Header.Set("OData-Version", "4.0")
		if r.method == http.MethodGet {
			req.Header.Set("If-None-Match", "null")
		}
		if r.body != nil {
			req.Header.Set("Content-Type", "application/json; charset=utf-8")
		}
		for k, vs := range r.header {
			req.Header[k] = vs
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := c.hc.Do(req)
		if err != nil {
			if ctx.Err() != nil || !r.idempotent {
				return nil, nil, fmt.Errorf("dataverse: %s %s: %w", r.method, path, err)
			}
			lastErr = err
			c.log.Warn("dataverse: request failed, retrying", "method", r.method, "path", path, "err", err, "wait", backoff)
			if err := c.sleep(ctx, backoff); err != nil {
				return nil, nil, fmt.Errorf("dataverse: %s %s: %w", r.method, path, err)
			}
			backoff = min(backoff*2, 30*time.Second)
			continue
		}
		limit := c.maxBody
		body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
		resp.Body.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("dataverse: %s %s: read response: %w", r.method, path, err)
		}
		if int64(len(body)) > limit {
			return nil, nil, fmt.Errorf("dataverse: %s %s: response over %d bytes (HTTP %d): ask for fewer rows or columns (odata.maxpagesize, $select)", r.method, path, limit, resp.StatusCode)
		}
		switch {
		case resp.StatusCode == http.StatusTooManyRequests:
			wait := retryAfter(resp.Header.Get("Retry-After"), c.clk.Now())
			lastErr = parseAPIError(r.method, path, resp.StatusCode, body)
			c.log.Info("dataverse: throttled, waiting Retry-After", "method", r.method, "path", path, "wait", wait)
			if err := c.sleep(ctx, wait); err != nil {
				return nil, nil, fmt.Errorf("dataverse: %s %s: %w", r.method, path, err)
			}
			continue
		case resp.StatusCode >= 500 && r.idempotent:
			lastErr = parseAPIError(r.method, path, resp.StatusCode, body)
			c.log.Warn("dataverse: server error, retrying", "method", r.method, "path", path, "status", resp.StatusCode, "wait", backoff)
			if err := c.sleep(ctx, backoff); err != nil {
				return nil, nil, fmt.Errorf("dataverse: %s %s: %w", r.method, path, err)
			}
			backoff = min(backoff*2, 30*time.Second)
			continue
		case resp.StatusCode == http.StatusUnauthorized:
			e := parseAPIError(r.method, path, resp.StatusCode, body)
			e.Message = "the bearer token was rejected; check " + c.authDesc +
				", that MSISYNC_DATAVERSE_URL is this environment, and that the app is an Application User with a security role"
			return resp, body, e
		case resp.StatusCode >= 400 && !(resp.StatusCode == http.StatusBadRequest && isMultipart(resp)):
			return resp, body, parseAPIError(r.method, path, resp.StatusCode, body)
		}
		return resp, body, nil
	}
}

func isMultipart(resp *http.Response) bool {
	return strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/")
}

// retryAfter reads Retry-After (seconds or an HTTP date); 5 s when absent.
func retryAfter(v string, now time.Time) time.Duration {
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
		return 0
	}
	return 5 * time.Second
}

// WhoAmIResult identifies the caller.
type WhoAmIResult struct {
	UserID, BusinessUnitID, OrganizationID string
}

// WhoAmI returns the caller's systemuser id: the UserId that marks changes
// msisync itself made (loop prevention for the MSI write-back).
func (c *Client) WhoAmI(ctx context.Context) (WhoAmIResult, error) {
	_, body, err := c.do(ctx, request{method: http.MethodGet, target: "WhoAmI", idempotent: true})
	if err != nil {
		return WhoAmIResult{}, err
	}
	var r struct{ UserId, BusinessUnitId, OrganizationId string }
	if err := json.Unmarshal(body, &r); err != nil {
		return WhoAmIResult{}, fmt.Errorf("dataverse: WhoAmI: decode: %w", err)
	}
	return WhoAmIResult{UserID: strings.ToLower(r.UserId), BusinessUnitID: strings.ToLower(r.BusinessUnitId), OrganizationID: strings.ToLower(r.OrganizationId)}, nil
}
