package osfile

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestLockAndHolder(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.lock")
	open := func() *os.File {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	a, b := open(), open()
	if held, err := TryLock(a); !held || err != nil {
		t.Fatalf("first lock: %v, %v", held, err)
	}
	WriteHolder(a, "account me@h:995")
	// Two opens of one file conflict, as two processes do.
	if held, err := TryLock(b); held || err != nil {
		t.Fatalf("second lock: %v, %v; want not held", held, err)
	}
	if pid := Holder(b); pid != os.Getpid() {
		t.Errorf("Holder = %d, want %d", pid, os.Getpid())
	}
	if data, _ := os.ReadFile(p); string(data) != "pid "+strconv.Itoa(os.Getpid())+"\naccount me@h:995\n" {
		t.Errorf("lock file holds %q", data)
	}
	if err := Unlock(a); err != nil {
		t.Fatal(err)
	}
	if held, err := TryLock(b); !held || err != nil {
		t.Fatalf("lock after unlock: %v, %v", held, err)
	}
}

func TestProcessAlive(t *testing.T) {
	if !ProcessAlive(os.Getpid()) {
		t.Error("this process is not alive")
	}
	if ProcessAlive(0) || ProcessAlive(-1) || ProcessAlive(1<<30) {
		t.Error("a pid that cannot run is alive")
	}
}

func TestSyncDir(t *testing.T) {
	if err := SyncDir(t.TempDir()); err != nil {
		t.Error(err)
	}
	if err := SyncDir(filepath.Join(t.TempDir(), "missing")); !os.IsNotExist(err) {
		t.Errorf("missing folder: %v", err)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{"/a/b.c": "/a/b.c", "/a b": "'/a b'", "it's": `'it'\''s'`} {
		if got := ShellQuote(in); got != want {
			t.Errorf("ShellQuote(%q) = %q, want %q", in, got, want)
		}
	}
}
