package fetch_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"popsync/configs"
	"popsync/deliver"
	"popsync/fetch"
	"popsync/internal/credential"
	"popsync/internal/credential/oauth"
	"popsync/internal/oauthtest"
	"popsync/internal/realtest"
	"popsync/state"
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

// TestIMAPTargetOAuthBearerDovecot: an imap entry with auth =
// "oauthbearer" and [account.deliver.oauth2] logs in to a real Dovecot
// (its oauth2 passdb asks the token server about every token) with SASL
// OAUTHBEARER (RFC 7628) on each of its connections, appends a batch over
// them, and, when the server refuses a token that has not expired (RFC
// 7628 §3.2.3: the error challenge), refreshes it once and appends.
func TestIMAPTargetOAuthBearerDovecot(t *testing.T) {
	realtest.Require(t, "dovecot")
	as := oauthtest.Start(t, oauthtest.Options{Username: "popsync@example.test", AccessTTL: time.Hour})
	d := realtest.StartDovecotOAuth2(t, realtest.DovecotOptions{User: "popsync@example.test", IMAP: true},
		realtest.OAuth2Passdb{IntrospectionURL: as.IntrospectionURL()})
	dir := t.TempDir()
	src := fmt.Sprintf(`[state]
path = "state.db"

[[account]]
name = "work"
host = "pop.example.net"
user = "me"
password = "p"

  [[account.deliver]]
  imap = %q
  tls_ca_file = %q
  user = %q
  auth = "oauthbearer"
  mailbox = "Bearer"
  connections = 3

  [account.deliver.oauth2]
  provider = "custom"
  client_id = %q
  token_url = %q
  device_auth_url = %q
  scopes = ["imap", "offline_access"]
`, d.IMAPTLSAddr, d.CAFile, d.User, as.Options().ClientID, as.TokenURL(), as.DeviceAuthURL())
	cfg, err := configs.Parse([]byte(src), filepath.Join(dir, "config.toml"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	acct := cfg.Accounts[0]
	entry := acct.Deliver[0]
	it := entry.Target.(*configs.IMAPTarget)
	if it.Auth != configs.IMAPAuthOAuthBearer || it.Connections != 3 {
		t.Fatalf("parsed target: auth %q, connections %d", it.Auth, it.Connections)
	}
	st, err := state.OpenSQLite(t.Context(), filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tokens := fetch.NewTokens(st.Tokens(), nil, nil)
	// The first grant, as `popsync login work` gets it for the target.
	c, err := tokens.TargetClient(acct, it)
	if err != nil {
		t.Fatal(err)
	}
	tok := deviceGrant(t, c, as)
	if err := st.Tokens().Save(t.Context(), it.TokenKey(), tok); err != nil {
		t.Fatal(err)
	}

	var sent []string
	appendBatch := func(n int) {
		t.Helper()
		tg, err := fetch.OpenTargetWith(acct, entry, tokens.TargetCredential)
		if err != nil {
			t.Fatal(err)
		}
		defer tg.Close()
		var ds []deliver.Delivery
		for i := range n {
			body := fmt.Sprintf("From: a@example.test\r\nSubject: bearer %d\r\n\r\n%s\r\n", len(sent), strings.Repeat("x", i*997))
			dd, err := tg.Begin(t.Context(), deliver.Meta{UIDL: fmt.Sprint(len(sent)), Size: int64(len(body))})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(dd, body); err != nil {
				t.Fatal(err)
			}
			if err := dd.Close(); err != nil {
				t.Fatal(err)
			}
			ds = append(ds, dd)
			sent = append(sent, body)
		}
		if err := tg.Prepare(t.Context(), ds); err != nil {
			t.Fatal(err)
		}
		if err := tg.Publish(t.Context(), ds); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	bearerLogins := func() int {
		b, err := os.ReadFile(d.LogFile)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), "imap-login: Info: Login: user=<"+d.User+">, method=OAUTHBEARER")
	}

	appendBatch(12)
	// Up to 3 connections, and as many again: the mailbox does not exist
	// yet, and a NO [TRYCREATE] instead of a literal's continuation ends
	// the connection that got it, which may be every one of them when
	// their first APPENDs went out before the first refusal came back.
	// At least one: Dovecot takes MULTIAPPEND, and the first connection
	// logged in may send the whole batch (3 commands of 4) before the
	// others are; those that find nothing left log in no more.
	if n := bearerLogins(); n < 1 || n > 6 {
		t.Errorf("%d OAUTHBEARER logins for one batch over 3 connections", n)
	}
	// A token the server no longer accepts, though it has not expired:
	// refused, invalidated, refreshed once, and the batch goes in.
	as.ExpireAccessTokens()
	before := as.Stats().Refreshes
	appendBatch(5)
	if n := as.Stats().Refreshes - before; n != 1 {
		t.Errorf("%d refreshes after the refused token, want 1", n)
	}
	msgs, _ := d.IMAPMessages(t, "Bearer")
	if len(msgs) != len(sent) {
		t.Fatalf("%d messages in the mailbox, want %d", len(msgs), len(sent))
	}
	for _, m := range msgs {
		_, rest, _ := bytes.Cut(m.Body, []byte("\r\n")) // the X-Popsync-Id field
		if !slices.Contains(sent, string(rest)) {
			t.Errorf("UID %d: %.60q was not sent (or not once)", m.UID, rest)
		}
		sent = slices.DeleteFunc(sent, func(s string) bool { return s == string(rest) })
	}
}
