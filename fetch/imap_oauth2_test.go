package fetch_test

import (
	"strings"
	"testing"
	"time"

	"popsync/configs"
	"popsync/fetch"
	"popsync/internal/credential"
	"popsync/internal/credential/oauth"
	"popsync/internal/oauthtest"
)

// An IMAP target with [account.deliver.oauth2] gets its token from
// Tokens under its own key: one Source per target key, kept apart from
// the account's, refreshed from the store; without a table its password
// source; without a token store opening it fails, naming the target.
func TestTokensIMAPTarget(t *testing.T) {
	e := newOAuthEnv(t, oauthtest.Options{AccessTTL: 30 * time.Second})
	it := &configs.IMAPTarget{Host: "imap.example.net", Port: 993, TLS: configs.TLSImplicit, User: "me",
		Auth: configs.IMAPAuthXOAuth2, Mailbox: "INBOX", SpoolDir: t.TempDir(),
		OAuth2: &configs.OAuth2{Provider: oauth.ProviderCustom, ClientID: e.as.Options().ClientID,
			TokenURL: e.as.TokenURL(), DeviceAuthURL: e.as.DeviceAuthURL(), Scopes: []string{"imap", "offline_access"},
			Service: oauth.ServiceIMAP}}
	if it.TokenKey() == e.acct.TokenKey() {
		t.Fatalf("target and account share the token key %q", it.TokenKey())
	}

	c1, err := e.tokens.TargetCredential(e.acct, it)
	if err != nil {
		t.Fatal(err)
	}
	// No login for the target yet: its own key has no token, although
	// the account's has one.
	if _, err := c1.Secret(t.Context()); !strings.Contains(err.Error(), "popsync login "+e.acct.Name) {
		t.Fatalf("target without a token: %v", err)
	}
	// The stored token (30 s) is within the refresh margin: Secret
	// refreshes.
	c, err := e.tokens.TargetClient(e.acct, it)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.DeviceLogin(t.Context(), func(p oauth.DevicePrompt) error {
		go func() { _ = e.as.ApproveDevice(p.UserCode) }()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.Tokens().Save(t.Context(), it.TokenKey(), tok); err != nil {
		t.Fatal(err)
	}
	e.as.SetAccessTTL(time.Hour) // the refreshed token lives long
	before := e.as.Stats().Refreshes
	c2, _ := e.tokens.TargetCredential(e.acct, it)
	s1, err := c2.Secret(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	s2, err := c1.Secret(t.Context())
	if err != nil || s1 != s2 || s1 == tok.AccessToken {
		t.Fatalf("secrets %q and %q (err %v): want one refreshed token for both", s1, s2, err)
	}
	if n := e.as.Stats().Refreshes - before; n != 1 {
		t.Errorf("%d refreshes for two credentials of one target, want 1 (one Source per key)", n)
	}
	acct, err := e.tokens.Credential(e.acct)
	if err != nil {
		t.Fatal(err)
	}
	if as, err := acct.Secret(t.Context()); err != nil || as == s1 {
		t.Errorf("the account's token %q (err %v) is the target's", as, err)
	}
	if r, ok := c2.(interface{ Refreshes() bool }); !ok || !r.Refreshes() {
		t.Error("a target's token credential does not say it refreshes")
	}

	pw := *it
	pw.OAuth2 = nil
	pw.Password = credential.Source{Literal: "x"}
	if c, err := e.tokens.TargetCredential(e.acct, &pw); err != nil || c.(credential.Source).Literal != "x" {
		t.Errorf("without a table: %v, %v; want the password source", c, err)
	}

	d := configs.Deliver{Line: 7, Target: it}
	if _, err := fetch.OpenTarget(e.acct, d); err == nil || !strings.Contains(err.Error(), "deliver entry (line 7)") ||
		!strings.Contains(err.Error(), "no token store") {
		t.Errorf("OpenTarget without a token store: %v", err)
	}
	tgt, err := fetch.OpenTargetWith(e.acct, d, e.tokens.TargetCredential)
	if err != nil {
		t.Fatal(err)
	}
	tgt.Close()
}
