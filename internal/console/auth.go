package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Sessions are stateless: the cookie is "expiry.nonce.mac", signed with a
// key derived from the admin token, so every replica that has the token
// accepts it and rotating the token ends every session. Logout also
// remembers the nonce until the session would have expired.
const (
	sessionCookie = "msisync_console"
	loginCookie   = "msisync_console_login" // double-submit token of the login form
	sessionTTL    = 12 * time.Hour
	csrfHeader    = "X-CSRF-Token"
	csrfField     = "csrf"

	// Failed logins: at most loginBurst per client address per loginWindow.
	loginBurst  = 5
	loginWindow = time.Minute
)

type auth struct {
	tokenHash [sha256.Size]byte
	key       []byte
	secure    bool
	now       func() time.Time

	mu       sync.Mutex
	revoked  map[string]time.Time // nonce → expiry
	failures map[string][]time.Time
}

func newAuth(token string, secure bool, now func() time.Time) *auth {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("msisync console session v1"))
	return &auth{tokenHash: sha256.Sum256([]byte(token)), key: m.Sum(nil), secure: secure, now: now,
		revoked: map[string]time.Time{}, failures: map[string][]time.Time{}}
}

// tokenOK compares in constant time (hashes equalise the lengths).
func (a *auth) tokenOK(t string) bool {
	h := sha256.Sum256([]byte(strings.TrimSpace(t)))
	return subtle.ConstantTimeCompare(h[:], a.tokenHash[:]) == 1
}

func (a *auth) mac(parts ...string) string {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte(strings.Join(parts, "|")))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func randomToken() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// session is a valid session's nonce and CSRF token.
type session struct {
	nonce string
	csrf  string
}

func (a *auth) newSession(w http.ResponseWriter, r *http.Request) {
	exp := strconv.FormatInt(a.now().Add(sessionTTL).Unix(), 10)
	nonce := randomToken()
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: exp + "." + nonce + "." + a.mac("session", exp, nonce),
		Path: "/console", HttpOnly: true, Secure: a.secureFor(r), SameSite: http.SameSiteStrictMode, MaxAge: int(sessionTTL.Seconds())})
}

func (a *auth) session(r *http.Request) (session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, false
	}
	parts := strings.Split(c.Value, ".")
	if len(parts) != 3 {
		return session{}, false
	}
	exp, nonce, sig := parts[0], parts[1], parts[2]
	if !hmac.Equal([]byte(sig), []byte(a.mac("session", exp, nonce))) {
		return session{}, false
	}
	e, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || a.now().Unix() >= e {
		return session{}, false
	}
	a.mu.Lock()
	_, gone := a.revoked[nonce]
	a.mu.Unlock()
	if gone {
		return session{}, false
	}
	return session{nonce: nonce, csrf: a.mac("csrf", nonce)}, true
}

func (a *auth) logout(w http.ResponseWriter, r *http.Request, s session) {
	now := a.now()
	a.mu.Lock()
	a.revoked[s.nonce] = now.Add(sessionTTL)
	for n, exp := range a.revoked {
		if now.After(exp) {
			delete(a.revoked, n)
		}
	}
	a.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/console", HttpOnly: true, Secure: a.secureFor(r),
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
}

// secureFor marks cookies Secure when configured, or when the request came
// over TLS (directly or through a proxy that says so).
func (a *auth) secureFor(r *http.Request) bool {
	return a.secure || r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// csrfOK checks a state-changing request: the CSRF token (header or form
// field) must be the session's, and a browser's Origin, when sent, must be
// this host.
func (a *auth) csrfOK(r *http.Request, s session) bool {
	if o := r.Header.Get("Origin"); o != "" {
		// Behind a proxy that rewrites Host, the browser's host is in
		// X-Forwarded-Host.
		u, err := url.Parse(o)
		if err != nil || (u.Host != r.Host && u.Host != r.Header.Get("X-Forwarded-Host")) {
			return false
		}
	}
	t := r.Header.Get(csrfHeader)
	if t == "" {
		t = r.PostFormValue(csrfField)
	}
	return t != "" && hmac.Equal([]byte(t), []byte(s.csrf))
}

// loginNonce sets the login form's double-submit cookie and returns it.
func (a *auth) loginNonce(w http.ResponseWriter, r *http.Request) string {
	n := randomToken()
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: n, Path: "/console/login", HttpOnly: true, Secure: a.secureFor(r),
		SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	return n
}

func (a *auth) loginNonceOK(r *http.Request) bool {
	c, err := r.Cookie(loginCookie)
	f := r.PostFormValue(csrfField)
	return err == nil && f != "" && hmac.Equal([]byte(c.Value), []byte(f))
}

// limited reports whether client has used up its failed logins; retry is
// how long until the oldest failure leaves the window.
func (a *auth) limited(client string) (bool, time.Duration) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	fs := a.recentLocked(client, now)
	if len(fs) < loginBurst {
		return false, 0
	}
	return true, fs[0].Add(loginWindow).Sub(now)
}

func (a *auth) failed(client string) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failures[client] = append(a.recentLocked(client, now), now)
	if len(a.failures) > 10000 { // bound memory under a spray from many addresses
		for c := range a.failures {
			if len(a.recentLocked(c, now)) == 0 {
				delete(a.failures, c)
			}
		}
	}
}

func (a *auth) recentLocked(client string, now time.Time) []time.Time {
	fs := a.failures[client]
	i := 0
	for i < len(fs) && now.Sub(fs[i]) >= loginWindow {
		i++
	}
	fs = fs[i:]
	if len(fs) == 0 {
		delete(a.failures, client)
	} else {
		a.failures[client] = fs
	}
	return fs
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
