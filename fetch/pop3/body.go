package pop3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
)

// body streams a multi-line reply (RETR, TOP) from the client's read
// buffer: byte-stuffing undone, the terminating "." line removed, line
// endings as the server sent them. It works on the bufio buffer in place
// (Peek/Discard), so it does not allocate per line and holds no more than
// the buffer however long a line is.
//
// RFC 1939 §3 defines lines by CRLF, so only CRLF "." CRLF ends the reply
// and only a "." right after CRLF is a stuffing dot. A bare LF is data,
// and a "." after it is passed on unchanged: a server that stuffs only
// after CRLF would otherwise let a message that contains "\n.\n" end
// early and have its next bytes read as the reply to the next command.
// In a session whose status lines end in bare LF (linesLF) an LF ends a
// line too.
type body struct {
	c         *Client
	cmd       command
	ctx       context.Context // for the trace only
	n         int64           // octets delivered so far
	lf        bool            // LF alone ends a line (linesLF)
	lineStart bool            // the next octet starts a line
	cr        bool            // the last octet delivered was CR
	// min is the fewest octets the body may have (see MinOctets), -1
	// when nothing is known; listed is the LIST size it came from.
	min, listed int64
	state       bodyState
	err         error  // sticky error for stateFailed
	unwatch     func() // context watch owned by this body (Retr, Top)
}

type bodyState int

const (
	bodyReading bodyState = iota
	bodyDone              // terminator seen, everything delivered
	bodyDrained           // the client discarded the rest
	bodyFailed
)

func (c *Client) newBody(ctx context.Context, cmd command) *body {
	b := &body{c: c, cmd: cmd, ctx: ctx, lf: c.lines == linesLF, lineStart: true, min: -1, listed: -1}
	c.active = b
	return b
}

// chunk returns the next run of body octets, at most what is buffered and
// never past the start of a line beginning with ".", as a slice of the
// read buffer. It blocks only when nothing is buffered. io.EOF means the
// terminator was consumed.
func (b *body) chunk() ([]byte, error) {
	br := b.c.br
	if b.lineStart {
		p, err := br.Peek(1)
		if err != nil {
			return nil, b.fail(err)
		}
		if p[0] == '.' {
			// RFC 1939 §3: a line "." ends the reply; any other line
			// starting with "." had one "." prepended.
			if p, err = br.Peek(2); err != nil {
				return nil, b.fail(err)
			}
			end := 0
			switch p[1] {
			case '\n':
				if b.lf {
					end = 2
				}
			case '\r':
				if p, err = br.Peek(3); err != nil {
					return nil, b.fail(err)
				}
				if p[2] == '\n' {
					end = 3
				}
			}
			if end > 0 {
				br.Discard(end)
				if err := b.checkSize(); err != nil {
					return nil, err
				}
				b.finish()
				return nil, io.EOF
			}
			br.Discard(1)
		}
		b.lineStart = false
		b.cr = false
	}
	n := br.Buffered()
	if n == 0 {
		if _, err := br.Peek(1); err != nil {
			return nil, b.fail(err)
		}
		n = br.Buffered()
	}
	p, _ := br.Peek(n)
	// Only a line starting with "." needs attention, so a run may span
	// many lines: it ends just before the next such line.
	switch {
	case b.lf:
		if i := bytes.Index(p, lfDot); i >= 0 {
			p = p[:i+1]
		}
	case b.cr && p[0] == '\n':
		// The CR of a CRLF ended the last run: the LF alone, so that
		// the next octet is looked at as a line start.
		p = p[:1]
	default:
		if i := bytes.Index(p, crlfDot); i >= 0 {
			p = p[:i+2]
		}
	}
	return p, nil
}

var (
	lfDot   = []byte("\n.")
	crlfDot = []byte("\r\n.")
)

// consume discards k octets of the last chunk p.
func (b *body) consume(p []byte, k int) {
	if k <= 0 {
		return
	}
	b.c.br.Discard(k)
	b.n += int64(k)
	last := p[k-1]
	prevCR := b.cr
	if k >= 2 {
		prevCR = p[k-2] == '\r'
	}
	b.lineStart = last == '\n' && (b.lf || prevCR)
	b.cr = last == '\r'
}

// SizeSlack is what MinOctets allows below half the LIST size.
const SizeSlack = 1024

// MinOctets is the fewest octets a message that LIST announced as size
// octets may bring in a RETR: half of size, less SizeSlack. The octets
// counted are those received, stuffing dots removed, line endings as
// sent. RFC 1939 §5 asks LIST for the exact size, but §11 admits that a
// server may count line endings its own way. Honest counting stays
// above half: a server that counts a CRLF for every LF it passes on bare
// sends one octet per two counted for a message of empty lines, and
// counting stuffing dots adds one octet to a line of at least two (".\n"
// counted as "..\r\n" is again one half). The slack covers servers whose
// LIST is an estimate of a few rewritten header lines. Less than that is
// not a difference in counting but a message cut short.
func MinOctets(size int64) int64 {
	return size/2 - SizeSlack
}

// expect arms the size checks of a RETR whose LIST size is listed: the
// "+OK n octets" of the status line rest, when the server sends one, must
// be that size (RFC 1939 §5 shows "+OK 120 octets" for the octets of
// the message, which LIST counts too), and the body at least MinOctets
// of it. A mismatch of the status line poisons at once.
func (b *body) expect(rest []byte, listed int64) error {
	b.listed, b.min = listed, max(MinOctets(listed), 0)
	if n, ok := parseOctets(rest); ok && n != listed {
		return b.fail(fmt.Errorf("%w: reply announced %d octets, LIST said %d", ErrSizeMismatch, n, listed))
	}
	return nil
}

// checkSize applies the size check at the terminator: a body far shorter
// than LIST announced is a framing doubt (ErrSizeMismatch), and poisons.
func (b *body) checkSize() error {
	if b.min < 0 || b.n >= b.min {
		return nil
	}
	return b.fail(fmt.Errorf("%w: %d octets received, LIST said %d (at least %d expected)", ErrSizeMismatch, b.n, b.listed, b.min))
}

// Read implements io.Reader. It returns what is buffered without waiting
// for more once it has something.
func (b *body) Read(p []byte) (int, error) {
	if err := b.readable(); err != nil {
		return 0, err
	}
	n := 0
	for n < len(p) {
		if n > 0 && b.c.br.Buffered() < 3 {
			// Deciding about a line start may need up to 3 octets;
			// return what we have rather than block.
			break
		}
		s, err := b.chunk()
		if err != nil {
			if n > 0 && err == io.EOF {
				break
			}
			return n, err
		}
		k := copy(p[n:], s)
		b.consume(s, k)
		n += k
	}
	return n, nil
}

// WriteTo implements io.WriterTo, so io.Copy writes straight from the read
// buffer without an intermediate copy.
func (b *body) WriteTo(w io.Writer) (int64, error) {
	if err := b.readable(); err != nil {
		if err == io.EOF {
			return 0, nil
		}
		return 0, err
	}
	var total int64
	for {
		s, err := b.chunk()
		if err != nil {
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
		k, werr := w.Write(s)
		if k > len(s) || k < 0 {
			k = 0
			if werr == nil {
				werr = errors.New("invalid write count")
			}
		}
		b.consume(s, k)
		total += int64(k)
		if werr != nil {
			return total, werr
		}
		if k < len(s) {
			return total, io.ErrShortWrite
		}
	}
}

func (b *body) readable() error {
	switch b.state {
	case bodyDone:
		return io.EOF
	case bodyDrained:
		return ErrBodyClosed
	case bodyFailed:
		return b.err
	}
	return nil
}

// drain discards the rest of the body, at most *budget octets, which it
// counts down. closed marks the body unreadable for its holder if anything
// was left. A rest longer than the budget is not read: the client is
// poisoned with ErrDrainLimit instead, since a hostile server can make a
// body endless and reading it at full speed never times out.
func (b *body) drain(closed bool, budget *int64) error {
	if b.state != bodyReading {
		if b.state == bodyFailed {
			return b.err
		}
		return nil
	}
	for {
		s, err := b.chunk()
		if err == io.EOF {
			if closed {
				b.state = bodyDrained
			}
			return nil
		}
		if err != nil {
			return err
		}
		if int64(len(s)) > *budget {
			return b.fail(fmt.Errorf("discarding the unread rest: %w: more than %d octets left", ErrDrainLimit, MaxDrain))
		}
		*budget -= int64(len(s))
		b.consume(s, len(s))
	}
}

// finish records the end of the body.
func (b *body) finish() {
	b.state = bodyDone
	if b.c.active == b {
		b.c.active = nil
	}
	b.stopWatch()
	b.c.traceBody(b.ctx, b.cmd, b.n)
}

// fail poisons the client with a read error inside the body. A connection
// that ends inside a message is io.ErrUnexpectedEOF: never a short message.
func (b *body) fail(err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	err = fmt.Errorf("reading %s %d body after %d octets: %w", b.cmd.verb, b.cmd.a, b.n, err)
	b.state, b.err = bodyFailed, err
	if b.c.active == b {
		b.c.active = nil
	}
	b.stopWatch()
	return b.c.fail(err)
}

// abandon makes the body unreadable when the client is closed under it.
func (b *body) abandon() {
	if b.state == bodyReading {
		b.state, b.err = bodyFailed, ErrClosed
	}
	if b.c.active == b {
		b.c.active = nil
	}
	b.stopWatch()
}

func (b *body) stopWatch() {
	if b.unwatch != nil {
		b.unwatch()
		b.unwatch = nil
	}
}
