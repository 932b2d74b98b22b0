package main_test

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"popsync/fetch/pop3/pop3test"
)

// snapshot lists every file and folder under dir with its mode, size and
// modification time.
func snapshot(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s %v %d %v", p, fi.Mode(), fi.Size(), fi.ModTime().UnixNano()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func wantUnchanged(t *testing.T, what string, before, after []string) {
	t.Helper()
	if !slices.Equal(before, after) {
		t.Errorf("%s changed the tree:\nbefore %q\nafter  %q", what, before, after)
	}
}

// TestDryRunWritesNothing: fetch --dry-run lists what it would fetch and
// delete, per message, and leaves the whole tree as it was: no Maildir, no
// state file, no lock file. status and check create nothing either.
func TestDryRunWritesNothing(t *testing.T) {
	msgs := pop3test.SampleMessages(4, 9)
	srv, addr := startFake(t, pop3test.Config{}, msgs...)
	dir := t.TempDir()
	cfg := writeFakeConfig(t, dir, fakeAcct{name: "home", addr: addr})
	before := snapshot(t, dir)
	r := runPopsync(t, "fetch", "-c", cfg, "--dry-run")
	if r.code != 0 {
		t.Fatalf("dry run: exit %d, stderr %s", r.code, r.stderr)
	}
	wantUnchanged(t, "fetch --dry-run", before, snapshot(t, dir))
	for _, m := range msgs {
		line := ""
		for _, l := range strings.Split(r.stdout, "\n") {
			if strings.Contains(l, " "+m.UID+" ") {
				line = l
			}
		}
		if !strings.HasPrefix(line, "home") || !strings.Contains(line, "fetch") {
			t.Errorf("the listing has no fetch line for %s:\n%s", m.UID, r.stdout)
		}
	}
	if !strings.Contains(r.stdout, "SUBJECT") || srv.Stats().Tops != len(msgs) || srv.Stats().Retrs != 0 {
		t.Errorf("dry run: %d TOPs, %d RETRs (want %d, 0); listing:\n%s", srv.Stats().Tops, srv.Stats().Retrs, len(msgs), r.stdout)
	}
	for _, cmd := range [][]string{{"status"}, {"status", "--all"}, {"check"}} {
		if r := runPopsync(t, append(cmd, "-c", cfg)...); r.code != 0 {
			t.Errorf("%v: exit %d, stderr %s", cmd, r.code, r.stderr)
		}
		wantUnchanged(t, strings.Join(cmd, " "), before, snapshot(t, dir))
	}

	// With a state: a dry run with --no-keep would delete what was
	// delivered, and still writes nothing (no -wal, no -shm, no stamp).
	if r := runPopsync(t, "fetch", "-c", cfg); r.code != 0 {
		t.Fatalf("fetch: exit %d, stderr %s", r.code, r.stderr)
	}
	before = snapshot(t, dir)
	r = runPopsync(t, "fetch", "-c", cfg, "--dry-run", "--no-keep")
	if r.code != 0 {
		t.Fatalf("dry run: exit %d, stderr %s", r.code, r.stderr)
	}
	wantUnchanged(t, "fetch --dry-run with a state", before, snapshot(t, dir))
	if n := strings.Count(r.stdout, " delete "); n != len(msgs) {
		t.Errorf("the listing has %d delete lines, want %d:\n%s", n, len(msgs), r.stdout)
	}
	for _, cmd := range [][]string{{"status"}, {"check"}} {
		runPopsync(t, append(cmd, "-c", cfg)...)
		wantUnchanged(t, strings.Join(cmd, " ")+" with a state", before, snapshot(t, dir))
	}
}

// TestStatusPerIdentity: status shows each configured account's current
// identity with its own history, the error of a failed poll with its time
// until a poll succeeds, the old identities with --all, and the state
// while the config is broken.
func TestStatusPerIdentity(t *testing.T) {
	_, addr := startFake(t, pop3test.Config{}, pop3test.SampleMessages(3, 5)...)
	_, port, _ := strings.Cut(addr, ":")
	dir := t.TempDir()
	md := filepath.Join(dir, "Maildir")
	cfg := writeFakeConfig(t, dir, fakeAcct{name: "home", addr: addr, maildir: md, pass: "wrong"})
	if r := runPopsync(t, "fetch", "-c", cfg); r.code != 3 {
		t.Fatalf("fetch with a wrong password: exit %d, want 3", r.code)
	}
	r := runPopsync(t, "status", "-c", cfg)
	if !strings.Contains(r.stdout, "alice@127.0.0.1:"+port) || !strings.Contains(r.stdout, "logging in") {
		t.Fatalf("status does not show the failed login:\n%s", r.stdout)
	}
	cfg = writeFakeConfig(t, dir, fakeAcct{name: "home", addr: addr, maildir: md})
	if r := runPopsync(t, "fetch", "-c", cfg); r.code != 0 {
		t.Fatalf("fetch: exit %d, stderr %s", r.code, r.stderr)
	}
	r = runPopsync(t, "status", "-c", cfg)
	if strings.Contains(r.stdout, "logging in") || strings.Contains(r.stdout, "never") {
		t.Errorf("status after a successful poll still shows the error or no success:\n%s", r.stdout)
	}

	// Another host name: the new identity has no history, and says why.
	cfg = writeFakeConfig(t, dir, fakeAcct{name: "home", addr: "localhost:" + port, maildir: md})
	r = runPopsync(t, "status", "-c", cfg)
	if !strings.Contains(r.stdout, "alice@localhost:"+port) || !strings.Contains(r.stdout, "identity changed") ||
		strings.Contains(r.stdout, "alice@127.0.0.1:"+port+" ") {
		t.Errorf("status after the host change:\n%s", r.stdout)
	}
	r = runPopsync(t, "status", "-c", cfg, "--all")
	if !strings.Contains(r.stdout, "not in the config") || !strings.Contains(r.stdout, "alice@127.0.0.1:"+port) {
		t.Errorf("status --all does not list the old identity:\n%s", r.stdout)
	}

	// A broken config: status says so and shows the state.
	text, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, append(text, "\n[[account]]\nname = \"x\"\nbogus = 1\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runPopsync(t, "status", "-c", cfg)
	if r.code != 0 || !strings.Contains(r.stderr, "cannot be used") || !strings.Contains(r.stdout, "alice@127.0.0.1:"+port) {
		t.Errorf("status with a broken config: exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
}
