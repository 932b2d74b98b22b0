//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package state_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"popsync/state"
)

// victim is a file outside the state folder that a planted link points
// at; the tests check it is never written.
func victim(t *testing.T) (path string, check func()) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "victim")
	const content = "precious data, not popsync's\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, func() {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("victim: %v", err)
		}
		if string(b) != content {
			t.Errorf("the link's target was written: %q", b)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o644 {
			t.Errorf("the link's target changed mode to %04o", fi.Mode().Perm())
		}
	}
}

func plant(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func wantUnsafe(t *testing.T, err error, contains ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error, want ErrUnsafe")
	}
	if !errors.Is(err, state.ErrUnsafe) {
		t.Errorf("error %v is not ErrUnsafe", err)
	}
	for _, c := range contains {
		if !strings.Contains(err.Error(), c) {
			t.Errorf("error %q does not say %q", err, c)
		}
	}
	t.Logf("error: %v", err)
}

// TestPlantedLinks plants a symbolic link at every path popsync writes in
// the state folder: the state file, its -wal, -shm and -journal files,
// the lock folder, a lock file in it. Each is refused, naming the path and
// saying it is a link, and the link's target is left as it was.
func TestPlantedLinks(t *testing.T) {
	for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
		t.Run("file"+suffix, func(t *testing.T) {
			target, check := victim(t)
			path := tempPath(t)
			if suffix != "" {
				s := open(t, path)
				s.Close()
			}
			plant(t, target, path+suffix)
			_, err := state.OpenSQLite(t.Context(), path)
			wantUnsafe(t, err, path+suffix, "is a symbolic link")
			check()
		})
	}
	t.Run("lock folder", func(t *testing.T) {
		path := tempPath(t)
		dir := t.TempDir()
		_, check := victim(t)
		plant(t, dir, path+".locks")
		_, err := state.OpenSQLite(t.Context(), path)
		wantUnsafe(t, err, path+".locks", "is a symbolic link")
		check()
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("files were made in the link's target: %v", ents)
		}
	})
	t.Run("lock file", func(t *testing.T) {
		target, check := victim(t)
		path := tempPath(t)
		s := open(t, path)
		plant(t, target, filepath.Join(path+".locks", state.LockFileName(acct)))
		_, err := s.LockAccount(t.Context(), acct)
		wantUnsafe(t, err, state.LockFileName(acct), "is a symbolic link")
		check()
	})
	t.Run("stamp", func(t *testing.T) {
		// The stamp is a cache: a link at its temporary file or at the
		// stamp itself is replaced, never followed.
		for _, name := range []string{"checked.tmp", "checked"} {
			target, check := victim(t)
			path := tempPath(t)
			s := open(t, path)
			stamp := filepath.Join(path+".locks", name)
			os.Remove(stamp)
			plant(t, target, stamp)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			check()
			fi, err := os.Lstat(filepath.Join(path+".locks", "checked"))
			if err != nil || !fi.Mode().IsRegular() {
				t.Errorf("%s: after Close the stamp is %v, %v; want a regular file", name, fi, err)
			}
		}
	})
}

// TestUnsafeFolders: a state folder or lock folder that group or others
// can write, or that another user owns, is refused with the command that
// fixes it.
func TestUnsafeFolders(t *testing.T) {
	for _, mode := range []os.FileMode{0o770, 0o702, 0o777, os.ModeSticky | 0o777} {
		t.Run("state folder "+mode.String(), func(t *testing.T) {
			path := tempPath(t)
			dir := filepath.Dir(path)
			if err := os.Chmod(dir, mode); err != nil {
				t.Fatal(err)
			}
			_, err := state.OpenSQLite(t.Context(), path)
			wantUnsafe(t, err, dir, "writable by others", "chmod go-w ")
			if _, serr := os.Stat(path); serr == nil {
				t.Error("the state file was created in the refused folder")
			}
		})
	}
	t.Run("lock folder", func(t *testing.T) {
		path := makeDB(t, 1)
		if err := os.Chmod(path+".locks", 0o775); err != nil {
			t.Fatal(err)
		}
		refused(t, path, state.ErrUnsafe, path+".locks", "writable by others", "chmod go-w")
	})
	t.Run("owner", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("changing a folder's owner needs root")
		}
		path := tempPath(t)
		dir := filepath.Dir(path)
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		_, err := state.OpenSQLite(t.Context(), path)
		wantUnsafe(t, err, dir, "owned by uid 65534", "chown 0 "+dir)
	})
	t.Run("file owner", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("changing a file's owner needs root")
		}
		path := makeDB(t, 1)
		if err := os.Chown(path, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		refused(t, path, state.ErrUnsafe, "owned by uid 65534", "chown 0")
	})
}

// TestOpenLockFile: the lock file opener refuses links, hard links and
// foreign files, and creates a missing file 0600.
func TestOpenLockFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.lock")
	f, err := state.OpenLockFile(p, "test lock")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o, want 0600", fi.Mode().Perm())
	}
	target, check := victim(t)
	link := filepath.Join(dir, "link.lock")
	plant(t, target, link)
	_, err = state.OpenLockFile(link, "test lock")
	wantUnsafe(t, err, "test lock "+link+" is a symbolic link")
	check()

	hard := filepath.Join(dir, "hard.lock")
	if err := os.Link(p, hard); err != nil {
		t.Fatal(err)
	}
	_, err = state.OpenLockFile(hard, "test lock")
	wantUnsafe(t, err, "2 hard links")
}
