package deliver

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"popsync/internal/credential"
)

// TLS modes of an SMTP target (the config key smtp_tls).
const (
	TLSNone     = "none"     // plain text
	TLSStartTLS = "starttls" // upgraded with STARTTLS (RFC 3207)
	TLSImplicit = "implicit" // TLS from the first byte (RFC 8314 §3.3)
)

// Defaults of SMTPOptions.
const (
	// DefaultCommandTimeout bounds the wait for each reply (and the dial).
	DefaultCommandTimeout = 60 * time.Second
	// DefaultDataTimeout bounds one message from the reply to DATA to the
	// reply to the final dot.
	DefaultDataTimeout = 5 * time.Minute
	// DefaultConnections is how many sessions a target keeps at most:
	// enough for the MTA's flush behind one message's final reply to
	// overlap the transfer of the next ones (see SMTPOptions.Connections).
	DefaultConnections = 4
	// MaxConnections bounds SMTPOptions.Connections.
	MaxConnections = 64
)

// SMTPOptions configure an SMTP or LMTP target.
type SMTPOptions struct {
	// Addr is "host:port"; for LMTP also "unix:/path/to/socket".
	Addr string
	// TLS is TLSNone (also ""), TLSStartTLS or TLSImplicit. LMTP supports
	// TLSNone and TLSImplicit.
	TLS string
	// TLSConfig is used for TLS; nil means the system roots and the host
	// of Addr as the name to verify.
	TLSConfig *tls.Config
	// Helo is the name to greet with; "" means os.Hostname.
	Helo string
	// Rcpt are the envelope recipients; at least one.
	Rcpt []string
	// From is the envelope sender of messages without a usable
	// Return-Path field; "" is the null sender.
	From string
	// User and Password, when User is set, authenticate with AUTH PLAIN
	// (RFC 4616), only over TLS or to a loopback or Unix socket address.
	// The password is got for each new session; one the server refuses
	// (RFC 4954 §6: 535) is invalidated.
	User     string
	Password credential.Credential
	// CommandTimeout bounds the dial and the wait for each reply;
	// default DefaultCommandTimeout.
	CommandTimeout time.Duration
	// DataTimeout bounds one message from the DATA reply to the final
	// reply; default DefaultDataTimeout.
	DataTimeout time.Duration
	// MaxHeader bounds the bytes held back to find Return-Path; default
	// DefaultMaxHeader.
	MaxHeader int
	// Connections bounds the sessions open at once, idle or carrying a
	// message; 0 means DefaultConnections, and values over MaxConnections
	// are refused. With more than one, messages whose deliveries overlap
	// travel on different sessions, so the MTA's work behind one reply to
	// the final dot (its flush) overlaps the next message; the order in
	// which the MTA files them is then not the order they were begun in.
	Connections int
	// Dial opens the connection; nil means a net.Dialer. network is "tcp"
	// or "unix".
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger gets reconnects and other events at Debug; nil discards.
	Logger *slog.Logger
}

// SMTP is a confirming delivery target that hands messages to an MTA over
// SMTP (RFC 5321) or to an LMTP server (RFC 2033). A message is delivered
// when the server answers 250 to the final dot, for LMTP from every
// recipient; then Delivery.Close returns nil. Prepare and Publish do
// nothing and tokens are "".
//
// One session serves many messages: it is kept open between deliveries
// (reset with RSET before the next one when a transaction may be open) and
// replaced transparently when the server closed it in between or it broke
// during a message. Deliveries
// that overlap in time get sessions of their own, opened as needed, up to
// SMTPOptions.Connections; past that, Begin waits until another delivery
// of the target ends (Close or Abort) and takes its session. Messages on
// different sessions may reach the mailbox in any order. Close ends the
// sessions with QUIT.
//
// The envelope sender comes from the message's first Return-Path field
// ("<>" stays the null sender), else From: the delivery holds back the
// header section (at most MaxHeader bytes) before it sends MAIL FROM, and
// streams the rest. A message of at most 128 KiB is held whole and sent,
// MAIL to the final dot, in Close: a caller that closes deliveries on
// goroutines of their own while it begins the next ones overlaps every
// round trip of a small message with the next, and holds at most
// Connections × 128 KiB. A bare CR and a bare LF each become CRLF before lines
// are dot-stuffed on the wire (RFC 5321 §2.3.8, §4.5.2), so no byte of
// the message can end DATA early on a server that splits lines at CR or
// at LF alone. BODY=8BITMIME is declared when the server offers
// it (RFC 6152), SMTPUTF8 when it offers it and the envelope or the header
// section needs it (RFC 6531). A message larger than the server's SIZE
// (RFC 1870) is refused without being sent.
//
// Errors are *DeliveryError; see there for what is temporary.
type SMTP struct {
	Confirming
	opts          SMTPOptions
	lmtp          bool
	name          string // for String and errors
	network, addr string
	helo          string
	tlsConfig     *tls.Config
	rcptUTF8      bool // some recipient needs SMTPUTF8
	log           *slog.Logger

	// slots holds one token per delivery in progress (a session taken
	// from idle or being opened); its capacity is Connections, so idle
	// and busy sessions together never exceed it.
	slots   chan struct{}
	closing chan struct{} // closed by Close: waiting Begins give up

	mu     sync.Mutex
	idle   []*smtpSession
	live   map[*smtpDelivery]struct{}
	closed bool
	down   error // a session could not be set up: every Begin fails with it
}

// NewSMTP returns a target that delivers to the MTA at opts.Addr. It does
// not connect: the first Begin does (use Check to try the server).
func NewSMTP(opts SMTPOptions) (*SMTP, error) { return newSMTP(opts, false) }

// NewLMTP returns a target that delivers to the LMTP server at opts.Addr.
func NewLMTP(opts SMTPOptions) (*SMTP, error) { return newSMTP(opts, true) }

func newSMTP(opts SMTPOptions, lmtp bool) (*SMTP, error) {
	kind := "smtp"
	if lmtp {
		kind = "lmtp"
	}
	t := &SMTP{opts: opts, lmtp: lmtp, name: kind + " " + opts.Addr, live: make(map[*smtpDelivery]struct{}),
		closing: make(chan struct{})}
	bad := func(format string, args ...any) (*SMTP, error) {
		return nil, fmt.Errorf("%s: %s", t.name, fmt.Sprintf(format, args...))
	}
	if opts.User != "" && opts.Password == nil {
		return bad("AUTH user %q without a password", opts.User)
	}
	t.network, t.addr = "tcp", opts.Addr
	host := ""
	if p, ok := strings.CutPrefix(opts.Addr, "unix:"); ok && lmtp {
		if p == "" {
			return bad("empty socket path")
		}
		t.network, t.addr = "unix", p
	} else {
		h, port, err := net.SplitHostPort(opts.Addr)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 1 || n > 65535 {
			return bad(`address must be "host:port" with a port from 1 to 65535`)
		}
		host = h
	}
	switch opts.TLS {
	case "", TLSNone:
		t.opts.TLS = TLSNone
	case TLSImplicit:
	case TLSStartTLS:
		if lmtp {
			return bad("STARTTLS is not supported for LMTP")
		}
	default:
		return bad("unknown TLS mode %q", opts.TLS)
	}
	if len(opts.Rcpt) == 0 {
		return bad("no recipients")
	}
	seen := make(map[string]bool)
	t.opts.Rcpt = nil
	for _, r := range opts.Rcpt {
		if !validAddr(r) || r == "" {
			return bad("bad recipient %q", r)
		}
		if !seen[r] {
			seen[r] = true
			t.opts.Rcpt = append(t.opts.Rcpt, r)
			t.rcptUTF8 = t.rcptUTF8 || !isASCII(r)
		}
	}
	if !validAddr(opts.From) {
		return bad("bad sender %q", opts.From)
	}
	t.helo = opts.Helo
	if t.helo == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		t.helo = h
	}
	if strings.ContainsAny(t.helo, " \t\r\n") {
		return bad("bad greeting name %q", t.helo)
	}
	if t.opts.CommandTimeout <= 0 {
		t.opts.CommandTimeout = DefaultCommandTimeout
	}
	if t.opts.DataTimeout <= 0 {
		t.opts.DataTimeout = DefaultDataTimeout
	}
	switch {
	case opts.Connections < 0 || opts.Connections > MaxConnections:
		return bad("connections must be from 1 to %d, not %d", MaxConnections, opts.Connections)
	case opts.Connections == 0:
		t.opts.Connections = DefaultConnections
	}
	t.slots = make(chan struct{}, t.opts.Connections)
	if t.opts.Dial == nil {
		d := &net.Dialer{}
		t.opts.Dial = d.DialContext
	}
	t.log = opts.Logger
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	t.log = t.log.With("target", t.name)
	if t.opts.TLS != TLSNone {
		t.tlsConfig = clientTLS(opts.TLSConfig, host)
	}
	return t, nil
}

// validAddr accepts what may stand between < and > in MAIL FROM or RCPT
// TO as popsync passes it: no white space, controls or angle brackets.
func validAddr(a string) bool {
	for i := 0; i < len(a); i++ {
		if c := a[i]; c <= ' ' || c == 0x7f || c == '<' || c == '>' {
			return false
		}
	}
	return len(a) <= maxPath
}

// String names the target, e.g. "smtp 127.0.0.1:25".
func (t *SMTP) String() string { return t.name }

// Connections is the most sessions the target opens at once
// (SMTPOptions.Connections): a caller gains nothing from more deliveries
// in progress than that.
func (t *SMTP) Connections() int { return t.opts.Connections }

// Check connects, greets (and authenticates when configured) and quits,
// without sending mail: `popsync check --connect`.
func (t *SMTP) Check(ctx context.Context) error {
	s, err := t.connect(ctx)
	if err != nil {
		return err
	}
	if err := s.quit(); err != nil {
		return t.failure(StageHello, err)
	}
	return nil
}

// Begin takes a session for one message: an idle one, or a new one while
// fewer than Connections are open; else it waits, until ctx ends or the
// target is closed, for another delivery to end. Meta.Size over the
// server's SIZE fails at once with ErrTooLarge (permanent).
func (t *SMTP) Begin(ctx context.Context, m Meta) (Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: beginning delivery: %w", t.name, err)
	}
	if err := t.acquire(ctx); err != nil {
		return nil, err
	}
	s, reused, err := t.session(ctx)
	if err != nil {
		t.release()
		return nil, err
	}
	if s.maxSize > 0 && m.Size > s.maxSize {
		t.put(s)
		t.release()
		return nil, &DeliveryError{Target: t.name, Stage: StageSize, Err: ErrTooLarge,
			Text: fmt.Sprintf("message of %d bytes, server's SIZE is %d", m.Size, s.maxSize)}
	}
	d := &smtpDelivery{t: t, s: s, reused: reused, ctx: ctx, hdr: newHeaderBuf(t.opts.MaxHeader)}
	d.stop = context.AfterFunc(ctx, func() { s.conn.Close() })
	t.mu.Lock()
	closed := t.closed
	if !closed {
		t.live[d] = struct{}{}
	}
	t.mu.Unlock()
	if closed {
		d.finish(true)
		return nil, fmt.Errorf("%s: beginning delivery: %w", t.name, ErrClosed)
	}
	return d, nil
}

// Close aborts the deliveries still open (their servers see the
// connection drop before the final dot and deliver nothing), quits the
// idle sessions and refuses further deliveries.
func (t *SMTP) Close() error {
	t.mu.Lock()
	if !t.closed {
		close(t.closing)
	}
	t.closed = true
	idle := t.idle
	t.idle = nil
	live := make([]*smtpDelivery, 0, len(t.live))
	for d := range t.live {
		live = append(live, d)
	}
	t.mu.Unlock()
	for _, d := range live {
		d.Abort()
	}
	for _, s := range idle {
		if err := s.quit(); err != nil {
			t.log.Debug("QUIT", "error", err)
		}
	}
	return nil
}

// acquire takes a delivery slot, waiting while Connections deliveries
// are in progress.
func (t *SMTP) acquire(ctx context.Context) error {
	select {
	case t.slots <- struct{}{}:
		return nil
	default:
	}
	select {
	case t.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return t.failure(StageConnect, fmt.Errorf("waiting for one of %d sessions: %w", t.opts.Connections, ctx.Err()))
	case <-t.closing:
		return fmt.Errorf("%s: beginning delivery: %w", t.name, ErrClosed)
	}
}

// release gives a delivery slot back, once the delivery's session is
// idle again or closed.
func (t *SMTP) release() { <-t.slots }

func (t *SMTP) forget(d *smtpDelivery) {
	t.mu.Lock()
	delete(t.live, d)
	t.mu.Unlock()
}
