package realtest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// postgresPort names the server's Unix socket (.s.PGSQL.<port>). The
// server listens on no TCP port (listen_addresses is empty) and its socket
// folder is private, so every instance can use the default.
const postgresPort = 5432

// PostgresOptions asks for features of the test database server. The
// zero value is a server with one superuser whose password is random.
type PostgresOptions struct {
	// Config is appended to the generated postgresql.conf as it is; a
	// setting given here overrides the generated one (for example
	// "max_connections = 20").
	Config string
}

// Postgres is a running private PostgreSQL cluster: its own data folder,
// reachable only over a Unix socket in a folder of its own.
type Postgres struct {
	SocketDir string // the folder of the server's Unix socket
	Port      int    // the port number in the socket's name; no TCP port is open
	User      string // the superuser role, named after the user the server runs as
	Password  string // its password (SCRAM-SHA-256 authentication)

	Dir     string // the instance folder: data, socket, log; removed at cleanup
	DataDir string
	LogFile string

	bin  string // the folder of initdb, postgres, pg_ctl and createdb
	who  runAs
	opts PostgresOptions

	mu      sync.Mutex
	proc    *exec.Cmd     // the running postmaster, nil when stopped
	exited  chan struct{} // closed when proc has been waited for
	waitErr error
	closed  bool
}

// postgresBinDir finds the folder of the PostgreSQL server programs:
// Debian keeps them in /usr/lib/postgresql/<version>/bin, off $PATH; the
// newest version there wins, then pg_ctl on $PATH.
func postgresBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range dirs {
		if isExecutable(filepath.Join(d, "initdb")) && isExecutable(filepath.Join(d, "postgres")) && isExecutable(filepath.Join(d, "pg_ctl")) {
			return d, nil
		}
	}
	p, err := LookPath("pg_ctl")
	if err != nil {
		return "", errors.New("no PostgreSQL server programs (initdb, postgres, pg_ctl) in /usr/lib/postgresql/*/bin or on $PATH")
	}
	d := filepath.Dir(p)
	for _, prog := range []string{"initdb", "postgres"} {
		if !isExecutable(filepath.Join(d, prog)) {
			return "", fmt.Errorf("pg_ctl is %s but %s is not next to it", p, prog)
		}
	}
	return d, nil
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

// RequirePostgres skips the test, or fails it under
// POPSYNC_REQUIRE_REAL=1, when StartPostgres or LaunchPostgres cannot work
// here: the PostgreSQL server programs or, under root, the TestUser are
// missing. For tests that share one cluster started by TestMain.
func RequirePostgres(t testing.TB) {
	t.Helper()
	if err := PostgresAvailable(); err != nil {
		unavailable(t, err.Error())
	}
}

// PostgresAvailable says why LaunchPostgres cannot work here, or nil.
func PostgresAvailable() error {
	if _, err := postgresBinDir(); err != nil {
		return fmt.Errorf("%w (run ./scripts/test.sh as root to install them)", err)
	}
	_, err := serverUser("")
	return err
}

// StartPostgres starts a private PostgreSQL server for the test and stops
// it (pg_ctl stop -m fast) and removes its folder when the test ends. It
// skips the test, or fails it under POPSYNC_REQUIRE_REAL=1, when the
// PostgreSQL server programs or, under root, the TestUser are missing.
func StartPostgres(t testing.TB, opts PostgresOptions) *Postgres {
	t.Helper()
	RequirePostgres(t)
	p, err := LaunchPostgres(opts)
	if p != nil {
		t.Cleanup(func() { p.cleanup(t) })
	}
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// LaunchPostgres is StartPostgres for programs (benchmarks): it returns an
// error where StartPostgres skips or fails, and the caller stops the
// server and removes its folder with Close. On error, a non-nil Postgres
// still has a folder (with its log) for Close to remove.
func LaunchPostgres(opts PostgresOptions) (*Postgres, error) {
	bin, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	who, err := serverUser("")
	if err != nil {
		return nil, err
	}
	pw := make([]byte, 16)
	if _, err := rand.Read(pw); err != nil {
		return nil, fmt.Errorf("making a password: %w", err)
	}
	p := &Postgres{Port: postgresPort, User: who.name, Password: hex.EncodeToString(pw), bin: bin, who: who, opts: opts}
	if err := p.prepare(); err != nil {
		return p, fmt.Errorf("preparing postgres: %w", err)
	}
	if err := p.initdb(); err != nil {
		return p, fmt.Errorf("initdb: %w\n%s", err, p.logTail(30))
	}
	if err := p.Start(); err != nil {
		return p, err
	}
	return p, nil
}

// prepare makes the instance folder, owned by the server's user, with the
// socket folder in it. The path stays short: a Unix socket path has at
// most 107 bytes.
func (p *Postgres) prepare() error {
	dir, err := os.MkdirTemp("/tmp", "popsync-pg-")
	if err != nil {
		return fmt.Errorf("making instance folder: %w", err)
	}
	p.Dir = dir
	p.DataDir = filepath.Join(dir, "data")
	p.SocketDir = filepath.Join(dir, "sock")
	p.LogFile = filepath.Join(dir, "postgres.log")
	if err := p.own(dir); err != nil {
		return err
	}
	if err := os.Mkdir(p.SocketDir, 0o700); err != nil {
		return fmt.Errorf("making socket folder: %w", err)
	}
	return p.own(p.SocketDir)
}

// initdb creates the cluster: UTF-8, SCRAM passwords for every local
// connection, the configuration below.
func (p *Postgres) initdb() error {
	pwfile := filepath.Join(p.Dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(p.Password+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing password file: %w", err)
	}
	defer os.Remove(pwfile)
	if err := p.own(pwfile); err != nil {
		return err
	}
	if err := p.run("initdb", "-D", p.DataDir, "-U", p.User, "--pwfile", pwfile,
		"--auth-local=scram-sha-256", "--auth-host=reject", "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions"); err != nil {
		return err
	}
	conf := fmt.Sprintf(`
# Private PostgreSQL for popsync's tests (internal/realtest). Removed when
# the test ends.
listen_addresses = ''
unix_socket_directories = '%s'
unix_socket_permissions = 0700
port = %d
# Durable as in production: the tests judge crash safety.
fsync = on
synchronous_commit = on
full_page_writes = on
shared_buffers = 32MB
max_connections = 100
log_min_messages = warning
log_connections = off
%s
`, p.SocketDir, p.Port, p.opts.Config)
	f, err := os.OpenFile(filepath.Join(p.DataDir, "postgresql.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("configuring: %w", err)
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("configuring: %w", err)
	}
	return nil
}

// run runs one of the server programs as the server's user and returns
// its output in the error when it fails.
func (p *Postgres) run(prog string, args ...string) error {
	cmd := p.command(prog, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", prog, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func (p *Postgres) command(prog string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(p.bin, prog), args...)
	cmd.Dir = p.Dir
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C.UTF-8", "PGPASSWORD=" + p.Password}
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if p.who.switchTo {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(p.who.uid), Gid: uint32(p.who.gid), Groups: []uint32{}}
	}
	return cmd
}

// Start starts the server (again, after Stop) and waits until it accepts
// connections.
//
// The postmaster runs in the foreground as a child of the test process,
// not daemonized by pg_ctl start: with Pdeathsig it gets SIGQUIT (immediate
// shutdown) if the test binary dies without cleanup, so no cluster is left
// running. Stop and Restart use pg_ctl like an operator would.
func (p *Postgres) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("starting postgres: the instance was closed")
	}
	if p.proc != nil {
		return errors.New("starting postgres: already running")
	}
	out, err := os.OpenFile(p.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening postgres log: %w", err)
	}
	defer out.Close()
	cmd := p.command("postgres", "-D", p.DataDir)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	exited := make(chan struct{})
	p.proc, p.exited, p.waitErr = cmd, exited, nil
	go func() {
		err := cmd.Wait()
		p.waitErr = err
		close(exited)
	}()
	if err := p.awaitReady(exited); err != nil {
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		<-exited
		p.proc = nil
		return fmt.Errorf("starting postgres: %w\n%s", err, p.logTail(30))
	}
	return nil
}

// awaitReady waits for the postmaster to write "ready" as the status line
// of postmaster.pid (what pg_ctl -w waits for) for this process.
func (p *Postgres) awaitReady(exited <-chan struct{}) error {
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(filepath.Join(p.DataDir, "postmaster.pid")); err == nil {
			lines := strings.Split(string(b), "\n")
			// Line 1: pid; line 8: status (PM_STATUS_READY is "ready").
			if len(lines) >= 8 && strings.TrimSpace(lines[0]) == strconv.Itoa(p.proc.Process.Pid) &&
				strings.TrimSpace(lines[7]) == "ready" {
				return nil
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("%w: %v", errExited, p.waitErr)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %v", startTimeout)
		}
	}
}

// Stop shuts the server down with pg_ctl stop -m fast (open sessions are
// ended, the server checkpoints) and waits until it has exited. Stopping
// a stopped server is fine.
func (p *Postgres) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stop()
}

func (p *Postgres) stop() error {
	if p.proc == nil {
		return nil
	}
	proc, exited := p.proc, p.exited
	p.proc = nil
	select {
	case <-exited:
		return nil
	default:
	}
	stopErr := p.run("pg_ctl", "stop", "-D", p.DataDir, "-m", "fast", "-w", "-t", strconv.Itoa(int(stopTimeout/time.Second)))
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-exited:
		return nil
	case <-timer.C:
	}
	_ = proc.Process.Signal(syscall.SIGQUIT)
	<-exited
	return fmt.Errorf("postgres (pid %d) did not stop within %v and got SIGQUIT (%v)", proc.Process.Pid, stopTimeout, stopErr)
}

// Restart is pg_ctl restart -m fast: a fast shutdown, then a start; every
// open connection is broken.
func (p *Postgres) Restart() error {
	if err := p.Stop(); err != nil {
		return err
	}
	return p.Start()
}

// Running reports whether the server process is up.
func (p *Postgres) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// ConnString returns a libpq key=value connection string for database
// dbname, with the password.
func (p *Postgres) ConnString(dbname string) string {
	return fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s sslmode=disable",
		p.SocketDir, p.Port, p.User, p.Password, dbname)
}

// CreateDatabase creates an empty database named name (letters, digits
// and '_' only) owned by User.
func (p *Postgres) CreateDatabase(name string) error {
	if name == "" || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
		return fmt.Errorf("creating database: bad name %q", name)
	}
	return p.run("createdb", "-h", p.SocketDir, "-p", strconv.Itoa(p.Port), "-U", p.User, "-E", "UTF8", name)
}

// Close stops the server and removes its folder.
func (p *Postgres) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	err := p.stop()
	if p.Dir != "" {
		err = errors.Join(err, os.RemoveAll(p.Dir))
	}
	return err
}

func (p *Postgres) cleanup(t testing.TB) {
	p.mu.Lock()
	running := p.proc != nil
	var exitedEarly bool
	if running {
		select {
		case <-p.exited:
			exitedEarly = true
		default:
		}
	}
	p.mu.Unlock()
	if exitedEarly {
		t.Errorf("postgres exited during the test: %v", p.waitErr)
	}
	if t.Failed() {
		t.Logf("postgres log %s, last lines:\n%s", p.LogFile, p.logTail(40))
	}
	if err := p.Close(); err != nil {
		t.Errorf("stopping postgres: %v", err)
	}
}

// Log returns the server's log so far.
func (p *Postgres) Log(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(p.LogFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("reading postgres log: %v", err)
	}
	return string(b)
}

func (p *Postgres) logTail(n int) string {
	b, err := os.ReadFile(p.LogFile)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return "(postgres wrote no log)"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// own gives path to the server's user when the tests run as root.
func (p *Postgres) own(path string) error {
	if !p.who.switchTo {
		return nil
	}
	if err := os.Lchown(path, p.who.uid, p.who.gid); err != nil {
		return fmt.Errorf("handing %s to %s: %w", path, p.who.name, err)
	}
	return nil
}
