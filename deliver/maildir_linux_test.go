package deliver

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// mount mounts a file system for the test and unmounts it when the test
// ends; it skips the test when mounting is not allowed.
func mount(t *testing.T, source, target, fstype string, flags uintptr, data string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	if err := syscall.Mount(source, target, fstype, flags, data); err != nil {
		t.Skipf("cannot mount %s on %s: %v", fstype, target, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(target, 0); err != nil {
			t.Errorf("unmounting %s: %v", target, err)
		}
	})
}

// readOnly makes dir read-only for this process: by permissions when not
// root, by a read-only bind mount when root (which permissions do not stop).
func readOnly(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		for _, p := range []string{dir, filepath.Join(dir, "tmp"), filepath.Join(dir, "new")} {
			if err := os.Chmod(p, 0o500); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() {
			for _, p := range []string{dir, filepath.Join(dir, "tmp"), filepath.Join(dir, "new")} {
				os.Chmod(p, 0o700)
			}
		})
		return
	}
	mount(t, dir, dir, "", syscall.MS_BIND, "")
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
		t.Skipf("cannot remount %s read-only: %v", dir, err)
	}
}

func TestMaildirReadOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	m, err := NewMaildir(dir, MaildirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	readOnly(t, dir)
	d, err := m.Begin(bg, Meta{})
	if err == nil {
		d.Abort()
		t.Fatal("Begin in a read-only Maildir succeeded")
	}
	if !strings.Contains(err.Error(), "maildir "+dir+": creating tmp/") {
		t.Errorf("error does not name the Maildir and file: %v", err)
	}
	if !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EACCES) {
		t.Errorf("error does not carry the cause: %v", err)
	}
	// A missing Maildir below a read-only directory cannot be created.
	if _, err := NewMaildir(filepath.Join(dir, "sub"), MaildirOptions{}); err == nil {
		t.Error("NewMaildir in a read-only directory succeeded")
	}
	if got := names(t, m, "new"); len(got) != 0 {
		t.Errorf("new/ = %v", got)
	}
}

// TestMaildirDiskFull fills a 1 MiB tmpfs: the message that does not fit
// fails with an error that says so, the others of the batch are unharmed,
// and nothing partial reaches new/.
func TestMaildirDiskFull(t *testing.T) {
	mnt := t.TempDir()
	mount(t, "tmpfs", mnt, "tmpfs", 0, "size=1m")
	dir := filepath.Join(mnt, "Maildir")
	m, err := NewMaildir(dir, MaildirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	small := []byte("Subject: small\r\n\r\nfits\r\n")
	before := stageMsg(t, m, small)

	big, err := m.Begin(bg, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("0123456789abcde\r\n"), 4096) // 68 KiB
	var werr error
	for range 32 { // 2 MiB
		if _, werr = big.Write(chunk); werr != nil {
			break
		}
	}
	cerr := big.Close()
	err = errors.Join(werr, cerr)
	if cerr == nil {
		t.Fatalf("Close after a full disk succeeded (Write error: %v)", werr)
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("error does not carry ENOSPC: %v", err)
	}
	want := "maildir " + dir + ": disk full writing tmp/" + big.Token()
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
	if err := big.Abort(); err != nil {
		t.Errorf("Abort after a failed Close: %v", err)
	}
	if got := names(t, m, "tmp"); len(got) != 1 || got[0] != before.Token() {
		t.Errorf("tmp/ = %v, want only the small message", got)
	}
	if err := m.Prepare(bg, []Delivery{big}); !errors.Is(err, ErrState) {
		t.Errorf("Prepare of the failed delivery: %v, want ErrState", err)
	}

	after := stageMsg(t, m, small)
	deliverAll(t, m, before, after)
	got := names(t, m, "new")
	if want := sortedTokens(before, after); !slices.Equal(got, want) {
		t.Fatalf("new/ = %v, want %v", got, want)
	}
	for _, n := range got {
		if b := readNew(t, m, n); !bytes.Equal(b, lfReference(small)) {
			t.Errorf("new/%s = %q", n, b)
		}
	}
}
