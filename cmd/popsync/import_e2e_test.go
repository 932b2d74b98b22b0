package main_test

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"popsync/internal/realtest"
)

// oldHome is a home folder for running fetchmail, getmail or mpop the way
// their users do. As root, the tools run as realtest.TestUser (getmail
// refuses to deliver as root, fetchmail warns), so the folder is theirs.
type oldHome struct {
	t        *testing.T
	dir      string
	uid, gid int // -1: the current user
}

func newOldHome(t *testing.T) *oldHome {
	t.Helper()
	dir, err := os.MkdirTemp("", "popsync-import-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &oldHome{t: t, dir: dir, uid: -1, gid: -1}
	if os.Geteuid() == 0 {
		u, err := user.Lookup(realtest.TestUser)
		if err != nil {
			t.Fatalf("tests run as root but %s is missing (./scripts/test.sh creates it): %v", realtest.TestUser, err)
		}
		h.uid, _ = strconv.Atoi(u.Uid)
		h.gid, _ = strconv.Atoi(u.Gid)
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		h.chown(dir)
	}
	return h
}

func (h *oldHome) chown(p string) {
	if h.uid >= 0 {
		if err := os.Lchown(p, h.uid, h.gid); err != nil {
			h.t.Fatal(err)
		}
	}
}

func (h *oldHome) path(rel string) string { return filepath.Join(h.dir, rel) }

// write writes a file under the home, making its folders, owned by the
// tool's user.
func (h *oldHome) write(rel, data string, mode os.FileMode) string {
	h.t.Helper()
	p := h.path(rel)
	h.mkdir(filepath.Dir(rel))
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		h.t.Fatal(err)
	}
	h.chown(p)
	return p
}

func (h *oldHome) mkdir(rel string) {
	h.t.Helper()
	var made []string
	for d := rel; d != "." && d != "/" && d != ""; d = filepath.Dir(d) {
		made = append(made, d)
	}
	for i := len(made) - 1; i >= 0; i-- {
		p := h.path(made[i])
		if err := os.Mkdir(p, 0o700); err == nil {
			h.chown(p)
		} else if !os.IsExist(err) {
			h.t.Fatal(err)
		}
	}
}

func (h *oldHome) maildir(rel string) string {
	for _, s := range []string{"cur", "new", "tmp"} {
		h.mkdir(filepath.Join(rel, s))
	}
	return h.path(rel)
}

// run runs an old tool in the home, as its user, and returns its output.
func (h *oldHome) run(okCodes []int, name string, args ...string) string {
	h.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = h.dir
	cmd.Env = []string{"HOME=" + h.dir, "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C", "USER=" + realtest.TestUser, "LOGNAME=" + realtest.TestUser}
	if h.uid >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(h.uid), Gid: uint32(h.gid)}}
	}
	done := make(chan struct{})
	timer := time.AfterFunc(2*time.Minute, func() {
		select {
		case <-done:
		default:
			if cmd.Process != nil {
				cmd.Process.Kill()
			}
		}
	})
	out, err := cmd.CombinedOutput()
	close(done)
	timer.Stop()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		h.t.Fatalf("%s: %v", name, err)
	}
	for _, c := range okCodes {
		if c == code {
			return string(out)
		}
	}
	h.t.Fatalf("%s %v: exit %d\n%s", name, args, code, out)
	return ""
}

// snapshot lists the old tool's files (everything but the Maildirs and
// popsync's own folder) with their size, mode and modification time.
func (h *oldHome) snapshot() string {
	h.t.Helper()
	var b strings.Builder
	err := filepath.Walk(h.dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(h.dir, p)
		if fi.IsDir() && (rel == "Mail" || rel == "popsync") {
			return filepath.SkipDir
		}
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, "%s %v %d %x %d; ", rel, fi.Mode(), fi.Size(), data, fi.ModTime().UnixNano())
		}
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return b.String()
}

// mailbox is one test account: a private Dovecot with its own user, and
// the Maildir both the old tool and popsync deliver into.
type mailbox struct {
	d       *realtest.Dovecot
	maildir string
	msgs    [][]byte
}

func importMessages(tag string, from, to int) [][]byte {
	var out [][]byte
	for i := from; i < to; i++ {
		out = append(out, []byte(fmt.Sprintf("From: sender@example.org\nTo: %s@example.test\nSubject: %s message %d\nMessage-ID: <%s.%d@import.test>\nDate: Thu, 03 Dec 2026 08:00:00 +0000\n\nbody of %s %d\n.line starting with a dot\n", tag, tag, i, tag, i, tag, i)))
	}
	return out
}

func newMailbox(t *testing.T, h *oldHome, tag string) *mailbox {
	d := realtest.StartDovecot(t, realtest.DovecotOptions{User: tag + "@example.test"})
	m := &mailbox{d: d, maildir: h.maildir("Mail/" + tag)}
	m.msgs = importMessages(tag, 0, 10)
	d.Deliver(t, m.msgs...)
	return m
}

var importMsgID = regexp.MustCompile(`(?mi)^Message-ID: (<[^>]+>)`)

// count returns how often each Message-ID is in the Maildir.
func (m *mailbox) count(t *testing.T) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(m.maildir, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(m.maildir, sub, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			id := importMsgID.FindSubmatch(b)
			if id == nil {
				t.Fatalf("%s: no Message-ID", e.Name())
			}
			n[string(id[1])]++
		}
	}
	return n
}

// wantExactly fails unless the Maildir holds exactly msgs, each once.
func (m *mailbox) wantExactly(t *testing.T, msgs [][]byte, when string) {
	t.Helper()
	n := m.count(t)
	lost, dup := 0, 0
	for _, msg := range msgs {
		id := string(importMsgID.FindSubmatch(msg)[1])
		switch n[id] {
		case 0:
			lost++
		case 1:
		default:
			dup++
		}
		delete(n, id)
	}
	if lost > 0 || dup > 0 || len(n) > 0 {
		t.Fatalf("%s: %s holds %d lost, %d duplicated, %d unexpected of %d messages", when, m.maildir, lost, dup, len(n), len(msgs))
	}
}

func colonHex(h string) string {
	var parts []string
	for i := 0; i+2 <= len(h); i += 2 {
		parts = append(parts, strings.ToUpper(h[i:i+2]))
	}
	return strings.Join(parts, ":")
}

func port(addr string) string { _, p, _ := strings.Cut(addr, ":"); return p }

// takeOver is the migration every tool's test makes: the old tool has
// fetched the first 10 messages of each mailbox (keep); 5 more arrive;
// popsync import, then popsync fetch, must deliver exactly those 5 to
// each mailbox: none twice, none lost. A second import changes nothing.
func takeOver(t *testing.T, tool string, h *oldHome, boxes map[string]*mailbox, wantTLS ...string) {
	t.Helper()
	for name, m := range boxes {
		m.wantExactly(t, m.msgs, tool+" run, mailbox "+name)
		more := importMessages(strings.SplitN(m.d.User, "@", 2)[0], 10, 15)
		m.d.Deliver(t, more...)
		m.msgs = append(m.msgs, more...)
	}
	out := filepath.Join(h.dir, "popsync", "config.toml")
	db := filepath.Join(h.dir, "popsync", "state.db")
	env := []string{"HOME=" + h.dir}
	args := []string{"import", tool, "-o", out, "--state", db}

	// These configs hold nothing popsync cannot convert.
	r := runPopsyncEnv(t, env, append(args, "--dry-run", "--strict")...)
	if r.code != 0 {
		t.Fatalf("import --dry-run: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if n := strings.Count(r.stdout, ": 10 UIDLs from "); n != len(boxes) {
		t.Fatalf("dry run reports 10 UIDLs for %d of %d accounts:\n%s", n, len(boxes), r.stdout)
	}
	before := h.snapshot()
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("--dry-run wrote %s", out)
	}
	r = runPopsyncEnv(t, env, args...)
	if r.code != 0 {
		t.Fatalf("import: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("import:\n%s%s", r.stdout, r.stderr)
	cfg, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range boxes {
		if strings.Contains(string(cfg), m.d.Password) {
			t.Fatal("a password is in the converted config")
		}
	}
	for _, mode := range wantTLS {
		if !strings.Contains(string(cfg), "tls = \""+mode+"\"\n") {
			t.Errorf("no account with tls = %q:\n%s", mode, cfg)
		}
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("config mode %v", fi.Mode())
	}
	if r := runPopsyncEnv(t, env, "check", "-c", out); r.code != 0 {
		t.Fatalf("check: exit %d\n%s\n%s\n%s", r.code, r.stdout, r.stderr, cfg)
	}
	if r := runPopsyncEnv(t, env, args...); r.code == 0 || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("a second import overwrote the config: exit %d\n%s", r.code, r.stderr)
	}

	r = runPopsyncEnv(t, env, "fetch", "-c", out)
	if r.code != 0 {
		t.Fatalf("fetch: exit %d\n%s\n%s", r.code, r.stderr, cfg)
	}
	if got := strings.Count(r.stderr, "delivered=5 "); got != len(boxes) {
		t.Errorf("%d of %d accounts delivered 5:\n%s", got, len(boxes), r.stderr)
	}
	for name, m := range boxes {
		m.wantExactly(t, m.msgs, "popsync fetch, mailbox "+name)
		if n := m.d.Count(t); n != 15 {
			t.Errorf("mailbox %s: the server holds %d of 15", name, n)
		}
	}

	// Importing again (--force) is idempotent: the seen-set is merged,
	// and the next poll has nothing new.
	r = runPopsyncEnv(t, env, append(args, "--force")...)
	if r.code != 0 || !strings.Contains(r.stdout, "merged with the existing seen-set: 0 added") {
		t.Fatalf("second import: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if after := h.snapshot(); after != before {
		t.Errorf("import changed the old tool's files:\nbefore %s\nafter  %s", before, after)
	}
	r = runPopsyncEnv(t, env, "fetch", "-c", out)
	if r.code != 0 || strings.Count(r.stderr, "new=0") != len(boxes) {
		t.Fatalf("fetch after re-import: exit %d\n%s", r.code, r.stderr)
	}
	for name, m := range boxes {
		m.wantExactly(t, m.msgs, "second fetch, mailbox "+name)
	}
}

func runPopsyncEnv(t *testing.T, env []string, args ...string) runResult {
	t.Helper()
	cmd := exec.Command(popsyncBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
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

func TestImportFetchmail(t *testing.T) {
	realtest.Require(t, "fetchmail", "dovecot")
	h := newOldHome(t)
	plain, tls, stls := newMailbox(t, h, "fmplain"), newMailbox(t, h, "fmtls"), newMailbox(t, h, "fmstls")
	// fetchmail has no SMTP listener to talk to here: an MDA that writes
	// a Maildir, as users of procmail-less setups write one.
	mda := h.write("bin/maildir-deliver", `#!/bin/sh
# maildir-deliver DIR: the message on stdin into the Maildir DIR.
set -e
f="$(date +%s).$$.$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n').import"
cat > "$1/tmp/$f"
mv "$1/tmp/$f" "$1/new/$f"
`, 0o755)
	rc := fmt.Sprintf(`# ~/.fetchmailrc
set no bouncemail
defaults proto pop3 uidl
	keep

# plain text, STLS turned off
poll plain via 127.0.0.1 service %s:
	user "%s" there with password "%s" is popsynctest here
	sslproto ''
	mda "%s %s"

# TLS from the first octet, the test CA
poll tls via 127.0.0.1 service %s
	user '%s' with pass "%s"
	options ssl sslcertck sslcertfile "%s" sslcommonname localhost
	mda "%s %s"

# STLS required
poll stls via 127.0.0.1 service %s
	username "%s" password "%s"
	sslproto tls1.2+ sslcertfile %s sslcommonname "localhost"
	mda "%s %s"
`, port(plain.d.Addr), plain.d.User, plain.d.Password, mda, plain.maildir,
		port(tls.d.TLSAddr), tls.d.User, tls.d.Password, tls.d.CAFile, mda, tls.maildir,
		port(stls.d.Addr), stls.d.User, stls.d.Password, stls.d.CAFile, mda, stls.maildir)
	h.write(".fetchmailrc", rc, 0o600)
	out := h.run([]int{0}, "fetchmail", "--nodetach")
	t.Logf("fetchmail: %s", out)
	takeOver(t, "fetchmail", h, map[string]*mailbox{"plain": plain, "tls": tls, "stls": stls}, "none", "implicit", "starttls")
}

func TestImportGetmail(t *testing.T) {
	realtest.Require(t, "getmail", "dovecot")
	h := newOldHome(t)
	plain, tls := newMailbox(t, h, "gmplain"), newMailbox(t, h, "gmtls")
	// getmail has no STLS: plain and implicit TLS, one rc file each, as
	// getmail's documentation suggests for several accounts.
	h.write(".config/getmail/getmailrc-plain", fmt.Sprintf(`[retriever]
type = SimplePOP3Retriever
server = 127.0.0.1
port = %s
username = %s
password = %s

[destination]
type = Maildir
path = %s/

[options]
read_all = false
delete = false
`, port(plain.d.Addr), plain.d.User, plain.d.Password, plain.maildir), 0o600)
	h.write(".config/getmail/getmailrc-tls", fmt.Sprintf(`[retriever]
type = SimplePOP3SSLRetriever
server = 127.0.0.1
port = %s
username = %s
password = %s
ca_certs = %s
ssl_cert_hostname = localhost

[destination]
type = Maildir
path = %s/

[options]
read_all = false
delete = false
verbose = 0
`, port(tls.d.TLSAddr), tls.d.User, tls.d.Password, tls.d.CAFile, tls.maildir), 0o600)
	out := h.run([]int{0}, "getmail", "--rcfile", "getmailrc-plain", "--rcfile", "getmailrc-tls")
	t.Logf("getmail: %s", out)
	takeOver(t, "getmail", h, map[string]*mailbox{"plain": plain, "tls": tls}, "none", "implicit")
}

func TestImportMpop(t *testing.T) {
	realtest.Require(t, "mpop", "dovecot")
	h := newOldHome(t)
	plain, tls, stls := newMailbox(t, h, "mpplain"), newMailbox(t, h, "mptls"), newMailbox(t, h, "mpstls")
	h.write(".mpoprc", fmt.Sprintf(`# ~/.mpoprc
defaults
keep on
only_new on

account plain
host 127.0.0.1
port %s
tls off
# mpop sends a password in the clear only when told which method
auth user
user %s
password %s
delivery maildir %s

# implicit TLS, certificate pinned by its SHA-256 fingerprint
account tls : plain
port %s
tls on
tls_starttls off
tls_fingerprint %s
user %s
password "%s"
delivery maildir %s

account stls
host 127.0.0.1
port %s
tls
tls_starttls on
tls_trust_file %s
user %s
passwordeval "cat %s"
delivery maildir %s
`, port(plain.d.Addr), plain.d.User, plain.d.Password, plain.maildir,
		port(tls.d.TLSAddr), colonHex(tls.d.CertSHA256), tls.d.User, tls.d.Password, tls.maildir,
		port(stls.d.Addr), stls.d.CAFile, stls.d.User, h.write(".stls-password", stls.d.Password+"\n", 0o600), stls.maildir), 0o600)
	out := h.run([]int{0}, "mpop", "-a", "-q")
	t.Logf("mpop: %s", out)
	takeOver(t, "mpop", h, map[string]*mailbox{"plain": plain, "tls": tls, "stls": stls}, "none", "implicit", "starttls")
}
