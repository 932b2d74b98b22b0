package main_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"popsync/fetch/pop3/pop3test"
)

// TestMDATypoFails: an MDA that does not exist fails the poll (exit 10),
// `status` shows the reason, and no poll downloads the mailbox only to
// throw it away.
func TestMDATypoFails(t *testing.T) {
	srv, addr := startFake(t, pop3test.Config{}, pop3test.SampleMessages(5, 3)...)
	host, port, _ := strings.Cut(addr, ":")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	text := fmt.Sprintf(`[state]
path = %q

[[account]]
name = "home"
host = %q
port = %s
tls = "none"
user = %q
password = %q
timeout = "5s"

  [[account.deliver]]
  mda = ["/usr/bin/procmial", "-d", "me"]
`, filepath.Join(dir, "state.db"), host, port, fakeUser, fakePass)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		r := runPopsync(t, "fetch", "-c", cfg)
		if r.code != 10 {
			t.Fatalf("fetch #%d: exit %d, want 10 (delivery); stderr %s", i+1, r.code, r.stderr)
		}
		if !strings.Contains(r.stderr, "procmial") {
			t.Errorf("fetch #%d does not name the program: %s", i+1, r.stderr)
		}
		if got := srv.Stats().Retrs; got != 0 {
			t.Fatalf("after fetch #%d the server answered %d RETRs, want 0", i+1, got)
		}
	}
	r := runPopsync(t, "status", "-c", cfg)
	if r.code != 0 || !strings.Contains(r.stdout, "procmial") {
		t.Fatalf("status: exit %d, does not show the MDA error:\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "never") {
		t.Errorf("status shows a last success:\n%s", r.stdout)
	}
}

// TestRefusedSMTPStopsThePoll: an SMTP target that refuses connections
// fails the poll at the first message, instead of downloading every
// message and failing each.
func TestRefusedSMTPStopsThePoll(t *testing.T) {
	const n = 40
	srv, addr := startFake(t, pop3test.Config{Caps: pop3test.Caps{NoPipelining: true}}, pop3test.SampleMessages(n, 4)...)
	host, port, _ := strings.Cut(addr, ":")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	text := fmt.Sprintf(`[state]
path = %q

[[account]]
name = "home"
host = %q
port = %s
tls = "none"
user = %q
password = %q
timeout = "5s"

  [[account.deliver]]
  smtp = %q
  rcpt = ["me@localhost"]
`, filepath.Join(dir, "state.db"), host, port, fakeUser, fakePass, closedPort(t))
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runPopsync(t, "fetch", "-c", cfg)
	if r.code != 10 {
		t.Fatalf("fetch: exit %d, want 10; stderr %s", r.code, r.stderr)
	}
	if got := srv.Stats().Retrs; got != 1 {
		t.Errorf("the server answered %d RETRs, want 1: the poll must stop at the first refused connection", got)
	}
}
