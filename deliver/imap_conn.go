package deliver

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// imapIdleTimeout bounds how long a connection may sit unused between two
// uses by the target. RFC 3501 §5.4 lets a server log out a client idle for
// 30 minutes; before that, the connection is dropped here and the next use
// dials a new one.
const imapIdleTimeout = 25 * time.Minute

// imapConn puts every deadline of an IMAP connection under the target's
// control. go-imap's client sets deadlines of its own (30 s per response,
// none between responses, 5 minutes per literal); those calls are ignored
// here. Instead, while the target waits for the server (between busy and
// idle), every read and write must make progress within timeout; while
// nothing is asked of the server, the reader goroutine that go-imap keeps
// running waits at most imapIdleTimeout, after which the connection counts
// as gone.
type imapConn struct {
	net.Conn
	timeout time.Duration

	mu   sync.Mutex
	busy int // operations waiting for the server
}

func newIMAPConn(c net.Conn, timeout time.Duration) *imapConn {
	ic := &imapConn{Conn: c, timeout: timeout}
	ic.Conn.SetDeadline(time.Now().Add(timeout))
	ic.busy = 1 // the greeting is awaited first; connect ends it
	return ic
}

func (c *imapConn) SetDeadline(time.Time) error      { return nil }
func (c *imapConn) SetReadDeadline(time.Time) error  { return nil }
func (c *imapConn) SetWriteDeadline(time.Time) error { return nil }

func (c *imapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.progress()
	}
	return n, err
}

func (c *imapConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.progress()
	}
	return n, err
}

// progress moves the deadline on while the target waits for the server.
func (c *imapConn) progress() {
	c.mu.Lock()
	if c.busy > 0 {
		c.Conn.SetDeadline(time.Now().Add(c.timeout))
	}
	c.mu.Unlock()
}

// begin marks the start of an exchange: from now on the server must make
// progress within timeout.
func (c *imapConn) begin() {
	c.mu.Lock()
	c.busy++
	c.Conn.SetDeadline(time.Now().Add(c.timeout))
	c.mu.Unlock()
}

// end marks the end of an exchange; the last one lets the connection idle.
func (c *imapConn) end() {
	c.mu.Lock()
	c.busy--
	if c.busy == 0 {
		c.Conn.SetDeadline(time.Now().Add(imapIdleTimeout))
	}
	c.mu.Unlock()
}

// imapObserver reads the server's side of the conversation as it passes by
// and logs what RFC 3501 §7.1 says a client must show its user: BYE
// (§7.1.5) and [ALERT] (§7.1) texts, which go-imap reads and drops. It is
// no parser: it splits lines and skips the octets of literals ({n} at the
// end of a line, §4.3) so that message content never counts as a line.
type imapObserver struct {
	log  *slog.Logger
	line []byte
	skip int64 // literal octets still to pass
}

// maxObservedLine bounds the bytes of one line the observer keeps.
const maxObservedLine = 4096

func (o *imapObserver) observe(p []byte) {
	for len(p) > 0 {
		if o.skip > 0 {
			n := int64(len(p))
			if n > o.skip {
				n = o.skip
			}
			o.skip -= n
			p = p[n:]
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			o.keep(p)
			return
		}
		o.keep(p[:i])
		p = p[i+1:]
		o.endLine()
	}
}

func (o *imapObserver) keep(b []byte) {
	if room := maxObservedLine - len(o.line); room > 0 {
		o.line = append(o.line, b[:min(len(b), room)]...)
	}
}

func (o *imapObserver) endLine() {
	line := strings.TrimSuffix(string(o.line), "\r")
	o.line = o.line[:0]
	if j := strings.LastIndexByte(line, '{'); j >= 0 && strings.HasSuffix(line, "}") {
		if n, err := strconv.ParseInt(strings.TrimSuffix(line[j+1:len(line)-1], "+"), 10, 64); err == nil && n >= 0 {
			o.skip = n
		}
	}
	rest, untagged := strings.CutPrefix(line, "* ")
	if !untagged {
		// Tagged replies reach the caller as errors; an [ALERT] in
		// one is logged here all the same.
		_, rest, _ = strings.Cut(line, " ")
	}
	status, text, _ := strings.Cut(rest, " ")
	switch strings.ToUpper(status) {
	case "BYE":
		if untagged {
			o.log.Warn("IMAP server closes the connection", "text", clean(text))
		}
	case "OK", "NO", "BAD":
		if code, _, ok := strings.Cut(text, "]"); ok && strings.EqualFold(strings.TrimPrefix(code, "["), "ALERT") {
			o.log.Warn("IMAP server alert", "text", clean(strings.TrimSpace(text[len(code)+1:])))
		}
	}
}

// clean makes server text safe for one log value.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// observedConn passes what the server sends through an imapObserver.
type observedConn struct {
	net.Conn
	obs *imapObserver
}

func (c *observedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.obs.observe(p[:n])
	return n, err
}

// prefixConn replays prefix before the connection's own bytes.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// syntheticGreeting stands in for the server's greeting after STARTTLS,
// which go-imap's client expects to read first. It carries no capability
// list, so the client asks for the capabilities again under TLS, as RFC
// 3501 §6.2.1 requires.
const syntheticGreeting = "* OK greeting was read before STARTTLS\r\n"

// startTLS reads the greeting and upgrades the connection with STARTTLS
// (RFC 3501 §6.2.1) before go-imap's client takes over; that client would
// put the TLS layer out of the observer's sight. The exchange is one
// command: its tagged reply is the only line that counts, untagged lines
// are skipped, and nothing the server sent before the upgrade is kept
// (RFC 3501 §6.2.1: the client discards what it learnt).
func startTLS(ctx context.Context, conn net.Conn, cfg *tls.Config) (*tls.Conn, error) {
	r := bufio.NewReaderSize(conn, 4096)
	readLine := func() (string, error) {
		var b []byte
		for {
			chunk, isPrefix, err := r.ReadLine()
			if err != nil {
				return "", err
			}
			if len(b)+len(chunk) > 8192 {
				return "", errors.New("line from the server too long")
			}
			b = append(b, chunk...)
			if !isPrefix {
				return string(b), nil
			}
		}
	}
	greeting, err := readLine()
	if err != nil {
		return nil, fmt.Errorf("reading greeting: %w", err)
	}
	switch g := strings.ToUpper(greeting); {
	case strings.HasPrefix(g, "* OK"):
	case strings.HasPrefix(g, "* PREAUTH"):
		// RFC 3501 §7.1.4: logged in already, so STARTTLS is impossible.
		return nil, errors.New("server greeted with PREAUTH on a plain-text connection, so STARTTLS is impossible")
	default:
		return nil, fmt.Errorf("server refused the session: %s", clean(greeting))
	}
	if _, err := io.WriteString(conn, "S1 STARTTLS\r\n"); err != nil {
		return nil, fmt.Errorf("sending STARTTLS: %w", err)
	}
	for {
		line, err := readLine()
		if err != nil {
			return nil, fmt.Errorf("reading the reply to STARTTLS: %w", err)
		}
		tag, rest, _ := strings.Cut(line, " ")
		if tag != "S1" {
			continue
		}
		if !strings.HasPrefix(strings.ToUpper(rest), "OK") {
			return nil, fmt.Errorf("STARTTLS refused: %s", clean(rest))
		}
		break
	}
	if r.Buffered() > 0 {
		// Plain text after the reply would be read as if it came under
		// TLS (a STARTTLS injection, RFC 3207 §6 for the same attack).
		return nil, errors.New("server sent data after the reply to STARTTLS")
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}
