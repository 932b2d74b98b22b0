package deliver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/emersion/go-smtp"
)

// smtpDelivery states.
const (
	smtpWriting = iota // buffering the header section, or in DATA
	smtpDone           // delivered
	smtpFailed         // err says why
	smtpAborted
)

type smtpDelivery struct {
	t      *SMTP
	s      *smtpSession // nil once given back
	reused bool         // s was idle and has not been checked since
	ctx    context.Context
	stop   func() bool // stops the AfterFunc that closes s on ctx's end
	state  int
	err    error

	hdr  headerBuf
	held []byte            // message bytes after hdr, held until the transaction starts
	dw   *smtp.DataCommand // non-nil once DATA was accepted
	w    crlfWriter        // in front of dw: bare CR becomes CRLF
	n    int64             // message bytes after bare CR and bare LF became CRLF
	cr   bool              // the last byte counted was CR
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
		rest = p[k:]
	}
	if d.dw == nil {
		// A message that fits in smtpHold is held whole, and its
		// transaction runs in Close.
		if len(d.hdr.buf)+len(d.held)+len(rest) <= smtpHold {
			d.held = append(d.held, rest...)
			return len(p), nil
		}
		if err := d.startHeld(false); err != nil {
			return 0, err
		}
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

// smtpHold is how much of a message a delivery holds back before it
// starts the mail transaction: a message this small is sent whole in
// Close, so that a caller that closes deliveries on goroutines of their
// own (see SMTPOptions.Connections) overlaps all of its round trips, not
// only the reply to the final dot, with the next message. A larger one
// starts once that much has arrived and then streams. The header section
// is held in any case (up to MaxHeader), to find the envelope sender.
const smtpHold = 128 << 10

// startHeld starts the transaction (start) and sends the bytes held after
// the header section.
func (d *smtpDelivery) startHeld(ended bool) error {
	if err := d.start(ended); err != nil {
		return err
	}
	if len(d.held) > 0 {
		if _, err := d.w.Write(d.held); err != nil {
			return d.fail(d.t.failure(StageData, ctxErr(d.ctx, err)), true)
		}
	}
	d.held = nil
	return nil
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
	needUTF8 := !isASCII(sender) || t.rcptUTF8 || !isASCII(hdr) || !d.hdr.complete(ended)
	s.open = true
	err := s.c.Mail(sender, &smtp.MailOptions{UTF8: s.utf8 && needUTF8})
	if err != nil && d.reused && broken(err) && d.ctx.Err() == nil {
		// The idle session was not checked before MAIL, and the server
		// had closed it meanwhile (its idle timeout, a restart): nothing
		// of the message was sent, so a new session takes it.
		t.log.Debug("session ended between messages; reconnecting", "error", err)
		if s, err = d.redial(); err != nil {
			return err
		}
		s.open = true
		err = s.c.Mail(sender, &smtp.MailOptions{UTF8: s.utf8 && needUTF8})
	}
	d.reused = false
	if err != nil {
		if !broken(err) {
			s.open = false // RFC 5321 §4.1.1.2: a refused MAIL opens no transaction
		}
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
	if d.dw == nil {
		d.hdr.done = true
		if err := d.startHeld(true); err != nil {
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
	// The reply to the end of data ends the transaction, whatever it
	// says; a session that broke is dropped anyway.
	if d.t.lmtp {
		resp, err := d.dw.CloseWithLMTPResponse()
		d.s.open = false
		if err != nil {
			return d.lmtpFailure(resp, err)
		}
	} else {
		_, err := d.dw.CloseWithResponse()
		d.s.open = false
		if err != nil {
			return d.fail(d.t.failure(StageReply, ctxErr(d.ctx, err)), broken(err))
		}
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

// redial replaces the delivery's session, which the server closed while
// it was idle, with a new one, keeping the delivery's slot.
func (d *smtpDelivery) redial() (*smtpSession, error) {
	t := d.t
	d.stop()
	d.s.close()
	d.s = nil
	s, err := t.dial(d.ctx)
	if err != nil {
		var de *DeliveryError
		if !errors.As(err, &de) {
			de = t.failure(StageConnect, err)
		}
		d.state, d.err = smtpFailed, de
		d.hdr.release()
		d.held = nil
		t.forget(d)
		t.release()
		return nil, de
	}
	d.s = s
	d.stop = context.AfterFunc(d.ctx, func() { s.conn.Close() })
	return s, nil
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
	d.held = nil
	alive := d.stop()
	d.t.forget(d)
	if brokenSession || !alive {
		s.close()
	} else {
		d.t.put(s)
	}
	// Only now may another Begin take the slot: the session is idle or
	// gone, so idle and busy sessions stay within Connections.
	d.t.release()
}
