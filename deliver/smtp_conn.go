package deliver

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"time"
)

// timedConn puts every deadline of a connection under popsync's control:
// go-smtp sets its own per command, and this clamps them to limit from now
// (its greeting under STARTTLS would wait 5 minutes) and, during DATA, to
// the deadline of the whole message. go-smtp clears the deadline after
// each command; while a message streams that becomes the DATA deadline.
type timedConn struct {
	net.Conn
	limit time.Duration // longest deadline from now between messages

	mu      sync.Mutex
	dataEnd time.Time // during DATA: the deadline of everything; else zero
}

func (c *timedConn) clamp(t time.Time) time.Time {
	c.mu.Lock()
	end := c.dataEnd
	c.mu.Unlock()
	if !end.IsZero() {
		if t.IsZero() || t.After(end) {
			return end
		}
		return t
	}
	if l := time.Now().Add(c.limit); c.limit > 0 && !t.IsZero() && t.After(l) {
		return l
	}
	return t
}

func (c *timedConn) SetDeadline(t time.Time) error { return c.Conn.SetDeadline(c.clamp(t)) }

func (c *timedConn) SetReadDeadline(t time.Time) error { return c.Conn.SetReadDeadline(c.clamp(t)) }

func (c *timedConn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(c.clamp(t)) }

// dataPhase bounds everything until the reply to the final dot by end.
func (c *timedConn) dataPhase(end time.Time) {
	c.mu.Lock()
	c.dataEnd = end
	c.mu.Unlock()
	c.Conn.SetDeadline(end)
}

// commandPhase goes back to per-command deadlines.
func (c *timedConn) commandPhase() {
	c.mu.Lock()
	c.dataEnd = time.Time{}
	c.mu.Unlock()
	c.Conn.SetDeadline(time.Time{})
}

// tlsGuard watches a connection through the STARTTLS upgrade. The bytes
// read between the STARTTLS command and the client's first write under
// TLS (its ClientHello) must be exactly the server's 220 reply: anything
// after it sat in go-smtp's plaintext read buffer, which it drops when it
// switches to TLS, and a 220 that was read before the command was sent
// was not an answer to it. Either is refused (ErrPlaintextInjection), as
// the POP3 client refuses data after its STLS reply: RFC 3207 §4 has the
// client discard what it learnt before TLS, and popsync does not let
// such bytes pass unnoticed.
type tlsGuard struct {
	net.Conn

	mu    sync.Mutex
	state int    // guardIdle, guardArmed, guardDone
	seen  []byte // read while armed, at most guardMax bytes
	err   error
}

const (
	guardIdle = iota
	guardArmed
	guardDone

	guardMax = 4 << 10
)

var startTLSCmd = []byte("STARTTLS\r\n")

func (g *tlsGuard) Read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	g.mu.Lock()
	if g.state == guardArmed && n > 0 {
		if len(g.seen)+n > guardMax {
			g.seen = append(g.seen, p[:guardMax-len(g.seen)]...)
		} else {
			g.seen = append(g.seen, p[:n]...)
		}
	}
	g.mu.Unlock()
	return n, err
}

func (g *tlsGuard) Write(p []byte) (int, error) {
	g.mu.Lock()
	switch g.state {
	case guardIdle:
		if bytes.EqualFold(p, startTLSCmd) {
			g.state, g.seen = guardArmed, nil
		}
	case guardArmed:
		g.state = guardDone
		if !onlyReply220(g.seen) {
			g.err = fmt.Errorf("%w: read %q between the STARTTLS command and the TLS handshake, want only the 220 reply", ErrPlaintextInjection, clip(g.seen, 80))
		}
		g.seen = nil
	}
	err := g.err
	g.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return g.Conn.Write(p)
}

// verdict returns ErrPlaintextInjection (wrapped) if the guard refused
// the handshake.
func (g *tlsGuard) verdict() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// onlyReply220 reports whether b is one complete 220 reply and nothing
// else: lines "220-text" then "220 text" (or "220"), each ending in CRLF
// (RFC 5321 §4.2.1).
func onlyReply220(b []byte) bool {
	if !bytes.HasSuffix(b, []byte("\r\n")) {
		return false
	}
	lines := bytes.Split(b[:len(b)-2], []byte("\r\n"))
	for i, l := range lines {
		if len(l) < 3 || string(l[:3]) != "220" || bytes.ContainsAny(l, "\r\n") {
			return false
		}
		last := i == len(lines)-1
		switch {
		case len(l) == 3:
			if !last {
				return false
			}
		case l[3] == '-':
			if last {
				return false
			}
		case l[3] == ' ':
			if !last {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// clip shortens b for an error message.
func clip(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
