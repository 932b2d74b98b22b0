package main

// The IMAP target with [account.deliver.oauth2], through the built
// binary: a password POP3 account delivers into a real Dovecot whose
// IMAP logins are XOAUTH2 tokens checked against the oauthtest server;
// `popsync login` obtains the target's token with the device flow.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"popsync/internal/oauthtest"
	"popsync/internal/realtest"
)

// TestIMAPTargetOAuth2: login stores the target's token, fetch appends
// with XOAUTH2, a fetch after the access token expired refreshes and
// appends again, a token the server stopped accepting is invalidated and
// replaced in the same poll, status and logout know the target, and no
// token reaches the output.
func TestIMAPTargetOAuth2(t *testing.T) {
	realtest.Require(t, "dovecot")
	e := &oauthEnv{dir: t.TempDir()}
	// Every access token expires within oauth.RefreshMargin: each use
	// after the login's refreshes first.
	e.s = oauthtest.Start(t, oauthtest.Options{Username: "popsync@example.test", AccessTTL: 2 * time.Second})
	e.d = realtest.StartDovecotOAuth2(t, realtest.DovecotOptions{User: "popsync@example.test", IMAP: true},
		realtest.OAuth2Passdb{IntrospectionURL: e.s.IntrospectionURL()})
	e.pw = realtest.StartDovecot(t, realtest.DovecotOptions{User: "home@example.test"})
	t.Cleanup(func() { e.scanLeaks(t) })

	phost, pport, _ := strings.Cut(e.pw.TLSAddr, ":")
	cfg := fmt.Sprintf(`[state]
path = "state.db"

[[account]]
name = "work"
host = %q
port = %s
tls_ca_file = %q
user = %q
password = %q
keep = false

  [[account.deliver]]
  imap = %q
  tls_ca_file = %q
  user = %q
  mailbox = "POP"

  [account.deliver.oauth2]
  provider = "custom"
  client_id = %q
  token_url = %q
  device_auth_url = %q
  scopes = ["imap", "offline_access"]
`, phost, pport, e.pw.CAFile, e.pw.User, e.pw.Password, e.d.IMAPTLSAddr, e.d.CAFile, e.d.User,
		e.s.Options().ClientID, e.s.TokenURL(), e.s.DeviceAuthURL())
	e.cfg = filepath.Join(e.dir, "config.toml")
	if err := os.WriteFile(e.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	if row := e.status(t, "work"); oauth2Field(row, "login_needed") != true ||
		!strings.Contains(fmt.Sprint(oauth2Field(row, "login_needed_reason")), "imap target "+e.d.IMAPTLSAddr) {
		t.Errorf("status before the login: %v", row["oauth2"])
	}
	e.pw.Deliver(t, []byte("From: a@example.test\r\nSubject: zero\r\n\r\nbody\r\n"))
	if r := e.popsync(t, "fetch", "-c", e.cfg); r.code == 0 || !strings.Contains(r.stderr, "popsync login work") {
		t.Errorf("fetch before the login: exit %d\n%s", r.code, r.stderr)
	}
	if n := e.pw.Count(t); n != 1 {
		t.Fatalf("the message not delivered before the login: %d on the POP3 server, want 1", n)
	}

	r := e.login(t, e.approveDevice)
	if r.code != 0 {
		t.Fatalf("login: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	want := fmt.Sprintf("work: logged in to the IMAP target %s as %s with xoauth2\n", e.d.IMAPTLSAddr, e.d.User)
	if r.stdout != want {
		t.Errorf("login printed %q, want %q", r.stdout, want)
	}
	if row := e.status(t, "work"); oauth2Field(row, "login_needed") != false || oauth2Field(row, "refresh_token") != true {
		t.Errorf("status after the login: %v", row["oauth2"])
	}

	appended := func(n int) {
		t.Helper()
		msgs, _ := e.d.IMAPMessages(t, "POP")
		if len(msgs) != n {
			t.Fatalf("%d messages in POP, want %d", len(msgs), n)
		}
		if e.pw.Count(t) != 0 {
			t.Errorf("the POP3 mailbox still holds %d messages", e.pw.Count(t))
		}
	}
	fetch := func(subject string) {
		t.Helper()
		e.pw.Deliver(t, []byte("From: a@example.test\r\nSubject: "+subject+"\r\n\r\nbody\r\n"))
		before, logins := e.s.Stats(), xoauth2Logins(t, e.d)
		r := e.popsync(t, "fetch", "-c", e.cfg, "-v")
		if r.code != 0 {
			t.Fatalf("fetch %s: exit %d\n%s", subject, r.code, r.stderr)
		}
		after := e.s.Stats()
		if after.Refreshes <= before.Refreshes || after.ActiveIntrospections <= before.ActiveIntrospections {
			t.Errorf("fetch %s: refreshes %d -> %d, active introspections %d -> %d: the expired token was not refreshed and used",
				subject, before.Refreshes, after.Refreshes, before.ActiveIntrospections, after.ActiveIntrospections)
		}
		if n := xoauth2Logins(t, e.d); n <= logins {
			t.Errorf("fetch %s: no XOAUTH2 login in Dovecot's log", subject)
		}
	}
	fetch("one")
	appended(2) // "zero", which waited for the login, and "one"
	// The token of the first fetch has expired by its own lifetime as
	// far as popsync knows (it was within the refresh margin at once).
	fetch("two")
	appended(3)

	// A token the server stops accepting although it has not expired
	// (revoked access token, skewed clocks): its refusal invalidates it
	// and the same fetch refreshes once and appends.
	e.s.SetAccessTTL(time.Hour)
	fetch("three")
	appended(4)
	e.s.ExpireAccessTokens()
	e.pw.Deliver(t, []byte("From: a@example.test\r\nSubject: four\r\n\r\nbody\r\n"))
	before := e.s.Stats().Refreshes
	r = e.popsync(t, "fetch", "-c", e.cfg, "-v")
	if r.code != 0 || !strings.Contains(r.stderr, "refused the oauth2 access token; refreshing it once") {
		t.Fatalf("fetch with a refused token: exit %d\n%s", r.code, r.stderr)
	}
	if e.s.Stats().Refreshes != before+1 {
		t.Errorf("the refused token was not refreshed once: %d refreshes, want %d", e.s.Stats().Refreshes, before+1)
	}
	appended(5)

	r = e.popsync(t, "logout", "-c", e.cfg, "work")
	if r.code != 0 || !strings.Contains(r.stdout, "work (IMAP target "+e.d.IMAPTLSAddr+"): oauth2 token deleted") {
		t.Errorf("logout: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if row := e.status(t, "work"); oauth2Field(row, "login_needed") != true {
		t.Errorf("status after logout: %v", row["oauth2"])
	}
}

// xoauth2Logins counts the XOAUTH2 logins in d's log.
func xoauth2Logins(t *testing.T, d *realtest.Dovecot) int {
	t.Helper()
	b, err := os.ReadFile(d.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "imap-login: Info: Login: user=<"+d.User+">, method=XOAUTH2")
}
