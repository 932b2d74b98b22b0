package pop3

import (
	"context"
	"fmt"
	"io"
)

// window returns how many commands may be in flight: PipelineWindow with
// PIPELINING (RFC 2449 §6.6), otherwise 1, which is lockstep (RFC 1939:
// one command, its whole reply, then the next).
func (c *Client) window() int {
	if c.caps.Pipelining() {
		return PipelineWindow
	}
	return 1
}

// pipeline sends the command of index i with send(i), keeping at most
// window commands in flight and flushing once per half window, and hands
// the replies in order to recv(i). When recv returns stop, no further
// commands are sent but the replies in flight are still read (recv is
// still called for them, with stopping true). err from recv is an I/O
// error: the client is already poisoned.
func (c *Client) pipeline(n int, send func(i int), recv func(i int, stopping bool) (stop bool, err error)) error {
	w := c.window()
	sent := 0
	stopping := false
	for i := 0; i < n; i++ {
		if i == sent && stopping {
			break
		}
		if !stopping && sent < n && sent-i <= w/2 {
			for sent < n && sent-i < w {
				send(sent)
				sent++
			}
			if err := c.flush(); err != nil {
				return err
			}
		}
		stop, err := recv(i, stopping)
		if err != nil {
			return err
		}
		stopping = stopping || stop
	}
	return nil
}

// RetrEach retrieves the messages ids, pipelined when the server allows.
// For every id in order, fn gets the body, or a *Error (body nil) when the
// server answered -ERR for that id, and the loop goes on. A body not read
// to the end by fn is drained when fn returns; it cannot be read after. If
// fn returns an error, no further commands are sent, the replies already
// requested are read and discarded, and fn's error is returned: the client
// stays usable, unless what is left to discard exceeds MaxDrain octets (a
// hostile server can make a body endless); then the client closes the
// connection instead and is poisoned with ErrDrainLimit. An I/O or
// protocol error poisons the client and is returned. fn must not call methods of c: other commands may be in flight.
func (c *Client) RetrEach(ctx context.Context, ids []int, fn func(id int, body io.Reader, err error) error) error {
	return c.fetchEach(ctx, "RETR", ids, nil, -1, fn)
}

// RetrEachListed is RetrEach for messages whose LIST sizes are known, and
// checks every message against its size: a "+OK n octets" reply that
// names another size than LIST, or a body shorter than MinOctets of it,
// is a doubt about where the server's replies begin and end. The client
// is then poisoned with an error wrapping ErrSizeMismatch (fn's reader
// fails with it instead of ending), so the message is never seen whole
// and QUIT is never sent. A negative Size means unknown: not checked.
func (c *Client) RetrEachListed(ctx context.Context, msgs []MessageInfo, fn func(id int, body io.Reader, err error) error) error {
	ids := make([]int, len(msgs))
	sizes := make([]int64, len(msgs))
	for i, m := range msgs {
		ids[i], sizes[i] = m.ID, m.Size
	}
	return c.fetchEach(ctx, "RETR", ids, sizes, -1, fn)
}

// TopEach is RetrEach with TOP id lines (RFC 1939 §7).
func (c *Client) TopEach(ctx context.Context, ids []int, lines int, fn func(id int, body io.Reader, err error) error) error {
	if lines < 0 {
		return fmt.Errorf("%w: TOP line count %d", ErrBadArgument, lines)
	}
	return c.fetchEach(ctx, "TOP", ids, nil, lines, fn)
}

// fetchEach runs RETR or TOP for ids. sizes, when not nil, holds the LIST
// size of each (negative: unknown) for the checks of RetrEachListed.
func (c *Client) fetchEach(ctx context.Context, verb string, ids []int, sizes []int64, lines int, fn func(int, io.Reader, error) error) error {
	for _, id := range ids {
		if err := checkID(id); err != nil {
			return err
		}
	}
	if err := c.begin(ctx); err != nil {
		return err
	}
	defer c.end()
	cmdFor := func(i int) command {
		cmd := newCmd(verb)
		cmd.a, cmd.b = ids[i], lines
		return cmd
	}
	var fnErr error
	// What fn left unread is discarded, at most MaxDrain octets per body;
	// once fn has stopped the loop, at most MaxDrain for everything still
	// in flight together.
	stopBudget := int64(MaxDrain)
	err := c.pipeline(len(ids),
		func(i int) { c.send(ctx, cmdFor(i)) },
		func(i int, stopping bool) (bool, error) {
			cmd := cmdFor(i)
			rest, serr, err := c.reply(ctx, cmd)
			if err != nil {
				return false, err
			}
			if serr != nil {
				if stopping {
					return false, nil
				}
				fnErr = fn(cmd.a, nil, serr)
				return fnErr != nil, nil
			}
			b := c.newBody(ctx, cmd)
			if sizes != nil && sizes[i] >= 0 {
				if err := b.expect(rest, sizes[i]); err != nil {
					return false, err
				}
			}
			if !stopping {
				fnErr = fn(cmd.a, b, nil)
			}
			budget := &stopBudget
			if fnErr == nil {
				one := int64(MaxDrain)
				budget = &one
			}
			if err := b.drain(true, budget); err != nil {
				return false, err
			}
			return fnErr != nil, nil
		})
	if fnErr != nil {
		// fn's reason comes first, also when discarding what was in
		// flight poisoned the client.
		return fnErr
	}
	return err
}

// DeleEach marks the messages ids deleted, pipelined when the server
// allows. perID[i] is the *Error for ids[i] when the server answered -ERR,
// else nil. err is an I/O or protocol error (the client is then poisoned
// and perID is nil).
func (c *Client) DeleEach(ctx context.Context, ids []int) (perID []error, err error) {
	for _, id := range ids {
		if err := checkID(id); err != nil {
			return nil, err
		}
	}
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	defer c.end()
	perID = make([]error, len(ids))
	cmdFor := func(i int) command {
		cmd := newCmd("DELE")
		cmd.a = ids[i]
		return cmd
	}
	err = c.pipeline(len(ids),
		func(i int) { c.send(ctx, cmdFor(i)) },
		func(i int, _ bool) (bool, error) {
			_, serr, err := c.reply(ctx, cmdFor(i))
			if serr != nil {
				perID[i] = serr
			}
			return false, err
		})
	if err != nil {
		return nil, err
	}
	return perID, nil
}
