package main_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"popsync/internal/realtest"
)

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// secretForms are the ways a secret could leak: as written, and as the
// SASL exchanges put it on the wire (base64 of the PLAIN and XOAUTH2
// initial responses, of the LOGIN password step).
func secretForms(user, password, token string) []string {
	b64 := base64.StdEncoding.EncodeToString
	return []string{
		password, token,
		b64([]byte(password)),
		b64([]byte("\x00" + user + "\x00" + password)),
		b64([]byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01")),
		// The token alone, cut at a base64 boundary, in case it is
		// encoded on its own somewhere.
		strings.TrimRight(b64([]byte(token))[:24], "="),
	}
}

// TestSecretsNeverLeak runs every command, plainly, with -v, with --trace
// and with JSON logs, against a real Dovecot that rejects the logins, and
// asserts that no password or token (nor their base64 forms on the wire)
// appears in any output line or in any file popsync writes.
func TestSecretsNeverLeak(t *testing.T) {
	d := realtest.StartDovecot(t, realtest.DovecotOptions{})
	dir := t.TempDir()
	password := "pw-" + randomHex(t, 12)
	token := "ya29.tok-" + randomHex(t, 24)
	password2 := "login-" + randomHex(t, 12)
	// Distinct users: the three accounts must not share an identity.
	const tokenUser, loginUser = "oauth@example.test", "login@example.test"
	forms := append(secretForms(d.User, password, token), secretForms(loginUser, password2, token)...)
	forms = append(forms, secretForms(tokenUser, password, token)...)

	host, tlsPort, _ := strings.Cut(d.TLSAddr, ":")
	_, plainPort, _ := strings.Cut(d.Addr, ":")
	cfg := filepath.Join(dir, "config.toml")
	conf := fmt.Sprintf(`[state]
path = %[1]q

[daemon]
max_parallel = 3

[defaults]
host = %[2]q
tls_ca_file = %[4]q
schedule = "@every 1h"

[[account]]
name = "password"
user = %[3]q
port = %[5]s
tls = "implicit"
password = %[6]q
  [[account.deliver]]
  maildir = %[7]q

[[account]]
name = "token"
user = %[11]q
port = %[5]s
tls = "implicit"
auth = "xoauth2"
password = %[8]q
  [[account.deliver]]
  maildir = %[7]q

[[account]]
name = "login"
user = %[12]q
port = %[9]s
tls = "starttls"
auth = "login"
password = %[10]q
  [[account.deliver]]
  maildir = %[7]q
`, filepath.Join(dir, "state", "state.db"), host, d.User, d.CAFile, tlsPort, password,
		filepath.Join(dir, "Maildir"), token, plainPort, password2, tokenUser, loginUser)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	check := func(what, out string) {
		t.Helper()
		for i, line := range strings.Split(out, "\n") {
			for _, f := range forms {
				if strings.Contains(line, f) {
					t.Errorf("%s: line %d shows a secret (%.6s...): %s", what, i+1, f, line)
				}
			}
		}
	}
	flagSets := [][]string{nil, {"-v"}, {"--trace"}, {"-v", "--trace", "--log-format", "json"}}
	for _, flags := range flagSets {
		for _, cmd := range [][]string{{"fetch"}, {"check", "--connect"}, {"status"}, {"status", "--json"}} {
			args := append(append(append([]string{}, cmd...), "-c", cfg), flags...)
			r := runPopsync(t, args...)
			name := strings.Join(args, " ")
			if strings.Contains(r.stderr, "panic") {
				t.Fatalf("%s panicked:\n%s", name, r.stderr)
			}
			switch cmd[0] {
			case "fetch", "check":
				if r.code != 3 || !strings.Contains(r.stdout+r.stderr, "3 of 3 accounts failed") {
					t.Fatalf("%s: exit %d, want 3 (authentication) with every account failed\n%s%s", name, r.code, r.stdout, r.stderr)
				}
			default:
				if r.code != 0 {
					t.Fatalf("%s: exit %d\n%s", name, r.code, r.stderr)
				}
			}
			check(name+" stdout", r.stdout)
			check(name+" stderr", r.stderr)
		}
		out := runDaemonOnce(t, cfg, 3, flags...)
		check("run "+strings.Join(flags, " "), out)
	}
	// The traces did trace: the login dialogue is there, redacted.
	r := runPopsync(t, "fetch", "-c", cfg, "--trace", "--account", "login")
	if !strings.Contains(r.stderr, "<redacted>") || !strings.Contains(r.stderr, "AUTH LOGIN") {
		t.Fatalf("--trace shows no redacted login dialogue:\n%s", r.stderr)
	}

	// Every file popsync wrote: the state database and its companions,
	// the lock files, the daemon's plan, the Maildir.
	files := 0
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() || p == cfg {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		for _, f := range forms {
			if bytes.Contains(b, []byte(f)) {
				t.Errorf("%s holds a secret (%.6s...)", p, f)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 2 {
		t.Fatalf("scanned only %d files: the state database is missing", files)
	}
	// The errors were recorded (status shows them), without the secrets.
	if r := runPopsync(t, "status", "-c", cfg); !strings.Contains(r.stdout, "logging in") {
		t.Fatalf("status shows no login error:\n%s", r.stdout)
	}
}

// runDaemonOnce starts `popsync run`, waits until accounts polls failed,
// stops it with SIGTERM and returns everything it printed.
func runDaemonOnce(t *testing.T, cfg string, accounts int, flags ...string) string {
	t.Helper()
	cmd := exec.Command(popsyncBinary(t), append([]string{"run", "-c", cfg}, flags...)...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		pw.Close()
		exited <- err
	}()
	var all strings.Builder
	failed := make(chan struct{})
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		n := 0
		for sc.Scan() {
			all.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "poll failed") {
				if n++; n == accounts {
					close(failed)
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	limit := time.NewTimer(90 * time.Second)
	defer limit.Stop()
	select {
	case <-failed:
		cmd.Process.Signal(syscall.SIGTERM)
	case err := <-exited:
		<-scanned
		t.Fatalf("popsync run exited early: %v\n%s", err, all.String())
	case <-limit.C:
		cmd.Process.Kill()
		<-scanned
		t.Fatalf("popsync run did not report %d failed polls in 90s\n%s", accounts, all.String())
	}
	select {
	case <-exited:
	case <-limit.C:
		cmd.Process.Kill()
		t.Fatal("popsync run did not stop on SIGTERM")
	}
	<-scanned
	if strings.Contains(all.String(), "panic") {
		t.Fatalf("popsync run panicked:\n%s", all.String())
	}
	return stdout.String() + all.String()
}
