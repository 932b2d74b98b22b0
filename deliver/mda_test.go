package deliver_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"popsync/deliver"
	"popsync/deliver/delivertest"
)

// script writes an executable shell script into dir and returns its path.
func script(t testing.TB, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func newMDA(t testing.TB, opts deliver.MDAOptions) *deliver.MDA {
	t.Helper()
	m, err := deliver.NewMDA(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// mdaStoreScript stores each message as a file in $1/new, written in $1/tmp
// first, so a killed run leaves nothing in new.
const mdaStoreScript = `set -e
f=$(mktemp "$1/tmp/m.XXXXXX")
cat > "$f"
mv "$f" "$1/new/"
`

func TestMDASuite(t *testing.T) {
	prog := script(t, t.TempDir(), "store", mdaStoreScript)
	dirs := map[*testing.T]string{}
	dir := func(t *testing.T) string {
		d, ok := dirs[t]
		if !ok {
			d = t.TempDir()
			for _, sub := range []string{"tmp", "new"} {
				if err := os.Mkdir(filepath.Join(d, sub), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			dirs[t] = d
		}
		return d
	}
	delivertest.RunSuite(t, func(t *testing.T) deliver.Target {
		return newMDA(t, deliver.MDAOptions{Command: []string{prog, dir(t)}})
	}, func(t *testing.T) [][]byte {
		entries, err := os.ReadDir(filepath.Join(dir(t), "new"))
		if err != nil {
			t.Fatal(err)
		}
		var msgs [][]byte
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(dir(t), "new", e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(b, []byte("\r")) {
				t.Errorf("the program got a CR: %q", b)
			}
			msgs = append(msgs, bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")))
		}
		return msgs
	})
}

func TestMDAEnvironment(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "env.out")
	prog := script(t, dir, "env", `cat > /dev/null
{
  echo "account=$POPSYNC_ACCOUNT"
  echo "uidl=$POPSYNC_UIDL"
  echo "sender=${SENDER-unset}"
  echo "given=$MDA_TEST_GIVEN"
  echo "inherited=$POPSYNC_TEST_INHERITED"
  echo "argv0=$0 args=$*"
} > "$1"
`)
	// Only MDAOptions.Env reaches the program, never popsync's own
	// environment; stale copies of the variables the target sets are
	// dropped from Env.
	t.Setenv("POPSYNC_TEST_INHERITED", "yes")
	env := []string{"MDA_TEST_GIVEN=yes", "SENDER=stale@example.test", "POPSYNC_UIDL=stale", "POPSYNC_ACCOUNT=stale"}
	tests := []struct {
		name, from, header, sender string
	}{
		{"return-path", "f@example.test", "Return-Path: <rp@example.net>\r\n", "rp@example.net"},
		{"null sender", "f@example.test", "Return-Path: <>\r\n", ""},
		{"from", "f@example.test", "", "f@example.test"},
		{"unknown", "", "", "unset"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newMDA(t, deliver.MDAOptions{Command: []string{prog, out, "x y"}, From: tc.from, Env: env})
			d, err := m.Begin(context.Background(), deliver.Meta{Account: "home", UIDL: "u-1"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := d.Write(msg(tc.header, "body\r\n")); err != nil {
				t.Fatal(err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			want := "account=home\nuidl=u-1\nsender=" + tc.sender + "\ngiven=yes\ninherited=\nargv0=" + prog + " args=" + out + " x y\n"
			if string(b) != want {
				t.Errorf("environment:\n%s\nwant:\n%s", b, want)
			}
		})
	}
}

func TestMDAExitStatus(t *testing.T) {
	dir := t.TempDir()
	noise := strings.Repeat("x", 10000)
	tests := []struct {
		name, body string
		temporary  bool
		code       int
		text       string // the error's Text ends with this
		is         error
	}{
		{"EX_TEMPFAIL", "cat >/dev/null; echo 'try later' >&2; exit 75", true, 75, "try later\n", nil},
		{"exit 1 with stderr", "cat >/dev/null; echo 'mailbox is full' >&2; exit 1", false, 1, "mailbox is full\n", nil},
		{"long stderr: its end", "cat >/dev/null; printf '" + noise + "' >&2; echo ' the end' >&2; exit 67", false, 67, "x the end\n", nil},
		{"exit before reading", "exit 1", false, 1, "", nil},
		{"exit 0 before reading", "exit 0", true, 0, "", deliver.ErrIncomplete},
		{"killed by a signal", "cat >/dev/null; kill -9 $$", true, 0, "", nil},
	}
	// Larger than a pipe buffer, so a program that does not read blocks
	// the writes.
	big := msg("", strings.Repeat("line of the body\r\n", 20000))
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prog := script(t, dir, "exit"+string(rune('a'+i)), tc.body)
			m := newMDA(t, deliver.MDAOptions{Command: []string{prog}})
			err := send(m, big, deliver.Meta{})
			var de *deliver.DeliveryError
			if !errors.As(err, &de) {
				t.Fatalf("error %v (%T), want *DeliveryError", err, err)
			}
			if de.Temporary != tc.temporary || de.Code != tc.code || de.Stage != deliver.StageExit {
				t.Errorf("%v: temporary %v code %d stage %s; want %v %d %s", err, de.Temporary, de.Code, de.Stage, tc.temporary, tc.code, deliver.StageExit)
			}
			if !strings.HasSuffix(de.Text, tc.text) {
				t.Errorf("Text %q does not end with %q", de.Text, tc.text)
			}
			if len(de.Text) > 4<<10+3 {
				t.Errorf("Text is %d bytes, want the last 4 KiB", len(de.Text))
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("%v is not %v", err, tc.is)
			}
		})
	}
}

func TestMDAMissingProgram(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, prog := range []string{filepath.Join(dir, "missing"), notExec, "popsync-no-such-program"} {
		m := newMDA(t, deliver.MDAOptions{Command: []string{prog}})
		if err := m.Check(context.Background()); err == nil || !strings.Contains(err.Error(), prog) {
			t.Errorf("Check of %s: %v, want an error naming it", prog, err)
		}
		for range 2 {
			_, err := m.Begin(context.Background(), deliver.Meta{})
			var de *deliver.DeliveryError
			if !errors.As(err, &de) || !de.Temporary || !de.TargetDown() || de.Stage != deliver.StageStart || !strings.Contains(err.Error(), prog) {
				t.Errorf("Begin with %s: %v, want a temporary start error naming it", prog, err)
			}
		}
	}
	ok := newMDA(t, deliver.MDAOptions{Command: []string{"true"}})
	if err := ok.Check(context.Background()); err != nil {
		t.Errorf("Check of true: %v", err)
	}
}

// TestMDADeadline: a program that hangs is killed with everything it
// started (its process group) when the deadline passes.
func TestMDADeadline(t *testing.T) {
	dir := t.TempDir()
	// The shell waits for a child that keeps standard error open: unless
	// the whole group is killed, Wait would wait for the pipe.
	prog := script(t, dir, "hang", "sleep 1000\n")
	const timeout = 200 * time.Millisecond
	m := newMDA(t, deliver.MDAOptions{Command: []string{prog}, Timeout: timeout})
	start := time.Now()
	err := send(m, msg("", "body\r\n"), deliver.Meta{})
	elapsed := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) || !deliver.IsTemporary(err) {
		t.Fatalf("error %v, want a temporary DeadlineExceeded", err)
	}
	if elapsed < timeout || elapsed > 3*time.Second {
		t.Errorf("returned after %v; deadline %v, and the group should die at once", elapsed, timeout)
	}
}

// TestMDACanceled: the end of the context kills the program.
func TestMDACanceled(t *testing.T) {
	prog := script(t, t.TempDir(), "hang", "cat > /dev/null; sleep 1000\n")
	m := newMDA(t, deliver.MDAOptions{Command: []string{prog}})
	ctx, cancel := context.WithCancel(context.Background())
	d, err := m.Begin(ctx, deliver.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Write(msg("", "x\r\n")); err != nil {
		t.Fatal(err)
	}
	cancel()
	err = d.Close()
	if !errors.Is(err, context.Canceled) || !deliver.IsTemporary(err) {
		t.Fatalf("Close: %v, want temporary context.Canceled", err)
	}
}
