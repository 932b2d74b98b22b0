package realtest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// startTimeout bounds the wait for Dovecot's readiness notification.
	startTimeout = 30 * time.Second
	// stopTimeout bounds the wait for Dovecot to exit after SIGTERM; then
	// it is killed.
	stopTimeout = 15 * time.Second
	// ioTimeout is the deadline of every network exchange of the harness.
	ioTimeout = 10 * time.Second
	// startAttempts is how often a start is tried with new ports when a
	// port turned out to be taken.
	startAttempts = 5
)

// DovecotOptions asks for features of the test server. The zero value is a
// POP3 server with USER/PASS and SASL PLAIN and LOGIN.
type DovecotOptions struct {
	// User and Password of the one mailbox. Defaults: "popsync@example.test"
	// and a random password. User must be lower case (Dovecot lowercases
	// the login name before the lookup) and neither may contain ':' or a
	// line break.
	User, Password string
	// APOP turns on APOP (RFC 1939 §7): Dovecot then puts a timestamp
	// into its greeting and accepts the APOP command.
	APOP bool
	// Mechanisms are SASL mechanisms (RFC 5034) offered besides PLAIN and
	// LOGIN, for example "CRAM-MD5" or "DIGEST-MD5". The passwords are
	// stored in plain text, so every mechanism Dovecot has can work.
	Mechanisms []string
	// LMTP adds an LMTP listener (RFC 2033) on 127.0.0.1 that delivers
	// into the same mailbox; its address is Dovecot.LMTPAddr. Recipient:
	// the User.
	LMTP bool
	// IMAP adds IMAP listeners (RFC 3501) on 127.0.0.1 for the same
	// mailbox: Dovecot.IMAPAddr (plain text, STARTTLS offered) and
	// Dovecot.IMAPTLSAddr (implicit TLS). See imap.go.
	IMAP bool
	// Config is appended to the generated dovecot.conf as it is, for
	// settings a test needs and this type does not name, for example
	// "pop3_lock_session = yes" or "login_greeting = hello". A setting
	// given here overrides the generated one.
	Config string
	// OAuth2 adds Dovecot's oauth2 passdb (XOAUTH2 and OAUTHBEARER,
	// tokens checked by introspection); see oauth2.go.
	OAuth2 *OAuth2Passdb

	// Users are more mailboxes beside User, with the same Password; see
	// MaildirOf. Same rules as User.
	Users []string
	// Connections, when set, is how many POP3 sessions may run at once,
	// in all and per user and address (the default is Dovecot's process
	// limits and 100 per user and address).
	Connections int
	// RunAs names the user Dovecot runs as when this process is root;
	// default TestUser. Without root it runs as the current user.
	RunAs string
	// Parent is the folder the instance directory is made in; default
	// the system's temporary folder. Its Unix socket paths must stay
	// under 108 bytes.
	Parent string
}

// Dovecot is a running private Dovecot instance with one mailbox.
type Dovecot struct {
	Addr     string // 127.0.0.1:port, POP3 in plain text, STLS offered
	TLSAddr  string // 127.0.0.1:port, POP3 over implicit TLS
	LMTPAddr string // 127.0.0.1:port, LMTP; empty unless DovecotOptions.LMTP

	IMAPAddr, IMAPTLSAddr string // 127.0.0.1:port, IMAP; empty unless DovecotOptions.IMAP

	User, Password string

	CAFile     string // PEM of the self-signed server certificate (localhost, 127.0.0.1, ::1)
	CertSHA256 string // hex SHA-256 of the server certificate (DER), lower case
	Maildir    string // the server-side Maildir of User (cur, new, tmp)

	Dir     string // the instance directory: configuration, log, mail; removed at cleanup
	LogFile string // Dovecot's log

	who        runAs
	opts       DovecotOptions
	configFile string
	caPool     *x509.CertPool

	// proc is the master process; exited is closed once it has been
	// waited for, and waitErr is its exit status then.
	proc    *exec.Cmd
	exited  chan struct{}
	waitErr error

	stopMu  sync.Mutex
	started bool // the start succeeded: an exit before Stop is a failure
	stopped bool // Stop was called: an exit is expected

	mu   sync.Mutex // guards last
	last time.Time  // time in the name of the last delivered message
}

// runAs is the user the Dovecot processes run as.
type runAs struct {
	name     string // user name
	group    string // name of the user's primary group
	uid, gid int
	switchTo bool // the tests run as root: start Dovecot as this user
}

// StartDovecot starts a private Dovecot POP3 server on 127.0.0.1 for the
// test and stops it (by the master's pid) and removes its directory when
// the test ends. It skips the test, or fails it under
// POPSYNC_REQUIRE_REAL=1, when Dovecot or the TestUser is missing.
func StartDovecot(t testing.TB, opts DovecotOptions) *Dovecot {
	t.Helper()
	return startDovecot(t, opts, freePort)
}

// startDovecot is StartDovecot with the port picker as a parameter, so a
// test can hand out a taken port.
func startDovecot(t testing.TB, opts DovecotOptions, pickPort func() (int, error)) *Dovecot {
	t.Helper()
	Require(t, "dovecot")
	if opts.IMAP {
		requireIMAP(t)
	}
	bin, err := LookPath("dovecot")
	if err != nil {
		t.Fatal(err)
	}
	if err := opts.fill(); err != nil {
		t.Fatalf("starting dovecot: %v", err)
	}
	who, err := serverUser(opts.RunAs)
	if err != nil {
		unavailable(t, err.Error())
	}
	d := &Dovecot{User: opts.User, Password: opts.Password, who: who, opts: opts}
	t.Cleanup(func() { d.cleanup(t) })
	if err := d.launch(bin, pickPort, t.Logf); err != nil {
		t.Fatal(err)
	}
	return d
}

// LaunchDovecot is StartDovecot for programs (the peer benchmark): it
// returns an error where StartDovecot skips or fails, and the caller stops
// the instance with Close. On error, a non-nil Dovecot still has a
// directory (with its log) for Close to remove.
func LaunchDovecot(opts DovecotOptions) (*Dovecot, error) {
	bin, err := LookPath("dovecot")
	if err != nil {
		return nil, err
	}
	if err := opts.fill(); err != nil {
		return nil, fmt.Errorf("starting dovecot: %w", err)
	}
	who, err := serverUser(opts.RunAs)
	if err != nil {
		return nil, err
	}
	d := &Dovecot{User: opts.User, Password: opts.Password, who: who, opts: opts}
	return d, d.launch(bin, freePort, func(string, ...any) {})
}

// launch prepares the instance and starts it, trying new ports while the
// ones picked turn out to be taken; logf reports the retries.
func (d *Dovecot) launch(bin string, pickPort func() (int, error), logf func(string, ...any)) error {
	if err := d.prepare(); err != nil {
		return fmt.Errorf("starting dovecot: %w", err)
	}
	for attempt := 1; ; attempt++ {
		err := d.configure(pickPort)
		if err == nil {
			err = d.start(bin)
		}
		if err == nil {
			d.stopMu.Lock()
			d.started = true
			d.stopMu.Unlock()
			return nil
		}
		if errors.Is(err, errAddrInUse) && attempt < startAttempts {
			logf("dovecot start attempt %d: %v; retrying with new ports", attempt, err)
			continue
		}
		return fmt.Errorf("starting dovecot (attempt %d): %w\n%s", attempt, err, d.logTail(40))
	}
}

// Close stops the instance and removes its directory, for a Dovecot from
// LaunchDovecot.
func (d *Dovecot) Close() error {
	d.stopMu.Lock()
	d.stopped = true
	d.stopMu.Unlock()
	err := d.terminate()
	if d.Dir != "" {
		if rerr := os.RemoveAll(d.Dir); rerr != nil && err == nil {
			err = fmt.Errorf("removing dovecot instance: %w", rerr)
		}
	}
	return err
}

// Pid is the master process's pid, 0 when it does not run.
func (d *Dovecot) Pid() int {
	if d.proc == nil || d.proc.Process == nil {
		return 0
	}
	return d.proc.Process.Pid
}

// MaildirOf is the server-side Maildir of user: User's is Maildir, those
// of DovecotOptions.Users are mail/USER/Maildir in the instance directory.
func (d *Dovecot) MaildirOf(user string) string {
	if user == d.User {
		return d.Maildir
	}
	return filepath.Join(d.Dir, "mail", user, "Maildir")
}

// start runs the master in the foreground (-F) as a child of the test
// process and waits until it reports readiness over the systemd notify
// protocol (sd_notify READY=1, sent once its listeners are bound), then
// checks that every listener greets.
func (d *Dovecot) start(bin string) error {
	notifyPath := filepath.Join(d.Dir, "notify")
	_ = os.Remove(notifyPath)
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("listening for readiness: %w", err)
	}
	defer os.Remove(notifyPath)
	defer notify.Close()
	if err := d.own(notifyPath); err != nil {
		return err
	}

	// Each attempt starts with empty logs, so a failure is judged by its
	// own messages.
	for _, name := range []string{d.LogFile, filepath.Join(d.Dir, "stderr.log")} {
		if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing old log: %w", err)
		}
	}
	// Output before the log file is open (configuration errors) goes here.
	out, err := os.OpenFile(filepath.Join(d.Dir, "stderr.log"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("opening dovecot stderr file: %w", err)
	}
	defer out.Close()

	cmd := exec.Command(bin, "-F", "-c", d.configFile)
	cmd.Dir = d.Dir
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "NOTIFY_SOCKET=" + notifyPath}
	cmd.Stdout, cmd.Stderr = out, out
	// Pdeathsig: if the test binary dies without cleanup, the master gets
	// SIGTERM and takes its children down with it. (Linux sends it when
	// the starting OS thread ends; Go ends threads only under goroutines
	// that exit while locked to one.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if d.who.switchTo {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(d.who.uid), Gid: uint32(d.who.gid), Groups: []uint32{}}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("running %s: %w", bin, err)
	}
	exited := make(chan struct{})
	d.proc, d.exited, d.waitErr = cmd, exited, nil
	go func() {
		err := cmd.Wait()
		d.waitErr = err
		close(exited)
	}()

	ready := make(chan error, 1)
	go func() { ready <- awaitReady(notify) }()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	readerDone := false
	select {
	case err = <-ready:
		readerDone = true
	case <-exited:
		err = fmt.Errorf("%w: %v", errExited, d.waitErr)
		if strings.Contains(d.logTail(20), "Address already in use") {
			err = fmt.Errorf("%w (%v)", errAddrInUse, err)
		}
	case <-timer.C:
		err = fmt.Errorf("no readiness notification within %v", startTimeout)
	}
	notify.Close()
	if !readerDone {
		<-ready // returns now that its socket is closed
	}
	if err == nil {
		err = d.checkListeners()
	}
	if err != nil {
		if serr := d.terminate(); serr != nil {
			err = fmt.Errorf("%w; %v", err, serr)
		}
		return err
	}
	return nil
}

// awaitReady reads sd_notify datagrams until one says READY=1.
func awaitReady(c *net.UnixConn) error {
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("reading readiness notification: %w", err)
		}
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			if line == "READY=1" {
				return nil
			}
		}
	}
}

// checkListeners connects once to every listener and reads its greeting,
// so a broken auth process or TLS setup fails the start, not the test.
func (d *Dovecot) checkListeners() error {
	dialer := &net.Dialer{Timeout: ioTimeout}
	greet := func(c net.Conn, name, want, quit string) error {
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
			return fmt.Errorf("checking %s: %w", name, err)
		}
		r := bufio.NewReader(c)
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("reading %s greeting: %w", name, err)
		}
		if !strings.HasPrefix(line, want) {
			return fmt.Errorf("%s greeting %q, want %q", name, strings.TrimSpace(line), want)
		}
		if d.opts.APOP && want == "+OK" && !strings.Contains(line, "<") {
			return fmt.Errorf("%s greeting %q has no APOP timestamp", name, strings.TrimSpace(line))
		}
		if _, err := fmt.Fprintf(c, "%s\r\n", quit); err != nil {
			return fmt.Errorf("closing %s: %w", name, err)
		}
		_, _ = r.ReadString('\n')
		return nil
	}

	c, err := dialer.Dial("tcp", d.Addr)
	if err != nil {
		return fmt.Errorf("connecting to pop3 listener: %w", err)
	}
	if err := greet(c, "pop3", "+OK", "QUIT"); err != nil {
		return err
	}
	tc, err := tls.DialWithDialer(dialer, "tcp", d.TLSAddr, d.TLSConfig())
	if err != nil {
		return fmt.Errorf("connecting to pop3s listener: %w", err)
	}
	if err := greet(tc, "pop3s", "+OK", "QUIT"); err != nil {
		return err
	}
	if err := d.checkIMAP(dialer, greet); err != nil {
		return err
	}
	if d.LMTPAddr != "" {
		c, err := dialer.Dial("tcp", d.LMTPAddr)
		if err != nil {
			return fmt.Errorf("connecting to lmtp listener: %w", err)
		}
		if err := greet(c, "lmtp", "220 ", "QUIT"); err != nil {
			return err
		}
	}
	return nil
}

// TLSConfig returns a client configuration that trusts only the server's
// certificate, with ServerName "localhost". Each call returns a new one.
func (d *Dovecot) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: d.caPool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// CertPool returns a pool that holds only the server's certificate.
func (d *Dovecot) CertPool() *x509.CertPool { return d.caPool.Clone() }

// Stop stops the server now, for tests of an unreachable server. The
// cleanup does it anyway; calling Stop twice is fine.
func (d *Dovecot) Stop(t testing.TB) {
	t.Helper()
	d.stopMu.Lock()
	d.stopped = true
	d.stopMu.Unlock()
	if err := d.terminate(); err != nil {
		t.Error(err)
	}
}

// terminate sends SIGTERM to the master, named by its pid file, and waits
// for it to exit; after stopTimeout it kills it.
func (d *Dovecot) terminate() error {
	if d.proc == nil {
		return nil
	}
	select {
	case <-d.exited:
		return nil
	default:
	}
	pid := d.proc.Process.Pid
	// With -F the master does not fork: its pid file must name our child.
	// Anything else is not ours to signal.
	if b, err := os.ReadFile(filepath.Join(d.Dir, "run", "master.pid")); err == nil {
		if filePid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && filePid != pid {
			return fmt.Errorf("stopping dovecot: pid file names %d, but the master is %d; not signalling", filePid, pid)
		}
	}
	if err := d.proc.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stopping dovecot (pid %d): %w", pid, err)
	}
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-d.exited:
		return nil
	case <-timer.C:
	}
	if err := d.proc.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing dovecot (pid %d): %w", pid, err)
	}
	<-d.exited
	return fmt.Errorf("dovecot (pid %d) ignored SIGTERM for %v and was killed", pid, stopTimeout)
}

// cleanup stops the server, reports an unexpected exit, shows the log of a
// failed test and removes the instance directory.
func (d *Dovecot) cleanup(t testing.TB) {
	d.stopMu.Lock()
	check := d.started && !d.stopped
	d.stopMu.Unlock()
	if check {
		select {
		case <-d.exited:
			t.Errorf("dovecot exited during the test: %v", d.waitErr)
		default:
		}
	}
	if err := d.terminate(); err != nil {
		t.Error(err)
	}
	if d.Dir == "" {
		return
	}
	if t.Failed() {
		t.Logf("dovecot log %s, last lines:\n%s", d.LogFile, d.logTail(40))
	}
	if err := os.RemoveAll(d.Dir); err != nil {
		t.Errorf("removing dovecot instance: %v", err)
	}
}

// Log returns Dovecot's log so far, for example to check the session
// summaries ("retr=2/1234, del=1/2").
func (d *Dovecot) Log(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(d.LogFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("reading dovecot log: %v", err)
	}
	return string(b)
}

// logTail returns the last n lines of Dovecot's stderr and log files.
func (d *Dovecot) logTail(n int) string {
	var b strings.Builder
	for _, name := range []string{"stderr.log", "dovecot.log"} {
		data, err := os.ReadFile(filepath.Join(d.Dir, name))
		if err != nil || len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", name, strings.Join(lines, "\n"))
	}
	if b.Len() == 0 {
		return "(dovecot wrote no log)"
	}
	return b.String()
}
