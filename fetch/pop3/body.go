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
type body struct {
	c         *Client
	cmd       command
	ctx       context.Context // for the trace only
	n         int64           // octets delivered so far
	lineStart bool
	state     bodyState
	err       error  // sticky error for stateFailed
	unwatch   func() // context watch owned by this body (Retr, Top)
}

type bodyState int

const (
	bodyReading bodyState = iota
	bodyDone              // terminator seen, everything delivered
	bodyDrained           // the client discarded the rest
	bodyFailed
)

func (c *Client) newBody(ctx context.Context, cmd command) *body {
	b := &body{c: c, cmd: cmd, ctx: ctx, lineStart: true}
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
			// starting with "." had one "." prepended. A bare LF ending
			// is accepted from broken servers.
			if p, err = br.Peek(2); err != nil {
				return nil, b.fail(err)
			}
			end := 0
			switch p[1] {
			case '\n':
				end = 2
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
				b.finish()
				return nil, io.EOF
			}
			br.Discard(1)
		}
		b.lineStart = false
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
	if i := bytes.Index(p, dotLine); i >= 0 {
		p = p[:i+1]
	}
	return p, nil
}

var dotLine = []byte("\n.")

// consume discards k octets of the last chunk p.
func (b *body) consume(p []byte, k int) {
	b.c.br.Discard(k)
	b.n += int64(k)
	b.lineStart = k > 0 && p[k-1] == '\n'
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
