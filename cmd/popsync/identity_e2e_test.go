package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"popsync/fetch/pop3/pop3test"
	"popsync/state"
)

// TestIdentityChangeRefused: a host edit that names the same server
// another way is refused instead of refetching the mailbox, `state adopt`
// carries the seen-set over (nothing is fetched again), and
// --new-identity starts a seen-set of its own.
func TestIdentityChangeRefused(t *testing.T) {
	const n = 6
	srv, addr := startFake(t, pop3test.Config{}, pop3test.SampleMessages(n, 7)...)
	_, port, _ := strings.Cut(addr, ":")
	dir := t.TempDir()
	md := filepath.Join(dir, "Maildir")
	cfg := writeFakeConfig(t, dir, fakeAcct{name: "home", addr: addr, maildir: md})
	if r := runPopsync(t, "fetch", "-c", cfg); r.code != 0 {
		t.Fatalf("first fetch: exit %d, stderr %s", r.code, r.stderr)
	}
	if got := countFiles(t, md); got != n {
		t.Fatalf("first fetch delivered %d, want %d", got, n)
	}
	retrs := srv.Stats().Retrs

	// The same server, by name.
	cfg = writeFakeConfig(t, dir, fakeAcct{name: "home", addr: "localhost:" + port, maildir: md})
	r := runPopsync(t, "fetch", "-c", cfg)
	if r.code != 65 {
		t.Fatalf("fetch after the host change: exit %d, want 65; stderr %s", r.code, r.stderr)
	}
	for _, want := range []string{"alice@127.0.0.1:" + port, "alice@localhost:" + port, "popsync state adopt home", "new_identity = true", "--new-identity home"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the refusal does not say %q: %s", want, r.stderr)
		}
	}
	if got := srv.Stats().Retrs - retrs; got != 0 {
		t.Errorf("the refused fetch RETRed %d messages", got)
	}
	if got := countFiles(t, md); got != n {
		t.Errorf("after the refused fetch the Maildir holds %d, want %d (no duplicates)", got, n)
	}
	// Refusing records nothing: asking again refuses again.
	if r := runPopsync(t, "fetch", "-c", cfg); r.code != 65 {
		t.Fatalf("second fetch after the host change: exit %d, want 65; stderr %s", r.code, r.stderr)
	}

	r = runPopsync(t, "state", "-c", cfg, "adopt", "home")
	if r.code != 0 || !strings.Contains(r.stdout, "alice@localhost:"+port) {
		t.Fatalf("state adopt: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := runPopsync(t, "fetch", "-c", cfg); r.code != 0 {
		t.Fatalf("fetch after adopt: exit %d, stderr %s", r.code, r.stderr)
	}
	if got := srv.Stats().Retrs - retrs; got != 0 {
		t.Errorf("after adopt, %d messages were fetched again, want 0", got)
	}
	if got := countFiles(t, md); got != n {
		t.Errorf("after adopt the Maildir holds %d, want %d", got, n)
	}
	// Nothing is left to adopt.
	if r := runPopsync(t, "state", "-c", cfg, "adopt", "home"); r.code != 64 {
		t.Errorf("second adopt: exit %d, want 64; stderr %s", r.code, r.stderr)
	}

	// Back to the address: now declared another mailbox, into another Maildir.
	md2 := filepath.Join(dir, "Maildir2")
	cfg = writeFakeConfig(t, dir, fakeAcct{name: "home", addr: addr, maildir: md2})
	if r := runPopsync(t, "fetch", "-c", cfg); r.code != 65 {
		t.Fatalf("fetch after the second change: exit %d, want 65", r.code)
	}
	if r := runPopsync(t, "fetch", "-c", cfg, "--new-identity", "home"); r.code != 0 {
		t.Fatalf("fetch --new-identity: exit %d, stderr %s", r.code, r.stderr)
	}
	if got := countFiles(t, md2); got != n {
		t.Errorf("--new-identity delivered %d, want all %d", got, n)
	}
	// From then on the new identity has state of its own.
	if r := runPopsync(t, "fetch", "-c", cfg); r.code != 0 {
		t.Fatalf("fetch after --new-identity: exit %d, stderr %s", r.code, r.stderr)
	}

	// The identity that no account has any more can be forgotten; the
	// configured one only with --force.
	if r := runPopsync(t, "state", "-c", cfg, "forget", "alice@127.0.0.1:"+port); r.code != 64 {
		t.Errorf("forgetting a configured identity: exit %d, want 64; stderr %s", r.code, r.stderr)
	}
	r = runPopsync(t, "state", "-c", cfg, "forget", "alice@localhost:"+port)
	if r.code != 0 || !strings.Contains(r.stdout, "forgot alice@localhost:"+port) {
		t.Errorf("forgetting the stale identity: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestIdentityChangeOthersGoOn: the refused account does not stop another.
func TestIdentityChangeOthersGoOn(t *testing.T) {
	_, addrA := startFake(t, pop3test.Config{}, pop3test.SampleMessages(3, 1)...)
	srvB, addrB := startFake(t, pop3test.Config{}, pop3test.SampleMessages(4, 2)...)
	_, portA, _ := strings.Cut(addrA, ":")
	dir := t.TempDir()
	cfg := writeFakeConfig(t, dir, fakeAcct{name: "a", addr: addrA})
	if r := runPopsync(t, "fetch", "-c", cfg); r.code != 0 {
		t.Fatalf("first fetch: exit %d, stderr %s", r.code, r.stderr)
	}
	cfg = writeFakeConfig(t, dir, fakeAcct{name: "a", addr: "localhost:" + portA}, fakeAcct{name: "b", addr: addrB})
	r := runPopsync(t, "fetch", "-c", cfg)
	if r.code != 65 || !strings.Contains(r.stderr, "1 of 2 accounts failed") {
		t.Fatalf("fetch: exit %d, want 65 with one of two failed; stderr %s", r.code, r.stderr)
	}
	if got := countFiles(t, filepath.Join(dir, "Maildir-b")); got != 4 || srvB.Stats().Retrs != 4 {
		t.Errorf("account b got %d messages (%d RETRs), want 4", got, srvB.Stats().Retrs)
	}
	if got := countFiles(t, filepath.Join(dir, "Maildir-a")); got != 3 {
		t.Errorf("account a's Maildir holds %d, want the 3 of the first fetch", got)
	}
}

// TestDemoTwice: two demos in one folder deliver every sample message once.
func TestDemoTwice(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	for i := range 2 {
		r := runPopsync(t, "demo", "--dir", dir, "--messages", "12")
		if r.code != 0 {
			t.Fatalf("demo #%d: exit %d, stderr %s", i+1, r.code, r.stderr)
		}
	}
	if got := countFiles(t, filepath.Join(dir, "Maildir")); got != 12 {
		t.Errorf("two demos left %d messages, want 12", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "state.db")); err != nil {
		t.Error(err)
	}
}

// TestDemoAfterOlderDemo: a folder from an older demo, whose config named
// the server's random port, is adopted instead of fetched again.
func TestDemoAfterOlderDemo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	if r := runPopsync(t, "demo", "--dir", dir, "--messages", "5"); r.code != 0 {
		t.Fatalf("demo: exit %d, stderr %s", r.code, r.stderr)
	}
	// Make the state look like an older demo's: the identity had the port.
	st, err := state.OpenSQLite(t.Context(), filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	now := state.Account{Host: "demo.popsync.invalid", Port: 995, User: "demo"}
	old := state.Account{Host: "127.0.0.1", Port: 40123, User: "demo"}
	if err := st.AdoptAccount(t.Context(), now, old); err != nil {
		t.Fatal(err)
	}
	st.Close()
	r := runPopsync(t, "demo", "--dir", dir, "--messages", "5")
	if r.code != 0 || !strings.Contains(r.stdout, "earlier demo") {
		t.Fatalf("demo after an older one: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got := countFiles(t, filepath.Join(dir, "Maildir")); got != 5 {
		t.Errorf("the Maildir holds %d messages, want 5", got)
	}
}
