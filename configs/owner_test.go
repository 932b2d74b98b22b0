//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package configs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadOwner: a config file owned by another user, or in a folder
// others can write or own, is refused naming the file or folder and the
// command that fixes it; the user's own file, a root-owned one and one in
// a sticky folder are fine.
func TestLoadOwner(t *testing.T) {
	src := strings.Replace(validAccount, `password_command = ["pass", "show", "home"]`, `password = "hunter2"`, 1)
	write := func(t *testing.T, dir string) string {
		t.Helper()
		p := filepath.Join(dir, "config.toml")
		if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	loadErr := func(t *testing.T, p string, want ...string) {
		t.Helper()
		_, err := Load(p)
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("Load: %v; want ErrInvalid", err)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not say %q", err, w)
			}
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error shows the password: %v", err)
		}
		t.Logf("error: %v", err)
	}

	t.Run("own file", func(t *testing.T) {
		if _, err := Load(write(t, t.TempDir())); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("folder writable by group", func(t *testing.T) {
		dir := t.TempDir()
		p := write(t, dir)
		if err := os.Chmod(dir, 0o770); err != nil {
			t.Fatal(err)
		}
		loadErr(t, p, p+": is in folder "+dir+", which others can write (mode 0770)", "chmod go-w "+dir)
	})
	t.Run("sticky folder", func(t *testing.T) {
		dir := t.TempDir()
		p := write(t, dir)
		if err := os.Chmod(dir, os.ModeSticky|0o777); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p); err != nil {
			t.Fatal(err)
		}
	})
	if os.Geteuid() != 0 {
		t.Skip("the owner cases need root to change owners")
	}
	t.Run("file of another user", func(t *testing.T) {
		p := write(t, t.TempDir())
		if err := os.Chown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		loadErr(t, p, p+": is owned by uid 65534, not by the user running popsync (uid 0)", "chown 0 "+p)
	})
	t.Run("folder of another user", func(t *testing.T) {
		dir := t.TempDir()
		p := write(t, dir)
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		loadErr(t, p, "is in folder "+dir+", owned by uid 65534", "chown 0 "+dir)
	})
}
