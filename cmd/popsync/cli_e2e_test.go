package main_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"popsync/configs"
	"popsync/fetch/pop3/pop3test"
)

// The command line through the built binary, against the in-process fake
// POP3 server on loopback.

const fakeUser, fakePass = "alice", "s3cret-pass"

// fakeAcct is one account of a config pointing at a fake server.
type fakeAcct struct {
	name    string
	addr    string // host:port
	tls     string // default "none"
	pass    string // default fakePass
	keep    *bool
	maildir string // default DIR/Maildir-NAME
	extra   string // more account lines
}

func startFake(t *testing.T, cfg pop3test.Config, msgs ...pop3test.Message) (*pop3test.Server, string) {
	t.Helper()
	cfg.User, cfg.Password = fakeUser, fakePass
	srv := pop3test.NewServer(cfg, msgs...)
	t.Cleanup(func() { srv.Close() })
	addr, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	return srv, addr
}

func writeFakeConfig(t *testing.T, dir string, accts ...fakeAcct) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "[state]\npath = %q\n", filepath.Join(dir, "state.db"))
	for _, a := range accts {
		host, port, _ := strings.Cut(a.addr, ":")
		tls, pass, keep := a.tls, a.pass, true
		if tls == "" {
			tls = "none"
		}
		if pass == "" {
			pass = fakePass
		}
		if a.keep != nil {
			keep = *a.keep
		}
		md := a.maildir
		if md == "" {
			md = filepath.Join(dir, "Maildir-"+a.name)
		}
		extra := a.extra
		if !strings.Contains(extra, "timeout") {
			extra += "\ntimeout = \"5s\""
		}
		fmt.Fprintf(&b, "\n[[account]]\nname = %q\nhost = %q\nport = %s\ntls = %q\nuser = %q\npassword = %q\nkeep = %v\n%s\n  [[account.deliver]]\n  maildir = %q\n",
			a.name, host, port, tls, fakeUser, pass, keep, extra, md)
	}
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		n += len(ents)
	}
	return n
}

func TestCLIVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"-V"}, {"version"}} {
		r := runPopsync(t, args...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "popsync ") {
			t.Errorf("popsync %s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
	}
}

func TestCLIHelp(t *testing.T) {
	main := runPopsync(t, "--help")
	if main.code != 0 || !strings.Contains(main.stdout, "exit status:") || !strings.Contains(main.stdout, "init ") {
		t.Fatalf("popsync --help: exit %d\n%s", main.code, main.stdout)
	}
	for _, cmd := range []string{"fetch", "run", "check", "status", "init", "demo", "version", "help", "completion"} {
		h := runPopsync(t, "help", cmd)
		d := runPopsync(t, cmd, "-h")
		if h.code != 0 || d.code != 0 || h.stdout != d.stdout || !strings.HasPrefix(h.stdout, "usage: popsync "+cmd) {
			t.Errorf("help %s (exit %d) and %s -h (exit %d) differ or are wrong:\n%s\n---\n%s", cmd, h.code, cmd, d.code, h.stdout, d.stdout)
			continue
		}
		// Each flag once, short and long together.
		for _, flag := range []string{"--config", "--quiet", "--verbose", "--trace", "--log-format", "--help"} {
			if n := strings.Count(h.stdout, flag+" ") + strings.Count(h.stdout, flag+"[") + strings.Count(h.stdout, flag+"\n"); n > 1 {
				t.Errorf("help %s lists %s %d times", cmd, flag, n)
			}
		}
		if strings.Contains(h.stdout, "--config") && !strings.Contains(h.stdout, "-c, --config FILE") {
			t.Errorf("help %s does not list -c, --config FILE together:\n%s", cmd, h.stdout)
		}
		if strings.Contains(h.stdout, "trace-auth") {
			t.Errorf("help %s lists the old --trace-auth", cmd)
		}
	}
	man, err := os.ReadFile(filepath.Join("..", "..", "docs", "popsync.1"))
	if err != nil {
		t.Fatal(err)
	}
	if r := runPopsync(t, "help", "--man"); r.code != 0 || r.stdout != string(man) {
		t.Errorf("help --man: exit %d, and its output differs from docs/popsync.1", r.code)
	}
	if r := runPopsync(t, "help", "nosuch"); r.code != 64 {
		t.Errorf("help nosuch: exit %d, want 64", r.code)
	}
}

func TestCLIGlobalFlagsAndNames(t *testing.T) {
	srvA, addrA := startFake(t, pop3test.Config{}, pop3test.SampleMessages(3, 1)...)
	srvB, addrB := startFake(t, pop3test.Config{}, pop3test.SampleMessages(2, 2)...)
	dir := t.TempDir()
	cfg := writeFakeConfig(t, dir, fakeAcct{name: "a", addr: addrA}, fakeAcct{name: "b", addr: addrB})

	// Global flags before the command, an account named as an argument.
	r := runPopsync(t, "-c", cfg, "-v", "fetch", "a")
	if r.code != 0 {
		t.Fatalf("popsync -c FILE -v fetch a: exit %d\n%s", r.code, r.stderr)
	}
	if srvA.Stats().Sessions != 1 || srvB.Stats().Sessions != 0 {
		t.Fatalf("sessions a=%d b=%d, want only a polled", srvA.Stats().Sessions, srvB.Stats().Sessions)
	}
	if !strings.Contains(r.stderr, "msg=message ") {
		t.Errorf("-v before the command did not list the messages:\n%s", r.stderr)
	}
	// Mixed: a name and --account, flags after the name.
	r = runPopsync(t, "fetch", "b", "-c", cfg, "--account", "a")
	if r.code != 0 || srvB.Stats().Sessions != 1 || srvA.Stats().Sessions != 2 {
		t.Fatalf("fetch b -c FILE --account a: exit %d, sessions a=%d b=%d\n%s", r.code, srvA.Stats().Sessions, srvB.Stats().Sessions, r.stderr)
	}
	if r := runPopsync(t, "-c", cfg, "fetch", "nosuch"); r.code != 64 || !strings.Contains(r.stderr, `no account "nosuch"`) {
		t.Fatalf("fetch nosuch: exit %d\n%s", r.code, r.stderr)
	}
}

func TestCLIQuietAndVerbose(t *testing.T) {
	msgs := pop3test.SampleMessages(4, 3)
	srv, addr := startFake(t, pop3test.Config{}, msgs...)
	dir := t.TempDir()
	cfg := writeFakeConfig(t, dir, fakeAcct{name: "home", addr: addr})

	// -v: one line per message with UIDL, size, target and result.
	r := runPopsync(t, "fetch", "-c", cfg, "-v")
	if r.code != 0 {
		t.Fatalf("fetch -v: exit %d\n%s", r.code, r.stderr)
	}
	lines := 0
	for _, l := range strings.Split(r.stderr, "\n") {
		if !strings.Contains(l, "msg=message ") {
			continue
		}
		lines++
		if !strings.Contains(l, "uidl=") || !strings.Contains(l, "size=") || !strings.Contains(l, `target="maildir `) || !strings.Contains(l, "result=delivered") {
			t.Errorf("message line lacks a field: %s", l)
		}
	}
	if lines != len(msgs) {
		t.Fatalf("-v printed %d message lines for %d messages:\n%s", lines, len(msgs), r.stderr)
	}
	for _, m := range msgs {
		if !strings.Contains(r.stderr, "uidl="+m.UID) {
			t.Errorf("no line for UIDL %s", m.UID)
		}
	}

	// -q with no new mail: nothing at all.
	r = runPopsync(t, "-q", "fetch", "-c", cfg)
	if r.code != 0 || r.stdout != "" || r.stderr != "" {
		t.Fatalf("fetch -q with no new mail: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// -q with new mail: still nothing (errors only).
	srv.Add(pop3test.SampleMessages(2, 9)...)
	r = runPopsync(t, "fetch", "--quiet", "-c", cfg)
	if r.code != 0 || r.stderr != "" || countFiles(t, filepath.Join(dir, "Maildir-home")) != 6 {
		t.Fatalf("fetch -q with new mail: exit %d, stderr %q", r.code, r.stderr)
	}
	// -q with an error: the error.
	bad := writeFakeConfig(t, t.TempDir(), fakeAcct{name: "home", addr: addr, pass: "wrong"})
	r = runPopsync(t, "fetch", "-q", "-c", bad)
	if r.code != 3 || !strings.Contains(r.stderr, "level=ERROR") || strings.Contains(r.stderr, "level=INFO") {
		t.Fatalf("fetch -q with a failing login: exit %d\n%s", r.code, r.stderr)
	}
	if r := runPopsync(t, "fetch", "-q", "-v", "-c", cfg); r.code != 64 {
		t.Fatalf("-q -v: exit %d, want 64", r.code)
	}
}

func TestCLITraceLevels(t *testing.T) {
	_, addr := startFake(t, pop3test.Config{}, pop3test.SampleMessages(1, 4)...)
	cfg := writeFakeConfig(t, t.TempDir(), fakeAcct{name: "home", addr: addr, extra: `auth = "user"`})
	for _, tc := range []struct {
		flag          string
		level         string
		showsPassword bool
		wantCode      int
	}{
		{"--trace", "level=TRACE ", false, 0},
		{"--trace=protocol", "level=TRACE ", false, 0},
		{"--trace=auth", "level=TRACE-AUTH ", true, 0},
		{"--trace-auth", "level=TRACE-AUTH ", true, 0},
		{"--trace=loud", "", false, 64},
	} {
		r := runPopsync(t, "fetch", "-c", cfg, "--dry-run", tc.flag)
		if r.code != tc.wantCode {
			t.Errorf("%s: exit %d, want %d\n%s", tc.flag, r.code, tc.wantCode, r.stderr)
			continue
		}
		if tc.wantCode != 0 {
			continue
		}
		if !strings.Contains(r.stderr, tc.level) || strings.Contains(r.stderr, "DEBUG-") {
			t.Errorf("%s: want %q and no DEBUG-n levels:\n%s", tc.flag, tc.level, r.stderr)
		}
		if got := strings.Contains(r.stderr, fakePass); got != tc.showsPassword {
			t.Errorf("%s: password shown = %v, want %v", tc.flag, got, tc.showsPassword)
		}
		if !strings.Contains(r.stderr, "PASS <redacted>") && !tc.showsPassword {
			t.Errorf("%s: no redacted PASS line:\n%s", tc.flag, r.stderr)
		}
	}
}

func TestCLIOneOffOverrides(t *testing.T) {
	srv, addr := startFake(t, pop3test.Config{}, pop3test.SampleMessages(5, 5)...)
	dir := t.TempDir()
	cfg := writeFakeConfig(t, dir, fakeAcct{name: "home", addr: addr}) // keep = true
	md := filepath.Join(dir, "Maildir-home")

	if r := runPopsync(t, "fetch", "-c", cfg, "--fetch-limit", "2"); r.code != 0 || countFiles(t, md) != 2 {
		t.Fatalf("--fetch-limit 2: exit %d, %d delivered\n%s", r.code, countFiles(t, md), r.stderr)
	}
	if r := runPopsync(t, "fetch", "-c", cfg, "--no-keep"); r.code != 0 || countFiles(t, md) != 5 || len(srv.Messages()) != 0 {
		t.Fatalf("--no-keep: exit %d, %d delivered, %d on the server\n%s", r.code, countFiles(t, md), len(srv.Messages()), r.stderr)
	}
	// keep = false in the config, --keep for this run.
	srv.Add(pop3test.SampleMessages(3, 6)...)
	no := false
	cfg = writeFakeConfig(t, dir, fakeAcct{name: "home", addr: addr, keep: &no})
	if r := runPopsync(t, "fetch", "-c", cfg, "--keep"); r.code != 0 || countFiles(t, md) != 8 || len(srv.Messages()) != 3 {
		t.Fatalf("--keep: exit %d, %d delivered, %d on the server\n%s", r.code, countFiles(t, md), len(srv.Messages()), r.stderr)
	}
	if r := runPopsync(t, "fetch", "-c", cfg, "--keep", "--no-keep"); r.code != 64 {
		t.Fatalf("--keep --no-keep: exit %d, want 64", r.code)
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// rawServer answers every connection with greet and holds it open.
func rawServer(t *testing.T, greet []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write(greet)
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				buf := make([]byte, 1024)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestCLIExitCodes runs one poll for each exit status a poll can end
// with. (8 and 74 are in statefile_test.go, 130 and 143 below.)
func TestCLIExitCodes(t *testing.T) {
	msgs := pop3test.SampleMessages(3, 8)
	_, plain := startFake(t, pop3test.Config{}, msgs...)
	cert, _, err := pop3test.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	_, tlsOnly := startFake(t, pop3test.Config{ImplicitTLS: true, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}, msgs...)
	gsrv, gaddr := startFake(t, pop3test.Config{}, msgs...)
	gsrv.SetFaults(pop3test.Faults{Commands: []pop3test.CommandFault{{Command: "UIDL", Raw: "what is this\r\n"}}})
	esrv, eaddr := startFake(t, pop3test.Config{}, msgs...)
	esrv.SetFaults(pop3test.Faults{Commands: []pop3test.CommandFault{{Command: "LIST", Code: "SYS/PERM", Text: "mailbox damaged"}}})
	lsrv, laddr := startFake(t, pop3test.Config{}, msgs...)
	lsrv.SetFaults(pop3test.Faults{Login: pop3test.LoginFault{Code: "IN-USE"}})
	tlsRecord := rawServer(t, []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32})

	dir := t.TempDir()
	file := filepath.Join(dir, "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		acct   fakeAcct
		code   int
		stderr string
	}{
		{"ok", fakeAcct{addr: plain}, 0, "new=3"},
		{"refused", fakeAcct{addr: closedPort(t)}, 2, "connection refused"},
		{"implicit TLS on a plain port", fakeAcct{addr: plain, tls: "implicit"}, 2, `the server did not answer TLS; try tls = "starttls" or port 110`},
		{"plain on a TLS port", fakeAcct{addr: tlsRecord, extra: `timeout = "60s"`}, 2, `try tls = "implicit"`},
		{"silent TLS port", fakeAcct{addr: tlsOnly, extra: `timeout = "1s"`}, 2, "implicit TLS"},
		{"wrong password", fakeAcct{addr: plain, pass: "wrong"}, 3, "logging in"},
		{"not POP3", fakeAcct{addr: gaddr}, 4, "malformed"},
		{"-ERR", fakeAcct{addr: eaddr}, 7, "mailbox damaged"},
		{"in use", fakeAcct{addr: laddr}, 9, "IN-USE"},
		{"maildir under a file", fakeAcct{addr: plain, maildir: filepath.Join(file, "Maildir")}, 10, "opening delivery target"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.acct.name = "acct"
			cfg := writeFakeConfig(t, t.TempDir(), tc.acct)
			start := time.Now()
			r := runPopsync(t, "fetch", "-c", cfg)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.stderr) {
				t.Fatalf("exit %d, want %d with %q in:\n%s", r.code, tc.code, tc.stderr, r.stderr)
			}
			if tc.name == "plain on a TLS port" && time.Since(start) > 30*time.Second {
				t.Fatalf("took %v: the TLS record was not recognised at once", time.Since(start))
			}
		})
	}

	// Config and usage errors.
	cfg := writeFakeConfig(t, t.TempDir(), fakeAcct{name: "acct", addr: plain, tls: "ssl"})
	if r := runPopsync(t, "fetch", "-c", cfg); r.code != 5 || !strings.Contains(r.stderr, `use "implicit"`) {
		t.Fatalf(`tls = "ssl": exit %d, want 5 with a hint\n%s`, r.code, r.stderr)
	}
	missing := filepath.Join(t.TempDir(), "none.toml")
	if r := runPopsync(t, "check", "-c", missing); r.code != 5 || !strings.Contains(r.stderr, missing) || !strings.Contains(r.stderr, "popsync init") {
		t.Fatalf("missing config: exit %d, want 5 naming the path and popsync init\n%s", r.code, r.stderr)
	}
	if r := runPopsync(t, "fetch", "--no-such-flag"); r.code != 64 {
		t.Fatalf("unknown flag: exit %d, want 64\n%s", r.code, r.stderr)
	}
	// A state file that is not a database.
	sdir := t.TempDir()
	cfg = writeFakeConfig(t, sdir, fakeAcct{name: "acct", addr: plain})
	os.WriteFile(filepath.Join(sdir, "state.db"), bytes.Repeat([]byte("not sqlite "), 1000), 0o600)
	if r := runPopsync(t, "fetch", "-c", cfg); r.code != 74 {
		t.Fatalf("broken state: exit %d, want 74\n%s", r.code, r.stderr)
	}
}

// TestCLIInterrupt: Ctrl-C during a poll exits 130 saying "interrupted";
// SIGTERM exits 143.
func TestCLIInterrupt(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
		word string
	}{{syscall.SIGINT, 130, "interrupted"}, {syscall.SIGTERM, 143, "terminated"}} {
		srv, addr := startFake(t, pop3test.Config{}, pop3test.SampleMessages(3, 10)...)
		srv.SetFaults(pop3test.Faults{Commands: []pop3test.CommandFault{{Command: "UIDL", Hang: true}}})
		cfg := writeFakeConfig(t, t.TempDir(), fakeAcct{name: "acct", addr: addr, extra: `timeout = "60s"`})
		cmd := exec.Command(popsyncBinary(t), "fetch", "-c", cfg)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for !hung(srv) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		cmd.Process.Signal(tc.sig)
		err := cmd.Wait()
		code := -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		out := strings.TrimSpace(stderr.String())
		last := out[strings.LastIndexByte(out, '\n')+1:]
		if code != tc.code || last != "popsync fetch: "+tc.word || strings.Contains(out, "context canceled") {
			t.Errorf("%v: exit %d, last line %q; want %d and %q\n%s", tc.sig, code, last, tc.code, "popsync fetch: "+tc.word, out)
		}
	}
}

// hung reports whether a session sent UIDL (and got no answer).
func hung(srv *pop3test.Server) bool {
	for _, tr := range srv.Transcripts() {
		for _, l := range tr.Lines {
			if strings.HasPrefix(l, "UIDL") {
				return true
			}
		}
	}
	return false
}

func TestCLIJSONLogNumbers(t *testing.T) {
	_, addr := startFake(t, pop3test.Config{}, pop3test.SampleMessages(3, 11)...)
	cfg := writeFakeConfig(t, t.TempDir(), fakeAcct{name: "acct", addr: addr})
	r := runPopsync(t, "fetch", "-c", cfg, "--log-format", "json", "-v")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	found := false
	for _, line := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not JSON: %s", line)
		}
		switch rec["msg"] {
		case "poll done":
			found = true
			for _, k := range []string{"on_server", "new", "delivered", "deleted", "skipped", "bytes", "seconds"} {
				if _, ok := rec[k].(float64); !ok {
					t.Errorf("%s is %T (%v), want a number: %s", k, rec[k], rec[k], line)
				}
			}
		case "message":
			if _, ok := rec["size"].(float64); !ok {
				t.Errorf("size is %T: %s", rec["size"], line)
			}
		}
	}
	if !found {
		t.Fatalf("no poll done line:\n%s", r.stderr)
	}
}

func TestCLIInit(t *testing.T) {
	for _, tc := range []struct {
		addr, provider string
		host           string
		auth           string
		mentions       string
	}{
		{"me@gmail.com", "", "pop.gmail.com", "auto", "app password"},
		{"me@outlook.com", "", "outlook.office365.com", "xoauth2", "OAuth2"},
		{"me@corp.example", "microsoft", "outlook.office365.com", "xoauth2", "OAuth2"},
		{"me@yahoo.com", "", "pop.mail.yahoo.com", "auto", "app password"},
		{"me@gmx.de", "", "pop.gmx.net", "auto", "POP3"},
		{"me@gmx.com", "", "pop.gmx.com", "auto", "POP3"},
		{"me@web.de", "", "pop3.web.de", "auto", "POP3"},
		{"me@fastmail.com", "", "pop.fastmail.com", "auto", "app password"},
		{"me@isp.example.org", "", "pop.isp.example.org", "auto", "guess"},
	} {
		t.Run(tc.addr+tc.provider, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sub", "config.toml")
			args := []string{"init", "-c", path, tc.addr}
			if tc.provider != "" {
				args = append(args, "--provider", tc.provider)
			}
			r := runPopsync(t, args...)
			if r.code != 0 || !strings.Contains(r.stdout, "next:") || !strings.Contains(r.stdout, "check --connect") || !strings.Contains(r.stdout, tc.mentions) {
				t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			fi, err := os.Stat(path)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("config mode %v, %v; want 0600", fi.Mode().Perm(), err)
			}
			cfg, err := configs.Load(path)
			if err != nil {
				t.Fatalf("the written config does not load: %v", err)
			}
			a := cfg.Accounts[0]
			if a.Host != tc.host || a.Port != 995 || a.TLS != configs.TLSImplicit || a.User != tc.addr || a.Auth != tc.auth || !a.Keep {
				t.Fatalf("account %+v", a)
			}
			before, _ := os.ReadFile(path)
			if r := runPopsync(t, args...); r.code != 64 || !strings.Contains(r.stderr, "exists") {
				t.Fatalf("second init: exit %d\n%s", r.code, r.stderr)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Fatal("second init changed the file")
			}
		})
	}
	if r := runPopsync(t, "init", "-c", filepath.Join(t.TempDir(), "c.toml"), "me@icloud.com"); r.code != 64 || !strings.Contains(r.stderr, "no POP3") {
		t.Fatalf("iCloud: exit %d\n%s", r.code, r.stderr)
	}
	if r := runPopsync(t, "init", "-c", filepath.Join(t.TempDir(), "c.toml"), "not-an-address"); r.code != 64 {
		t.Fatalf("bad address: exit %d", r.code)
	}
}
