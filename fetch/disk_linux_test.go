package fetch_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"popsync/configs"
	"popsync/fetch/pop3/pop3test"
	"popsync/internal/realtest"
	"popsync/state"
)

// tmpfs mounts a tmpfs of size bytes on a new folder and unmounts it when
// the test ends. It needs root: it skips without, and fails instead when
// POPSYNC_REQUIRE_REAL=1 (CI runs as root).
func tmpfs(t *testing.T, size int64) string {
	t.Helper()
	if os.Getuid() != 0 {
		if realtest.RequireReal() {
			t.Fatalf("mounting a tmpfs needs root, and %s=1", realtest.EnvRequireReal)
		}
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput(); err != nil {
		if realtest.RequireReal() {
			t.Fatalf("mount tmpfs: %v: %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

func remount(t *testing.T, dir, opts string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,"+opts, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s %s: %v: %s", dir, opts, err, out)
	}
}

// wantRecorded asserts the seen-set holds exactly the messages now in the
// Maildir (none of the others), and no open intent.
func (e *env) wantRecorded(delivered int) {
	e.t.Helper()
	known, err := state.Known(e.t.Context(), e.store, e.acct.Identity(), uids(e.msgs))
	if err != nil {
		e.t.Fatal(err)
	}
	if len(known) != delivered {
		e.t.Fatalf("seen-set holds %d of the messages, the Maildir %d", len(known), delivered)
	}
	if in, err := e.store.Intents(e.t.Context(), e.acct.Identity()); err != nil || len(in) != 0 {
		e.t.Fatalf("open intents: %v, %v", in, err)
	}
}

// wantNoDele asserts no session sent DELE.
func (e *env) wantNoDele() {
	e.t.Helper()
	for _, tr := range e.srv.Transcripts() {
		for _, l := range tr.Lines {
			if strings.HasPrefix(strings.ToUpper(l), "DELE") {
				e.t.Fatalf("DELE sent: %q", l)
			}
		}
	}
}

// largeMessages are n messages of about size octets each.
func largeMessages(n, size int) []pop3test.Message {
	out := make([]pop3test.Message, n)
	for i := range out {
		out[i] = pop3test.LargeMessage(size, int64(400+i))
	}
	return out
}

func TestFullFilesystem(t *testing.T) {
	msgs := largeMessages(20, 60_000) // 1.2 MB into 512 KiB
	e := newEnv(t, msgs, pop3test.Config{})
	mnt := tmpfs(t, 512<<10)
	e.maildir = filepath.Join(mnt, "Maildir")
	e.acct.Deliver[0].Target = &configs.MaildirTarget{Path: e.maildir}
	e.acct.Keep = false

	r := e.poll()
	if !errors.Is(r.Err, syscall.ENOSPC) || !strings.Contains(r.Err.Error(), e.maildir) {
		t.Fatalf("poll into a full filesystem: %v\nwant ENOSPC naming the Maildir", r.Err)
	}
	t.Logf("full disk: %v (delivered %d before)", r.Err, r.Delivered)
	if r.Delivered == 0 || r.Delivered >= len(msgs) || r.Deleted != 0 {
		t.Fatalf("poll: %+v", r)
	}
	// What fitted is delivered once and recorded; the rest neither; the
	// server still holds everything; tmp/ is clean.
	e.wantExactlyOnce(msgs[:r.Delivered])
	e.wantRecorded(r.Delivered)
	e.wantOnServer(uids(msgs)...)
	e.wantNoDele()

	// A second poll while still full: no progress, no damage.
	before := r.Delivered
	r = e.poll()
	if !errors.Is(r.Err, syscall.ENOSPC) || r.Delivered != 0 || r.Deleted != 0 {
		t.Fatalf("second poll on a full disk: %+v", r)
	}
	e.wantExactlyOnce(msgs[:before])
	e.wantNoDele()

	// Space returns: everything exactly once, and the server emptied.
	remount(t, mnt, "size=16m")
	r = e.mustPoll()
	if r.Delivered != len(msgs)-before || r.Deleted != len(msgs) {
		t.Fatalf("poll after space returned: %+v", r)
	}
	e.wantExactlyOnce(msgs)
	e.wantRecorded(len(msgs))
	e.wantOnServer()
}

func TestReadOnlyMaildir(t *testing.T) {
	msgs := pop3test.SampleMessages(12, 410)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	var restore func()
	if os.Getuid() == 0 {
		// root ignores permission bits: make the file system read-only.
		mnt := tmpfs(t, 16<<20)
		e.maildir = filepath.Join(mnt, "Maildir")
		e.acct.Deliver[0].Target = &configs.MaildirTarget{Path: e.maildir}
		for _, sub := range []string{"tmp", "new", "cur"} {
			if err := os.MkdirAll(filepath.Join(e.maildir, sub), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		remount(t, mnt, "ro")
		restore = func() { remount(t, mnt, "rw") }
	} else {
		for _, sub := range []string{"tmp", "new", "cur"} {
			if err := os.MkdirAll(filepath.Join(e.maildir, sub), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		for _, sub := range []string{"tmp", "new"} {
			if err := os.Chmod(filepath.Join(e.maildir, sub), 0o500); err != nil {
				t.Fatal(err)
			}
		}
		restore = func() {
			for _, sub := range []string{"tmp", "new"} {
				os.Chmod(filepath.Join(e.maildir, sub), 0o700)
			}
		}
		t.Cleanup(restore)
	}

	r := e.poll()
	if r.Err == nil || !(errors.Is(r.Err, syscall.EROFS) || errors.Is(r.Err, os.ErrPermission)) {
		t.Fatalf("poll into a read-only Maildir: %v, want EROFS or a permission error", r.Err)
	}
	if !strings.Contains(r.Err.Error(), e.maildir) {
		t.Errorf("the error does not name the Maildir: %v", r.Err)
	}
	t.Logf("read-only Maildir: %v", r.Err)
	if r.Delivered != 0 || r.Deleted != 0 {
		t.Fatalf("poll: %+v", r)
	}
	e.wantRecorded(0)
	e.wantOnServer(uids(msgs)...)
	e.wantNoDele()

	restore()
	r = e.mustPoll()
	if r.Delivered != len(msgs) || r.Deleted != len(msgs) {
		t.Fatalf("poll after the Maildir became writable: %+v", r)
	}
	e.wantExactlyOnce(msgs)
	e.wantRecorded(len(msgs))
	e.wantOnServer()
}
