package deliver

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestRemoveStale(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	m, err := NewMaildir(dir, MaildirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A pid that certainly is gone: a child that has exited.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip("no true(1):", err)
	}
	dead := cmd.Process.Pid
	live := os.Getppid()
	name := func(pid int, host string) string {
		n := m.newName()
		n = strings.Replace(n, "P"+itoa(os.Getpid())+"Q", "P"+itoa(pid)+"Q", 1)
		return strings.TrimSuffix(n, m.host) + host
	}
	files := map[string]bool{ // name → must survive
		name(dead, m.host):                             false,
		name(live, m.host):                             true,
		name(os.Getpid(), m.host):                      true,
		name(dead, "other-host"):                       true,
		"1700000000.M1P" + itoa(dead) + ".dovecot-lda": true,
	}
	for n := range files {
		if err := os.WriteFile(filepath.Join(dir, "tmp", n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n, err := m.RemoveStale(t.Context())
	if err != nil || n != 1 {
		t.Fatalf("RemoveStale = %d, %v; want 1 removed", n, err)
	}
	for f, keep := range files {
		_, err := os.Stat(filepath.Join(dir, "tmp", f))
		if keep != (err == nil) {
			t.Errorf("%s: exists=%v, want %v", f, err == nil, keep)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
