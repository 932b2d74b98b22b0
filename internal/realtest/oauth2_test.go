package realtest_test

// End-to-end OAuth 2.0 logins: tokens from the oauthtest authorization
// server, obtained through the device flow and the PKCE browser flow with
// the test playing the user, are sent by the fetch/pop3 client to a real
// Dovecot whose oauth2 passdb asks the same server's introspection
// endpoint about them.

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"popsync/fetch/pop3"
	"popsync/internal/credential/oauth"
	"popsync/internal/oauthtest"
	"popsync/internal/realtest"
)

const oauthTimeout = 15 * time.Second

// syncBuffer is a log sink for several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type oauthEnv struct {
	s     *oauthtest.Server
	d     *realtest.Dovecot
	c     *oauth.Client
	store *oauth.MemoryStore
	logs  *syncBuffer
}

func startOAuthEnv(t *testing.T, opts oauthtest.Options) *oauthEnv {
	t.Helper()
	e := &oauthEnv{store: &oauth.MemoryStore{}, logs: &syncBuffer{}}
	opts.Username = "popsync@example.test"
	e.s = oauthtest.Start(t, opts)
	e.d = realtest.StartDovecotOAuth2(t, realtest.DovecotOptions{User: opts.Username}, realtest.OAuth2Passdb{IntrospectionURL: e.s.IntrospectionURL()})
	e.d.Deliver(t, []byte("From: a@example.test\r\nSubject: one\r\n\r\nbody\r\n"), []byte("From: b@example.test\r\nSubject: two\r\n\r\nbody\r\n"))
	c, err := oauth.New(oauth.Config{
		Provider:      oauth.ProviderCustom,
		ClientID:      e.s.Options().ClientID,
		AuthURL:       e.s.AuthURL(),
		TokenURL:      e.s.TokenURL(),
		DeviceAuthURL: e.s.DeviceAuthURL(),
		Scopes:        []string{"pop3", "offline_access"},
	}, oauth.Options{
		HTTPClient: &http.Client{Timeout: oauthTimeout},
		Store:      e.store,
		Logger:     slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.c = c
	t.Cleanup(func() {
		// No token or code in anything popsync logged.
		logs := e.logs.String()
		for _, sec := range e.s.Issued() {
			if strings.Contains(logs, sec) {
				t.Errorf("secret %.10s... in the logs", sec)
			}
		}
	})
	return e
}

// pop3Login logs in to Dovecot with the token and checks the mailbox is
// there; it returns the login error.
func (e *oauthEnv) pop3Login(t *testing.T, mech, token string) error {
	t.Helper()
	ctx := t.Context()
	c, err := pop3.Dial(ctx, e.d.TLSAddr, pop3.Options{TLSConfig: e.d.TLSConfig(), Timeout: oauthTimeout,
		Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug - 8}))})
	if err != nil {
		t.Fatalf("connecting to dovecot: %v", err)
	}
	defer c.Close()
	if err := c.Auth(ctx, mech, e.d.User, token); err != nil {
		return err
	}
	n, _, err := c.Stat(ctx)
	if err != nil || n != 2 {
		t.Fatalf("STAT after %s login: %d messages, %v; want 2", mech, n, err)
	}
	if err := c.Quit(ctx); err != nil {
		t.Fatalf("QUIT: %v", err)
	}
	return nil
}

func (e *oauthEnv) mustLoginBoth(t *testing.T, token string) {
	t.Helper()
	before := e.s.Stats().ActiveIntrospections
	for _, mech := range []string{pop3.MechXOAUTH2, pop3.MechOAUTHBEARER} {
		if err := e.pop3Login(t, mech, token); err != nil {
			t.Fatalf("%s login with a fresh token: %v", mech, err)
		}
	}
	if n := e.s.Stats().ActiveIntrospections - before; n < 2 {
		t.Errorf("dovecot introspected %d active tokens for 2 logins", n)
	}
}

// deviceUser approves (or otherwise answers) the prompt from another
// goroutine, as a person on a phone would.
func deviceUser(t *testing.T, wg *sync.WaitGroup, act func(userCode string) error) func(oauth.DevicePrompt) error {
	return func(p oauth.DevicePrompt) error {
		if p.UserCode == "" || p.VerificationURI == "" {
			t.Errorf("prompt without code or URI: %+v", p)
		}
		wg.Go(func() {
			if err := act(p.UserCode); err != nil {
				t.Error(err)
			}
		})
		return nil
	}
}

func browserUser(t *testing.T, wg *sync.WaitGroup, act func(ctx context.Context, authURL string) (int, error)) oauth.BrowserOptions {
	return oauth.BrowserOptions{NoBrowser: true, Timeout: oauthTimeout, Prompt: func(authURL string) error {
		wg.Go(func() {
			if _, err := act(t.Context(), authURL); err != nil {
				t.Error(err)
			}
		})
		return nil
	}}
}

func TestDovecotOAuth2Logins(t *testing.T) {
	realtest.Require(t, "dovecot")
	e := startOAuthEnv(t, oauthtest.Options{})

	t.Run("Device", func(t *testing.T) {
		var wg sync.WaitGroup
		defer wg.Wait()
		tok, err := e.c.DeviceLogin(t.Context(), deviceUser(t, &wg, e.s.ApproveDevice))
		if err != nil {
			t.Fatal(err)
		}
		e.mustLoginBoth(t, tok.AccessToken)
	})
	t.Run("DeviceDenied", func(t *testing.T) {
		var wg sync.WaitGroup
		defer wg.Wait()
		_, err := e.c.DeviceLogin(t.Context(), deviceUser(t, &wg, e.s.DenyDevice))
		if !errors.Is(err, oauth.ErrAccessDenied) {
			t.Fatalf("err %v, want ErrAccessDenied", err)
		}
	})
	t.Run("DeviceExpired", func(t *testing.T) {
		var wg sync.WaitGroup
		defer wg.Wait()
		_, err := e.c.DeviceLogin(t.Context(), deviceUser(t, &wg, e.s.ExpireDevice))
		if !errors.Is(err, oauth.ErrCodeExpired) {
			t.Fatalf("err %v, want ErrCodeExpired", err)
		}
	})
	t.Run("Browser", func(t *testing.T) {
		var wg sync.WaitGroup
		defer wg.Wait()
		tok, err := e.c.BrowserLogin(t.Context(), browserUser(t, &wg, e.s.Approve))
		if err != nil {
			t.Fatal(err)
		}
		e.mustLoginBoth(t, tok.AccessToken)
	})
	t.Run("BrowserDenied", func(t *testing.T) {
		var wg sync.WaitGroup
		defer wg.Wait()
		_, err := e.c.BrowserLogin(t.Context(), browserUser(t, &wg, e.s.Deny))
		if !errors.Is(err, oauth.ErrAccessDenied) {
			t.Fatalf("err %v, want ErrAccessDenied", err)
		}
	})
	t.Run("BrowserWrongState", func(t *testing.T) {
		var wg sync.WaitGroup
		defer wg.Wait()
		before := e.s.Stats().CodeExchanges
		_, err := e.c.BrowserLogin(t.Context(), browserUser(t, &wg, func(ctx context.Context, u string) (int, error) {
			return e.s.ApproveWithState(ctx, u, "not-the-state")
		}))
		if !errors.Is(err, oauth.ErrStateMismatch) {
			t.Fatalf("err %v, want ErrStateMismatch", err)
		}
		if e.s.Stats().CodeExchanges != before {
			t.Error("the code of a redirect with a wrong state was exchanged")
		}
	})
	t.Run("BadTokens", func(t *testing.T) {
		for _, mech := range []string{pop3.MechXOAUTH2, pop3.MechOAUTHBEARER} {
			err := e.pop3Login(t, mech, "at-never-issued")
			var pe *pop3.Error
			if !errors.As(err, &pe) {
				t.Errorf("%s with a made-up token: %v, want the server's -ERR", mech, err)
			}
		}
		// The refusal came from the oauth2 passdb's introspection.
		if log := e.d.Log(t); !strings.Contains(log, "oauth2 failed: Introspection failed") {
			t.Errorf("dovecot log shows no oauth2 introspection failure:\n%s", log)
		}
	})
}

// waitInactive waits until the server considers at expired.
func waitInactive(t *testing.T, s *oauthtest.Server, at string) {
	t.Helper()
	deadline := time.Now().Add(oauthTimeout)
	for s.AccessTokenActive(at) {
		if time.Now().After(deadline) {
			t.Fatal("the access token did not expire")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDovecotOAuth2RefreshAndRotation logs in once, then outlives three
// access tokens: each expired one is refused by Dovecot, the Source
// refreshes (the server rotates the refresh token every time) and the new
// token logs in. Then a revoked grant asks for `popsync login`.
func TestDovecotOAuth2RefreshAndRotation(t *testing.T) {
	realtest.Require(t, "dovecot")
	e := startOAuthEnv(t, oauthtest.Options{AccessTTL: 2 * time.Second})
	var wg sync.WaitGroup
	first, err := e.c.DeviceLogin(t.Context(), deviceUser(t, &wg, e.s.ApproveDevice))
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.Save(t.Context(), "pop3 127.0.0.1 popsync@example.test", first); err != nil {
		t.Fatal(err)
	}
	src, err := e.c.Source("pop3 127.0.0.1 popsync@example.test", "work")
	if err != nil {
		t.Fatal(err)
	}
	prev := first
	refreshTokens := map[string]bool{first.RefreshToken: true}
	for i := range 3 {
		waitInactive(t, e.s, prev.AccessToken)
		mech := []string{pop3.MechXOAUTH2, pop3.MechOAUTHBEARER}[i%2]
		// The rejection a caller turns into Invalidate and one retry:
		// -ERR [AUTH] after the SASL exchange (RFC 3206 §4).
		err := e.pop3Login(t, mech, prev.AccessToken)
		var pe *pop3.Error
		if !errors.As(err, &pe) || pe.Command != "AUTH" || pe.Code != "AUTH" {
			t.Fatalf("round %d: expired token: %v, want -ERR [AUTH] to AUTH", i, err)
		}
		tok, err := src.Token(t.Context())
		if err != nil {
			t.Fatalf("round %d: refreshing: %v", i, err)
		}
		if tok.AccessToken == prev.AccessToken || refreshTokens[tok.RefreshToken] {
			t.Fatalf("round %d: no new access token or no rotation", i)
		}
		refreshTokens[tok.RefreshToken] = true
		stored, err := e.store.Load(t.Context(), "pop3 127.0.0.1 popsync@example.test")
		if err != nil || stored != tok {
			t.Fatalf("round %d: the store holds %v, not the token in use", i, stored)
		}
		if err := e.pop3Login(t, mech, tok.AccessToken); err != nil {
			// Two seconds are short: on a loaded machine the token may
			// already be near its end; one more refresh must do.
			t.Logf("round %d: %s login with the refreshed token: %v; refreshing once more", i, mech, err)
			src.Invalidate(tok.AccessToken)
			if tok, err = src.Token(t.Context()); err != nil {
				t.Fatal(err)
			}
			if err := e.pop3Login(t, mech, tok.AccessToken); err != nil {
				t.Fatalf("round %d: %s login with a refreshed token: %v", i, mech, err)
			}
		}
		prev = tok
	}
	if n := e.s.Stats().Refreshes; n < 3 {
		t.Errorf("%d refreshes for 3 expiries", n)
	}
	if e.s.RefreshTokenValid(first.RefreshToken) {
		t.Error("the first refresh token still works after rotations")
	}

	// A token that looked valid but is refused: refresh once, retry once.
	e.s.SetAccessTTL(time.Hour)
	src.Invalidate(prev.AccessToken)
	tok, err := src.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	e.s.ExpireAccessTokens()
	if err := e.pop3Login(t, pop3.MechXOAUTH2, tok.AccessToken); err == nil {
		t.Fatal("dovecot accepted a revoked access token")
	}
	src.Invalidate(tok.AccessToken)
	retry, err := src.Token(t.Context())
	if err != nil || retry.AccessToken == tok.AccessToken {
		t.Fatalf("after Invalidate: %v, %v", retry, err)
	}
	if err := e.pop3Login(t, pop3.MechXOAUTH2, retry.AccessToken); err != nil {
		t.Fatalf("retry with the refreshed token: %v", err)
	}

	// Revoked grant: login needed, with the command to run.
	e.s.RevokeAll()
	src.Invalidate(retry.AccessToken)
	_, err = src.Token(t.Context())
	if !errors.Is(err, oauth.ErrLoginNeeded) || !strings.Contains(err.Error(), "popsync login work") {
		t.Fatalf("revoked grant: %v", err)
	}
	for _, sec := range e.s.Issued() {
		if strings.Contains(err.Error(), sec) {
			t.Errorf("secret in %q", err)
		}
	}
}
