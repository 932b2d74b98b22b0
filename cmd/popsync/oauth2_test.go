package main

// OAuth 2.0 end to end, through the built binary: `popsync login` with the
// test playing the user in the device and the browser (PKCE) flows,
// `popsync fetch` and `popsync run` logging in to a real Dovecot whose
// oauth2 passdb asks the oauthtest authorization server about each token,
// refreshes and rotations, a revoked grant, kill -9 in the middle of
// refreshes, and no token in any output.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"popsync/fetch/pop3/pop3test"
	"popsync/internal/oauthtest"
	"popsync/internal/realtest"
)

// oauthWait bounds each step of these tests (a login, a fetch).
const oauthWait = 60 * time.Second

// oauthRun is the outcome of one popsync process.
type oauthRun struct {
	code           int
	stdout, stderr string
}

// maildirCount is how many messages the Maildir dir holds.
func maildirCount(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	for _, c := range daemonMaildir(t, dir) {
		n += c
	}
	return n
}

// oauthEnv is an authorization server, a Dovecot that trusts it, a
// second Dovecot with a password account, and a config naming both.
type oauthEnv struct {
	s       *oauthtest.Server
	d       *realtest.Dovecot // oauth2 passdb: account "work"
	pw      *realtest.Dovecot // password: account "home"
	dir     string
	cfg     string
	maildir string // of "work"
	homeDir string // Maildir of "home"

	mu  sync.Mutex
	out bytes.Buffer // every byte popsync printed, for the leak scan
}

func startOAuth2Env(t *testing.T, opts oauthtest.Options, auth string) *oauthEnv {
	t.Helper()
	realtest.Require(t, "dovecot")
	opts.Username = "popsync@example.test"
	e := &oauthEnv{dir: t.TempDir()}
	e.s = oauthtest.Start(t, opts)
	// Killed clients leave sessions behind until Dovecot notices.
	e.d = realtest.StartDovecotOAuth2(t, realtest.DovecotOptions{User: opts.Username, Config: "mail_max_userip_connections = 100000"},
		realtest.OAuth2Passdb{IntrospectionURL: e.s.IntrospectionURL()})
	e.pw = realtest.StartDovecot(t, realtest.DovecotOptions{User: "home@example.test"})
	e.maildir = filepath.Join(e.dir, "Maildir")
	e.homeDir = filepath.Join(e.dir, "Home")
	e.writeConfig(t, auth, "")
	t.Cleanup(func() { e.scanLeaks(t) })
	return e
}

func (e *oauthEnv) writeConfig(t *testing.T, auth, extra string) {
	t.Helper()
	host, port, _ := strings.Cut(e.d.TLSAddr, ":")
	phost, pport, _ := strings.Cut(e.pw.TLSAddr, ":")
	cfg := fmt.Sprintf(`[state]
path = "state.db"

[daemon]
max_parallel = 2
%s

[[account]]
name = "work"
host = %q
port = %s
tls_ca_file = %q
user = %q
auth = %q
keep = false
schedule = "@every 1s"

  [account.oauth2]
  provider = "custom"
  client_id = %q
  auth_url = %q
  token_url = %q
  device_auth_url = %q
  scopes = ["pop3", "offline_access"]

  [[account.deliver]]
  maildir = %q

[[account]]
name = "home"
host = %q
port = %s
tls_ca_file = %q
user = %q
password = %q
keep = false
schedule = "@every 1s"

  [[account.deliver]]
  maildir = %q
`, extra, host, port, e.d.CAFile, e.d.User, auth, e.s.Options().ClientID, e.s.AuthURL(), e.s.TokenURL(), e.s.DeviceAuthURL(),
		e.maildir, phost, pport, e.pw.CAFile, e.pw.User, e.pw.Password, e.homeDir)
	e.cfg = filepath.Join(e.dir, "config.toml")
	if err := os.WriteFile(e.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (e *oauthEnv) record(b []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.out.Write(b)
}

// scanLeaks fails if any code or token the server issued is in anything
// popsync printed.
func (e *oauthEnv) scanLeaks(t *testing.T) {
	e.mu.Lock()
	out := e.out.String()
	e.mu.Unlock()
	issued := e.s.Issued()
	for _, sec := range issued {
		if strings.Contains(out, sec) {
			t.Errorf("popsync printed a secret the server issued: %.12s...", sec)
		}
	}
	t.Logf("leak scan: %d issued codes and tokens, %d bytes of output", len(issued), len(out))
}

// popsync runs the binary and records its output for the leak scan.
func (e *oauthEnv) popsync(t *testing.T, args ...string) oauthRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), oauthWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, daemonBinary(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	e.record(out.Bytes())
	e.record(errb.Bytes())
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return oauthRun{code, out.String(), errb.String()}
}

var (
	deviceCodeRe = regexp.MustCompile(`enter the code ([A-Z0-9-]+)`)
	authURLRe    = regexp.MustCompile(`^\s+(http://\S+)$`)
)

// login runs `popsync login` and plays the user: act gets the user code
// (device flow) or the authorization URL (browser flow) once popsync
// printed it.
func (e *oauthEnv) login(t *testing.T, act func(prompt string) error, flags ...string) oauthRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), oauthWait)
	defer cancel()
	args := append([]string{"login", "-c", e.cfg, "work"}, flags...)
	cmd := exec.CommandContext(ctx, daemonBinary(t), args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	prompted := false
	var wg sync.WaitGroup
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		line := sc.Text()
		errb.WriteString(line + "\n")
		var prompt string
		if m := deviceCodeRe.FindStringSubmatch(line); m != nil {
			prompt = m[1]
		} else if m := authURLRe.FindStringSubmatch(line); m != nil {
			prompt = m[1]
		}
		if prompt != "" && !prompted {
			prompted = true
			wg.Go(func() {
				if err := act(prompt); err != nil {
					t.Errorf("playing the user: %v", err)
				}
			})
		}
	}
	err = cmd.Wait()
	wg.Wait()
	e.record(out.Bytes())
	e.record(errb.Bytes())
	if !prompted {
		t.Errorf("popsync login printed no prompt:\n%s", errb.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return oauthRun{code, out.String(), errb.String()}
}

func (e *oauthEnv) approveDevice(code string) error { return e.s.ApproveDevice(code) }

func (e *oauthEnv) approveBrowser(u string) error {
	status, err := e.s.Approve(context.Background(), u)
	if err == nil && status != 200 {
		err = fmt.Errorf("the loopback listener answered %d", status)
	}
	return err
}

// status runs `popsync status --json` and returns the row of account.
func (e *oauthEnv) status(t *testing.T, account string) map[string]any {
	t.Helper()
	r := e.popsync(t, "status", "-c", e.cfg, "--json")
	if r.code != 0 {
		t.Fatalf("status: exit %d: %s", r.code, r.stderr)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	for _, row := range rows {
		if row["account"] == account {
			return row
		}
	}
	t.Fatalf("status has no row for %s:\n%s", account, r.stdout)
	return nil
}

func oauth2Field(row map[string]any, key string) any {
	o, _ := row["oauth2"].(map[string]any)
	return o[key]
}

// TestLoginDevice drives `popsync login --device` with the user
// approving, denying and letting the code expire, with XOAUTH2.
func TestLoginDevice(t *testing.T) {
	e := startOAuth2Env(t, oauthtest.Options{}, "xoauth2")
	e.d.Deliver(t, []byte("From: a@example.test\r\nSubject: one\r\n\r\nbody\r\n"))

	t.Run("Denied", func(t *testing.T) {
		r := e.login(t, e.s.DenyDevice, "--device", "-v")
		if r.code != exitAuth || !strings.Contains(r.stderr, "authorization denied") {
			t.Fatalf("denied: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if row := e.status(t, "work"); oauth2Field(row, "login_needed") != true {
			t.Errorf("status after a denied first login: %v", row["oauth2"])
		}
	})
	t.Run("Expired", func(t *testing.T) {
		r := e.login(t, e.s.ExpireDevice, "--device")
		if r.code != exitAuth || !strings.Contains(r.stderr, "device code expired") {
			t.Fatalf("expired: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("Approved", func(t *testing.T) {
		before := e.s.Stats().ActiveIntrospections
		// The default for a provider with a device endpoint is the device flow.
		r := e.login(t, e.approveDevice, "-v", "--trace")
		if r.code != 0 {
			t.Fatalf("login: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		t.Logf("popsync login --trace:\n%s%s", r.stderr, r.stdout)
		want := fmt.Sprintf("work: logged in to %s as %s with xoauth2: 1 messages", e.d.TLSAddr, e.d.User)
		if !strings.HasPrefix(r.stdout, want) || strings.Count(r.stdout, "\n") != 1 {
			t.Errorf("login result %q, want one line starting %q", r.stdout, want)
		}
		if e.s.Stats().ActiveIntrospections <= before {
			t.Error("Dovecot did not introspect the new token")
		}
		row := e.status(t, "work")
		if oauth2Field(row, "login_needed") != false || oauth2Field(row, "refresh_token") != true || oauth2Field(row, "token_valid_until") == nil {
			t.Errorf("status after login: %v", row["oauth2"])
		}
		// check --connect logs in with the stored token too.
		if r := e.popsync(t, "check", "--connect", "-c", e.cfg, "work", "--trace"); r.code != 0 || !strings.Contains(r.stdout, "auth xoauth2; 1 messages") {
			t.Errorf("check --connect: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		// The test login changed nothing: fetch gets the message.
		if r := e.popsync(t, "fetch", "-c", e.cfg, "-v"); r.code != 0 {
			t.Fatalf("fetch: exit %d\n%s", r.code, r.stderr)
		}
		if n := maildirCount(t, e.maildir); n != 1 {
			t.Errorf("%d messages fetched, want 1", n)
		}
	})
	t.Run("Logout", func(t *testing.T) {
		r := e.popsync(t, "logout", "-c", e.cfg, "work")
		if r.code != 0 || !strings.Contains(r.stdout, "oauth2 token deleted") {
			t.Fatalf("logout: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		r = e.popsync(t, "fetch", "-c", e.cfg, "--account", "work")
		if r.code != exitAuth || !strings.Contains(r.stderr, "popsync login work") {
			t.Errorf("fetch after logout: exit %d\n%s", r.code, r.stderr)
		}
	})
}

// TestLoginBrowser drives `popsync login --browser --no-browser` (PKCE,
// loopback redirect) with the user approving, denying and a forged
// state, with OAUTHBEARER.
func TestLoginBrowser(t *testing.T) {
	e := startOAuth2Env(t, oauthtest.Options{}, "oauthbearer")
	e.d.Deliver(t, []byte("From: a@example.test\r\nSubject: one\r\n\r\nbody\r\n"), []byte("From: b@example.test\r\nSubject: two\r\n\r\nbody\r\n"))

	t.Run("Denied", func(t *testing.T) {
		r := e.login(t, func(u string) error { _, err := e.s.Deny(context.Background(), u); return err }, "--browser", "--no-browser")
		if r.code != exitAuth || !strings.Contains(r.stderr, "authorization denied") {
			t.Fatalf("denied: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("WrongState", func(t *testing.T) {
		before := e.s.Stats().CodeExchanges
		r := e.login(t, func(u string) error {
			_, err := e.s.ApproveWithState(context.Background(), u, "forged-state")
			return err
		}, "--browser", "--no-browser")
		if r.code != exitAuth || !strings.Contains(r.stderr, "state does not match") {
			t.Fatalf("wrong state: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if e.s.Stats().CodeExchanges != before {
			t.Error("the code of a redirect with a forged state was exchanged")
		}
	})
	t.Run("Approved", func(t *testing.T) {
		before := e.s.Stats().CodeExchanges
		r := e.login(t, e.approveBrowser, "--browser", "--no-browser", "-v", "--trace")
		if r.code != 0 {
			t.Fatalf("login: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if e.s.Stats().CodeExchanges != before+1 {
			t.Error("no authorization code was exchanged (PKCE verified by the server)")
		}
		if !strings.Contains(r.stderr, "ssh -L") {
			t.Errorf("no ssh -L recipe in the prompt:\n%s", r.stderr)
		}
		want := fmt.Sprintf("work: logged in to %s as %s with oauthbearer: 2 messages", e.d.TLSAddr, e.d.User)
		if !strings.HasPrefix(r.stdout, want) {
			t.Errorf("login result %q, want %q", r.stdout, want)
		}
		if r := e.popsync(t, "fetch", "-c", e.cfg, "--trace"); r.code != 0 {
			t.Fatalf("fetch: exit %d\n%s", r.code, r.stderr)
		}
		if n := maildirCount(t, e.maildir); n != 2 {
			t.Errorf("%d messages fetched, want 2", n)
		}
	})
}

// TestOAuth2Revoked: a revoked grant makes the account "login needed":
// one clear error, exit 1, the other account fetched, no further token
// requests, status says so; a new login brings it back.
func TestOAuth2Revoked(t *testing.T) {
	e := startOAuth2Env(t, oauthtest.Options{AccessTTL: 2 * time.Second}, "xoauth2")
	if r := e.login(t, e.approveDevice); r.code != 0 {
		t.Fatalf("login: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	e.s.RevokeAll()
	e.d.Deliver(t, []byte("From: a@example.test\r\nSubject: work\r\n\r\nbody\r\n"))
	e.pw.Deliver(t, []byte("From: a@example.test\r\nSubject: home\r\n\r\nbody\r\n"))

	r := e.popsync(t, "fetch", "-c", e.cfg, "-v")
	if r.code != exitAuth {
		t.Fatalf("fetch with a revoked grant: exit %d, want %d\n%s", r.code, exitAuth, r.stderr)
	}
	if !strings.Contains(r.stderr, "run `popsync login work`") || !strings.Contains(r.stderr, "invalid_grant") {
		t.Errorf("no clear login-needed error:\n%s", r.stderr)
	}
	if n := maildirCount(t, e.homeDir); n != 1 {
		t.Errorf("the password account got %d messages, want 1", n)
	}
	if n := maildirCount(t, e.maildir); n != 0 {
		t.Errorf("the revoked account got %d messages", n)
	}
	row := e.status(t, "work")
	if oauth2Field(row, "login_needed") != true || !strings.Contains(fmt.Sprint(row["last_error"]), "popsync login work") {
		t.Errorf("status: %v, last error %v", row["oauth2"], row["last_error"])
	}
	if home := e.status(t, "home"); home["oauth2"] != nil || home["last_error"] != nil {
		t.Errorf("status of the password account: %v", home)
	}
	text := e.popsync(t, "status", "-c", e.cfg)
	t.Logf("fetch:\n%s\nstatus:\n%s", r.stderr, text.stdout)
	if !strings.Contains(text.stdout, "LOGIN NEEDED") {
		t.Errorf("status table:\n%s", text.stdout)
	}

	// No retry storm: the next polls do not ask the token endpoint.
	requests := e.s.Stats().TokenRequests
	for range 3 {
		if r := e.popsync(t, "fetch", "-c", e.cfg); r.code != exitAuth || !strings.Contains(r.stderr, "popsync login work") {
			t.Fatalf("fetch: exit %d\n%s", r.code, r.stderr)
		}
	}
	if n := e.s.Stats().TokenRequests - requests; n != 0 {
		t.Errorf("%d token requests while the account needs a login", n)
	}

	// A new login brings it back, with the mail that waited.
	if r := e.login(t, e.approveDevice); r.code != 0 {
		t.Fatalf("login again: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := e.popsync(t, "fetch", "-c", e.cfg); r.code != 0 {
		t.Fatalf("fetch after the new login: exit %d\n%s", r.code, r.stderr)
	}
	if n := maildirCount(t, e.maildir); n != 1 {
		t.Errorf("%d messages after the new login, want 1", n)
	}
}

// TestRunDaemonOAuth2 runs `popsync run` across at least three
// access-token expiries and two refresh-token rotations, then a token the
// server refuses although it looked valid, then a revoked grant.
func TestRunDaemonOAuth2(t *testing.T) {
	e := startOAuth2Env(t, oauthtest.Options{AccessTTL: 2 * time.Second}, "xoauth2")
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", realtest.FreePort(t))
	e.writeConfig(t, "xoauth2", fmt.Sprintf("metrics = %q", metricsAddr))
	if r := e.login(t, e.approveDevice); r.code != 0 {
		t.Fatalf("login: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var all [][]byte
	p := startDaemonProc(t, "run", "-c", e.cfg, "--log-format", "json", "-v", "--trace")
	defer func() { e.record([]byte(p.log.text())) }()
	p.log.wait(t, 0, "start", logged("popsync daemon started"))

	start := e.s.Stats()
	firstRT := lastRefreshToken(e.s)
	began := time.Now()
	// Rounds of mail until the daemon has outlived three access tokens:
	// every poll refreshes (a 2 s token is always within the 60 s margin)
	// and the server rotates the refresh token each time.
	for round := 0; round < 4 || time.Since(began) < 3*2*time.Second+time.Second; round++ {
		msgs := datasOf(pop3test.SampleMessages(3, int64(100+round)))
		e.d.Deliver(t, msgs...)
		all = append(all, msgs...)
		mark := p.log.mark()
		p.log.wait(t, 0, fmt.Sprintf("round %d", round), deliveredAtLeast("work", len(all)))
		p.log.wait(t, mark, "a refresh", logged("oauth2 token refreshed"))
	}
	checkOnce(t, e.maildir, all)
	st := e.s.Stats()
	if n := st.Refreshes - start.Refreshes; n < 3 {
		t.Errorf("%d refreshes across 4 rounds of 2 s tokens, want at least 3", n)
	}
	if firstRT == "" || e.s.RefreshTokenValid(firstRT) {
		t.Error("the login's refresh token still works: no rotation happened")
	}
	// Rotations the daemon stored, and access tokens that expired while
	// it ran (every one it used but the last).
	rotations, expired := 0, 0
	p.log.mu.Lock()
	for _, r := range p.log.recs {
		if r["msg"] == "oauth2 token refreshed" && r["rotated"] == true {
			rotations++
		}
	}
	p.log.mu.Unlock()
	for _, sec := range e.s.Issued() {
		if strings.HasPrefix(sec, "at-") && !e.s.AccessTokenActive(sec) {
			expired++
		}
	}
	if rotations < 2 || expired < 3 {
		t.Errorf("%d refresh-token rotations and %d access-token expiries, want at least 2 and 3", rotations, expired)
	}
	t.Logf("daemon: %d refreshes, %d rotations stored, %d access tokens expired, %d logins introspected, over %v",
		st.Refreshes-start.Refreshes, rotations, expired, st.ActiveIntrospections-start.ActiveIntrospections, time.Since(began).Round(time.Second))

	// A token that looks valid but is refused: refresh once, retry once.
	e.s.SetAccessTTL(time.Hour)
	mark := p.log.mark()
	p.log.wait(t, mark, "a refresh to a long-lived token", func(recs []map[string]any) bool {
		for _, r := range recs {
			if r["msg"] != "oauth2 token refreshed" {
				continue
			}
			if exp, err := time.Parse(time.RFC3339Nano, fmt.Sprint(r["expiry"])); err == nil && time.Until(exp) > 30*time.Minute {
				return true
			}
		}
		return false
	})
	e.s.ExpireAccessTokens()
	mark = p.log.mark()
	msgs := datasOf(pop3test.SampleMessages(2, 200))
	e.d.Deliver(t, msgs...)
	all = append(all, msgs...)
	p.log.wait(t, mark, "the retried login", logged("the server refused the oauth2 access token; refreshing it once"))
	p.log.wait(t, 0, "mail after the retry", deliveredAtLeast("work", len(all)))

	// Revoked: login needed, logged once, the other account goes on, no
	// retry storm, metrics say so.
	e.s.RevokeAll()
	e.s.ExpireAccessTokens()
	mark = p.log.mark()
	p.log.wait(t, mark, "login needed", logged("oauth2 login needed: the account is not polled until `popsync login work` is run; other accounts go on"))
	requests := e.s.Stats().TokenRequests
	e.pw.Deliver(t, []byte("From: a@example.test\r\nSubject: home\r\n\r\nbody\r\n"))
	p.log.wait(t, 0, "the password account's mail", deliveredAtLeast("home", 1))
	mark = p.log.mark()
	for range 3 {
		m := p.log.mark()
		p.log.wait(t, m, "another poll of work", func(recs []map[string]any) bool {
			for _, r := range recs {
				if r["msg"] == "poll finished" && r["account"] == "work" {
					return true
				}
			}
			return false
		})
	}
	if n := e.s.Stats().TokenRequests - requests; n != 0 {
		t.Errorf("%d token requests while the account needs a login", n)
	}
	loud := 0
	for _, line := range strings.Split(p.log.text(), "\n") {
		if strings.Contains(line, `"oauth2 login needed: the account is not polled`) {
			loud++
		}
	}
	if loud != 1 {
		t.Errorf("the login-needed error was logged %d times, want once", loud)
	}
	_, body := httpGet(t, "http://"+metricsAddr+"/metrics")
	if v := metricValue(t, body, `popsync_login_needed{account="work"}`); v != 1 {
		t.Errorf("popsync_login_needed = %v, want 1", v)
	}
	if v := metricValue(t, body, `popsync_polls_total{account="work",outcome="login_needed"}`); v < 3 {
		t.Errorf("login_needed polls = %v, want at least 3", v)
	}
	if v := metricValue(t, body, `popsync_login_needed{account="home"}`); v != 0 {
		t.Errorf("popsync_login_needed of the password account = %v", v)
	}

	// A login while the daemon runs is picked up by its next poll.
	if r := e.login(t, e.approveDevice); r.code != 0 {
		t.Fatalf("login: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	msgs = datasOf(pop3test.SampleMessages(2, 300))
	e.d.Deliver(t, msgs...)
	all = append(all, msgs...)
	p.log.wait(t, 0, "mail after the new login", deliveredAtLeast("work", len(all)))
	checkOnce(t, e.maildir, all)
	p.signal(t, syscall.SIGTERM)
	if code := p.waitExit(t, oauthWait); code != 0 {
		t.Errorf("daemon exit %d", code)
	}
}

// lastRefreshToken is the newest refresh token the server issued.
func lastRefreshToken(s *oauthtest.Server) string {
	issued := s.Issued()
	for i := len(issued) - 1; i >= 0; i-- {
		if strings.HasPrefix(issued[i], "rt-") {
			return issued[i]
		}
	}
	return ""
}

// TestOAuth2KillNine kills `popsync fetch` at random instants while it
// refreshes (every run does: the tokens live 1 s) and logs in, at least
// 100 times (POPSYNC_OAUTH_KILLS for more). Afterwards popsync still logs
// in without `popsync login`, and nothing is lost or fetched twice.
func TestOAuth2KillNine(t *testing.T) {
	kills := 100
	if n, _ := strconv.Atoi(os.Getenv("POPSYNC_OAUTH_KILLS")); n > 0 {
		kills = n
	}
	e := startOAuth2Env(t, oauthtest.Options{AccessTTL: time.Second}, "xoauth2")
	if r := e.login(t, e.approveDevice); r.code != 0 {
		t.Fatalf("login: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The token endpoint answers late: the kills land in the refresh,
	// between the server's rotation and popsync's save, as often as
	// elsewhere.
	const delay = 100 * time.Millisecond
	e.s.DelayTokenRequests(delay)

	want := make(map[string]bool)
	refills := 0
	refill := func() {
		refills++
		msgs := datasOf(pop3test.SampleMessages(5, int64(1000+refills)))
		for _, m := range msgs {
			want[lfMessage(m)] = true
		}
		e.d.Deliver(t, msgs...)
	}
	refill()
	// One uninterrupted run sets the span the kills are spread over.
	begin := time.Now()
	if r := e.popsync(t, "fetch", "-c", e.cfg, "--account", "work"); r.code != 0 {
		t.Fatalf("probe run: exit %d\n%s", r.code, r.stderr)
	}
	span := time.Since(begin)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 3))
	t.Logf("one run %v; seed %d", span, seed)

	killed, completed := 0, 0
	// stretch widens the span after each kill and is reset by a run that
	// completes, so that the kills reach the end of a run on a loaded
	// machine too (as in crashRuns).
	stretch := 1.0
	deadline := time.Now().Add(max(10*time.Minute, time.Duration(kills)*2*time.Second))
	for killed < kills && time.Now().Before(deadline) {
		if killed/10 >= refills {
			refill() // more mail every ten kills
		}
		cmd := exec.Command(daemonBinary(t), "fetch", "-c", e.cfg, "--account", "work")
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		timer := time.NewTimer(time.Duration(rng.Int64N(int64(stretch*float64(span)) + 1)))
		select {
		case err := <-exited:
			timer.Stop()
			completed++
			stretch = 1
			if err != nil {
				t.Fatalf("an uninterrupted run failed: %v\n%s", err, errb.String())
			}
		case <-timer.C:
			cmd.Process.Signal(syscall.SIGKILL)
			<-exited
			killed++
			stretch = min(stretch*1.05, 20)
		}
		e.record(errb.Bytes())
		if strings.Contains(errb.String(), "login needed") {
			t.Fatalf("after %d kills popsync asks for a login:\n%s", killed, errb.String())
		}
	}
	if killed < kills {
		t.Errorf("only %d kills in the time allowed", killed)
	}
	e.s.DelayTokenRequests(0)
	r := e.popsync(t, "fetch", "-c", e.cfg, "--account", "work")
	if r.code != 0 {
		t.Fatalf("after %d kills popsync cannot log in without `popsync login`: exit %d\n%s", killed, r.code, r.stderr)
	}
	have := daemonMaildir(t, e.maildir)
	lost, dup, partial := 0, 0, 0
	for s, n := range have {
		switch {
		case !want[s]:
			partial++
		case n > 1:
			dup++
		}
	}
	for s := range want {
		if have[s] == 0 {
			lost++
		}
	}
	if n := e.d.Count(t); n != 0 {
		t.Errorf("%d messages still on the server after the final run", n)
	}
	st := e.s.Stats()
	t.Logf("%d kills, %d runs completed, %d messages; %d refreshes, %d invalid_grant answers; lost %d, duplicated %d, partial %d",
		killed, completed, len(want), st.Refreshes, st.Errors["invalid_grant"], lost, dup, partial)
	if lost > 0 || dup > 0 || partial > 0 {
		t.Fatalf("lost %d, duplicated %d, partial %d", lost, dup, partial)
	}
}
