// Package realtest starts real mail servers for popsync's integration
// tests: a private, unprivileged Dovecot POP3 server (optionally with LMTP)
// on 127.0.0.1, started by the test run itself and stopped when the test
// ends.
//
// It is responsible for finding the programs, writing their configuration,
// starting and stopping them by pid, and putting messages into and reading
// them back from the server's mail store. It is not a POP3 client and does
// not judge popsync's behaviour: tests do that with what it reports.
//
// A test that needs a real server skips when the program is missing, and
// fails instead when POPSYNC_REQUIRE_REAL=1 is set (CI sets it), so CI can
// never pass without the real servers. scripts/test.sh installs them.
//
// Run as root, the servers run as the unprivileged user [TestUser], which
// scripts/test.sh creates; otherwise they run as the current user.
package realtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// EnvRequireReal names the environment variable that turns a skip for a
// missing program into a test failure when it is "1".
const EnvRequireReal = "POPSYNC_REQUIRE_REAL"

// TestUser is the system user the servers run as when the tests run as
// root (Dovecot refuses to run its mail processes as root).
const TestUser = "popsynctest"

// sbinDirs are searched after $PATH: Debian installs the servers in
// /usr/sbin, which is not on an unprivileged user's $PATH.
var sbinDirs = []string{"/usr/local/sbin", "/usr/sbin", "/sbin"}

// RequireReal reports whether missing real programs must fail tests rather
// than skip them.
func RequireReal() bool { return os.Getenv(EnvRequireReal) == "1" }

// LookPath finds program on $PATH or in the sbin directories.
func LookPath(program string) (string, error) {
	p, err := exec.LookPath(program)
	if err == nil {
		return p, nil
	}
	if filepath.Base(program) != program {
		return "", fmt.Errorf("looking up %s: %w", program, err)
	}
	for _, dir := range sbinDirs {
		if p, lerr := exec.LookPath(filepath.Join(dir, program)); lerr == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("looking up %s: %w", program, err)
}

// Require skips the test when one of programs is not installed, or fails it
// when POPSYNC_REQUIRE_REAL=1.
func Require(t testing.TB, programs ...string) {
	t.Helper()
	var missing []string
	for _, p := range programs {
		if _, err := LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		unavailable(t, fmt.Sprintf("missing programs %q (run ./scripts/test.sh as root to install them)", missing))
	}
}

// unavailable ends the test because the real environment is incomplete:
// a skip normally, a failure under POPSYNC_REQUIRE_REAL=1.
func unavailable(t testing.TB, why string) {
	t.Helper()
	if RequireReal() {
		t.Fatalf("%s; %s=1 forbids skipping", why, EnvRequireReal)
	}
	t.Skipf("%s; skipping (set %s=1 to fail instead)", why, EnvRequireReal)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. A
// server given it may still lose a race for it; StartDovecot retries then.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	return port, nil
}

// Sentinel errors.
var (
	// errAddrInUse: the server could not bind a port it was given; the
	// start is retried with new ports.
	errAddrInUse = errors.New("address already in use")
	// errExited: the server process ended before it was ready.
	errExited = errors.New("server exited during start")
)
