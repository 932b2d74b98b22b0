// Package oauthtest is a small but real OAuth 2.0 authorization server for
// popsync's tests: the token endpoint (RFC 6749 §3.2) with the
// authorization_code grant and PKCE verification (RFC 7636), the
// refresh_token grant with rotating refresh tokens, and the device_code
// grant (RFC 8628); the device authorization endpoint; the authorization
// endpoint, where the test plays the user (approve, deny, tamper with the
// state); token introspection (RFC 7662), which Dovecot's oauth2 passdb
// calls; and revocation (RFC 7009).
//
// Requests are form-encoded, answers are JSON, errors use the codes of
// RFC 6749 §5.2 and RFC 8628 §3.5. Access tokens expire after
// Options.AccessTTL, so tests can watch a refresh happen; counters and
// fault injection (failing or slow token requests, revoked grants) let
// them check what a client did and how it copes.
//
// A Server made with New serves only through Server.Client, in memory, so
// it can run inside a testing/synctest bubble where time is virtual;
// Start also listens on 127.0.0.1 for real clients such as Dovecot.
//
// It is not a product: it keeps everything in memory, trusts any loopback
// redirect URI, and has one user and one client.
package oauthtest

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Defaults for Options.
const (
	DefaultClientID       = "popsync-test-client"
	DefaultUsername       = "popsync@example.test"
	DefaultAccessTTL      = time.Hour
	DefaultDeviceInterval = time.Second
	DefaultDeviceCodeTTL  = 10 * time.Minute
	// codeTTL: RFC 6749 §4.1.2 recommends at most 10 minutes.
	codeTTL = 10 * time.Minute
)

// Endpoint paths.
const (
	PathAuthorize  = "/authorize"
	PathToken      = "/token"
	PathDevice     = "/devicecode"
	PathVerify     = "/device" // the page the user would open
	PathIntrospect = "/introspect"
	PathRevoke     = "/revoke"
)

// Options configure a Server.
type Options struct {
	// ClientID is the one registered client. Default DefaultClientID.
	ClientID string
	// ClientSecret, when set, makes it a confidential client that must
	// authenticate (RFC 6749 §2.3.1, Basic or in the body); empty is a
	// public client that sends only client_id.
	ClientSecret string
	// Username is the resource owner; introspection reports it as
	// "username" and "email". Default DefaultUsername.
	Username string
	// AccessTTL is the access token lifetime, in whole seconds as
	// expires_in carries it. Default DefaultAccessTTL.
	AccessTTL time.Duration
	// DeviceInterval is the polling interval the device endpoint asks
	// for (whole seconds). Default DefaultDeviceInterval.
	DeviceInterval time.Duration
	// DeviceCodeTTL is the device code lifetime. Default
	// DefaultDeviceCodeTTL.
	DeviceCodeTTL time.Duration
	// StrictRotation retires a refresh token the moment its successor is
	// issued. Without it the old one keeps working until the successor is
	// first used (a grace that real servers also give, so that a client
	// killed before it stored the successor is not locked out); reusing a
	// retired token is invalid_grant either way.
	StrictRotation bool
	// NoRotation keeps the refresh token: refresh answers carry none.
	NoRotation bool
	// Scopes the server grants; a request for another is invalid_scope.
	// Empty grants any.
	Scopes []string
}

// Stats counts what clients did.
type Stats struct {
	DeviceAuthorizations int // device codes issued
	DevicePolls          int // device_code grant requests
	SlowDowns            int // slow_down answers
	Authorizations       int // authorization requests shown to the user
	CodeExchanges        int // successful authorization_code grants
	Refreshes            int // successful refresh_token grants
	TokenRequests        int // every token endpoint request
	Introspections       int // introspection requests
	ActiveIntrospections int // of which the token was active
	Revocations          int
	// Errors counts token endpoint error answers by their error code.
	Errors map[string]int
}

type accessToken struct {
	exp     time.Time
	scope   string
	revoked bool
	family  int
}

type refreshToken struct {
	scope   string
	family  int
	retired bool
	// prev is the token this one replaced, still accepted until this one
	// is used (without StrictRotation).
	prev string
	// next is this token's successor, if any.
	next string
}

type authCode struct {
	redirectURI string
	challenge   string
	scope       string
	exp         time.Time
	used        bool
	family      int
}

type authRequest struct {
	redirectURI, state, challenge, scope string
}

type deviceGrant struct {
	userCode string
	scope    string
	exp      time.Time
	interval time.Duration
	lastPoll time.Time
	approved bool
	denied   bool
	consumed bool
}

// Server is the authorization server. Its methods are safe for concurrent
// use.
type Server struct {
	// URL is the base URL: http://127.0.0.1:PORT for a started server,
	// http://127.0.0.1 (reachable only through Client) for one from New.
	URL string

	opts     Options
	listener net.Listener
	httpSrv  *http.Server

	mu        sync.Mutex
	access    map[string]*accessToken
	refresh   map[string]*refreshToken
	codes     map[string]*authCode
	requests  map[string]*authRequest
	devices   map[string]*deviceGrant // by device_code
	userCodes map[string]string       // user_code -> device_code
	families  int
	revoked   map[int]bool // grant families revoked as a whole
	stats     Stats
	issued    []string // every token and code handed out, for leak scans

	failN      int // the next failN token requests fail with failStatus
	failStatus int
	delay      time.Duration // token endpoint answers this late
	slowDowns  int           // the next polls answer slow_down regardless
	echo       bool          // error descriptions repeat the rejected grant
}

// New returns a Server that is not listening: use Client to reach it. Its
// clock is time.Now, so inside a synctest bubble it runs on virtual time.
func New(opts Options) *Server {
	if opts.ClientID == "" {
		opts.ClientID = DefaultClientID
	}
	if opts.Username == "" {
		opts.Username = DefaultUsername
	}
	if opts.AccessTTL <= 0 {
		opts.AccessTTL = DefaultAccessTTL
	}
	if opts.DeviceInterval <= 0 {
		opts.DeviceInterval = DefaultDeviceInterval
	}
	if opts.DeviceCodeTTL <= 0 {
		opts.DeviceCodeTTL = DefaultDeviceCodeTTL
	}
	return &Server{
		URL:       "http://127.0.0.1",
		opts:      opts,
		access:    make(map[string]*accessToken),
		refresh:   make(map[string]*refreshToken),
		codes:     make(map[string]*authCode),
		requests:  make(map[string]*authRequest),
		devices:   make(map[string]*deviceGrant),
		userCodes: make(map[string]string),
		revoked:   make(map[int]bool),
		stats:     Stats{Errors: make(map[string]int)},
	}
}

// Start returns a Server listening on 127.0.0.1 (a port of its own) and
// stops it when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s := New(opts)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("oauthtest: listening: %v", err)
	}
	s.listener = l
	s.URL = "http://" + l.Addr().String()
	s.httpSrv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.httpSrv.Serve(l)
	}()
	t.Cleanup(func() {
		_ = s.httpSrv.Close()
		<-done
	})
	return s
}

// Endpoint URLs.
func (s *Server) AuthURL() string          { return s.URL + PathAuthorize }
func (s *Server) TokenURL() string         { return s.URL + PathToken }
func (s *Server) DeviceAuthURL() string    { return s.URL + PathDevice }
func (s *Server) IntrospectionURL() string { return s.URL + PathIntrospect }
func (s *Server) RevocationURL() string    { return s.URL + PathRevoke }

// Options returns the options in effect, defaults filled in.
func (s *Server) Options() Options { return s.opts }

// Client returns an HTTP client with the given timeout that reaches the
// server in memory (requests to other hosts go out normally), for servers
// from New and for synctest bubbles.
func (s *Server) Client(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &memTransport{s: s}}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case PathAuthorize:
		s.authorize(w, r)
	case PathToken:
		s.token(w, r)
	case PathDevice:
		s.deviceAuthorization(w, r)
	case PathVerify:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "oauthtest: the test approves device codes with Server.ApproveDevice")
	case PathIntrospect:
		s.introspect(w, r)
	case PathRevoke:
		s.revoke(w, r)
	default:
		http.NotFound(w, r)
	}
}

// oauthError is an error response of RFC 6749 §5.2.
type oauthError struct {
	status int
	code   string
	desc   string
}

func (s *Server) writeError(w http.ResponseWriter, e oauthError) {
	s.stats.Errors[e.code]++
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="oauthtest"`)
	}
	writeJSON(w, e.status, map[string]string{"error": e.code, "error_description": e.desc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	// RFC 6749 §5.1: token answers must not be cached.
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// parseForm accepts only POSTs with a form body (RFC 6749 §3.2,
// RFC 8628 §3.1, RFC 7662 §2.1, RFC 7009 §2.1) and rejects repeated
// parameters (RFC 6749 §3.1).
func parseForm(r *http.Request) (url.Values, *oauthError) {
	if r.Method != http.MethodPost {
		return nil, &oauthError{http.StatusMethodNotAllowed, "invalid_request", "POST required"}
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		return nil, &oauthError{http.StatusBadRequest, "invalid_request", "body must be application/x-www-form-urlencoded"}
	}
	r.Body = http.MaxBytesReader(nil, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return nil, &oauthError{http.StatusBadRequest, "invalid_request", "malformed form body"}
	}
	if len(r.URL.RawQuery) > 0 {
		return nil, &oauthError{http.StatusBadRequest, "invalid_request", "parameters belong in the body"}
	}
	for k, v := range r.PostForm {
		if len(v) > 1 {
			return nil, &oauthError{http.StatusBadRequest, "invalid_request", "parameter " + k + " repeated"}
		}
	}
	return r.PostForm, nil
}

// authenticateClient checks the client (RFC 6749 §2.3.1, §3.2.1): Basic or
// body credentials for a confidential client, client_id for a public one.
func (s *Server) authenticateClient(r *http.Request, form url.Values) *oauthError {
	user, pass, basic := r.BasicAuth()
	if basic {
		if form.Get("client_secret") != "" {
			return &oauthError{http.StatusBadRequest, "invalid_request", "more than one client authentication method"}
		}
		// RFC 6749 §2.3.1: Basic credentials are form-encoded first.
		u, err1 := url.QueryUnescape(user)
		p, err2 := url.QueryUnescape(pass)
		if err1 != nil || err2 != nil || u != s.opts.ClientID || s.opts.ClientSecret == "" ||
			subtle.ConstantTimeCompare([]byte(p), []byte(s.opts.ClientSecret)) != 1 {
			return &oauthError{http.StatusUnauthorized, "invalid_client", "client authentication failed"}
		}
		if id := form.Get("client_id"); id != "" && id != u {
			return &oauthError{http.StatusUnauthorized, "invalid_client", "client_id does not match the credentials"}
		}
		return nil
	}
	if form.Get("client_id") != s.opts.ClientID {
		return &oauthError{http.StatusUnauthorized, "invalid_client", "unknown client"}
	}
	if s.opts.ClientSecret != "" && subtle.ConstantTimeCompare([]byte(form.Get("client_secret")), []byte(s.opts.ClientSecret)) != 1 {
		return &oauthError{http.StatusUnauthorized, "invalid_client", "client authentication failed"}
	}
	return nil
}

// checkScope returns the granted scope for a requested one.
func (s *Server) checkScope(requested string) (string, *oauthError) {
	scopes := strings.Fields(requested)
	if len(s.opts.Scopes) > 0 {
		for _, sc := range scopes {
			if !slices.Contains(s.opts.Scopes, sc) {
				return "", &oauthError{http.StatusBadRequest, "invalid_scope", "scope " + sc + " is not offered"}
			}
		}
	}
	return strings.Join(scopes, " "), nil
}

// --- authorization endpoint (RFC 6749 §4.1.1, RFC 7636 §4.3) ---

func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.Method {
	case http.MethodGet:
		q := r.URL.Query()
		// §4.1.2.1: with a bad client or redirect URI the user is told,
		// never redirected.
		if q.Get("client_id") != s.opts.ClientID {
			http.Error(w, "oauthtest: unknown client_id", http.StatusBadRequest)
			return
		}
		redirect := q.Get("redirect_uri")
		if !loopbackRedirect(redirect) {
			http.Error(w, "oauthtest: redirect_uri must be http on a loopback address (RFC 8252 §7.3)", http.StatusBadRequest)
			return
		}
		fail := func(code, desc string) {
			v := url.Values{"error": {code}, "error_description": {desc}}
			if st := q.Get("state"); st != "" {
				v.Set("state", st)
			}
			http.Redirect(w, r, addQuery(redirect, v), http.StatusFound)
		}
		if q.Get("response_type") != "code" {
			fail("unsupported_response_type", "only code")
			return
		}
		// This server requires PKCE with S256 (RFC 7636 §4.4.1 lets a
		// server demand it; plain is refused).
		if q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256" {
			fail("invalid_request", "PKCE with code_challenge_method=S256 required")
			return
		}
		scope, oe := s.checkScope(q.Get("scope"))
		if oe != nil {
			fail(oe.code, oe.desc)
			return
		}
		id := randomToken("req-")
		s.requests[id] = &authRequest{redirectURI: redirect, state: q.Get("state"), challenge: q.Get("code_challenge"), scope: scope}
		s.stats.Authorizations++
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("X-Oauthtest-Request", id)
		fmt.Fprintf(w, `<!doctype html><title>oauthtest consent</title>
<form method="post" action="%s"><input type="hidden" name="request" value="%s">
<p>Allow %s to access %s (%s)?</p>
<button name="decision" value="approve">Allow</button> <button name="decision" value="deny">Deny</button></form>
`, PathAuthorize, id, html.EscapeString(s.opts.ClientID), html.EscapeString(s.opts.Username), html.EscapeString(scope))
	case http.MethodPost:
		if err := r.ParseForm(); err != nil {
			http.Error(w, "oauthtest: malformed form", http.StatusBadRequest)
			return
		}
		id := r.PostForm.Get("request")
		req, ok := s.requests[id]
		if !ok {
			http.Error(w, "oauthtest: unknown or finished authorization request", http.StatusBadRequest)
			return
		}
		delete(s.requests, id)
		v := url.Values{}
		if req.state != "" {
			v.Set("state", req.state)
		}
		if r.PostForm.Get("decision") != "approve" {
			v.Set("error", "access_denied")
			v.Set("error_description", "the user denied the request")
			http.Redirect(w, r, addQuery(req.redirectURI, v), http.StatusFound)
			return
		}
		code := randomToken("code-")
		s.families++
		s.codes[code] = &authCode{redirectURI: req.redirectURI, challenge: req.challenge, scope: req.scope, exp: time.Now().Add(codeTTL), family: s.families}
		s.issued = append(s.issued, code)
		v.Set("code", code)
		http.Redirect(w, r, addQuery(req.redirectURI, v), http.StatusFound)
	default:
		http.Error(w, "oauthtest: GET or POST", http.StatusMethodNotAllowed)
	}
}

func loopbackRedirect(s string) bool {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" || u.Fragment != "" || u.User != nil {
		return false
	}
	h := u.Hostname()
	ip := net.ParseIP(h)
	return h == "localhost" || ip != nil && ip.IsLoopback()
}

func addQuery(base string, v url.Values) string {
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + v.Encode()
}

// --- device authorization endpoint (RFC 8628 §3.1, §3.2) ---

func (s *Server) deviceAuthorization(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	form, oe := parseForm(r)
	if oe == nil {
		oe = s.authenticateClient(r, form)
	}
	if oe != nil {
		s.writeError(w, *oe)
		return
	}
	scope, oe := s.checkScope(form.Get("scope"))
	if oe != nil {
		s.writeError(w, *oe)
		return
	}
	dc := randomToken("dc-")
	uc := userCode()
	s.devices[dc] = &deviceGrant{userCode: uc, scope: scope, exp: time.Now().Add(s.opts.DeviceCodeTTL), interval: s.opts.DeviceInterval}
	s.userCodes[uc] = dc
	s.issued = append(s.issued, dc)
	s.stats.DeviceAuthorizations++
	writeJSON(w, http.StatusOK, map[string]any{
		"device_code":               dc,
		"user_code":                 uc,
		"verification_uri":          s.URL + PathVerify,
		"verification_uri_complete": s.URL + PathVerify + "?user_code=" + url.QueryEscape(uc),
		"expires_in":                int(s.opts.DeviceCodeTTL / time.Second),
		"interval":                  int(s.opts.DeviceInterval / time.Second),
	})
}

// --- token endpoint (RFC 6749 §3.2, §4.1.3, §6; RFC 7636 §4.5; RFC 8628 §3.4) ---

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	delay := s.delay
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.TokenRequests++
	if s.failN > 0 {
		s.failN--
		code := "server_error"
		if s.failStatus == http.StatusServiceUnavailable || s.failStatus == http.StatusTooManyRequests {
			code = "temporarily_unavailable"
			w.Header().Set("Retry-After", "1")
		}
		s.writeError(w, oauthError{s.failStatus, code, "injected failure"})
		return
	}
	form, oe := parseForm(r)
	if oe == nil {
		oe = s.authenticateClient(r, form)
	}
	if oe != nil {
		s.writeError(w, *oe)
		return
	}
	var resp map[string]any
	switch form.Get("grant_type") {
	case "authorization_code":
		resp, oe = s.codeGrant(form)
	case "refresh_token":
		resp, oe = s.refreshGrant(form)
	case "urn:ietf:params:oauth:grant-type:device_code":
		resp, oe = s.deviceGrant(form)
	case "":
		oe = &oauthError{http.StatusBadRequest, "invalid_request", "grant_type missing"}
	default:
		oe = &oauthError{http.StatusBadRequest, "unsupported_grant_type", "grant_type not supported"}
	}
	if oe != nil {
		s.writeError(w, *oe)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) invalidGrant(desc, grant string) *oauthError {
	if s.echo {
		desc += " (" + grant + ")"
	}
	return &oauthError{http.StatusBadRequest, "invalid_grant", desc}
}

func (s *Server) codeGrant(form url.Values) (map[string]any, *oauthError) {
	code := form.Get("code")
	c, ok := s.codes[code]
	switch {
	case !ok:
		return nil, s.invalidGrant("unknown authorization code", code)
	case c.used:
		// RFC 6749 §4.1.2: a code used twice revokes what it granted.
		s.revoked[c.family] = true
		return nil, s.invalidGrant("authorization code already used", code)
	case time.Now().After(c.exp):
		return nil, s.invalidGrant("authorization code expired", code)
	case form.Get("redirect_uri") != c.redirectURI:
		// §4.1.3: must be identical to the one in the authorization request.
		return nil, s.invalidGrant("redirect_uri differs from the authorization request", code)
	}
	c.used = true
	v := form.Get("code_verifier")
	// RFC 7636 §4.1: 43 to 128 characters of [A-Za-z0-9-._~]; §4.6: the
	// S256 of the verifier must equal the challenge.
	if len(v) < 43 || len(v) > 128 || strings.Trim(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~") != "" {
		return nil, s.invalidGrant("code_verifier missing or malformed", code)
	}
	sum := sha256.Sum256([]byte(v))
	if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(c.challenge)) != 1 {
		return nil, s.invalidGrant("code_verifier does not match the code_challenge", code)
	}
	s.stats.CodeExchanges++
	return s.issue(c.scope, c.family, ""), nil
}

func (s *Server) refreshGrant(form url.Values) (map[string]any, *oauthError) {
	rt := form.Get("refresh_token")
	t, ok := s.refresh[rt]
	if !ok || t.retired || s.revoked[t.family] {
		return nil, s.invalidGrant("refresh token unknown, revoked or already replaced", rt)
	}
	scope := t.scope
	if req := form.Get("scope"); req != "" {
		// RFC 6749 §6: the scope may not exceed the original grant.
		have := strings.Fields(t.scope)
		for _, sc := range strings.Fields(req) {
			if !slices.Contains(have, sc) {
				return nil, &oauthError{http.StatusBadRequest, "invalid_scope", "scope " + sc + " exceeds the grant"}
			}
		}
		scope = strings.Join(strings.Fields(req), " ")
	}
	// Using this token proves its client stored it: its predecessor is
	// done for.
	if t.prev != "" {
		if p := s.refresh[t.prev]; p != nil {
			p.retired = true
		}
		t.prev = ""
	}
	s.stats.Refreshes++
	if s.opts.NoRotation {
		return s.issue(scope, t.family, "keep"), nil
	}
	// A successor issued earlier and never used was lost by the client:
	// it is replaced.
	if t.next != "" {
		if n := s.refresh[t.next]; n != nil {
			n.retired = true
		}
	}
	resp := s.issue(t.scope, t.family, rt)
	resp["scope"] = scope
	t.next = resp["refresh_token"].(string)
	if s.opts.StrictRotation {
		t.retired = true
	}
	return resp, nil
}

func (s *Server) deviceGrant(form url.Values) (map[string]any, *oauthError) {
	dc := form.Get("device_code")
	s.stats.DevicePolls++
	g, ok := s.devices[dc]
	if !ok || g.consumed {
		return nil, s.invalidGrant("unknown or used device code", dc)
	}
	now := time.Now()
	switch {
	case now.After(g.exp):
		return nil, &oauthError{http.StatusBadRequest, "expired_token", "the device code expired"}
	case g.denied:
		return nil, &oauthError{http.StatusBadRequest, "access_denied", "the user denied the request"}
	}
	// RFC 8628 §3.5: a client polling faster than the interval is told to
	// slow down, and the interval grows by 5 seconds.
	tooFast := !g.lastPoll.IsZero() && now.Sub(g.lastPoll) < g.interval
	g.lastPoll = now
	if s.slowDowns > 0 || tooFast {
		if s.slowDowns > 0 {
			s.slowDowns--
		}
		g.interval += 5 * time.Second
		s.stats.SlowDowns++
		return nil, &oauthError{http.StatusBadRequest, "slow_down", "polling too fast"}
	}
	if !g.approved {
		return nil, &oauthError{http.StatusBadRequest, "authorization_pending", "the user has not approved yet"}
	}
	g.consumed = true
	s.families++
	return s.issue(g.scope, s.families, ""), nil
}

// issue makes an access token and, unless keep is "keep", a refresh token
// whose predecessor is prev.
func (s *Server) issue(scope string, family int, prev string) map[string]any {
	at := randomToken("at-")
	s.access[at] = &accessToken{exp: time.Now().Add(s.opts.AccessTTL), scope: scope, family: family}
	s.issued = append(s.issued, at)
	resp := map[string]any{
		"access_token": at,
		"token_type":   "Bearer",
		"expires_in":   int(s.opts.AccessTTL / time.Second),
		"scope":        scope,
	}
	if prev == "keep" {
		return resp
	}
	rt := randomToken("rt-")
	rec := &refreshToken{scope: scope, family: family}
	if !s.opts.StrictRotation {
		rec.prev = prev
	}
	s.refresh[rt] = rec
	s.issued = append(s.issued, rt)
	resp["refresh_token"] = rt
	return resp
}

// --- introspection (RFC 7662 §2) ---

func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Introspections++
	form, oe := parseForm(r)
	if oe != nil {
		s.writeError(w, *oe)
		return
	}
	tok := form.Get("token")
	if tok == "" {
		s.writeError(w, oauthError{http.StatusBadRequest, "invalid_request", "token missing"})
		return
	}
	// §2.2: anything not active is just {"active": false}.
	if a, ok := s.access[tok]; ok && !a.revoked && !s.revoked[a.family] && time.Now().Before(a.exp) {
		s.stats.ActiveIntrospections++
		writeJSON(w, http.StatusOK, map[string]any{
			"active":     true,
			"scope":      a.scope,
			"client_id":  s.opts.ClientID,
			"username":   s.opts.Username,
			"email":      s.opts.Username,
			"sub":        s.opts.Username,
			"token_type": "Bearer",
			"exp":        a.exp.Unix(),
		})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"active": false})
}

// --- revocation (RFC 7009 §2) ---

func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	form, oe := parseForm(r)
	if oe == nil {
		oe = s.authenticateClient(r, form)
	}
	if oe != nil {
		s.writeError(w, *oe)
		return
	}
	s.stats.Revocations++
	tok := form.Get("token")
	if rt, ok := s.refresh[tok]; ok {
		// §2.1: revoking a refresh token revokes the grant's access tokens.
		s.revoked[rt.family] = true
	}
	if at, ok := s.access[tok]; ok {
		at.revoked = true
	}
	// §2.2: 200 whether or not the token was known.
	w.WriteHeader(http.StatusOK)
}

// --- playing the user and the operator ---

// ErrUnknownCode is returned for a user code the server never issued.
var ErrUnknownCode = errors.New("oauthtest: unknown user code")

func (s *Server) device(userCode string) (*deviceGrant, error) {
	dc, ok := s.userCodes[userCode]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownCode, userCode)
	}
	return s.devices[dc], nil
}

// ApproveDevice is the user entering userCode and allowing access.
func (s *Server) ApproveDevice(userCode string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := s.device(userCode)
	if err != nil {
		return err
	}
	g.approved = true
	return nil
}

// DenyDevice is the user entering userCode and refusing.
func (s *Server) DenyDevice(userCode string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := s.device(userCode)
	if err != nil {
		return err
	}
	g.denied = true
	return nil
}

// ExpireDevice ends the lifetime of userCode now.
func (s *Server) ExpireDevice(userCode string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := s.device(userCode)
	if err != nil {
		return err
	}
	g.exp = time.Now().Add(-time.Second)
	return nil
}

// SlowDown makes the next n device polls answer slow_down.
func (s *Server) SlowDown(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.slowDowns = n
}

// FailTokenRequests makes the next n token endpoint requests answer the
// HTTP status (500, 503, 429, ...) with server_error or
// temporarily_unavailable.
func (s *Server) FailTokenRequests(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failN, s.failStatus = n, status
}

// DelayTokenRequests makes the token endpoint answer d late (0 ends it).
func (s *Server) DelayTokenRequests(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// EchoGrantsInErrors makes invalid_grant descriptions repeat the rejected
// code or token, as a careless server might; clients must not pass that on.
func (s *Server) EchoGrantsInErrors(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.echo = on
}

// RevokeAll revokes every grant, as a password change or an administrator
// would: refresh tokens then get invalid_grant, access tokens introspect
// inactive.
func (s *Server) RevokeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for f := 1; f <= s.families; f++ {
		s.revoked[f] = true
	}
}

// ExpireAccessTokens makes every access token issued so far inactive, as
// if their lifetime had passed; their holders do not know.
func (s *Server) ExpireAccessTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.access {
		a.revoked = true
	}
}

// SetAccessTTL changes the lifetime of access tokens issued from now on.
func (s *Server) SetAccessTTL(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.AccessTTL = d
}

// RefreshTokenValid reports whether rt would be accepted now.
func (s *Server) RefreshTokenValid(rt string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.refresh[rt]
	return ok && !t.retired && !s.revoked[t.family]
}

// AccessTokenActive reports whether introspection would call at active.
func (s *Server) AccessTokenActive(at string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.access[at]
	return ok && !a.revoked && !s.revoked[a.family] && time.Now().Before(a.exp)
}

// Issued returns every code, device code and token the server handed out,
// for tests that scan logs and errors for leaks.
func (s *Server) Issued() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.issued)
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Errors = make(map[string]int, len(s.stats.Errors))
	for k, v := range s.stats.Errors {
		st.Errors[k] = v
	}
	return st
}

func randomToken(prefix string) string {
	b := make([]byte, 24)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail (Go 1.24+)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// userCode is eight letters without vowels or look-alikes (RFC 8628
// §6.1), as XXXX-XXXX.
func userCode() string {
	const alphabet = "BCDFGHJKLMNPQRSTVWXZ"
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	out := make([]byte, 0, 9)
	for i, c := range b {
		if i == 4 {
			out = append(out, '-')
		}
		out = append(out, alphabet[int(c)%len(alphabet)])
	}
	return string(out)
}
