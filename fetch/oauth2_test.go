package fetch_test

import (
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"popsync/configs"
	"popsync/fetch"
	"popsync/fetch/pop3/pop3test"
	"popsync/internal/credential"
	"popsync/internal/credential/oauth"
	"popsync/internal/oauthtest"
	"popsync/schedule"
)

// oauthPollEnv is newEnv with the account switched to OAuth 2.0 against
// an in-memory oauthtest server, its tokens in the env's SQLite store.
type oauthPollEnv struct {
	*env
	as     *oauthtest.Server
	tokens *fetch.Tokens
}

func newOAuthEnv(t *testing.T, opts oauthtest.Options) *oauthPollEnv {
	t.Helper()
	e := newEnv(t, pop3test.SampleMessages(2, 61), pop3test.Config{})
	as := oauthtest.New(opts)
	e.acct.Password = credential.Source{}
	e.acct.Auth = configs.AuthXOAuth2
	e.acct.OAuth2 = &configs.OAuth2{Provider: oauth.ProviderCustom, ClientID: as.Options().ClientID,
		TokenURL: as.TokenURL(), DeviceAuthURL: as.DeviceAuthURL(), Scopes: []string{"pop3", "offline_access"},
		Service: oauth.ServicePOP3}
	tokens := fetch.NewTokens(e.store.Tokens(), as.Client(10*time.Second), nil)
	e.opts.Credential = tokens.Credential
	oe := &oauthPollEnv{env: e, as: as, tokens: tokens}
	// The first grant, as `popsync login` gets it.
	c, err := tokens.Client(e.acct)
	if err != nil {
		t.Fatal(err)
	}
	tok := deviceGrant(t, c, as)
	if err := e.store.Tokens().Save(t.Context(), e.acct.TokenKey(), tok); err != nil {
		t.Fatal(err)
	}
	return oe
}

// One Source per account for the process; a changed oauth2 config gets a
// new one.
func TestTokensOneSourcePerAccount(t *testing.T) {
	e := newOAuthEnv(t, oauthtest.Options{})
	a, err := e.tokens.Source(e.acct)
	if err != nil {
		t.Fatal(err)
	}
	copyAcct := *e.acct
	b, _ := e.tokens.Source(&copyAcct)
	if a != b {
		t.Error("two Sources for one account")
	}
	changed := *e.acct
	o := *e.acct.OAuth2
	o.Scopes = []string{"pop3"}
	changed.OAuth2 = &o
	if c, _ := e.tokens.Source(&changed); c == a {
		t.Error("a changed oauth2 config kept the old Source")
	}
}

// Many polls wanting a token at once while it expires cause one refresh,
// and all get the refreshed token, which is in the store before use.
func TestTokensRefreshOnceConcurrently(t *testing.T) {
	// The stored token lives 30 s, within the 60 s margin: it needs a
	// refresh, and the refreshed one lives an hour.
	e := newOAuthEnv(t, oauthtest.Options{AccessTTL: 30 * time.Second})
	e.as.SetAccessTTL(time.Hour)
	e.as.DelayTokenRequests(100 * time.Millisecond)
	before := e.as.Stats().Refreshes
	const n = 16
	got := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cred, err := e.tokens.Credential(e.acct)
			if err != nil {
				t.Error(err)
				return
			}
			if got[i], err = cred.Secret(t.Context()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if refreshes := e.as.Stats().Refreshes - before; refreshes != 1 {
		t.Errorf("%d refreshes for %d concurrent callers, want 1", refreshes, n)
	}
	for i, g := range got {
		if g != got[0] {
			t.Errorf("caller %d got another token than caller 0", i)
		}
	}
	stored, err := e.store.Tokens().Load(t.Context(), e.acct.TokenKey())
	if err != nil {
		t.Fatal(err)
	}
	if got[n-1] == "" || !e.as.AccessTokenActive(stored.AccessToken) {
		t.Errorf("the stored token is not the active one")
	}
}

// A revoked grant: the poll fails with login needed, the account is
// marked, and the next poll fails at once without a token request or a
// connection; a new login clears it.
func TestTokensLoginNeeded(t *testing.T) {
	e := newOAuthEnv(t, oauthtest.Options{AccessTTL: 30 * time.Second})
	e.as.RevokeAll()
	r := e.poll()
	var ln *oauth.LoginNeededError
	if !errors.As(r.Err, &ln) || schedule.OutcomeOf(r.Err) != schedule.OutcomeLoginNeeded {
		t.Fatalf("revoked grant: %v (outcome %q)", r.Err, schedule.OutcomeOf(r.Err))
	}
	info, err := e.store.Tokens().Info(t.Context(), e.acct.TokenKey())
	if err != nil || !info.LoginNeeded {
		t.Fatalf("not marked: %+v, %v", info, err)
	}
	requests := e.as.Stats().TokenRequests
	r = e.poll()
	if !errors.Is(r.Err, oauth.ErrLoginNeeded) {
		t.Fatalf("second poll: %v", r.Err)
	}
	if n := e.as.Stats().TokenRequests - requests; n != 0 {
		t.Errorf("%d token requests for an account marked login needed", n)
	}
	if n := e.srv.Stats().Logins; n != 0 {
		t.Errorf("%d POP3 logins without a token", n)
	}
}

// A token endpoint that is down is a temporary failure, retried with
// backoff.
func TestTokensEndpointDownIsTemporary(t *testing.T) {
	e := newOAuthEnv(t, oauthtest.Options{AccessTTL: 30 * time.Second})
	e.as.FailTokenRequests(1, http.StatusServiceUnavailable)
	r := e.poll()
	if schedule.OutcomeOf(r.Err) != schedule.OutcomeError || !credential.IsTemporary(r.Err) {
		t.Fatalf("503 from the token endpoint: %v (outcome %q)", r.Err, schedule.OutcomeOf(r.Err))
	}
	if info, _ := e.store.Tokens().Info(t.Context(), e.acct.TokenKey()); info.LoginNeeded {
		t.Error("a temporary failure marked the account login needed")
	}
}

// An account with [account.oauth2] but no token: login needed, without a
// request.
func TestTokensNeverLoggedIn(t *testing.T) {
	e := newOAuthEnv(t, oauthtest.Options{})
	if err := e.store.Tokens().Delete(t.Context(), e.acct.TokenKey()); err != nil {
		t.Fatal(err)
	}
	requests := e.as.Stats().TokenRequests
	r := e.poll()
	if !errors.Is(r.Err, oauth.ErrLoginNeeded) {
		t.Fatalf("no token: %v", r.Err)
	}
	if e.as.Stats().TokenRequests != requests {
		t.Error("a token request without a stored token")
	}
}

// deviceGrant runs the device flow of RFC 8628 with c against as, the
// user approving the code as soon as it is shown, as `popsync login`
// gets the first grant.
func deviceGrant(t *testing.T, c *oauth.Client, as *oauthtest.Server) oauth.Token {
	t.Helper()
	var wg sync.WaitGroup
	tok, err := c.DeviceLogin(t.Context(), func(p oauth.DevicePrompt) error {
		wg.Go(func() {
			if err := as.ApproveDevice(p.UserCode); err != nil {
				t.Error(err)
			}
		})
		return nil
	})
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
