package pop3

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
)

// MessageInfo is one entry of a scan listing (LIST).
type MessageInfo struct {
	ID   int
	Size int64
}

// UIDEntry is one entry of a unique-id listing (UIDL).
type UIDEntry struct {
	ID  int
	UID string
}

// Client is one POP3 session. See the package documentation for the rules
// on concurrency, bodies and poisoning.
type Client struct {
	opts Options
	raw  net.Conn      // as handed in
	dc   *deadlineConn // raw with deadlines; below TLS
	tls  *tls.Conn     // non-nil once TLS is up
	br   *bufio.Reader
	bw   *bufio.Writer
	log  *slog.Logger

	greeting  string
	timestamp string // APOP timestamp from the greeting, "" if none
	caps      Capabilities
	capaOK    bool // the server answered CAPA with +OK
	// listed is the message count of the session's first LIST or STAT,
	// -1 before one: RFC 1939 §4 locks the maildrop for the session, so
	// no listing can be longer.
	listed int
	// lines is how this session's lines end: CRLF only (RFC 1939 §3),
	// or, for a server whose own status lines end in bare LF, LF too.
	// See lineMode.
	lines lineMode

	err     error // poison: the first I/O, parse or cancellation error
	closed  bool
	active  *body  // body handed out and not yet at its end
	unwatch func() // stops the running operation's context watch

	num [24]byte // scratch for formatting numbers
}

// command is one command line. a and b are numeric arguments, -1 when
// absent; use newCmd to get them initialised.
type command struct {
	verb   string // "" for an AUTH continuation line
	arg    string // text argument, written before a and b
	a, b   int
	secret bool   // arg is or contains a credential
	public string // arg as traced when secret
}

func newCmd(verb string) command { return command{verb: verb, a: -1, b: -1} }

// lineMode says which octets end a line of the session.
type lineMode int

const (
	// linesCRLF: only CRLF ends a line (RFC 1939 §3). A status or listing
	// line with a bare LF is a protocol error; in a message body a bare
	// LF is data, and so is a "." after it.
	linesCRLF lineMode = iota
	// linesDetect: the next status line decides between linesCRLF and
	// linesLF. It is the mode for the greeting, and again for the first
	// reply after the STLS handshake, so that nothing sent in the clear
	// decides how the encrypted session is framed.
	linesDetect
	// linesLF: the server ended that status line in a bare LF, so it
	// does not speak CRLF at all; LF or CRLF end every line, a "." line
	// after either ends a body. Message bytes never choose this mode.
	linesLF
)

// Dial connects to addr ("host:port") over TCP and runs NewClient. The host
// part of addr is the default TLS server name.
func Dial(ctx context.Context, addr string, opts Options) (*Client, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: address %q: %w", ErrBadOption, addr, err)
	}
	if opts.ServerName == "" && (opts.TLSConfig == nil || opts.TLSConfig.ServerName == "") {
		opts.ServerName = host
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: o.Timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil && ctx.Err() != nil {
		return nil, ctxError(ctx)
	}
	if err != nil {
		return nil, err // net's error names the address; callers add context
	}
	return NewClient(ctx, conn, opts)
}

// NewClient starts a session on conn: the TLS handshake for
// SecurityImplicit, the greeting, CAPA, and for SecuritySTARTTLS the STLS
// upgrade and a second CAPA (the capabilities seen before TLS are
// discarded, RFC 2595 §4). The Client owns conn from now on; on error conn
// is closed. A -ERR greeting is returned as *Error with Command "greeting".
func NewClient(ctx context.Context, conn net.Conn, opts Options) (*Client, error) {
	c, err := newClient(ctx, conn, opts)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func newClient(ctx context.Context, conn net.Conn, opts Options) (*Client, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	var tlsCfg *tls.Config
	if o.Security != SecurityNone {
		if tlsCfg, err = o.tlsConfig(hostOf(conn)); err != nil {
			return nil, err
		}
	}
	c := &Client{
		opts: o,
		raw:  conn,
		dc:   &deadlineConn{Conn: conn, timeout: o.Timeout},
		log:  o.Logger,

		listed: -1,
		lines:  linesDetect,
	}
	c.br = bufio.NewReaderSize(c.dc, readBufferSize)
	c.bw = bufio.NewWriter(c.dc)
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	defer c.end()

	if o.Security == SecurityImplicit {
		if err := c.handshake(ctx, tlsCfg); err != nil {
			return nil, err
		}
	}
	if err := c.readGreeting(ctx); err != nil {
		return nil, err
	}
	if err := c.capa(ctx); err != nil {
		return nil, err
	}
	if o.Security == SecuritySTARTTLS {
		if err := c.startTLS(ctx, tlsCfg); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *Client) handshake(ctx context.Context, cfg *tls.Config) error {
	tc := tls.Client(c.dc, cfg)
	if err := tc.Handshake(); err != nil {
		var rhe tls.RecordHeaderError
		if errors.As(err, &rhe) {
			// The first five octets back were no TLS record header: a
			// server speaking plain POP3 here sends "+OK ...".
			return c.fail(fmt.Errorf("TLS handshake with %s: %w (it sent %q): %w", cfg.ServerName, ErrNotTLS, sanitize(rhe.RecordHeader[:]), err))
		}
		return c.fail(fmt.Errorf("TLS handshake with %s: %w", cfg.ServerName, certError(err, cfg.ServerName)))
	}
	c.tls = tc
	c.br.Reset(tc)
	c.bw.Reset(tc)
	c.tracef(ctx, "TLS %s established, %s", tlsVersion(tc.ConnectionState().Version), cfg.ServerName)
	return nil
}

func tlsVersion(v uint16) string {
	return tls.VersionName(v)
}

func (c *Client) readGreeting(ctx context.Context) error {
	var line []byte
	var err error
	if c.tls == nil {
		err = c.checkNotTLS()
	}
	if err == nil {
		line, err = c.readLine(ctx)
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) && c.tls == nil {
			// RFC 8314 §3.3: on an implicit-TLS port the server waits for
			// the client's handshake and sends nothing.
			err = fmt.Errorf("%w (no greeting: a port that expects implicit TLS, such as 995, stays silent without it)", err)
		}
		return c.fail(fmt.Errorf("reading greeting: %w", err))
	}
	kind, rest, err := parseStatus(line)
	if err != nil || kind == statusCont {
		return c.fail(fmt.Errorf("reading greeting: %w", errOr(err, ErrProtocol)))
	}
	if kind == statusErr {
		e := newError(newCmd("greeting"), rest)
		c.fail(e)
		return e
	}
	c.greeting = sanitize(rest)
	c.timestamp = apopTimestamp(c.greeting)
	return nil
}

// checkNotTLS looks at the first octets of a greeting expected in the
// clear. A TLS record starts with its content type, 0x15 (alert) or 0x16
// (handshake), and the major version 0x03 (RFC 8446 §5.1); a POP3 greeting
// starts with "+" or "-". Seeing the record now fails at once instead of
// waiting for a line end that never comes.
func (c *Client) checkNotTLS() error {
	b, err := c.br.Peek(2)
	if len(b) >= 1 && (b[0] == 0x15 || b[0] == 0x16) && (len(b) < 2 || b[1] == 0x03) {
		return fmt.Errorf("%w: the port expects implicit TLS", ErrUnexpectedTLS)
	}
	if err != nil {
		// Peek consumed the error: report it here, as readLine would,
		// rather than read (and wait) again.
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("connection closed by server: %w", io.ErrUnexpectedEOF)
		}
		return err
	}
	return nil
}

func errOr(err, alt error) error {
	if err != nil {
		return err
	}
	return alt
}

// capa asks for the capabilities (RFC 2449 §5). A -ERR reply means the
// server predates RFC 2449: empty capabilities.
func (c *Client) capa(ctx context.Context) error {
	cmd := newCmd("CAPA")
	_, serr, err := c.roundTrip(ctx, cmd)
	if err != nil {
		return err
	}
	if serr != nil {
		c.caps, c.capaOK = Capabilities{}, false
		return nil
	}
	var lines [][]string
	err = c.readListing(ctx, cmd, maxCapaLines, func(l []byte) error {
		name, args, err := parseCapaLine(l)
		if err != nil {
			return err
		}
		lines = append(lines, append([]string{name}, args...))
		return nil
	})
	if err != nil {
		return err
	}
	c.caps, c.capaOK = buildCapabilities(lines), true
	return nil
}

// startTLS upgrades the connection with STLS (RFC 2595 §4). Without STLS
// in CAPA it fails with ErrTLSRequired; a server that does not answer CAPA
// at all is asked anyway, and a -ERR is ErrTLSRequired too. Nothing else
// is ever sent in the clear.
func (c *Client) startTLS(ctx context.Context, cfg *tls.Config) error {
	if c.capaOK && !c.caps.Has("STLS") {
		c.fail(ErrTLSRequired)
		return ErrTLSRequired
	}
	_, serr, err := c.roundTrip(ctx, newCmd("STLS"))
	if err != nil {
		return err
	}
	if serr != nil {
		e := fmt.Errorf("%w: %w", ErrTLSRequired, serr)
		c.fail(e)
		return e
	}
	// Bytes after the +OK and before the handshake would be plaintext
	// injected into the TLS session (the STARTTLS command injection class
	// of bugs); refuse them.
	if c.br.Buffered() > 0 {
		return c.fail(fmt.Errorf("%w: data after STLS reply before the TLS handshake", ErrProtocol))
	}
	if err := c.handshake(ctx, cfg); err != nil {
		return err
	}
	// The greeting's line ending was seen in the clear: the first reply
	// over TLS decides again.
	c.lines = linesDetect
	c.caps, c.capaOK = Capabilities{}, false
	return c.capa(ctx)
}

// Greeting returns the text of the server's greeting after "+OK".
func (c *Client) Greeting() string { return c.greeting }

// Caps returns the current capabilities: after STLS those announced over
// TLS, after Auth those announced once authenticated.
func (c *Client) Caps() Capabilities { return c.caps }

// TLS reports whether the link is encrypted.
func (c *Client) TLS() bool { return c.tls != nil }

// TLSState returns the TLS connection state, if the link is encrypted.
func (c *Client) TLSState() (tls.ConnectionState, bool) {
	if c.tls == nil {
		return tls.ConnectionState{}, false
	}
	return c.tls.ConnectionState(), true
}

// Close closes the connection without QUIT: nothing marked with DELE is
// deleted. It is safe to call more than once.
func (c *Client) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	c.stopWatch()
	if c.active != nil {
		c.active.abandon()
	}
	err := c.raw.Close()
	if c.err != nil {
		// fail already closed it.
		return nil
	}
	return err
}

// Quit ends the session. On a healthy client it sends QUIT and checks the
// reply: the server deletes the messages marked with DELE only when it
// answers +OK (RFC 1939 §6), so a -ERR is returned as *Error meaning
// nothing was deleted, and an I/O error means the outcome is unknown. On a
// poisoned client it sends nothing, closes the connection and returns the
// poison error. The connection is closed in every case.
func (c *Client) Quit(ctx context.Context) error {
	if c.err != nil {
		c.Close()
		return c.poisonErr()
	}
	if err := c.begin(ctx); err != nil {
		c.Close()
		return err
	}
	_, serr, err := c.roundTrip(ctx, newCmd("QUIT"))
	c.end()
	c.Close()
	if err != nil {
		return err
	}
	if serr != nil {
		return serr
	}
	return nil
}

// begin starts an operation: it refuses on a poisoned or closed client,
// watches ctx, and drains a body left unread.
func (c *Client) begin(ctx context.Context) error {
	if c.err != nil {
		return c.poisonErr()
	}
	if c.closed {
		return ErrClosed
	}
	if ctx.Err() != nil {
		return fmt.Errorf("pop3: before sending: %w", ctxError(ctx))
	}
	if b := c.active; b != nil {
		b.stopWatch()
	}
	c.unwatch = c.dc.watch(ctx)
	if b := c.active; b != nil {
		budget := int64(MaxDrain)
		if err := b.drain(true, &budget); err != nil {
			c.end()
			return err
		}
	}
	return nil
}

// end finishes an operation started by begin.
func (c *Client) end() { c.stopWatch() }

func (c *Client) stopWatch() {
	if c.unwatch != nil {
		c.unwatch()
		c.unwatch = nil
	}
}

// fail poisons the client with err (the first cause wins), closes the
// connection and returns err.
func (c *Client) fail(err error) error {
	if c.err == nil {
		c.err = err
		c.raw.Close()
		if c.log != nil {
			c.log.LogAttrs(context.Background(), LevelTrace, "pop3 connection poisoned", slog.Any("err", err))
		}
	}
	return err
}

func (c *Client) poisonErr() error {
	return fmt.Errorf("%w: %w", ErrPoisoned, c.err)
}

// readLine reads one reply or listing line, up to MaxLineLength octets. The
// returned slice points into the read buffer and is valid until the next
// read. It does not poison; callers do.
//
// RFC 1939 §3: lines end in CRLF. A line that ends in a bare LF is refused
// unless the session's own status lines end that way (see lineMode): none
// of these lines carries message data, so a bare LF in one is never
// meaningful, and reading on past it could let a listing end early.
func (c *Client) readLine(ctx context.Context) ([]byte, error) {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			return nil, fmt.Errorf("%w: more than %d octets", ErrLineTooLong, MaxLineLength)
		case errors.Is(err, io.EOF):
			return nil, fmt.Errorf("connection closed by server: %w", io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	if len(line) > MaxLineLength {
		return nil, fmt.Errorf("%w: %d octets, limit %d", ErrLineTooLong, len(line), MaxLineLength)
	}
	crlf := len(line) >= 2 && line[len(line)-2] == '\r'
	switch {
	case c.lines == linesDetect && crlf:
		c.lines = linesCRLF
	case c.lines == linesDetect:
		c.lines = linesLF
		c.tracef(ctx, "server ends its lines in bare LF; accepting LF line endings for this session")
	case c.lines == linesCRLF && !crlf:
		return nil, fmt.Errorf("%w: line %q ends in a bare LF, the session's lines end in CRLF", ErrProtocol, clip(trimEOL(line)))
	}
	line = trimEOL(line)
	c.traceRecv(ctx, line)
	return line, nil
}

// send buffers one command line; flush sends what is buffered.
func (c *Client) send(ctx context.Context, cmd command) {
	bw := c.bw
	bw.WriteString(cmd.verb)
	if cmd.arg != "" {
		if cmd.verb != "" {
			bw.WriteByte(' ')
		}
		bw.WriteString(cmd.arg)
	}
	if cmd.a >= 0 {
		bw.WriteByte(' ')
		bw.Write(strconv.AppendInt(c.num[:0], int64(cmd.a), 10))
		if cmd.b >= 0 {
			bw.WriteByte(' ')
			bw.Write(strconv.AppendInt(c.num[:0], int64(cmd.b), 10))
		}
	}
	bw.WriteString("\r\n")
	c.traceSend(ctx, cmd)
}

func (c *Client) flush() error {
	if err := c.bw.Flush(); err != nil {
		return c.fail(fmt.Errorf("sending command: %w", err))
	}
	return nil
}

// reply reads a status line for cmd. A -ERR is returned as serr; err is an
// I/O or protocol error, after which the client is poisoned. rest is the
// text after +OK, valid until the next read.
func (c *Client) reply(ctx context.Context, cmd command) (rest []byte, serr *Error, err error) {
	line, err := c.readLine(ctx)
	if err != nil {
		return nil, nil, c.fail(fmt.Errorf("reading reply to %s: %w", cmd.verb, err))
	}
	kind, rest, err := parseStatus(line)
	if err != nil {
		return nil, nil, c.fail(fmt.Errorf("reading reply to %s: %w", cmd.verb, err))
	}
	switch kind {
	case statusErr:
		return nil, newError(cmd, rest), nil
	case statusCont:
		return nil, nil, c.fail(fmt.Errorf("reading reply to %s: %w: unexpected continuation", cmd.verb, ErrProtocol))
	}
	return rest, nil, nil
}

// roundTrip sends cmd and reads its status line.
func (c *Client) roundTrip(ctx context.Context, cmd command) ([]byte, *Error, error) {
	c.send(ctx, cmd)
	if err := c.flush(); err != nil {
		return nil, nil, err
	}
	return c.reply(ctx, cmd)
}

// readListing reads the lines of a multi-line reply up to the terminating
// "." line, undoing byte-stuffing (RFC 1939 §3), and hands each to fn. More
// than max lines, or an error from fn, poisons: the rest of the listing is
// not read.
func (c *Client) readListing(ctx context.Context, cmd command, max int, fn func([]byte) error) error {
	for n := 0; ; n++ {
		line, err := c.readLine(ctx)
		if err != nil {
			return c.fail(fmt.Errorf("reading %s listing: %w", cmd.verb, err))
		}
		if len(line) > 0 && line[0] == '.' {
			if len(line) == 1 {
				return nil
			}
			line = line[1:]
		}
		if n >= max {
			return c.fail(fmt.Errorf("reading %s listing: %w: limit %d", cmd.verb, ErrTooManyEntries, max))
		}
		if err := fn(line); err != nil {
			return c.fail(fmt.Errorf("reading %s listing: %w", cmd.verb, err))
		}
	}
}

// checkArg refuses text that would end or split a command line.
func checkArg(what, s string) error {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\r', '\n', 0:
			return fmt.Errorf("%w: %s contains CR, LF or NUL", ErrBadArgument, what)
		}
	}
	return nil
}

func checkID(id int) error {
	if id < 1 {
		return fmt.Errorf("%w: message number %d, want 1 or more", ErrBadArgument, id)
	}
	return nil
}
