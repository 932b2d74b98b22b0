package state_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"popsync/state"
)

// tree lists every file under dir with its size and modification time.
func tree(t *testing.T, dir string) []string {
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
		out = append(out, fmt.Sprintf("%s %v %v %d", p, fi.Mode(), fi.ModTime(), fi.Size()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestReadOnlyWritesNothing: a read-only store reads what a writer
// committed, refuses every write, and leaves the folder as it was: no
// -wal, -shm, stamp, lock folder or lock file.
func TestReadOnlyWritesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	a := state.Account{Host: "pop.example.net", Port: 995, User: "me"}
	w := open(t, path)
	deliver(t, w, a, 3)
	if err := w.RecordPoll(t.Context(), state.Poll{Name: "home", Account: a, Start: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	before := tree(t, dir)

	r, exists, err := state.OpenSQLiteReadOnly(t.Context(), path)
	if err != nil || !exists {
		t.Fatalf("OpenSQLiteReadOnly: %v, exists %v", err, exists)
	}
	st, err := r.Status(t.Context())
	if err != nil || len(st) != 1 || st[0].Seen != 3 {
		t.Fatalf("Status = %+v, %v; want the one account with 3 records", st, err)
	}
	lease, err := r.LockAccount(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.MarkDelivered(t.Context(), a, []state.Record{{UIDL: "x", State: state.Delivered}}); err == nil {
		t.Error("MarkDelivered through a read-only store succeeded")
	}
	lease.Release()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if after := tree(t, dir); !slices.Equal(before, after) {
		t.Errorf("the folder changed:\nbefore %q\nafter  %q", before, after)
	}
}

// TestReadOnlyMissingFile: a missing state file reads as empty and is not
// created.
func TestReadOnlyMissingFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "state.db")
	r, exists, err := state.OpenSQLiteReadOnly(t.Context(), path)
	if err != nil || exists {
		t.Fatalf("OpenSQLiteReadOnly: %v, exists %v", err, exists)
	}
	a := state.Account{Host: "pop.example.net", Port: 995, User: "me"}
	seen, err := r.ReadSeen(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	if recs := seen.Lookup([]string{"a"}); recs[0].State != 0 {
		t.Errorf("an empty state knows %+v", recs[0])
	}
	if _, err := r.LockAccount(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "sub")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the state's folder was created: %v", err)
	}
}
