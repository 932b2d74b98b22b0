package deliver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// smtpSession is one connection, greeted and authenticated.
type smtpSession struct {
	c       *smtp.Client
	conn    *timedConn
	maxSize int64 // the server's SIZE; 0 = none given
	utf8    bool  // the server offers SMTPUTF8
	// open: a mail transaction may be open (MAIL was accepted and no
	// reply to the end of data has been read): the next one needs RSET.
	open bool
}

// close drops the connection without QUIT.
func (s *smtpSession) close() { s.c.Close() }

// quit ends the session politely.
func (s *smtpSession) quit() error {
	err := s.c.Quit()
	s.c.Close()
	return err
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

// session returns an idle session or a new one. reused reports an idle
// session taken without a command: its first one may find that the
// server closed it in the meantime (see smtpDelivery.start).
func (t *SMTP) session(ctx context.Context) (s *smtpSession, reused bool, err error) {
	t.mu.Lock()
	closed, down := t.closed, t.down
	if n := len(t.idle); n > 0 && !closed && down == nil {
		s = t.idle[n-1]
		t.idle = t.idle[:n-1]
	}
	t.mu.Unlock()
	if closed {
		return nil, false, fmt.Errorf("%s: beginning delivery: %w", t.name, ErrClosed)
	}
	if down != nil {
		return nil, false, down
	}
	if s != nil && !s.open {
		// RFC 5321 §4.1.1.4: the reply to the end of mail data ended
		// the last transaction (a refused MAIL opened none), so MAIL
		// may follow without RSET, sparing two round trips per message
		// (go-smtp greets again with EHLO after RSET).
		return s, true, nil
	}
	if s != nil {
		// RFC 5321 §4.1.1.5: RSET ends whatever the last transaction
		// left; it also shows whether the server still has the session.
		// (go-smtp greets again with EHLO before the next MAIL, which RFC
		// 5321 §4.1.4 allows.)
		stop := context.AfterFunc(ctx, func() { s.conn.Close() })
		err := s.c.Reset()
		if stop() && err == nil {
			s.open = false
			return s, false, nil
		}
		s.close()
		if ctx.Err() != nil {
			return nil, false, t.failure(StageHello, ctxErr(ctx, err))
		}
		t.log.Debug("session ended between messages; reconnecting", "error", err)
	}
	s, err = t.dial(ctx)
	return s, false, err
}

// dial opens a new session; a failure that is not ctx's marks the target
// down, so that every later Begin fails with it at once.
func (t *SMTP) dial(ctx context.Context) (*smtpSession, error) {
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
