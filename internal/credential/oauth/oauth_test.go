package oauth_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"popsync/internal/credential/oauth"
	"popsync/internal/oauthtest"
)

const clientSecret = "client-secret-value-42"

// newClient returns a Client for the custom provider at s, over s's
// in-memory transport.
func newClient(t *testing.T, s *oauthtest.Server, store oauth.TokenStore, hc *http.Client) *oauth.Client {
	t.Helper()
	if hc == nil {
		hc = s.Client(5 * time.Second)
	}
	c, err := oauth.New(customConfig(s), oauth.Options{HTTPClient: hc, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func customConfig(s *oauthtest.Server) oauth.Config {
	return oauth.Config{
		Provider:      oauth.ProviderCustom,
		ClientID:      s.Options().ClientID,
		ClientSecret:  func(context.Context) (string, error) { return clientSecret, nil },
		AuthURL:       s.AuthURL(),
		TokenURL:      s.TokenURL(),
		DeviceAuthURL: s.DeviceAuthURL(),
		Scopes:        []string{"mail", "offline_access"},
	}
}

func serverOpts() oauthtest.Options {
	return oauthtest.Options{ClientSecret: clientSecret, Scopes: []string{"mail", "offline_access"}}
}

// deviceLogin logs in through the device flow, approving at once.
func deviceLogin(t *testing.T, s *oauthtest.Server, c *oauth.Client) oauth.Token {
	t.Helper()
	tok, err := c.DeviceLogin(t.Context(), func(p oauth.DevicePrompt) error { return s.ApproveDevice(p.UserCode) })
	if err != nil {
		t.Fatalf("device login: %v", err)
	}
	return tok
}

// assertNoSecrets fails when text contains a code or token the server
// issued, or the client secret.
func assertNoSecrets(t *testing.T, s *oauthtest.Server, text string) {
	t.Helper()
	for _, sec := range append(s.Issued(), clientSecret) {
		if strings.Contains(text, sec) {
			t.Errorf("secret %.8s... appears in %q", sec, text)
		}
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	err := oauth.Config{Provider: "custom", TokenURL: "http://mail.example.com/token", DeviceAuthURL: "ftp://x/y", Tenant: "common", Scopes: []string{"a b"}}.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	var keys []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *oauth.FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("%v is not a *FieldError", e)
		}
		keys = append(keys, fe.Key)
	}
	want := "client_id scopes tenant token_url device_auth_url"
	if got := strings.Join(keys, " "); got != want {
		t.Errorf("keys %q, want %q (all of: %v)", got, want, err)
	}
	for _, bad := range []oauth.Config{
		{ClientID: "x"},
		{ClientID: "x", Provider: "yahoo"},
		{ClientID: "x", Provider: "microsoft", Tenant: "../evil"},
		{ClientID: "x", Provider: "google", Tenant: "common"},
		{ClientID: "x", Provider: "google", TokenURL: "https://evil.example/token"},
		{ClientID: "x", Provider: "custom", TokenURL: "https://u:p@h/token", AuthURL: "https://h/a", Scopes: []string{"s"}},
		{ClientID: "x", Provider: "custom", TokenURL: "https://h/token", Scopes: []string{"s"}}, // no way to log in
		{ClientID: "x", Provider: "microsoft", Service: "smtp"},
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
	for _, good := range []oauth.Config{
		{ClientID: "x", Provider: "microsoft"},
		{ClientID: "x", Provider: "microsoft", Tenant: "contoso.onmicrosoft.com", Service: "imap"},
		{ClientID: "x", Provider: "microsoft", Tenant: "9188040d-6c67-4c5b-b112-36a304b66dad"},
		{ClientID: "x", Provider: "google"},
		{ClientID: "x", Provider: "custom", TokenURL: "http://127.0.0.1:8080/token", DeviceAuthURL: "http://[::1]:1/d", Scopes: []string{"s"}},
		{ClientID: "x", Provider: "custom", TokenURL: "https://idp.example/token", AuthURL: "https://idp.example/auth", Scopes: []string{"s"}},
	} {
		if err := good.Validate(); err != nil {
			t.Errorf("%+v: %v", good, err)
		}
	}
}

func TestProviderPresets(t *testing.T) {
	ms := oauth.Config{ClientID: "x", Provider: "microsoft", Tenant: "consumers"}
	if !ms.DeviceFlowAllowed() || !ms.BrowserFlowAllowed() {
		t.Error("microsoft must allow both flows")
	}
	c, err := oauth.New(ms, oauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Scopes(), " "); got != "https://outlook.office.com/POP.AccessAsUser.All offline_access" {
		t.Errorf("microsoft pop3 scopes %q", got)
	}
	ms.Service = oauth.ServiceIMAP
	c, _ = oauth.New(ms, oauth.Options{})
	if got := strings.Join(c.Scopes(), " "); got != "https://outlook.office.com/IMAP.AccessAsUser.All offline_access" {
		t.Errorf("microsoft imap scopes %q", got)
	}
	g := oauth.Config{ClientID: "x", Provider: "google"}
	if g.DeviceFlowAllowed() {
		t.Error("google's device flow does not take the mail scope")
	}
	c, _ = oauth.New(g, oauth.Options{})
	if got := strings.Join(c.Scopes(), " "); got != "https://mail.google.com/" {
		t.Errorf("google scopes %q", got)
	}
	if _, err := c.DeviceLogin(t.Context(), nil); !errors.Is(err, oauth.ErrFlowNotAllowed) {
		t.Errorf("google device login: %v, want ErrFlowNotAllowed", err)
	}
	if _, err := oauth.New(g, oauth.Options{HTTPClient: &http.Client{}}); err == nil {
		t.Error("a client without Timeout was accepted")
	}
}

// TestMicrosoftEndpoints checks the URLs a Microsoft login goes to, by
// catching its first request.
func TestMicrosoftEndpoints(t *testing.T) {
	var got []string
	var mu sync.Mutex
	hc := &http.Client{Timeout: time.Second, Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		got = append(got, r.URL.String())
		mu.Unlock()
		return nil, errors.New("offline")
	})}
	c, err := oauth.New(oauth.Config{ClientID: "id", Provider: "microsoft", Tenant: "organizations"}, oauth.Options{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.DeviceLogin(t.Context(), func(oauth.DevicePrompt) error { return nil })
	var te *oauth.TemporaryError
	if !errors.As(err, &te) || !te.Temporary() {
		t.Errorf("offline device login: %v, want a temporary error", err)
	}
	var authURL string
	_, err = c.BrowserLogin(t.Context(), oauth.BrowserOptions{NoBrowser: true, Timeout: time.Millisecond,
		Prompt: func(u string) error { authURL = u; return nil }})
	if !errors.Is(err, oauth.ErrLoginTimeout) {
		t.Errorf("browser login: %v, want ErrLoginTimeout", err)
	}
	if len(got) != 1 || got[0] != "https://login.microsoftonline.com/organizations/oauth2/v2.0/devicecode" {
		t.Errorf("device request went to %q", got)
	}
	u, err := url.Parse(authURL)
	if err != nil || u.Scheme+"://"+u.Host+u.Path != "https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize" {
		t.Fatalf("authorization URL %q", authURL)
	}
	q := u.Query()
	if q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43 || len(q.Get("state")) < 32 ||
		q.Get("scope") != "https://outlook.office.com/POP.AccessAsUser.All offline_access" ||
		!strings.HasPrefix(q.Get("redirect_uri"), "http://127.0.0.1:") {
		t.Errorf("authorization URL query %v", q)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestDeviceLoginPollsAtTheServersInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opts := serverOpts()
		opts.DeviceInterval = 5 * time.Second
		s := oauthtest.New(opts)
		c := newClient(t, s, nil, nil)
		start := time.Now()
		var prompt oauth.DevicePrompt
		tok, err := c.DeviceLogin(t.Context(), func(p oauth.DevicePrompt) error {
			prompt = p
			go func() {
				time.Sleep(22 * time.Second) // the user takes a while
				if err := s.ApproveDevice(p.UserCode); err != nil {
					t.Error(err)
				}
			}()
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if prompt.UserCode == "" || !strings.HasPrefix(prompt.VerificationURI, s.URL) || prompt.Expiry.IsZero() {
			t.Errorf("prompt %+v", prompt)
		}
		// Polls at 5, 10, 15, 20 (pending) and 25 s (approved at 22 s).
		if d := time.Since(start); d != 25*time.Second {
			t.Errorf("login took %v, want 25s", d)
		}
		st := s.Stats()
		if st.DevicePolls != 5 || st.SlowDowns != 0 || st.Errors["authorization_pending"] != 4 {
			t.Errorf("stats %+v", st)
		}
		if !s.AccessTokenActive(tok.AccessToken) || !s.RefreshTokenValid(tok.RefreshToken) || tok.Expiry.IsZero() {
			t.Errorf("token %v not what the server issued", tok)
		}
	})
}

func TestDeviceLoginHonoursSlowDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := oauthtest.New(serverOpts()) // interval 1 s
		s.SlowDown(2)
		c := newClient(t, s, nil, nil)
		start := time.Now()
		deviceLogin(t, s, c)
		// RFC 8628 §3.5: +5 s per slow_down: polls at 1, 1+6, 7+11 s. A
		// client that did not slow down would have been told again.
		if d := time.Since(start); d != 18*time.Second {
			t.Errorf("login took %v, want 18s", d)
		}
		if st := s.Stats(); st.DevicePolls != 3 || st.SlowDowns != 2 {
			t.Errorf("stats %+v", st)
		}
	})
}

func TestDeviceLoginFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		user func(s *oauthtest.Server, code string) error
		want error
	}{
		{"deny", func(s *oauthtest.Server, code string) error { return s.DenyDevice(code) }, oauth.ErrAccessDenied},
		{"expired by server", func(s *oauthtest.Server, code string) error { return s.ExpireDevice(code) }, oauth.ErrCodeExpired},
		{"never approved", func(*oauthtest.Server, string) error { return nil }, oauth.ErrCodeExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				opts := serverOpts()
				opts.DeviceCodeTTL = time.Minute
				s := oauthtest.New(opts)
				c := newClient(t, s, nil, nil)
				start := time.Now()
				_, err := c.DeviceLogin(t.Context(), func(p oauth.DevicePrompt) error { return tc.user(s, p.UserCode) })
				if !errors.Is(err, tc.want) {
					t.Fatalf("err %v, want %v", err, tc.want)
				}
				if d := time.Since(start); d > time.Minute {
					t.Errorf("gave up after %v, code lived 1m", d)
				}
				assertNoSecrets(t, s, err.Error())
			})
		})
	}
	t.Run("cancel", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := oauthtest.New(serverOpts())
			c := newClient(t, s, nil, nil)
			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(3500*time.Millisecond, cancel)
			_, err := c.DeviceLogin(ctx, func(oauth.DevicePrompt) error { return nil })
			if !errors.Is(err, context.Canceled) {
				t.Errorf("err %v, want context.Canceled", err)
			}
		})
	})
}

// browserLogin runs BrowserLogin against a listening server with user
// playing the browser.
func browserLogin(t *testing.T, s *oauthtest.Server, c *oauth.Client, opts oauth.BrowserOptions, user func(ctx context.Context, authURL string) (int, error)) (oauth.Token, error, string) {
	t.Helper()
	var wg sync.WaitGroup
	defer wg.Wait()
	var redirect string
	opts.Prompt = func(authURL string) error {
		u, _ := url.Parse(authURL)
		redirect = u.Query().Get("redirect_uri")
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := user(t.Context(), authURL); err != nil {
				t.Errorf("user: %v", err)
			}
		}()
		return nil
	}
	if opts.Timeout == 0 {
		opts.Timeout = 20 * time.Second
	}
	tok, err := c.BrowserLogin(t.Context(), opts)
	return tok, err, redirect
}

func TestBrowserLogin(t *testing.T) {
	s := oauthtest.Start(t, serverOpts())
	c := newClient(t, s, nil, &http.Client{Timeout: 5 * time.Second})
	opened := 0
	opts := oauth.BrowserOptions{
		Getenv: func(k string) string { return map[string]string{"WAYLAND_DISPLAY": "wayland-0"}[k] },
		Open:   func(context.Context, string) error { opened++; return errors.New("no browser here") },
	}
	tok, err, redirect := browserLogin(t, s, c, opts, s.Approve)
	if err != nil {
		t.Fatal(err)
	}
	if !s.AccessTokenActive(tok.AccessToken) || !s.RefreshTokenValid(tok.RefreshToken) {
		t.Errorf("token %v not issued by the server", tok)
	}
	if st := s.Stats(); st.CodeExchanges != 1 || st.Authorizations != 1 {
		t.Errorf("stats %+v", st)
	}
	if opened != 1 {
		t.Errorf("browser opened %d times, want 1 (a display is set)", opened)
	}
	// One request served, then the listener is gone.
	u, _ := url.Parse(redirect)
	if conn, err := net.DialTimeout("tcp", u.Host, time.Second); err == nil {
		conn.Close()
		t.Errorf("redirect listener %s still accepts connections", u.Host)
	}
}

func TestBrowserLoginOpensNothingWithoutDisplayOrWithNoBrowser(t *testing.T) {
	s := oauthtest.Start(t, serverOpts())
	c := newClient(t, s, nil, &http.Client{Timeout: 5 * time.Second})
	for _, opts := range []oauth.BrowserOptions{
		{Getenv: func(string) string { return "" }},
		{NoBrowser: true, Getenv: func(string) string { return ":0" }},
	} {
		opts.Open = func(context.Context, string) error { t.Error("a browser was started"); return nil }
		if _, err, _ := browserLogin(t, s, c, opts, s.Approve); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBrowserLoginFailures(t *testing.T) {
	s := oauthtest.Start(t, serverOpts())
	c := newClient(t, s, nil, &http.Client{Timeout: 5 * time.Second})
	base := oauth.BrowserOptions{NoBrowser: true}

	_, err, _ := browserLogin(t, s, c, base, s.Deny)
	if !errors.Is(err, oauth.ErrAccessDenied) {
		t.Errorf("deny: %v, want ErrAccessDenied", err)
	}
	_, err, _ = browserLogin(t, s, c, base, func(ctx context.Context, authURL string) (int, error) {
		status, err := s.ApproveWithState(ctx, authURL, "forged-state")
		if err == nil && status != http.StatusBadRequest {
			t.Errorf("forged redirect answered %d, want 400", status)
		}
		return status, err
	})
	if !errors.Is(err, oauth.ErrStateMismatch) {
		t.Errorf("wrong state: %v, want ErrStateMismatch", err)
	}
	if st := s.Stats(); st.CodeExchanges != 0 || st.TokenRequests != 0 {
		t.Errorf("a code was exchanged after a denial or a forged state: %+v", st)
	}
	timeout := base
	timeout.Timeout = 300 * time.Millisecond
	_, err, _ = browserLogin(t, s, c, timeout, func(context.Context, string) (int, error) { return 0, nil })
	if !errors.Is(err, oauth.ErrLoginTimeout) {
		t.Errorf("no answer: %v, want ErrLoginTimeout", err)
	}
	// A code whose verifier does not match is refused by the server, so
	// an intercepted code is useless (RFC 7636 §1).
	s.EchoGrantsInErrors(true)
	_, err, _ = browserLogin(t, s, c, base, func(ctx context.Context, authURL string) (int, error) {
		u, _ := url.Parse(authURL)
		q := u.Query()
		q.Set("code_challenge", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
		u.RawQuery = q.Encode()
		return s.Approve(ctx, u.String())
	})
	var se *oauth.LoginNeededError
	if err == nil || errors.As(err, &se) {
		t.Errorf("tampered challenge: %v, want a refused exchange", err)
	} else {
		assertNoSecrets(t, s, err.Error())
	}
}

// failingStore fails Save while fail is set.
type failingStore struct {
	oauth.MemoryStore
	mu   sync.Mutex
	fail bool
}

func (f *failingStore) Save(ctx context.Context, key string, t oauth.Token) error {
	f.mu.Lock()
	fail := f.fail
	f.mu.Unlock()
	if fail {
		return errors.New("disk full")
	}
	return f.MemoryStore.Save(ctx, key, t)
}

func TestSourceRefreshesBeforeExpiryAndSavesTheRotatedToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opts := serverOpts()
		opts.AccessTTL = 5 * time.Minute
		s := oauthtest.New(opts)
		store := &oauth.MemoryStore{}
		c := newClient(t, s, store, nil)
		first := deviceLogin(t, s, c)
		if err := store.Save(t.Context(), "k", first); err != nil {
			t.Fatal(err)
		}
		src, err := c.Source("k", "work")
		if err != nil {
			t.Fatal(err)
		}
		got, err := src.Token(t.Context())
		if err != nil || got.AccessToken != first.AccessToken {
			t.Fatalf("fresh token: %v, %v", got, err)
		}
		time.Sleep(3*time.Minute + 59*time.Second) // 61 s left: still used
		if got, _ := src.Token(t.Context()); got.AccessToken != first.AccessToken || s.Stats().Refreshes != 0 {
			t.Fatalf("refreshed with 61 s left")
		}
		time.Sleep(2 * time.Second) // 59 s left: refreshed
		second, err := src.Token(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if second.AccessToken == first.AccessToken || second.RefreshToken == first.RefreshToken || s.Stats().Refreshes != 1 {
			t.Fatalf("no refresh with rotation: %v -> %v, stats %+v", first, second, s.Stats())
		}
		if stored, _ := store.Load(t.Context(), "k"); stored != second {
			t.Errorf("store holds %v, want the handed-out %v", stored, second)
		}
		if !s.AccessTokenActive(second.AccessToken) || !s.RefreshTokenValid(second.RefreshToken) {
			t.Error("the refreshed token is not the server's")
		}
		// Using the successor retires the predecessor.
		time.Sleep(5 * time.Minute)
		third, err := src.Token(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		// The one before is kept until its successor is used (the server's
		// grace for a client that died before storing it).
		if s.RefreshTokenValid(first.RefreshToken) || !s.RefreshTokenValid(second.RefreshToken) || !s.RefreshTokenValid(third.RefreshToken) {
			t.Error("rotation did not retire the oldest refresh token")
		}
		// The TokenSource adapter hands out the same token.
		ot, err := src.TokenSource(t.Context()).Token()
		if err != nil || ot.AccessToken != third.AccessToken {
			t.Errorf("TokenSource: %v, %v", ot, err)
		}
	})
}

func TestSourceRefreshesOneKeyOnceForManyCallers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opts := serverOpts()
		opts.AccessTTL = 30 * time.Second // always within the margin
		s := oauthtest.New(opts)
		store := &oauth.MemoryStore{}
		c := newClient(t, s, store, nil)
		tok := deviceLogin(t, s, c)
		tok.Expiry = time.Now().Add(-time.Second)
		tok.AccessToken = "expired"
		_ = store.Save(t.Context(), "k", tok)
		s.SetAccessTTL(time.Hour)
		s.DelayTokenRequests(2 * time.Second) // the refreshes would overlap
		var wg sync.WaitGroup
		tokens := make([]string, 20)
		for i := range tokens {
			wg.Go(func() {
				src, _ := c.Source("k", "work")
				at, err := src.AccessToken(t.Context())
				if err != nil {
					t.Error(err)
				}
				tokens[i] = at
			})
		}
		wg.Wait()
		if n := s.Stats().Refreshes; n != 1 {
			t.Errorf("%d refreshes for 20 concurrent callers, want 1", n)
		}
		for _, at := range tokens {
			if at != tokens[0] || !s.AccessTokenActive(at) {
				t.Errorf("callers got different or bad tokens: %q", tokens)
				break
			}
		}
	})
}

func TestSourceInvalidateRefreshesOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := oauthtest.New(serverOpts())
		store := &oauth.MemoryStore{}
		c := newClient(t, s, store, nil)
		first := deviceLogin(t, s, c)
		_ = store.Save(t.Context(), "k", first)
		src, _ := c.Source("k", "work")
		s.ExpireAccessTokens() // the server stops accepting it, the client cannot know
		src.Invalidate(first.AccessToken)
		src.Invalidate(first.AccessToken)
		second, err := src.Token(t.Context())
		if err != nil || second.AccessToken == first.AccessToken || !s.AccessTokenActive(second.AccessToken) {
			t.Fatalf("after Invalidate: %v, %v", second, err)
		}
		src.Invalidate(first.AccessToken) // a late report about the old token
		if third, _ := src.Token(t.Context()); third.AccessToken != second.AccessToken {
			t.Error("invalidating an old token refreshed again")
		}
		if n := s.Stats().Refreshes; n != 1 {
			t.Errorf("%d refreshes, want 1", n)
		}
	})
}

func TestSourceLoginNeeded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := oauthtest.New(serverOpts())
		s.EchoGrantsInErrors(true)
		store := &oauth.MemoryStore{}
		c := newClient(t, s, store, nil)
		src, _ := c.Source("k", "work")
		_, err := src.Token(t.Context())
		if !errors.Is(err, oauth.ErrLoginNeeded) || !strings.Contains(err.Error(), "popsync login work") {
			t.Errorf("empty store: %v", err)
		}
		tok := deviceLogin(t, s, c)
		tok.AccessToken = ""
		_ = store.Save(t.Context(), "k", tok)
		s.RevokeAll()
		_, err = src.Token(t.Context())
		var ln *oauth.LoginNeededError
		if !errors.As(err, &ln) || ln.Name != "work" || !strings.Contains(err.Error(), "popsync login work") || !strings.Contains(err.Error(), "invalid_grant") {
			t.Fatalf("revoked grant: %v", err)
		}
		var temp interface{ Temporary() bool }
		if errors.As(err, &temp) && temp.Temporary() {
			t.Error("invalid_grant must not be temporary")
		}
		assertNoSecrets(t, s, err.Error())
		assertNoSecrets(t, s, fmt.Sprintf("%v %+v %#v %s", tok, tok, tok, tok))
	})
}

func TestSourceTemporaryFailures(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(s *oauthtest.Server)
	}{
		{"500", func(s *oauthtest.Server) { s.FailTokenRequests(1, 500) }},
		{"503", func(s *oauthtest.Server) { s.FailTokenRequests(1, 503) }},
		{"429", func(s *oauthtest.Server) { s.FailTokenRequests(1, 429) }},
		{"timeout", func(s *oauthtest.Server) { s.DelayTokenRequests(time.Minute) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := oauthtest.New(serverOpts())
				store := &oauth.MemoryStore{}
				c := newClient(t, s, store, nil) // 5 s HTTP timeout
				tok := deviceLogin(t, s, c)
				tok.AccessToken = ""
				_ = store.Save(t.Context(), "k", tok)
				src, _ := c.Source("k", "work")
				tc.setup(s)
				start := time.Now()
				_, err := src.Token(t.Context())
				var te *oauth.TemporaryError
				if !errors.As(err, &te) || !te.Temporary() || errors.Is(err, oauth.ErrLoginNeeded) {
					t.Fatalf("err %v, want a temporary error", err)
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("failure took %v, the HTTP timeout is 5s", d)
				}
				assertNoSecrets(t, s, err.Error())
				s.DelayTokenRequests(0)
				if at, err := src.AccessToken(t.Context()); err != nil || !s.AccessTokenActive(at) {
					t.Errorf("after the failure passed: %q, %v", at, err)
				}
			})
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		store := &oauth.MemoryStore{}
		_ = store.Save(t.Context(), "k", oauth.Token{RefreshToken: "rt-secret-value"})
		c, err := oauth.New(oauth.Config{Provider: "custom", ClientID: "id", TokenURL: "http://" + addr + "/token", DeviceAuthURL: "http://" + addr + "/d", Scopes: []string{"s"}},
			oauth.Options{Store: store, HTTPClient: &http.Client{Timeout: 2 * time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		src, _ := c.Source("k", "work")
		_, err = src.Token(t.Context())
		var te *oauth.TemporaryError
		if !errors.As(err, &te) || strings.Contains(err.Error(), "rt-secret-value") {
			t.Errorf("unreachable endpoint: %v, want a temporary error without the token", err)
		}
	})
}

func TestSourceKeepsAnUnsavedRotatedToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opts := serverOpts()
		opts.StrictRotation = true // the old refresh token dies at once
		s := oauthtest.New(opts)
		store := &failingStore{}
		c := newClient(t, s, store, nil)
		tok := deviceLogin(t, s, c)
		tok.AccessToken = ""
		_ = store.Save(t.Context(), "k", tok)
		src, _ := c.Source("k", "work")
		store.fail = true
		at, err := src.AccessToken(t.Context())
		if err == nil || at != "" {
			t.Fatalf("save failed but got %q, %v", at, err)
		}
		if s.RefreshTokenValid(tok.RefreshToken) {
			t.Fatal("strict rotation kept the old refresh token")
		}
		store.mu.Lock()
		store.fail = false
		store.mu.Unlock()
		at, err = src.AccessToken(t.Context())
		if err != nil || !s.AccessTokenActive(at) {
			t.Fatalf("after the store recovered: %q, %v", at, err)
		}
		if n := s.Stats().Refreshes; n != 1 {
			t.Errorf("%d refreshes, want 1: the unsaved token must be saved, not refreshed again", n)
		}
		stored, _ := store.Load(t.Context(), "k")
		if !s.RefreshTokenValid(stored.RefreshToken) {
			t.Error("the store does not hold the living refresh token")
		}
	})
}

// TestRefreshSendsScope checks the scope on refresh requests, which the
// Microsoft identity platform needs and golang.org/x/oauth2 leaves out.
func TestRefreshSendsScope(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := oauthtest.New(serverOpts())
		var bodies []string
		inner := s.Client(5 * time.Second)
		hc := &http.Client{Timeout: 5 * time.Second, Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.Body != nil {
				b, _ := io.ReadAll(r.Body)
				bodies = append(bodies, string(b))
				r.Body = io.NopCloser(strings.NewReader(string(b)))
			}
			return inner.Transport.RoundTrip(r)
		})}
		store := &oauth.MemoryStore{}
		c := newClient(t, s, store, hc)
		tok := deviceLogin(t, s, c)
		tok.AccessToken = ""
		_ = store.Save(t.Context(), "k", tok)
		src, _ := c.Source("k", "work")
		if _, err := src.Token(t.Context()); err != nil {
			t.Fatal(err)
		}
		last, _ := url.ParseQuery(bodies[len(bodies)-1])
		if last.Get("grant_type") != "refresh_token" || last.Get("scope") != "mail offline_access" || last.Get("client_secret") != clientSecret {
			t.Errorf("refresh request %v", last)
		}
	})
}

func TestBrowserLoginLocalhostRedirect(t *testing.T) {
	s := oauthtest.Start(t, serverOpts())
	c := newClient(t, s, nil, &http.Client{Timeout: 5 * time.Second})
	tok, err, redirect := browserLogin(t, s, c, oauth.BrowserOptions{NoBrowser: true, RedirectHost: "localhost"}, s.Approve)
	if err != nil || !s.AccessTokenActive(tok.AccessToken) {
		t.Fatalf("login: %v", err)
	}
	if !strings.HasPrefix(redirect, "http://localhost:") {
		t.Errorf("redirect_uri %q", redirect)
	}
	if _, err := c.BrowserLogin(t.Context(), oauth.BrowserOptions{RedirectHost: "evil.example", Prompt: func(string) error { return nil }}); err == nil {
		t.Error("a non-loopback redirect host was accepted")
	}
}

func TestTokenJSONRoundTrip(t *testing.T) {
	in := oauth.Token{AccessToken: "a", TokenType: "Bearer", RefreshToken: "r", Expiry: time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out oauth.Token
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Errorf("round trip: %s -> %v, %v", b, out, err)
	}
	b, _ = json.Marshal(oauth.Token{RefreshToken: "r"})
	if string(b) != `{"access_token":"","refresh_token":"r"}` {
		t.Errorf("zero expiry marshals as %s", b)
	}
}

func TestSourceRefreshOnceAcrossClients(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := oauthtest.New(serverOpts())
		store := &oauth.MemoryStore{}
		tok := deviceLogin(t, s, newClient(t, s, store, nil))
		tok.AccessToken = ""
		_ = store.Save(t.Context(), "k", tok)
		s.DelayTokenRequests(time.Second)
		var wg sync.WaitGroup
		for range 5 {
			wg.Go(func() {
				// A Client per poll, as a caller might make them.
				src, _ := newClient(t, s, store, nil).Source("k", "work")
				if _, err := src.Token(t.Context()); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if n := s.Stats().Refreshes; n != 1 {
			t.Errorf("%d refreshes through 5 Clients of one store, want 1", n)
		}
	})
}

// staleStore answers the first Load with an old token, as a store would
// that another process updated right after this one read it.
type staleStore struct {
	oauth.MemoryStore
	mu    sync.Mutex
	stale *oauth.Token
}

func (s *staleStore) Load(ctx context.Context, key string) (oauth.Token, error) {
	s.mu.Lock()
	st := s.stale
	s.stale = nil
	s.mu.Unlock()
	if st != nil {
		return *st, nil
	}
	return s.MemoryStore.Load(ctx, key)
}

func TestSourceRetriesWithATokenRotatedElsewhere(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opts := serverOpts()
		opts.StrictRotation = true
		s := oauthtest.New(opts)
		store := &staleStore{}
		c := newClient(t, s, store, nil)
		old := deviceLogin(t, s, c)
		old.AccessToken = ""
		_ = store.Save(t.Context(), "k", old)
		// "Another process" refreshes: the old refresh token is dead and
		// the store holds the new pair.
		src, _ := c.Source("k", "work")
		newer, err := src.Token(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		newer.AccessToken = ""
		_ = store.Save(t.Context(), "k", newer)
		store.mu.Lock()
		store.stale = &old
		store.mu.Unlock()
		got, err := src.Token(t.Context())
		if err != nil || !s.AccessTokenActive(got.AccessToken) {
			t.Fatalf("after a concurrent rotation: %v, %v", got, err)
		}
		if st := s.Stats(); st.Errors["invalid_grant"] != 1 || st.Refreshes != 2 {
			t.Errorf("stats %+v: want one invalid_grant for the stale token, then a refresh with the stored one", st)
		}
	})
}

func TestUntrustedCertificateIsNotTemporary(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	store := &oauth.MemoryStore{}
	_ = store.Save(t.Context(), "k", oauth.Token{RefreshToken: "rt-x"})
	c, err := oauth.New(oauth.Config{Provider: "custom", ClientID: "id", TokenURL: srv.URL + "/token", DeviceAuthURL: srv.URL + "/d", Scopes: []string{"s"}},
		oauth.Options{Store: store, HTTPClient: &http.Client{Timeout: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	src, _ := c.Source("k", "work")
	_, err = src.Token(t.Context())
	var temp interface{ Temporary() bool }
	if err == nil || (errors.As(err, &temp) && temp.Temporary()) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted certificate: %v, want a permanent certificate error", err)
	}
}

func TestPromptWriters(t *testing.T) {
	var b strings.Builder
	err := oauth.WriteDevicePrompt(&b)(oauth.DevicePrompt{VerificationURI: "https://microsoft.com/devicelogin", UserCode: "ABCD-EFGH", Expiry: time.Now().Add(15 * time.Minute)})
	if err != nil || b.String() != "To sign in, open https://microsoft.com/devicelogin and enter the code ABCD-EFGH (valid for 15m0s).\n" {
		t.Errorf("device prompt %q, %v", b.String(), err)
	}
	b.Reset()
	u := "https://idp.example/auth?redirect_uri=" + url.QueryEscape("http://127.0.0.1:41234/") + "&state=x"
	if err := oauth.WriteAuthURL(&b)(u); err != nil || !strings.Contains(b.String(), u) || !strings.Contains(b.String(), "ssh -L 41234:127.0.0.1:41234") {
		t.Errorf("auth URL prompt %q, %v", b.String(), err)
	}
}
