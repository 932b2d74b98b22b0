package deliver

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

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
// One session serves many messages: it is kept open between deliveries,
// reset with RSET before the next one, and replaced transparently when the
// server closed it in between. Deliveries that overlap in time get sessions
// of their own. Close ends the sessions with QUIT.
//
// The envelope sender comes from the message's first Return-Path field
// ("<>" stays the null sender), else From: the delivery holds back the
// header section (at most MaxHeader bytes) before it sends MAIL FROM, and
// streams the rest. A bare CR and a bare LF each become CRLF before lines
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
	t := &SMTP{opts: opts, lmtp: lmtp, name: kind + " " + opts.Addr, live: make(map[*smtpDelivery]struct{})}
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
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if opts.TLSConfig != nil {
			cfg = opts.TLSConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		t.tlsConfig = cfg
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

// smtpSession is one connection, greeted and authenticated.
type smtpSession struct {
	c       *smtp.Client
	conn    *timedConn
	maxSize int64 // the server's SIZE; 0 = none given
	utf8    bool  // the server offers SMTPUTF8
}

// close drops the connection without QUIT.
func (s *smtpSession) close() { s.c.Close() }

// quit ends the session politely.
func (s *smtpSession) quit() error {
	err := s.c.Quit()
	s.c.Close()
	return err
}

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

// connect opens and sets up a new session: dial, TLS, greeting, EHLO or
// LHLO, STARTTLS, AUTH. Its errors are temporary *DeliveryErrors.
func (t *SMTP) connect(ctx context.Context) (*smtpSession, error) {
	dctx, cancel := context.WithTimeout(ctx, t.opts.CommandTimeout)
	raw, err := t.opts.Dial(dctx, t.network, t.addr)
	cancel()
	if err != nil {
		return nil, t.failure(StageConnect, ctxErr(ctx, err))
	}
	conn := &timedConn{Conn: raw, limit: t.opts.CommandTimeout}
	// go-smtp takes no context: a canceled ctx closes the connection.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	s, err := t.setup(ctx, conn)
	if !stop() && err == nil {
		s.close()
		err = t.failure(StageHello, ctx.Err())
	}
	if err != nil {
		raw.Close()
		var de *DeliveryError
		if errors.As(err, &de) {
			de.Err = ctxErr(ctx, de.Err)
		}
		return nil, err
	}
	return s, nil
}

func (t *SMTP) setup(ctx context.Context, conn *timedConn) (*smtpSession, error) {
	var c *smtp.Client
	var guard *tlsGuard // watches the STARTTLS upgrade
	newClient := smtp.NewClient
	if t.lmtp {
		newClient = smtp.NewClientLMTP
	}
	switch t.opts.TLS {
	case TLSImplicit:
		tc := tls.Client(conn, t.tlsConfig)
		conn.SetDeadline(time.Now().Add(t.opts.CommandTimeout))
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, t.failure(StageConnect, fmt.Errorf("TLS handshake: %w", err))
		}
		conn.SetDeadline(time.Time{})
		c = newClient(tc)
	case TLSStartTLS:
		// This greets with "localhost" before STARTTLS (go-smtp has no
		// other way in); the EHLO that counts, with our name, follows
		// under TLS, as RFC 3207 §4.2 makes the client forget what it
		// learnt before.
		var err error
		guard = &tlsGuard{Conn: conn}
		c, err = smtp.NewClientStartTLS(guard, t.tlsConfig)
		if err != nil {
			if gerr := guard.verdict(); gerr != nil {
				err = gerr
			}
			return nil, t.failure(StageHello, fmt.Errorf("STARTTLS: %w", err))
		}
	default:
		c = newClient(conn)
	}
	c.CommandTimeout = t.opts.CommandTimeout
	c.SubmissionTimeout = t.opts.DataTimeout
	// After STARTTLS the handshake runs here, at the first write under
	// TLS: the guard has judged what was read before it.
	if err := c.Hello(t.helo); err != nil {
		c.Close()
		if guard != nil {
			if gerr := guard.verdict(); gerr != nil {
				err = fmt.Errorf("STARTTLS: %w", gerr)
			}
		}
		return nil, t.failure(StageHello, err)
	}
	if t.opts.User != "" {
		_, isTLS := c.TLSConnectionState()
		if !isTLS && !t.local(conn) {
			c.Close()
			return nil, t.failure(StageAuth, ErrInsecureAuth)
		}
		if !c.SupportsAuth(sasl.Plain) {
			c.Close()
			return nil, t.failure(StageAuth, ErrNoAuth)
		}
		pw, err := t.opts.Password.Secret(ctx)
		if err != nil {
			// Not the message's fault, nor for good: it stays on the
			// server for the next poll.
			c.Close()
			return nil, &DeliveryError{Target: t.name, Stage: StageAuth, Temporary: true,
				Err: fmt.Errorf("getting the AUTH password: %w", err)}
		}
		if err := c.Auth(sasl.NewPlainClient("", t.opts.User, pw)); err != nil {
			var se *smtp.SMTPError
			if errors.As(err, &se) && se.Code == 535 {
				t.opts.Password.Invalidate(pw)
			}
			c.Close()
			return nil, t.failure(StageAuth, err)
		}
	}
	s := &smtpSession{c: c, conn: conn}
	s.utf8, _ = c.Extension("SMTPUTF8")
	if n, ok := c.MaxMessageSize(); ok && n > 0 {
		s.maxSize = int64(n)
	}
	return s, nil
}

// local reports whether the connection stays on this host.
func (t *SMTP) local(conn net.Conn) bool {
	if t.network == "unix" {
		return true
	}
	if a, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.IsLoopback()
	}
	return false
}

// failure classifies err at stage. Replies 5xx are permanent, except at
// the session stages, where nothing was said about the message.
func (t *SMTP) failure(stage string, err error) *DeliveryError {
	de := &DeliveryError{Target: t.name, Stage: stage, Temporary: true, Err: err}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		de.Code, de.Text = se.Code, replyText(se)
		de.Temporary = se.Code/100 != 5
		// RFC 5321 §4.5.3.1.10: 552 to RCPT meant "too many recipients"
		// in RFC 821, which is 452 now; clients treat it as temporary.
		if stage == StageRcpt && se.Code == 552 {
			de.Temporary = true
		}
		// RFC 4954 §6: 530 "authentication required" is about the session
		// (a server that forgot the AUTH), never about the message.
		if se.Code == 530 {
			de.Temporary = true
		}
	}
	if de.TargetDown() {
		de.Temporary = true
	}
	return de
}

// replyText is the text of a reply with its enhanced status code.
func replyText(se *smtp.SMTPError) string {
	ec := se.EnhancedCode
	if ec == (smtp.EnhancedCode{}) || ec == smtp.NoEnhancedCode {
		return se.Message
	}
	return fmt.Sprintf("%d.%d.%d %s", ec[0], ec[1], ec[2], se.Message)
}

// broken reports whether the session cannot be used after err: anything
// but a reply, or a 421 (RFC 5321 §3.8: the server is closing).
func broken(err error) bool {
	var se *smtp.SMTPError
	return !errors.As(err, &se) || se.Code == 421
}

// ctxErr puts ctx's error in front of err when ctx has ended: the I/O
// error is then only its consequence.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && err != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	return err
}

// session returns an idle session, checked with RSET, or a new one.
func (t *SMTP) session(ctx context.Context) (*smtpSession, error) {
	t.mu.Lock()
	closed, down := t.closed, t.down
	var s *smtpSession
	if n := len(t.idle); n > 0 && !closed && down == nil {
		s = t.idle[n-1]
		t.idle = t.idle[:n-1]
	}
	t.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("%s: beginning delivery: %w", t.name, ErrClosed)
	}
	if down != nil {
		return nil, down
	}
	if s != nil {
		// RFC 5321 §4.1.1.5: RSET ends whatever the last transaction
		// left; it also shows whether the server still has the session.
		// (go-smtp greets again with EHLO before the next MAIL, which RFC
		// 5321 §4.1.4 allows.)
		stop := context.AfterFunc(ctx, func() { s.conn.Close() })
		err := s.c.Reset()
		if stop() && err == nil {
			return s, nil
		}
		s.close()
		if ctx.Err() != nil {
			return nil, t.failure(StageHello, ctxErr(ctx, err))
		}
		t.log.Debug("session ended between messages; reconnecting", "error", err)
	}
	s, err := t.connect(ctx)
	if err != nil {
		if ctx.Err() == nil {
			t.mu.Lock()
			if t.down == nil {
				t.down = err
			}
			t.mu.Unlock()
		}
		return nil, err
	}
	return s, nil
}

// put returns a healthy session to the pool, or quits it when the target
// is closed.
func (t *SMTP) put(s *smtpSession) {
	s.conn.commandPhase()
	t.mu.Lock()
	closed := t.closed
	if !closed {
		t.idle = append(t.idle, s)
	}
	t.mu.Unlock()
	if closed {
		s.quit()
	}
}

// Begin takes a session (connecting if needed) for one message. Meta.Size
// over the server's SIZE fails at once with ErrTooLarge (permanent).
func (t *SMTP) Begin(ctx context.Context, m Meta) (Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: beginning delivery: %w", t.name, err)
	}
	s, err := t.session(ctx)
	if err != nil {
		return nil, err
	}
	if s.maxSize > 0 && m.Size > s.maxSize {
		t.put(s)
		return nil, &DeliveryError{Target: t.name, Stage: StageSize, Err: ErrTooLarge,
			Text: fmt.Sprintf("message of %d bytes, server's SIZE is %d", m.Size, s.maxSize)}
	}
	d := &smtpDelivery{t: t, s: s, ctx: ctx, hdr: newHeaderBuf(t.opts.MaxHeader)}
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

func (t *SMTP) forget(d *smtpDelivery) {
	t.mu.Lock()
	delete(t.live, d)
	t.mu.Unlock()
}

// smtpDelivery states.
const (
	smtpWriting = iota // buffering the header section, or in DATA
	smtpDone           // delivered
	smtpFailed         // err says why
	smtpAborted
)

type smtpDelivery struct {
	t     *SMTP
	s     *smtpSession // nil once given back
	ctx   context.Context
	stop  func() bool // stops the AfterFunc that closes s on ctx's end
	state int
	err   error

	hdr headerBuf
	dw  *smtp.DataCommand // non-nil once DATA was accepted
	w   crlfWriter        // in front of dw: bare CR becomes CRLF
	n   int64             // message bytes after bare CR and bare LF became CRLF
	cr  bool              // the last byte counted was CR
}

func (d *smtpDelivery) Token() string { return "" }

// Size counts the bytes of the message as it goes on the wire, before
// dot-stuffing: a bare LF or bare CR counts as the CRLF it becomes.
func (d *smtpDelivery) Size() int64 { return d.n }

func (d *smtpDelivery) Write(p []byte) (int, error) {
	switch d.state {
	case smtpFailed:
		return 0, d.err
	case smtpDone, smtpAborted:
		return 0, fmt.Errorf("%s: writing: %w", d.t.name, ErrState)
	}
	if err := d.ctx.Err(); err != nil {
		return 0, d.fail(d.t.failure(StageData, err), true)
	}
	d.count(p)
	if max := d.s.maxSize; max > 0 && d.n > max {
		return 0, d.fail(&DeliveryError{Target: d.t.name, Stage: StageSize, Err: ErrTooLarge,
			Text: fmt.Sprintf("message over the server's SIZE of %d bytes", max)}, d.dw != nil)
	}
	rest := p
	if !d.hdr.done {
		k := d.hdr.add(p)
		if !d.hdr.done {
			return len(p), nil
		}
		if err := d.start(false); err != nil {
			return 0, err
		}
		rest = p[k:]
	}
	if len(rest) > 0 {
		if _, err := d.w.Write(rest); err != nil {
			return 0, d.fail(d.t.failure(StageData, ctxErr(d.ctx, err)), true)
		}
	}
	return len(p), nil
}

// count adds p to the size, counting a bare LF or a bare CR as the CRLF
// it becomes. A CR that ends p is counted as bare by the next count that
// does not start with LF, or by countEnd.
func (d *smtpDelivery) count(p []byte) {
	if len(p) == 0 {
		return
	}
	d.n += int64(len(p))
	prevCR := d.cr
	if prevCR && p[0] != '\n' {
		d.n++
	}
	for off := 0; off < len(p); {
		i := bytes.IndexAny(p[off:], "\r\n")
		if i < 0 {
			break
		}
		i += off
		switch {
		case p[i] == '\n':
			if i > 0 && p[i-1] != '\r' || i == 0 && !prevCR {
				d.n++
			}
		case i+1 < len(p) && p[i+1] != '\n':
			d.n++
		}
		off = i + 1
	}
	d.cr = p[len(p)-1] == '\r'
}

// countEnd counts a CR that ended the message as the CRLF it becomes.
func (d *smtpDelivery) countEnd() {
	if d.cr {
		d.n++
		d.cr = false
	}
}

// start opens the mail transaction once the header section is known: MAIL
// FROM, RCPT TO for every recipient, DATA, and the held bytes.
func (d *smtpDelivery) start(ended bool) error {
	t, s := d.t, d.s
	hdr := d.hdr.header()
	sender, ok := returnPath(hdr)
	if !ok {
		sender = t.opts.From
	}
	if !isASCII(sender) && !s.utf8 {
		t.log.Debug("Return-Path needs SMTPUTF8, which the server does not offer; using from", "return_path", sender)
		sender = t.opts.From
	}
	// RFC 6531 §3.4: SMTPUTF8 when the envelope or the header needs it;
	// a header section not seen whole may need it.
	utf8 := s.utf8 && (!isASCII(sender) || t.rcptUTF8 || !isASCII(hdr) || !d.hdr.complete(ended))
	if err := s.c.Mail(sender, &smtp.MailOptions{UTF8: utf8}); err != nil {
		return d.fail(t.failure(StageMail, ctxErr(d.ctx, err)), broken(err))
	}
	replies := make([]RcptReply, 0, len(t.opts.Rcpt))
	var refused *DeliveryError
	for _, r := range t.opts.Rcpt {
		err := s.c.Rcpt(r, nil)
		if err == nil {
			replies = append(replies, RcptReply{Rcpt: r, Code: 250})
			continue
		}
		if broken(err) {
			return d.fail(t.failure(StageRcpt, ctxErr(d.ctx, err)), true)
		}
		f := t.failure(StageRcpt, err)
		replies = append(replies, RcptReply{Rcpt: r, Code: f.Code, Text: f.Text})
		// The first temporary refusal decides; else the first one.
		if refused == nil || f.Temporary && !refused.Temporary {
			refused = f
		}
	}
	if refused != nil {
		// Not every recipient would get it: no DATA, so nobody does.
		if len(replies) > 1 {
			refused.Rcpts = replies
		}
		return d.fail(refused, false)
	}
	dw, err := s.c.Data()
	if err != nil {
		return d.fail(t.failure(StageData, ctxErr(d.ctx, err)), broken(err))
	}
	d.dw = dw
	d.w = crlfWriter{w: dw}
	s.conn.dataPhase(time.Now().Add(t.opts.DataTimeout))
	if _, err := d.w.Write(d.hdr.buf); err != nil {
		return d.fail(t.failure(StageData, ctxErr(d.ctx, err)), true)
	}
	d.hdr.release()
	return nil
}

// Close sends the final dot and waits for the verdict: nil means the
// server took responsibility for the message (for LMTP: every recipient
// answered 250).
func (d *smtpDelivery) Close() error {
	switch d.state {
	case smtpFailed:
		return d.err
	case smtpDone, smtpAborted:
		return fmt.Errorf("%s: closing: %w", d.t.name, ErrState)
	}
	if !d.hdr.done {
		d.hdr.done = true
		if err := d.start(true); err != nil {
			return err
		}
	}
	// The context may have ended without its AfterFunc having closed the
	// connection yet: never send the final dot then.
	if err := d.ctx.Err(); err != nil {
		return d.fail(d.t.failure(StageData, err), true)
	}
	d.countEnd()
	if err := d.w.Flush(); err != nil {
		return d.fail(d.t.failure(StageData, ctxErr(d.ctx, err)), true)
	}
	if d.t.lmtp {
		resp, err := d.dw.CloseWithLMTPResponse()
		if err != nil {
			return d.lmtpFailure(resp, err)
		}
	} else if _, err := d.dw.CloseWithResponse(); err != nil {
		return d.fail(d.t.failure(StageReply, ctxErr(d.ctx, err)), broken(err))
	}
	d.state = smtpDone
	d.finish(false)
	return nil
}

// lmtpFailure classifies LMTP's replies after the final dot, one per
// recipient in RCPT order (RFC 2033 §4.2): any 4xx or missing reply makes
// the delivery temporary, else any 5xx permanent.
func (d *smtpDelivery) lmtpFailure(resp map[string]*smtp.DataResponse, err error) error {
	t := d.t
	perRcpt, onlyReplies := err.(smtp.LMTPDataError)
	if !onlyReplies {
		errors.As(err, &perRcpt)
	}
	de := &DeliveryError{Target: t.name, Stage: StageReply}
	var first *RcptReply
	delivered := 0
	for _, r := range t.opts.Rcpt {
		rr := RcptReply{Rcpt: r}
		if _, ok := resp[r]; ok {
			rr.Code = 250
			delivered++
		} else if se := perRcpt[r]; se != nil {
			rr.Code, rr.Text = se.Code, replyText(se)
		}
		de.Rcpts = append(de.Rcpts, rr)
		if rr.Code != 250 && rr.Code/100 != 5 {
			de.Temporary = true
		}
		if rr.Code != 250 && (first == nil || rr.Code/100 != 5 && first.Code/100 == 5) {
			first = &de.Rcpts[len(de.Rcpts)-1]
		}
	}
	if first != nil {
		de.Code, de.Text = first.Code, first.Text
	}
	switch {
	case !onlyReplies:
		de.Temporary = true
		de.Err = ctxErr(d.ctx, err)
	case delivered > 0:
		de.Err = ErrPartial
	default:
		de.Err = err
	}
	return d.fail(de, !onlyReplies)
}

// Abort gives up the message. In DATA that means dropping the connection:
// without the final dot the server completes no transaction (RFC 5321
// §4.1.1.4). A delivered message stays delivered.
func (d *smtpDelivery) Abort() error {
	if d.state != smtpWriting {
		if d.state == smtpFailed {
			d.state = smtpAborted
		}
		return nil
	}
	d.state = smtpAborted
	d.finish(d.dw != nil)
	return nil
}

// fail records err as the delivery's outcome and gives the session back,
// or drops it when brokenSession.
func (d *smtpDelivery) fail(err *DeliveryError, brokenSession bool) error {
	d.state = smtpFailed
	d.err = err
	d.finish(brokenSession)
	return err
}

// finish releases the session: back to the pool, or closed when it is
// broken or ctx closed it.
func (d *smtpDelivery) finish(brokenSession bool) {
	s := d.s
	if s == nil {
		return
	}
	d.s = nil
	d.hdr.release()
	alive := d.stop()
	d.t.forget(d)
	if brokenSession || !alive {
		s.close()
		return
	}
	d.t.put(s)
}

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

func (c *timedConn) SetDeadline(t time.Time) error      { return c.Conn.SetDeadline(c.clamp(t)) }
func (c *timedConn) SetReadDeadline(t time.Time) error  { return c.Conn.SetReadDeadline(c.clamp(t)) }
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
