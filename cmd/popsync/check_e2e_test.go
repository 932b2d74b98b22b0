package main_test

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"popsync/fetch/pop3/pop3test"
)

// TestCheckLocalResources: check without --connect finds what a poll
// would trip over (a missing password file, variable or command, an MDA
// that does not exist, a Maildir under a file, a missing CA file, a state
// path that cannot be written, a changed identity), names each, never
// shows a secret, and creates nothing.
func TestCheckLocalResources(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "afile"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Unsetenv("POPSYNC_TEST_NO_SUCH_VAR")
	cfg := filepath.Join(dir, "config.toml")
	text := fmt.Sprintf(`[state]
path = "/proc/popsync/state.db"

[[account]]
name = "a"
host = "pop.example.net"
user = "me"
password_file = %q
tls_ca_file = %q
  [[account.deliver]]
  maildir = %q

[[account]]
name = "b"
host = "pop.example.net"
user = "you"
password_env = "POPSYNC_TEST_NO_SUCH_VAR"
  [[account.deliver]]
  mda = ["/usr/bin/procmial"]

[[account]]
name = "c"
host = "pop.example.net"
user = "them"
password_command = ["no-such-password-program"]
  [[account.deliver]]
  maildir = %q
`, filepath.Join(dir, "missing.pass"), filepath.Join(dir, "missing-ca.pem"), filepath.Join(dir, "afile", "Maildir"), filepath.Join(dir, "new", "Maildir"))
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)
	r := runPopsync(t, "check", "-c", cfg)
	if r.code == 0 {
		t.Fatalf("check passed a config whose resources are missing:\n%s", r.stdout)
	}
	for _, want := range []string{"missing.pass", "missing-ca.pem", "afile", "POPSYNC_TEST_NO_SUCH_VAR", "procmial", "no-such-password-program", "/proc/popsync"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("check does not report %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, filepath.Join(dir, "new", "Maildir")+": FAILED") {
		t.Errorf("check refuses a Maildir that can be created:\n%s", r.stdout)
	}
	wantUnchanged(t, "check", before, snapshot(t, dir))
}

// TestCheckShippedExample: the shipped example names a CA file that does
// not exist, and check says so.
func TestCheckShippedExample(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile("../../configs/example.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r := runPopsync(t, "check", "-c", cfg)
	if r.code == 0 || !strings.Contains(r.stdout, "tls_ca_file") {
		t.Errorf("check of example.toml: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestCheckConnectTLS: --connect reports the TLS version, cipher and the
// server certificate's subject and expiry, and does not create the Maildir.
func TestCheckConnectTLS(t *testing.T) {
	cert, leaf, err := pop3test.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startFake(t, pop3test.Config{ImplicitTLS: true, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}},
		pop3test.SampleMessages(2, 1)...)
	dir := t.TempDir()
	cfg := writeFakeConfig(t, dir, fakeAcct{name: "home", addr: addr, tls: "implicit",
		extra: fmt.Sprintf("tls_fingerprint = %q", pop3test.Fingerprint(leaf))})
	before := snapshot(t, dir)
	r := runPopsync(t, "check", "--connect", "-c", cfg)
	if r.code != 0 {
		t.Fatalf("check --connect: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"tls: TLS 1.3", "certificate: ", "valid until " + leaf.NotAfter.UTC().Format("2006-01-02")} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("check --connect does not say %q:\n%s", want, r.stdout)
		}
	}
	wantUnchanged(t, "check --connect", before, snapshot(t, dir))
}

// TestCheckIdentityChange: check reports a changed identity like fetch.
func TestCheckIdentityChange(t *testing.T) {
	_, addr := startFake(t, pop3test.Config{}, pop3test.SampleMessages(2, 1)...)
	_, port, _ := strings.Cut(addr, ":")
	dir := t.TempDir()
	cfg := writeFakeConfig(t, dir, fakeAcct{name: "home", addr: addr})
	if r := runPopsync(t, "fetch", "-c", cfg); r.code != 0 {
		t.Fatalf("fetch: exit %d, stderr %s", r.code, r.stderr)
	}
	cfg = writeFakeConfig(t, dir, fakeAcct{name: "home", addr: "localhost:" + port})
	r := runPopsync(t, "check", "-c", cfg)
	if r.code != 65 || !strings.Contains(r.stdout, "popsync state adopt home") {
		t.Errorf("check after a host change: exit %d, want 65\n%s%s", r.code, r.stdout, r.stderr)
	}
}
