package dataversesim

import (
	"crypto/subtle"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// issued tokens of the simulated Entra ID token endpoint.
type tokens struct {
	mu     sync.Mutex
	issued map[string]issuedToken
}

type issuedToken struct {
	host    string // the resource (Dataverse host) the token is for
	expires time.Time
}

// serveIdentity serves the parts of Entra ID a client-credentials client
// uses: /{tenant}/v2.0/.well-known/openid-configuration and
// /{tenant}/oauth2/v2.0/token. It reports whether the path was one of them.
func (s *Server) serveIdentity(w http.ResponseWriter, r *http.Request) bool {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) < 3 {
		return false
	}
	tenant := parts[0]
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	authority := scheme + "://" + r.Host + "/" + tenant
	switch strings.Join(parts[1:], "/") {
	case "v2.0/.well-known/openid-configuration":
		writeJSON(w, 200, jobj{{"authorization_endpoint", authority + "/oauth2/v2.0/authorize"},
			{"token_endpoint", authority + "/oauth2/v2.0/token"}, {"issuer", authority + "/v2.0"},
			{"token_endpoint_auth_methods_supported", []any{"client_secret_post", "private_key_jwt", "client_secret_basic"}},
			{"tenant_region_scope", "NA"}})
		return true
	case "oauth2/v2.0/token":
		s.serveToken(w, r, tenant)
		return true
	}
	return false
}

func tokenError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, jobj{{"error", code}, {"error_description", desc}})
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request, tenant string) {
	if err := r.ParseForm(); err != nil || r.Method != http.MethodPost {
		tokenError(w, 400, "invalid_request", "AADSTS900144: POST a form body.")
		return
	}
	f := r.PostForm
	if f.Get("grant_type") != "client_credentials" {
		tokenError(w, 400, "unsupported_grant_type", "AADSTS70003: the simulator supports client_credentials only.")
		return
	}
	if s.opts.TenantID != "" && !strings.EqualFold(tenant, s.opts.TenantID) {
		tokenError(w, 400, "invalid_request", "AADSTS90002: Tenant '"+tenant+"' not found.")
		return
	}
	id, secret := f.Get("client_id"), f.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		id, secret = u, p
	}
	if id != s.opts.ClientID || subtle.ConstantTimeCompare([]byte(secret), []byte(s.opts.ClientSecret)) != 1 || s.opts.ClientID == "" {
		tokenError(w, 401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
		return
	}
	scope := strings.TrimSpace(f.Get("scope"))
	var resource string
	for _, sc := range strings.Fields(scope) {
		if strings.HasSuffix(sc, "/.default") {
			resource = strings.TrimSuffix(sc, "/.default")
		}
	}
	u, err := url.Parse(resource)
	if resource == "" || err != nil || u.Host == "" {
		tokenError(w, 400, "invalid_scope", "AADSTS1002012: The provided value for scope "+scope+" is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.")
		return
	}
	tok := "sim." + randHex(40)
	life := s.opts.TokenLifetime
	if life == 0 {
		life = time.Hour
	}
	s.tokens.mu.Lock()
	if s.tokens.issued == nil {
		s.tokens.issued = map[string]issuedToken{}
	}
	s.tokens.issued[tok] = issuedToken{host: strings.ToLower(u.Host), expires: s.clk.Now().Add(life)}
	s.tokens.mu.Unlock()
	secs := int(life.Seconds())
	writeJSON(w, 200, jobj{{"token_type", "Bearer"}, {"expires_in", secs}, {"ext_expires_in", secs}, {"access_token", tok}})
}

// authorized checks the bearer of a Web API request: the static Options.Token,
// or a token the simulated endpoint issued for this host and not expired.
// With neither a Token nor a ClientID configured any bearer is accepted.
func (s *Server) authorized(r *http.Request) (bool, string) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return false, ""
	}
	if s.opts.Token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.opts.Token)) == 1 {
		return true, ""
	}
	s.tokens.mu.Lock()
	it, issued := s.tokens.issued[token]
	s.tokens.mu.Unlock()
	if issued {
		switch {
		case !s.clk.Now().Before(it.expires):
			return false, `error="invalid_token", error_description="The access token expired"`
		case it.host != strings.ToLower(r.Host):
			return false, `error="invalid_token", error_description="The access token is for another resource (` + it.host + `)"`
		}
		return true, ""
	}
	return s.opts.Token == "" && s.opts.ClientID == "", ""
}
