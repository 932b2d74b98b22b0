package main_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"popsync/fetch/pop3/pop3test"
	"popsync/internal/realtest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// popsyncBinary builds the command once per test process.
func popsyncBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "popsync-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "popsync")
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			goBin = "go"
		}
		out, err := exec.Command(goBin, "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// account is one [[account]] of a generated config.
type account struct {
	name, user, password string
	keep                 bool
	maildir              string
}

func writeConfig(t *testing.T, dir string, d *realtest.Dovecot, accts ...account) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "[state]\npath = %q\n\n[daemon]\nmax_parallel = 4\n", filepath.Join(dir, "state.db"))
	host, port, _ := strings.Cut(d.TLSAddr, ":")
	for _, a := range accts {
		fmt.Fprintf(&b, `
[[account]]
name = %q
host = %q
port = %s
tls = "implicit"
tls_ca_file = %q
user = %q
password = %q
keep = %v

  [[account.deliver]]
  maildir = %q
`, a.name, host, port, d.CAFile, a.user, a.password, a.keep, a.maildir)
	}
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type runResult struct {
	code           int
	stdout, stderr string
}

func runPopsync(t *testing.T, args ...string) runResult {
	t.Helper()
	cmd := exec.Command(popsyncBinary(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return runResult{code, out.String(), errb.String()}
}

// e2eMail is the realistic mix the issue asks for: sample mail (lines
// starting with '.', 8-bit UTF-8, long lines, no final newline) and a few
// multi-MB attachments.
func e2eMail(n int) []pop3test.Message {
	msgs := pop3test.SampleMessages(n, 42)
	for i, size := range []int{2 << 20, 5 << 20, 3 << 20} {
		if k := (i + 1) * n / 4; k < n {
			big := pop3test.LargeMessage(size, int64(i))
			big.UID = msgs[k].UID
			msgs[k] = big
		}
	}
	return msgs
}

func datas(msgs []pop3test.Message) [][]byte {
	out := make([][]byte, len(msgs))
	for i, m := range msgs {
		out[i] = m.Data
	}
	return out
}

// wantLF is a message as it must land in the Maildir: LF line endings,
// a final newline (POP3 cannot carry its absence).
func wantLF(data []byte) string {
	s := strings.ReplaceAll(string(data), "\r\n", "\n")
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s
}

// maildirContents returns the messages in new/ and cur/ with popsync's
// three-line Received header removed.
func maildirContents(t *testing.T, maildir string) []string {
	return (&maildirReader{dir: maildir}).read(t)
}

// maildirReader reads a Maildir repeatedly, each file once: a delivered
// file never changes.
// eachMaildirFile calls f with "new/NAME" or "cur/NAME" and the content
// of every message file of the Maildir dir; a missing folder holds none.
func eachMaildirFile(t *testing.T, dir string, f func(name string, b []byte)) {
	t.Helper()
	eachMaildirName(t, dir, func(name string) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		f(name, b)
	})
}

// eachMaildirName calls f with "new/NAME" or "cur/NAME" for every message
// file of the Maildir at dir.
func eachMaildirName(t *testing.T, dir string, f func(name string)) {
	t.Helper()
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, de := range ents {
			f(sub + "/" + de.Name())
		}
	}
}

type maildirReader struct {
	dir   string
	files map[string]string
}

func (m *maildirReader) read(t *testing.T) []string {
	t.Helper()
	if m.files == nil {
		m.files = make(map[string]string)
	}
	var out []string
	eachMaildirName(t, m.dir, func(key string) {
		s, ok := m.files[key]
		if !ok {
			b, err := os.ReadFile(filepath.Join(m.dir, key))
			if err != nil {
				t.Fatal(err)
			}
			s = string(b)
			if !strings.HasPrefix(s, "Received: from ") {
				t.Fatalf("%s does not start with popsync's Received header", key)
			}
			for range 3 {
				s = s[strings.IndexByte(s, '\n')+1:]
			}
			m.files[key] = s
		}
		out = append(out, s)
	})
	return out
}

// checkExactlyOnce fails unless the Maildir holds each message exactly once.
func checkExactlyOnce(t *testing.T, maildir string, msgs [][]byte) {
	t.Helper()
	got := maildirContents(t, maildir)
	count := make(map[string]int, len(got))
	for _, s := range got {
		count[s]++
	}
	missing, dup := 0, 0
	for _, m := range msgs {
		switch count[wantLF(m)] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
		delete(count, wantLF(m))
	}
	if missing > 0 || dup > 0 || len(count) > 0 || len(got) != len(msgs) {
		t.Fatalf("Maildir holds %d files for %d messages: %d missing, %d duplicated, %d unknown",
			len(got), len(msgs), missing, dup, len(count))
	}
	if tmp, _ := os.ReadDir(filepath.Join(maildir, "tmp")); len(tmp) > 0 {
		t.Fatalf("%d files left in tmp/", len(tmp))
	}
}

func TestEndToEndDovecot(t *testing.T) {
	d := realtest.StartDovecot(t, realtest.DovecotOptions{})
	msgs := datas(e2eMail(2000))
	d.Deliver(t, msgs...)
	dir := t.TempDir()
	maildir := filepath.Join(dir, "Maildir")
	cfg := writeConfig(t, dir, d,
		account{name: "main", user: d.User, password: d.Password, keep: true, maildir: maildir},
		account{name: "typo", user: "nobody@example.test", password: "wrong-password", keep: true, maildir: filepath.Join(dir, "Other")})

	// A wrong password fails that account alone, with a clear message.
	r := runPopsync(t, "fetch", "-c", cfg)
	if r.code != 3 {
		t.Fatalf("exit code %d, want 3 (one account's login failed)\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "account=typo") || !strings.Contains(r.stderr, "logging in") {
		t.Fatalf("the failing account is not named with the reason:\n%s", r.stderr)
	}
	if strings.Contains(r.stderr, "wrong-password") || strings.Contains(r.stderr, d.Password) {
		t.Fatal("a password appears in the log")
	}
	checkExactlyOnce(t, maildir, msgs)

	// A second run fetches nothing.
	r = runPopsync(t, "fetch", "-c", cfg, "--account", "main")
	if r.code != 0 || !strings.Contains(r.stderr, "new=0") {
		t.Fatalf("second run: exit %d\n%s", r.code, r.stderr)
	}
	checkExactlyOnce(t, maildir, msgs)
	if got := d.Count(t); got != len(msgs) {
		t.Fatalf("keep = true, but the server holds %d of %d", got, len(msgs))
	}

	// keep = false empties the server, fetching nothing again.
	cfg = writeConfig(t, dir, d, account{name: "main", user: d.User, password: d.Password, keep: false, maildir: maildir})
	r = runPopsync(t, "fetch", "-c", cfg)
	if r.code != 0 || !strings.Contains(r.stderr, "delivered=0") || !strings.Contains(r.stderr, "deleted=2000") {
		t.Fatalf("keep = false run: exit %d\n%s", r.code, r.stderr)
	}
	if got := d.Count(t); got != 0 {
		t.Fatalf("server still holds %d messages", got)
	}
	checkExactlyOnce(t, maildir, msgs)
}

// TestKillNineExactlyOnce kills popsync with SIGKILL at random moments of
// a 500-message poll with keep = false, and checks after every kill that
// nothing left the server without being in the Maildir, and at the end
// that every message is there exactly once.
func TestKillNineExactlyOnce(t *testing.T) {
	d := realtest.StartDovecot(t, realtest.DovecotOptions{})
	msgs := datas(pop3test.SampleMessages(500, 7))
	want := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		want[wantLF(m)] = true
	}
	d.Deliver(t, msgs...)
	dir := t.TempDir()
	maildir := filepath.Join(dir, "Maildir")
	cfg := writeConfig(t, dir, d, account{name: "main", user: d.User, password: d.Password, keep: false, maildir: maildir})

	// How long an uninterrupted poll takes, and one that finds nothing,
	// measured on a copy, set the range the kills are spread over.
	probeDir := t.TempDir()
	probe := writeConfig(t, probeDir, d, account{name: "main", user: d.User, password: d.Password, keep: true, maildir: filepath.Join(probeDir, "M")})
	k := newKiller(t, cfg, probe, 500, 1)
	t.Logf("full poll %v, idle poll %v; kill seed %d", k.full, k.idle, k.seed)
	kills, batch, remaining := 0, 0, len(msgs)
	md := &maildirReader{dir: maildir}
	for kills < 30 {
		if d.Count(t) == 0 {
			// Every run makes progress, so the work shrinks: refill with
			// new mail until there were enough kills.
			batch++
			more := datas(pop3test.SampleMessages(500, int64(7+batch)))
			for _, m := range more {
				want[wantLF(m)] = true
			}
			msgs = append(msgs, more...)
			d.Deliver(t, more...)
			remaining = len(more)
		}
		if killed, _ := k.run(remaining); killed {
			kills++
		}
		// Nothing may have left the server without being delivered, and
		// nothing may be in the Maildir twice or half.
		onServer := make(map[string]bool)
		for _, m := range d.Messages(t) {
			onServer[wantLF(m)] = true
		}
		have := make(map[string]int)
		for _, s := range md.read(t) {
			have[s]++
			if !want[s] {
				t.Fatal("the Maildir holds a message that is not one of the originals (a partial file?)")
			}
		}
		remaining = 0
		for s := range want {
			if !onServer[s] && have[s] == 0 {
				t.Fatalf("after kill %d a message is gone from the server and not in the Maildir", kills)
			}
			if have[s] == 0 {
				remaining++
			}
		}
		for _, n := range have {
			if n > 1 {
				t.Fatalf("after kill %d a message is in the Maildir twice", kills)
			}
		}
	}
	if r := runPopsync(t, "fetch", "-c", cfg); r.code != 0 {
		t.Fatalf("final run: %s", r.stderr)
	}
	checkExactlyOnce(t, maildir, msgs)
	if n := d.Count(t); n != 0 {
		t.Fatalf("server still holds %d messages", n)
	}
	t.Logf("%d kills over %d messages; every one delivered exactly once", kills, len(msgs))
}
