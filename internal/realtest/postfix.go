package realtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// postfixUser and postfixGroup are the accounts Debian's postfix package
// creates; the private instance runs its daemons as them.
const (
	postfixUser  = "postfix"
	postfixGroup = "postdrop"
)

// PostfixDomain is the mail domain of the test Postfix: every recipient in
// it other than PostfixOptions.Local is unknown and refused with 550 at
// RCPT TO.
const PostfixDomain = "popsync.test"

// PostfixOptions asks for features of the test MTA. The zero value is an
// SMTP server on 127.0.0.1 that accepts mail from loopback for
// me@popsync.test and delivers it with virtual(8) into one Maildir.
type PostfixOptions struct {
	// Local is the local part of the mailbox; default "me".
	Local string
	// Extra are the local parts of more mailboxes in the same domain, each
	// with its own Maildir (see MaildirOf).
	Extra []string
	// Owner is the user who owns the delivered mail; default TestUser.
	Owner string
	// Config is appended to the generated main.cf as it is; a setting
	// given here overrides the generated one (for example
	// "message_size_limit = 100000").
	Config string
}

// Postfix is a running private Postfix instance (its own configuration,
// queue and Maildir, nothing shared with a system Postfix).
type Postfix struct {
	Addr    string // 127.0.0.1:port, SMTP (no TLS, no AUTH)
	Rcpt    string // the address of the mailbox, e.g. me@popsync.test
	Maildir string // where that mailbox's mail is delivered (cur, new, tmp)

	Dir     string // the instance directory; removed at cleanup
	LogFile string // Postfix's log (maillog_file)

	bin       string
	configDir string
	pid       int // the master's pid, once started
}

// StartPostfix starts a private Postfix for the test, listening on
// 127.0.0.1 and a free port, and stops it (by its master's pid) and
// removes its directory when the test ends. Postfix needs root to start
// its master (it drops privileges itself): when the tests do not run as
// root, or Postfix, its users or TestUser (the owner of the delivered mail)
// are missing, the test skips, or fails under POPSYNC_REQUIRE_REAL=1.
func StartPostfix(t testing.TB, opts PostfixOptions) *Postfix {
	t.Helper()
	Require(t, "postfix")
	if os.Geteuid() != 0 {
		unavailable(t, "postfix needs root to start its master daemon")
	}
	if opts.Owner == "" {
		opts.Owner = TestUser
	}
	if _, err := user.Lookup(opts.Owner); err != nil {
		unavailable(t, fmt.Sprintf("the user %s that owns the test MTA's mail is missing (./scripts/test.sh creates it): %v", opts.Owner, err))
	}
	if _, err := user.Lookup(postfixUser); err != nil {
		unavailable(t, fmt.Sprintf("the %s user of Debian's postfix package is missing: %v", postfixUser, err))
	}
	if _, err := user.LookupGroup(postfixGroup); err != nil {
		unavailable(t, fmt.Sprintf("the %s group of Debian's postfix package is missing: %v", postfixGroup, err))
	}
	p, err := LaunchPostfix(opts)
	if p != nil {
		t.Cleanup(func() { p.cleanup(t) })
	}
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// LaunchPostfix is StartPostfix for programs: it returns an error where
// StartPostfix skips or fails, and the caller stops the instance with
// Close. It needs root. On error, a non-nil Postfix still has a
// directory (with its log) for Close to remove.
func LaunchPostfix(opts PostfixOptions) (*Postfix, error) {
	bin, err := LookPath("postfix")
	if err != nil {
		return nil, err
	}
	if opts.Owner == "" {
		opts.Owner = TestUser
	}
	mailUser, err := user.Lookup(opts.Owner)
	if err != nil {
		return nil, fmt.Errorf("the owner of the test MTA's mail: %w", err)
	}
	owner, err := runAsFrom(mailUser, true)
	if err != nil {
		return nil, err
	}
	if opts.Local == "" {
		opts.Local = "me"
	}
	p := &Postfix{bin: bin, Rcpt: opts.Local + "@" + PostfixDomain}
	if err := p.prepare(owner, opts); err != nil {
		return p, fmt.Errorf("preparing postfix: %w", err)
	}
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return p, err
		}
		if err := p.configure(port, owner, opts); err != nil {
			return p, fmt.Errorf("configuring postfix: %w", err)
		}
		err = p.start()
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, errAddrInUse) || attempt == startAttempts {
			return p, fmt.Errorf("starting postfix: %w\n%s", err, p.logTail(30))
		}
	}
}

// Close stops the instance and removes its directory.
func (p *Postfix) Close() error {
	err := p.stop()
	if p.Dir != "" {
		err = errors.Join(err, os.RemoveAll(p.Dir))
	}
	return err
}

// MaildirOf returns the Maildir of the mailbox local@PostfixDomain, one
// of PostfixOptions.Local and .Extra.
func (p *Postfix) MaildirOf(local string) string {
	return filepath.Join(p.Dir, "mail", local, "Maildir")
}

// prepare makes the instance directory: configuration, queue, data and
// mail directories with the owners Postfix wants.
func (p *Postfix) prepare(owner runAs, opts PostfixOptions) error {
	dir, err := os.MkdirTemp("/tmp", "popsync-postfix-")
	if err != nil {
		return fmt.Errorf("making instance directory: %w", err)
	}
	p.Dir = dir
	// The daemons run as postfix and the mail owner: they must reach in.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	p.configDir = filepath.Join(dir, "etc")
	p.LogFile = filepath.Join(dir, "maillog")
	p.Maildir = filepath.Join(dir, "mail", opts.Local, "Maildir")
	for _, sub := range []string{"etc", "spool", "lib", "mail"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
	}
	pf, err := user.Lookup(postfixUser)
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(pf.Uid)
	gid, _ := strconv.Atoi(pf.Gid)
	if err := os.Chown(filepath.Join(dir, "lib"), uid, gid); err != nil {
		return err
	}
	if err := os.Chown(filepath.Join(dir, "mail"), owner.uid, owner.gid); err != nil {
		return err
	}
	var vmailbox strings.Builder
	for _, local := range append([]string{opts.Local}, opts.Extra...) {
		fmt.Fprintf(&vmailbox, "%s@%s %s/Maildir/\n", local, PostfixDomain, local)
	}
	return os.WriteFile(filepath.Join(p.configDir, "vmailbox"), []byte(vmailbox.String()), 0o644)
}

// configure writes main.cf and master.cf for port.
func (p *Postfix) configure(port int, owner runAs, opts PostfixOptions) error {
	p.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	main := fmt.Sprintf(`# Private Postfix for popsync's tests: SMTP on %[2]s only, delivery by
# virtual(8) into one Maildir, nothing rewritten.
compatibility_level = 3.6
queue_directory = %[1]s/spool
data_directory = %[1]s/lib
mail_owner = %[3]s
setgid_group = %[4]s
myhostname = mta.%[5]s
mydomain = %[5]s
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
relayhost =
relay_domains =
alias_maps =
alias_database =
local_recipient_maps =
biff = no
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
message_size_limit = 104857600
mailbox_size_limit = 0
virtual_mailbox_limit = 0
virtual_mailbox_domains = %[5]s
virtual_mailbox_base = %[1]s/mail
virtual_mailbox_maps = texthash:%[1]s/etc/vmailbox
virtual_uid_maps = static:%[6]d
virtual_gid_maps = static:%[7]d
virtual_minimum_uid = 1
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject
# Keep the messages as sent: no header rewriting or added headers for
# clients on 127.0.0.1 (by default they count as local), no 8-bit or
# SMTPUTF8 refusals.
local_header_rewrite_clients =
always_add_missing_headers = no
smtputf8_enable = no
strict_8bitmime = no
%[8]s
`, p.Dir, p.Addr, postfixUser, postfixGroup, PostfixDomain, owner.uid, owner.gid, opts.Config)
	master := p.Addr + ` inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`
	if err := os.WriteFile(filepath.Join(p.configDir, "main.cf"), []byte(main), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(p.configDir, "master.cf"), []byte(master), 0o644)
}

// postfixCmd runs the postfix command on this instance.
func (p *Postfix) postfixCmd(args ...string) error {
	cmd := exec.Command(p.bin, append([]string{"-c", p.configDir}, args...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("postfix %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// start starts the master. "postfix start" returns once the master has
// initialized (it runs master -w), listeners included, so the server is
// ready when it returns 0.
func (p *Postfix) start() error {
	os.Remove(p.LogFile)
	// "start" runs the checks of "postfix check" and creates the queue.
	if err := p.postfixCmd("start"); err != nil {
		if strings.Contains(p.logTail(20), "Address already in use") {
			return fmt.Errorf("%w: %v", errAddrInUse, err)
		}
		return err
	}
	b, err := os.ReadFile(filepath.Join(p.Dir, "spool", "pid", "master.pid"))
	if err != nil {
		return fmt.Errorf("reading the master's pid: %w", err)
	}
	p.pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("reading the master's pid: %w", err)
	}
	return nil
}

// Stop stops the instance now; the cleanup does it anyway, and calling it
// twice is fine.
func (p *Postfix) Stop(t testing.TB) {
	t.Helper()
	if err := p.stop(); err != nil {
		t.Error(err)
	}
}

// stop asks the master (by this instance's pid file) to stop and waits for
// it to exit; after stopTimeout it kills it.
func (p *Postfix) stop() error {
	if p.pid == 0 {
		return nil
	}
	pid := p.pid
	p.pid = 0
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("watching postfix master %d: %w", pid, err)
	}
	defer unix.Close(fd)
	stopErr := p.postfixCmd("stop")
	if exited(fd, stopTimeout) {
		return stopErr
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		return fmt.Errorf("killing postfix master %d: %w", pid, err)
	}
	exited(fd, stopTimeout)
	return fmt.Errorf("postfix master %d did not stop within %v and was killed (%v)", pid, stopTimeout, stopErr)
}

// exited waits up to d for the process of pidfd fd to exit.
func exited(fd int, d time.Duration) bool {
	end := time.Now().Add(d)
	for {
		left := time.Until(end)
		if left <= 0 {
			return false
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(left.Milliseconds())+1)
		if err == nil && n > 0 {
			return true
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return false
		}
	}
}

func (p *Postfix) cleanup(t testing.TB) {
	if err := p.stop(); err != nil {
		t.Error(err)
	}
	if p.Dir == "" {
		return
	}
	if t.Failed() {
		t.Logf("postfix log %s, last lines:\n%s", p.LogFile, p.logTail(40))
	}
	if err := os.RemoveAll(p.Dir); err != nil {
		t.Errorf("removing postfix instance: %v", err)
	}
}

// Log returns Postfix's log so far.
func (p *Postfix) Log(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(p.LogFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("reading postfix log: %v", err)
	}
	return string(b)
}

func (p *Postfix) logTail(n int) string {
	b, err := os.ReadFile(p.LogFile)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return "(postfix wrote no log)"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Messages returns the delivered messages, as stored (LF line endings,
// Postfix's Return-Path, Delivered-To and Received fields on top), ordered
// by file name (delivery time).
func (p *Postfix) Messages(t testing.TB) [][]byte {
	t.Helper()
	names, err := p.files()
	if err != nil {
		t.Fatalf("reading postfix mailbox: %v", err)
	}
	out := make([][]byte, 0, len(names))
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatalf("reading postfix mailbox: %v", err)
		}
		out = append(out, b)
	}
	return out
}

// files lists the message files in new/ and cur/, by name.
func (p *Postfix) files() ([]string, error) {
	var out []string
	for _, sub := range []string{"new", "cur"} {
		entries, err := os.ReadDir(filepath.Join(p.Maildir, sub))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			out = append(out, filepath.Join(p.Maildir, sub, e.Name()))
		}
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Compare(filepath.Base(a), filepath.Base(b)) })
	return out, nil
}

// WaitMessages waits until at least n messages were delivered to the
// Maildir, watching it with inotify rather than polling, and returns them;
// it fails the test after timeout.
func (p *Postfix) WaitMessages(t testing.TB, n int, timeout time.Duration) [][]byte {
	t.Helper()
	newDir := filepath.Join(p.Maildir, "new")
	// virtual(8) makes the Maildir (and its parent) with the first
	// message: until then, watch the closest directory that exists.
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatalf("watching postfix mailbox: %v", err)
	}
	defer unix.Close(fd)
	watched := ""
	watch := func() {
		for d := newDir; d != p.Dir && d != watched; d = filepath.Dir(d) {
			if _, err := unix.InotifyAddWatch(fd, d, unix.IN_CREATE|unix.IN_MOVED_TO); err == nil {
				watched = d
				return
			}
		}
	}
	end := time.Now().Add(timeout)
	buf := make([]byte, 64<<10)
	for {
		watch()
		names, err := p.files()
		if err != nil {
			t.Fatalf("reading postfix mailbox: %v", err)
		}
		if len(names) >= n {
			return p.Messages(t)
		}
		left := time.Until(end)
		if left <= 0 {
			t.Fatalf("%d of %d messages delivered by postfix within %v\n%s", len(names), n, timeout, p.logTail(20))
		}
		if _, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(left.Milliseconds())+1); err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatalf("watching postfix mailbox: %v", err)
		}
		for {
			if _, err := unix.Read(fd, buf); err != nil {
				break
			}
		}
	}
}
