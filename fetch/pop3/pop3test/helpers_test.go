package pop3test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

const (
	testUser = "alice"
	testPass = "secret pass" // a space, as RFC 1939 §7 allows
)

// testDeadline keeps a broken test from hanging; no test waits this long.
const testDeadline = 10 * time.Second

func baseConfig() Config {
	return Config{User: testUser, Password: testPass, Token: "tok-123"}
}

func threeMessages() []Message {
	return []Message{
		{UID: "uid-1", Data: []byte("Subject: one\r\n\r\nfirst\r\n")},
		{UID: "uid-2", Data: []byte("Subject: two\r\n\r\n.starts with a dot\r\n.\r\nend\r\n")},
		{UID: "uid-3", Data: []byte("Subject: three\r\n\r\nno final newline")},
	}
}

// start runs a server on loopback and closes it when the test ends.
func start(t *testing.T, cfg Config, msgs ...Message) (*Server, string) {
	t.Helper()
	srv := NewServer(cfg, msgs...)
	addr, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return srv, addr
}

// client is a raw POP3 client for driving the server line by line.
type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return wrap(t, c)
}

func wrap(t *testing.T, c net.Conn) *client {
	if err := c.SetDeadline(time.Now().Add(testDeadline)); err != nil {
		t.Fatal(err)
	}
	return &client{t: t, c: c, r: bufio.NewReader(c)}
}

// connect dials and reads the greeting.
func connect(t *testing.T, addr string) (*client, string) {
	t.Helper()
	c := dial(t, addr)
	g := c.line()
	if !strings.HasPrefix(g, "+OK") {
		t.Fatalf("greeting %q", g)
	}
	return c, g
}

// rawLine reads one line with its line ending.
func (c *client) rawLine() string {
	c.t.Helper()
	s, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("reading line: %v (got %q)", err, s)
	}
	return s
}

func (c *client) line() string {
	c.t.Helper()
	s := c.rawLine()
	if !strings.HasSuffix(s, "\r\n") {
		c.t.Fatalf("line %q does not end in CRLF", s)
	}
	return strings.TrimSuffix(s, "\r\n")
}

func (c *client) send(lines ...string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, strings.Join(lines, "\r\n")+"\r\n"); err != nil {
		c.t.Fatalf("sending %q: %v", lines, err)
	}
}

func (c *client) cmd(line string) string {
	c.t.Helper()
	c.send(line)
	return c.line()
}

// ok sends a command and wants a reply starting with +OK.
func (c *client) ok(line string) string {
	c.t.Helper()
	r := c.cmd(line)
	if !strings.HasPrefix(r, "+OK") {
		c.t.Fatalf("%s: got %q, want +OK", line, r)
	}
	return r
}

// fail sends a command and wants a reply starting with want ("-ERR ...").
func (c *client) fail(line, want string) {
	c.t.Helper()
	if r := c.cmd(line); !strings.HasPrefix(r, want) {
		c.t.Fatalf("%s: got %q, want prefix %q", line, r, want)
	}
}

// body reads multi-line reply lines up to the terminating "." and returns
// them as sent (still byte-stuffed, line endings kept).
func (c *client) body() string {
	c.t.Helper()
	var b strings.Builder
	for {
		l := c.rawLine()
		if l == ".\r\n" {
			return b.String()
		}
		b.WriteString(l)
	}
}

// lines reads a multi-line reply body as lines without CRLF.
func (c *client) lines() []string {
	c.t.Helper()
	b := c.body()
	if b == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(b, "\r\n"), "\r\n")
}

func (c *client) login() {
	c.t.Helper()
	c.ok("USER " + testUser)
	c.ok("PASS " + testPass)
}

// readAll reads until the server closes the connection.
func (c *client) readAll() string {
	c.t.Helper()
	b, err := io.ReadAll(c.r)
	if err != nil {
		c.t.Fatalf("reading to EOF: %v (got %q)", err, b)
	}
	return string(b)
}

// expectSilence checks that nothing arrives within d.
func (c *client) expectSilence(d time.Duration) {
	c.t.Helper()
	if err := c.c.SetReadDeadline(time.Now().Add(d)); err != nil {
		c.t.Fatal(err)
	}
	s, err := c.r.ReadString('\n')
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		c.t.Fatalf("wanted silence, got %q, %v", s, err)
	}
	if err := c.c.SetReadDeadline(time.Now().Add(testDeadline)); err != nil {
		c.t.Fatal(err)
	}
}

// startTLS upgrades the client side after +OK to STLS.
func (c *client) startTLS(roots *x509.CertPool) {
	c.t.Helper()
	if c.r.Buffered() > 0 {
		c.t.Fatalf("%d bytes buffered before TLS", c.r.Buffered())
	}
	tc := tls.Client(c.c, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.c = tc
	c.r = bufio.NewReader(tc)
}

func waitIdle(t *testing.T, srv *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	if err := srv.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
}

// stuff is a reference RFC 1939 §3 byte-stuffing of a message plus the
// terminator, written independently of the server's streaming version.
func stuff(data string) string {
	if data == "" {
		return ".\r\n"
	}
	parts := strings.SplitAfter(data, "\n")
	var b strings.Builder
	for _, p := range parts {
		if p == "" {
			continue
		}
		if p[0] == '.' {
			b.WriteByte('.')
		}
		b.WriteString(p)
	}
	if !strings.HasSuffix(data, "\n") {
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.String()
}

func uids(msgs []Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.UID)
	}
	return out
}

func tlsPair(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	cert, leaf, err := SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, pool
}
