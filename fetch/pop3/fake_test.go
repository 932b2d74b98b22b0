package pop3

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"popsync/internal/testcert"
)

// inbox takes everything the client writes as soon as it is written, so a
// pipelining client never blocks on the unbuffered net.Pipe, and records
// for each received LF how many reply blocks the fake had completed: the
// lockstep check.
type inbox struct {
	mu       sync.Mutex
	buf      []byte
	err      error
	notify   chan struct{}
	replies  *atomic.Int64
	arrivals []int64
}

func (b *inbox) fill(conn net.Conn) {
	tmp := make([]byte, 32<<10)
	for {
		n, err := conn.Read(tmp)
		b.mu.Lock()
		b.buf = append(b.buf, tmp[:n]...)
		for _, c := range tmp[:n] {
			if c == '\n' {
				b.arrivals = append(b.arrivals, b.replies.Load())
			}
		}
		if err != nil {
			b.err = err
		}
		b.mu.Unlock()
		select {
		case b.notify <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

func (b *inbox) Read(p []byte) (int, error) {
	for {
		b.mu.Lock()
		if len(b.buf) > 0 {
			n := copy(p, b.buf)
			b.buf = b.buf[n:]
			b.mu.Unlock()
			return n, nil
		}
		if b.err != nil {
			err := b.err
			b.mu.Unlock()
			if errors.Is(err, io.ErrClosedPipe) {
				err = io.EOF
			}
			return 0, err
		}
		b.mu.Unlock()
		<-b.notify
	}
}

// inboxConn is the server end of the pipe with reads coming from the
// inbox, so a TLS server can run on top of it after STLS.
type inboxConn struct {
	net.Conn
	in *inbox
}

func (c inboxConn) Read(p []byte) (int, error) { return c.in.Read(p) }

// fake is a scripted POP3 server. A script has one directive per line:
//
//	S: text    send text CRLF (consecutive S: lines go out in one write)
//	R: "go"    send a Go-quoted string as is
//	C: text    expect exactly text CRLF from the client
//	TLS        run a TLS server handshake (implicit TLS or after STLS)
//	TLS-FAIL   run a TLS handshake that must fail (client refused)
//	HOOK name  call hooks[name]
//	DROP       close the connection
//	EOF        expect the client to close without sending anything more
type fake struct {
	t       testing.TB
	conn    net.Conn
	in      *inbox
	r       *bufio.Reader
	w       io.Writer
	replies atomic.Int64
	cert    tls.Certificate
	tlsMax  uint16 // highest TLS version the fake offers; 0 for the default
	hooks   map[string]func()
	done    chan error
}

func newFake(t testing.TB) (*fake, net.Conn) {
	t.Helper()
	server, client := net.Pipe()
	f := &fake{t: t, conn: server, hooks: map[string]func(){}, done: make(chan error, 1)}
	f.in = &inbox{notify: make(chan struct{}, 1), replies: &f.replies}
	f.r = bufio.NewReader(f.in)
	f.w = server
	go f.in.fill(server)
	t.Cleanup(func() { client.Close(); server.Close() })
	return f, client
}

func (f *fake) start(script string) {
	go func() {
		err := f.run(script)
		if err != nil {
			// Make the client fail fast instead of waiting for its timeout.
			f.conn.Close()
		}
		f.done <- err
	}()
}

func (f *fake) run(script string) error {
	var pending []byte
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		p := pending
		pending = nil
		if len(p) > 1 {
			if _, err := f.w.Write(p[:len(p)-1]); err != nil {
				return fmt.Errorf("fake: writing: %w", err)
			}
		}
		f.replies.Add(1)
		if _, err := f.w.Write(p[len(p)-1:]); err != nil {
			return fmt.Errorf("fake: writing: %w", err)
		}
		return nil
	}
	for n, raw := range strings.Split(script, "\n") {
		line := strings.TrimLeft(raw, " \t")
		if line == "" {
			continue
		}
		op, arg, _ := strings.Cut(line, " ")
		if op != "S:" && op != "R:" {
			if err := flush(); err != nil {
				return err
			}
		}
		switch op {
		case "S:":
			pending = append(pending, arg+"\r\n"...)
		case "R:":
			s, err := strconv.Unquote(arg)
			if err != nil {
				return fmt.Errorf("fake: script line %d: %v", n+1, err)
			}
			pending = append(pending, s...)
		case "C:":
			got, err := f.r.ReadString('\n')
			if want := arg + "\r\n"; got != want {
				return fmt.Errorf("fake: script line %d: want %q, got %q (err %v)", n+1, want, got, err)
			}
		case "TLS", "TLS-FAIL":
			if f.r.Buffered() > 0 {
				return fmt.Errorf("fake: client sent data before the handshake")
			}
			cfg := &tls.Config{Certificates: []tls.Certificate{f.cert}}
			if f.tlsMax != 0 {
				cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, f.tlsMax
			}
			tc := tls.Server(inboxConn{f.conn, f.in}, cfg)
			err := tc.Handshake()
			if op == "TLS-FAIL" {
				if err == nil {
					return fmt.Errorf("fake: handshake succeeded, want failure")
				}
				return nil
			}
			if err != nil {
				return fmt.Errorf("fake: handshake: %w", err)
			}
			f.r, f.w = bufio.NewReader(tc), tc
		case "HOOK":
			f.hooks[arg]()
		case "DROP":
			return f.conn.Close()
		case "EOF":
			b, err := io.ReadAll(f.r)
			if len(b) > 0 || err != nil {
				return fmt.Errorf("fake: want EOF, got %q (err %v)", b, err)
			}
		default:
			return fmt.Errorf("fake: script line %d: unknown directive %q", n+1, line)
		}
	}
	return flush()
}

// wait closes the client end (so a script still waiting for input sees
// EOF) and returns the script's result.
func (f *fake) wait(client net.Conn) error {
	client.Close()
	return <-f.done
}

// arrivalsOf returns, per line received, the number of reply blocks that
// were complete when it arrived.
func (f *fake) arrivals() []int64 {
	f.in.mu.Lock()
	defer f.in.mu.Unlock()
	return append([]int64(nil), f.in.arrivals...)
}

// session is a client connected to a scripted fake.
type session struct {
	t      *testing.T
	f      *fake
	conn   net.Conn
	c      *Client
	err    error // from NewClient
	waited bool
}

// plain is the Options for a plaintext session, as a caller must ask for
// it by name.
var plain = Options{Security: SecurityNone}

func start(t *testing.T, opts Options, script string) *session {
	t.Helper()
	s := startNoCheck(t, opts, script)
	if s.err != nil {
		t.Fatalf("NewClient: %v (fake: %v)", s.err, s.wait())
	}
	return s
}

func startNoCheck(t *testing.T, opts Options, script string) *session {
	return startWith(t, opts, script, nil)
}

func startWith(t *testing.T, opts Options, script string, setup func(*fake)) *session {
	t.Helper()
	f, conn := newFake(t)
	if setup != nil {
		setup(f)
	}
	f.start(script)
	c, err := NewClient(context.Background(), conn, opts)
	return &session{t: t, f: f, conn: conn, c: c, err: err}
}

func (s *session) wait() error {
	if s.waited {
		return nil
	}
	s.waited = true
	return s.f.wait(s.conn)
}

// fatalf fails the test and reports what the fake saw.
func (s *session) fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf(format+" (fake: %v)", append(args, s.wait())...)
}

// done checks that the whole script ran.
func (s *session) done() {
	s.t.Helper()
	if err := s.wait(); err != nil {
		s.t.Fatal(err)
	}
}

// testCert is a self-signed certificate that is its own CA.
type testCert struct {
	cert tls.Certificate
	der  []byte
	pem  []byte
	fp   string // colon form
}

type certOpts struct {
	hosts    []string
	notAfter time.Time
}

func newTestCert(t testing.TB, o certOpts) testCert {
	t.Helper()
	if o.notAfter.IsZero() {
		o.notAfter = time.Now().Add(24 * time.Hour)
	}
	if o.hosts == nil {
		o.hosts = []string{"mail.example.test"}
	}
	c, err := testcert.New(testcert.Options{Hosts: o.hosts, NotBefore: o.notAfter.Add(-48 * time.Hour), NotAfter: o.notAfter})
	if err != nil {
		t.Fatal(err)
	}
	der := c.X509.Raw
	sum := sha256.Sum256(der)
	return testCert{cert: c.TLS, der: der, pem: c.CertPEM(), fp: FormatFingerprint(sum[:])}
}

func (tc testCert) caFile(t testing.TB) string {
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, tc.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// readAll reads r with small reads, to exercise the line-start logic
// across Read calls.
func readAll(r io.Reader) ([]byte, error) {
	var out bytes.Buffer
	p := make([]byte, 7)
	for {
		n, err := r.Read(p)
		out.Write(p[:n])
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
	}
}
