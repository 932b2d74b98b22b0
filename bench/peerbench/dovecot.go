package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"popsync/fetch/pop3"
)

// dovecot is a private Dovecot POP3 server on 127.0.0.1, run as the server
// user, with one passwd-file that holds every benchmark mailbox.
type dovecot struct {
	dir      string // instance directory: config, run, state, log, passwd
	mailRoot string // home folders of the mailboxes: mailRoot/<user>/Maildir
	addr     string // 127.0.0.1:port (plain POP3)
	port     int
	password string
	who      *osUser

	cmd    *exec.Cmd
	exited chan struct{}
	err    error // exit status, valid once exited is closed
}

const (
	dovecotStartTimeout = 30 * time.Second
	dovecotStopTimeout  = 15 * time.Second
	benchPassword       = "peerbench-secret"
)

// startDovecot writes the configuration for the given mailbox users and
// starts the master in the foreground (-F) as a child of this process. It
// waits for Dovecot's sd_notify READY=1, sent once the listeners are bound.
func startDovecot(ctx context.Context, dataDir string, who *osUser, users []string) (*dovecot, error) {
	bin, err := exec.LookPath("dovecot")
	if err != nil {
		return nil, fmt.Errorf("finding dovecot (apt-get install dovecot-pop3d): %w", err)
	}
	d := &dovecot{
		dir:      filepath.Join(dataDir, "dovecot"),
		mailRoot: filepath.Join(dataDir, "mail"),
		password: benchPassword,
		who:      who,
	}
	for _, p := range []string{d.dir, filepath.Join(d.dir, "run"), filepath.Join(d.dir, "state"), d.mailRoot} {
		if err := who.mkdirAll(p, 0o755); err != nil {
			return nil, err
		}
	}
	var passwd strings.Builder
	for _, u := range users {
		home := filepath.Join(d.mailRoot, u)
		if err := who.mkdirAll(home, 0o700); err != nil {
			return nil, err
		}
		// user:password:uid:gid:gecos:home:shell:extra
		fmt.Fprintf(&passwd, "%s:{PLAIN}%s:%d:%d::%s::\n", u, d.password, who.uid, who.gid, home)
	}
	if err := who.writeFile(filepath.Join(d.dir, "passwd"), []byte(passwd.String()), 0o600); err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		err := d.start(ctx, bin)
		if err == nil {
			return d, nil
		}
		if attempt < 5 && strings.Contains(d.logTail(), "Address already in use") {
			continue // the free port was taken between pick and bind
		}
		return nil, fmt.Errorf("starting dovecot: %w\n%s", err, d.logTail())
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (d *dovecot) config() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# Private Dovecot of popsync's peerbench; stopped when the benchmark ends.")
	p("instance_name = peerbench")
	p("base_dir = %s/run", d.dir)
	p("state_dir = %s/state", d.dir)
	p("log_path = %s/dovecot.log", d.dir)
	p("protocols = pop3")
	p("listen = 127.0.0.1")
	p("ssl = no")
	p("default_login_user = %s", d.who.name)
	p("default_internal_user = %s", d.who.name)
	p("default_internal_group = %s", d.who.group)
	p("first_valid_uid = %d", d.who.uid)
	p("last_valid_uid = %d", d.who.uid)
	p("first_valid_gid = %d", d.who.gid)
	p("disable_plaintext_auth = no")
	p("auth_mechanisms = plain login")
	p("auth_failure_delay = 0")
	p("passdb {")
	p("  driver = passwd-file")
	p("  args = scheme=PLAIN username_format=%%u %s/passwd", d.dir)
	p("}")
	p("userdb {")
	p("  driver = passwd-file")
	p("  args = username_format=%%u %s/passwd", d.dir)
	p("}")
	p("mail_location = maildir:~/Maildir")
	p("pop3_uidl_format = %%08Xu%%08Xv")
	p("protocol pop3 {")
	p("  mail_max_userip_connections = 200")
	p("}")
	p("service pop3-login {")
	p("  chroot =")
	p("  process_limit = 256")
	p("  inet_listener pop3 {")
	p("    address = 127.0.0.1")
	p("    port = %d", d.port)
	p("  }")
	p("  inet_listener pop3s {")
	p("    port = 0")
	p("  }")
	p("}")
	p("service pop3 {")
	p("  process_limit = 256")
	p("}")
	p("service anvil {")
	p("  chroot =")
	p("  unix_listener anvil-auth-penalty {")
	p("    mode = 0")
	p("  }")
	p("}")
	p("service auth-worker {")
	p("  user = $default_internal_user")
	p("}")
	return b.String()
}

func (d *dovecot) start(ctx context.Context, bin string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	d.port = port
	d.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	conf := filepath.Join(d.dir, "dovecot.conf")
	if err := d.who.writeFile(conf, []byte(d.config()), 0o644); err != nil {
		return err
	}
	os.Remove(filepath.Join(d.dir, "dovecot.log"))

	notifyPath := filepath.Join(d.dir, "notify")
	os.Remove(notifyPath)
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("listening for readiness: %w", err)
	}
	defer os.Remove(notifyPath)
	defer notify.Close()
	if err := d.who.chown(notifyPath); err != nil {
		return err
	}
	out, err := os.Create(filepath.Join(d.dir, "stderr.log"))
	if err != nil {
		return fmt.Errorf("creating dovecot stderr log: %w", err)
	}
	defer out.Close()
	cmd := exec.Command(bin, "-F", "-c", conf)
	cmd.Dir = d.dir
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "NOTIFY_SOCKET=" + notifyPath}
	cmd.Stdout, cmd.Stderr = out, out
	// If this program dies without stopping it, the master gets SIGTERM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Credential: d.who.credential()}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("running %s: %w", bin, err)
	}
	d.cmd = cmd
	d.exited = make(chan struct{})
	go func() {
		d.err = cmd.Wait()
		close(d.exited)
	}()
	ready := make(chan error, 1)
	go func() { ready <- awaitReady(notify) }()
	timer := time.NewTimer(dovecotStartTimeout)
	defer timer.Stop()
	select {
	case err = <-ready:
	case <-d.exited:
		err = fmt.Errorf("dovecot exited: %v", d.err)
	case <-timer.C:
		err = fmt.Errorf("no readiness notification within %v", dovecotStartTimeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	notify.Close()
	if err != nil {
		d.stop()
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

// stop sends SIGTERM to the master this program started and waits for it;
// after dovecotStopTimeout it kills it.
func (d *dovecot) stop() error {
	if d.cmd == nil {
		return nil
	}
	select {
	case <-d.exited:
		return nil
	default:
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stopping dovecot: %w", err)
	}
	select {
	case <-d.exited:
		return nil
	case <-time.After(dovecotStopTimeout):
	}
	d.cmd.Process.Kill()
	<-d.exited
	return fmt.Errorf("dovecot ignored SIGTERM for %v and was killed", dovecotStopTimeout)
}

func (d *dovecot) logTail() string {
	var b strings.Builder
	for _, name := range []string{"stderr.log", "dovecot.log"} {
		data, err := os.ReadFile(filepath.Join(d.dir, name))
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 20 {
			lines = lines[len(lines)-20:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", name, strings.Join(lines, "\n"))
	}
	return b.String()
}

// maildir is the server-side Maildir of user.
func (d *dovecot) maildir(user string) string {
	return filepath.Join(d.mailRoot, user, "Maildir")
}

// uidlCount logs in as user and returns how many messages the server
// lists. One such session also makes Dovecot build its index of a freshly
// filled Maildir, as it would have for mail an LDA delivered, so that no
// tool pays for that.
func (d *dovecot) uidlCount(ctx context.Context, user string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	c, err := pop3.Dial(ctx, d.addr, pop3.Options{Security: pop3.SecurityNone, Timeout: 5 * time.Minute})
	if err != nil {
		return 0, fmt.Errorf("connecting to dovecot: %w", err)
	}
	defer c.Close()
	if err := c.Auth(ctx, "user", user, d.password); err != nil {
		return 0, fmt.Errorf("logging in as %s: %w", user, err)
	}
	uids, err := c.UIDL(ctx)
	if err != nil {
		return 0, fmt.Errorf("listing %s: %w", user, err)
	}
	if err := c.Quit(ctx); err != nil {
		return 0, fmt.Errorf("logging out %s: %w", user, err)
	}
	return len(uids), nil
}

// cpu returns the CPU seconds (user and system) Dovecot has used so far:
// the master, its live descendants, and the children it has reaped, such
// as the POP3 session processes.
func (d *dovecot) cpu() float64 {
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	master := d.cmd.Process.Pid
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	type proc struct {
		ppid  int
		ticks int64 // utime + stime, and for the master cutime + cstime
	}
	procs := map[int]proc{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name may hold spaces: the fields follow its ")".
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 15 {
			continue
		}
		// f[0] is field 3 (state): ppid is field 4, utime..cstime 14..17.
		ppid, _ := strconv.Atoi(f[1])
		var t int64
		for k := 11; k <= 14; k++ {
			if pid != master && k > 12 {
				break // a live child's children are counted as they are
			}
			v, _ := strconv.ParseInt(f[k], 10, 64)
			t += v
		}
		procs[pid] = proc{ppid, t}
	}
	var ticks int64
	for pid, p := range procs {
		for q := pid; q > 1; q = procs[q].ppid {
			if q == master {
				ticks += p.ticks
				break
			}
			if _, ok := procs[q]; !ok {
				break
			}
		}
	}
	return float64(ticks) / 100 // USER_HZ
}
