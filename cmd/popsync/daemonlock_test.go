package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"popsync/configs"
	"popsync/state"
)

// TestDaemonLockRefusesLinks: a link planted at <state>.daemon.lock is
// not followed (the lock is truncated once taken, which would empty the
// link's target), and a state folder others can write is refused before
// anything is opened in it.
func TestDaemonLockRefusesLinks(t *testing.T) {
	dir := t.TempDir()
	statePath := filepath.Join(dir, "state.db")
	st := configs.State{Path: statePath, Dir: dir, Name: "state.db"}
	target := filepath.Join(t.TempDir(), "victim")
	const content = "not popsync's\n"
	if err := os.WriteFile(target, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, statePath+daemonLockSuffix); err != nil {
		t.Fatal(err)
	}
	l, err := lockDaemon(st)
	if err == nil {
		l.release()
		t.Fatal("lockDaemon took a lock through a symbolic link")
	}
	if !errors.Is(err, state.ErrUnsafe) || !strings.Contains(err.Error(), statePath+daemonLockSuffix+" is a symbolic link") {
		t.Errorf("error %v: want ErrUnsafe naming the link", err)
	}
	if b, _ := os.ReadFile(target); string(b) != content {
		t.Errorf("the link's target was written: %q", b)
	}

	os.Remove(statePath + daemonLockSuffix)
	if err := os.Chmod(dir, 0o775); err != nil {
		t.Fatal(err)
	}
	_, err = lockDaemon(st)
	if !errors.Is(err, state.ErrUnsafe) || !strings.Contains(err.Error(), dir+" is writable by others") || !strings.Contains(err.Error(), "chmod go-w") {
		t.Errorf("group-writable state folder: %v", err)
	}
	if _, serr := os.Lstat(statePath + daemonLockSuffix); serr == nil {
		t.Error("a lock file was made in the refused folder")
	}

	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	l, err = lockDaemon(st)
	if err != nil {
		t.Fatalf("a safe folder: %v", err)
	}
	l.release()
}

// TestPlanFileReplacesLink: the daemon's plan (<state>.schedule.json) is
// written to a new temporary file and renamed over its name, so a link
// planted there is replaced, never followed.
func TestPlanFileReplacesLink(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db"+planSuffix)
	target := filepath.Join(t.TempDir(), "victim")
	const content = "not popsync's\n"
	if err := os.WriteFile(target, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(path, map[string]int{"x": 1}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != content {
		t.Errorf("the link's target was written: %q", b)
	}
	if fi, err := os.Lstat(path); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("the plan is %v, %v; want a regular file", fi, err)
	}
}
