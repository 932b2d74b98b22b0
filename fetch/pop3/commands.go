package pop3

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// simple runs a command with a single-line reply and returns the text after
// +OK (valid until the next read), or *Error.
func (c *Client) simple(ctx context.Context, cmd command) ([]byte, error) {
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	defer c.end()
	rest, serr, err := c.roundTrip(ctx, cmd)
	if err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	return rest, nil
}

// Stat returns the number of messages and their total size (RFC 1939 §5).
func (c *Client) Stat(ctx context.Context) (count int, size int64, err error) {
	rest, err := c.simple(ctx, newCmd("STAT"))
	if err != nil {
		return 0, 0, err
	}
	count, size, err = parseStat(rest)
	if err != nil {
		return 0, 0, c.fail(err)
	}
	c.noteCount(count)
	return count, size, nil
}

// List returns the scan listing of all messages not marked deleted (RFC
// 1939 §5).
func (c *Client) List(ctx context.Context) ([]MessageInfo, error) {
	var out []MessageInfo
	err := c.listing(ctx, newCmd("LIST"), func(l []byte) error {
		m, err := parseScanLine(l)
		out = append(out, m)
		return err
	})
	if err != nil {
		return nil, err
	}
	c.noteCount(len(out))
	return out, nil
}

// noteCount records the message count of the first LIST or STAT.
func (c *Client) noteCount(n int) {
	if c.listed < 0 {
		c.listed = n
	}
}

// ListOne returns the scan listing of one message.
func (c *Client) ListOne(ctx context.Context, id int) (MessageInfo, error) {
	if err := checkID(id); err != nil {
		return MessageInfo{}, err
	}
	cmd := newCmd("LIST")
	cmd.a = id
	rest, err := c.simple(ctx, cmd)
	if err != nil {
		return MessageInfo{}, err
	}
	m, err := parseScanLine(rest)
	if err != nil {
		return MessageInfo{}, c.fail(err)
	}
	return m, nil
}

// UIDL returns the unique-id listing of all messages not marked deleted
// (RFC 1939 §7). An invalid unique-id is an error wrapping ErrBadUIDL and
// poisons the client. After a LIST or STAT, a listing with more entries
// than the messages they counted is ErrTooManyEntries: the maildrop is
// locked for the session (RFC 1939 §4), so only a hostile server sends
// one, and it is not read on.
func (c *Client) UIDL(ctx context.Context) ([]UIDEntry, error) {
	var out []UIDEntry
	limit := c.opts.MaxListEntries
	if c.listed >= 0 && c.listed < limit {
		limit = c.listed
	}
	err := c.listingMax(ctx, newCmd("UIDL"), limit, func(l []byte) error {
		u, err := parseUIDLine(l)
		out = append(out, u)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrTooManyEntries) && limit == c.listed {
			err = fmt.Errorf("%w (the session holds %d messages)", err, c.listed)
		}
		return nil, err
	}
	return out, nil
}

// UIDLOne returns the unique-id of one message.
func (c *Client) UIDLOne(ctx context.Context, id int) (string, error) {
	if err := checkID(id); err != nil {
		return "", err
	}
	cmd := newCmd("UIDL")
	cmd.a = id
	rest, err := c.simple(ctx, cmd)
	if err != nil {
		return "", err
	}
	u, err := parseUIDLine(rest)
	if err != nil {
		return "", c.fail(err)
	}
	return u.UID, nil
}

// listing runs a command with a multi-line reply of at most
// Options.MaxListEntries lines.
func (c *Client) listing(ctx context.Context, cmd command, fn func([]byte) error) error {
	return c.listingMax(ctx, cmd, c.opts.MaxListEntries, fn)
}

// listingMax runs a command with a multi-line reply of at most max lines.
func (c *Client) listingMax(ctx context.Context, cmd command, max int, fn func([]byte) error) error {
	if err := c.begin(ctx); err != nil {
		return err
	}
	defer c.end()
	_, serr, err := c.roundTrip(ctx, cmd)
	if err != nil {
		return err
	}
	if serr != nil {
		return serr
	}
	return c.readListing(ctx, cmd, max, fn)
}

// Retr retrieves message id (RFC 1939 §5). The body is streamed from the
// connection: read it to io.EOF before the next command (or the next
// command drains it). A connection lost inside the message makes Read fail
// with an error wrapping io.ErrUnexpectedEOF. ctx governs the reads of the
// body too.
func (c *Client) Retr(ctx context.Context, id int) (io.Reader, error) {
	cmd := newCmd("RETR")
	cmd.a = id
	return c.fetchOne(ctx, cmd)
}

// Top retrieves the header and the first lines lines of the body of
// message id (RFC 1939 §7), streamed like Retr.
func (c *Client) Top(ctx context.Context, id, lines int) (io.Reader, error) {
	if lines < 0 {
		return nil, fmt.Errorf("%w: TOP line count %d", ErrBadArgument, lines)
	}
	cmd := newCmd("TOP")
	cmd.a, cmd.b = id, lines
	return c.fetchOne(ctx, cmd)
}

func (c *Client) fetchOne(ctx context.Context, cmd command) (io.Reader, error) {
	if err := checkID(cmd.a); err != nil {
		return nil, err
	}
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	_, serr, err := c.roundTrip(ctx, cmd)
	if err != nil || serr != nil {
		c.end()
		if serr != nil {
			return nil, serr
		}
		return nil, err
	}
	b := c.newBody(ctx, cmd)
	b.unwatch, c.unwatch = c.unwatch, nil
	return b, nil
}

// Dele marks message id deleted (RFC 1939 §6). The server deletes it only
// when QUIT is answered +OK.
func (c *Client) Dele(ctx context.Context, id int) error {
	if err := checkID(id); err != nil {
		return err
	}
	cmd := newCmd("DELE")
	cmd.a = id
	_, err := c.simple(ctx, cmd)
	return err
}

// Rset unmarks all messages marked deleted (RFC 1939 §5).
func (c *Client) Rset(ctx context.Context) error {
	_, err := c.simple(ctx, newCmd("RSET"))
	return err
}

// Noop does nothing but keep the session alive (RFC 1939 §5).
func (c *Client) Noop(ctx context.Context) error {
	_, err := c.simple(ctx, newCmd("NOOP"))
	return err
}
