package pop3test

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"
)

// sessionState is the RFC 1939 §3 session state. The UPDATE state is the
// handling of QUIT in the TRANSACTION state.
type sessionState int

const (
	authorization sessionState = iota // RFC 1939 §4
	transaction                       // RFC 1939 §5
)

const (
	// maxLine bounds what is kept of one client line; longer lines are
	// read to their end and refused.
	maxLine = 64 << 10
	// maxCommand is the RFC 2449 §4 limit on a command line, CRLF included.
	maxCommand = 255
)

// session is one client connection. It is used by one goroutine only; what
// it shares with other sessions lives in Server behind Server.mu.
type session struct {
	srv  *Server
	cfg  *Config
	raw  net.Conn // as accepted; closing it ends the session
	conn net.Conn // raw, or the TLS layer over it
	r    *bufio.Reader
	w    *bufio.Writer
	rec  *Transcript
	f    Faults // in force for the current command

	tls       bool
	state     sessionState
	user      string // name given with USER, waiting for PASS
	timestamp string // APOP timestamp from the greeting (RFC 1939 §7)
	locked    bool
	drop      []*entry // the maildrop as opened, numbered from 1
	deleted   []bool
	silent    bool

	budget     int // bytes left before an injected drop; -1: none
	sinceChunk int // bytes written since the last ChunkDelay pause
}

func newSession(s *Server, c net.Conn, rec *Transcript) *session {
	ss := &session{srv: s, cfg: &s.cfg, raw: c, rec: rec, budget: -1}
	ss.setConn(c)
	return ss
}

func (ss *session) setConn(c net.Conn) {
	ss.conn = c
	ss.r = bufio.NewReaderSize(c, 16<<10)
	ss.w = bufio.NewWriterSize(connWriter{ss}, 32<<10)
}

// connWriter is the session's bufio.Writer sink: it applies the write
// deadline and the ChunkDelay fault.
type connWriter struct{ ss *session }

func (cw connWriter) Write(p []byte) (int, error) { return cw.ss.writeConn(p) }

func (ss *session) writeConn(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		chunk := p
		if size, pause := ss.f.ChunkSize, ss.f.ChunkDelay; size > 0 && pause > 0 {
			if ss.sinceChunk >= size {
				if err := ss.sleep(pause); err != nil {
					return written, err
				}
				ss.sinceChunk = 0
			}
			chunk = chunk[:min(len(chunk), size-ss.sinceChunk)]
		}
		if err := ss.conn.SetWriteDeadline(time.Now().Add(ss.cfg.IdleTimeout)); err != nil {
			return written, fmt.Errorf("setting write deadline: %w", err)
		}
		n, err := ss.conn.Write(chunk)
		written += n
		ss.sinceChunk += n
		p = p[n:]
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

func (ss *session) run() error {
	ss.f = ss.srv.currentFaults()
	if ss.cfg.ImplicitTLS {
		if err := ss.handshake(); err != nil {
			return err
		}
	}
	greeting := "+OK " + ss.cfg.Greeting
	if ss.cfg.Caps.APOP {
		// RFC 1939 §7: a msg-id style timestamp, unique per greeting.
		ss.timestamp = fmt.Sprintf("<%d.%d@pop3test.invalid>", rand.Uint32(), time.Now().UnixNano())
		greeting += " " + ss.timestamp
	}
	if err := ss.reply(greeting); err != nil {
		return err
	}
	for {
		line, size, err := ss.readLine()
		if err != nil && !errors.Is(err, errLineTooLong) {
			return err
		}
		ss.record(line)
		ss.f = ss.srv.currentFaults()
		if ss.silent || ss.f.SilentAfterGreeting {
			continue
		}
		if err != nil {
			err = ss.fail("", "line too long")
		} else {
			err = ss.command(line, size)
		}
		if err != nil {
			return err
		}
	}
}

// readLine reads one client line under the idle deadline and returns it
// without its line ending (CRLF, or a bare LF from a sloppy client), with
// the number of octets it took on the wire.
func (ss *session) readLine() (string, int, error) {
	// Replies held back for a pipelining client go out before waiting for
	// input that is not there yet.
	if ss.w.Buffered() > 0 {
		in, _ := ss.r.Peek(ss.r.Buffered())
		if bytes.IndexByte(in, '\n') < 0 {
			if err := ss.flush(); err != nil {
				return "", 0, err
			}
		}
	}
	if err := ss.conn.SetReadDeadline(time.Now().Add(ss.cfg.IdleTimeout)); err != nil {
		return "", 0, fmt.Errorf("setting read deadline: %w", err)
	}
	var buf []byte
	size := 0
	for {
		frag, err := ss.r.ReadSlice('\n')
		size += len(frag)
		if keep := maxLine - len(buf); keep > 0 {
			buf = append(buf, frag[:min(len(frag), keep)]...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return "", size, fmt.Errorf("reading command: %w", err)
		}
		break
	}
	if size > maxLine {
		return string(buf) + "...", size, errLineTooLong
	}
	line := strings.TrimSuffix(string(buf), "\n")
	return strings.TrimSuffix(line, "\r"), size, nil
}

func (ss *session) record(line string) {
	ss.srv.note(ss.rec, func(t *Transcript) { t.Lines = append(t.Lines, line) })
}

// Replies.

func (ss *session) sleep(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ss.srv.quit:
		return errClosing
	}
}

func (ss *session) flush() error {
	if err := ss.w.Flush(); err != nil {
		return fmt.Errorf("writing reply: %w", err)
	}
	return nil
}

// put writes reply bytes, honouring an injected drop.
func (ss *session) put(p []byte) error {
	if ss.budget >= 0 {
		if len(p) > ss.budget {
			// Any write error shows again in the flush, which dropNow ignores:
			// the connection goes either way.
			_, _ = ss.w.Write(p[:ss.budget])
			return ss.dropNow()
		}
		ss.budget -= len(p)
	}
	if _, err := ss.w.Write(p); err != nil {
		return fmt.Errorf("writing reply: %w", err)
	}
	return nil
}

func (ss *session) putString(s string) error {
	if ss.budget >= 0 {
		return ss.put([]byte(s))
	}
	if _, err := ss.w.WriteString(s); err != nil {
		return fmt.Errorf("writing reply: %w", err)
	}
	return nil
}

// dropNow sends what is buffered and closes the connection.
func (ss *session) dropNow() error {
	_ = ss.w.Flush()
	_ = ss.raw.Close()
	return errDropped
}

func (ss *session) beginReply() error {
	if d := ss.f.ReplyDelay; d > 0 {
		if err := ss.flush(); err != nil {
			return err
		}
		return ss.sleep(d)
	}
	return nil
}

func (ss *session) lineDelay() error {
	if d := ss.f.LineDelay; d > 0 {
		if err := ss.flush(); err != nil {
			return err
		}
		return ss.sleep(d)
	}
	return nil
}

func (ss *session) line(s string) error {
	if err := ss.lineDelay(); err != nil {
		return err
	}
	if err := ss.putString(s); err != nil {
		return err
	}
	return ss.putString("\r\n")
}

// endReply completes a reply. Without PIPELINING every reply is flushed;
// with it, replies to commands that are already buffered wait (readLine
// flushes before it would block), which batches them as a real server
// does (RFC 2449 §6.6).
func (ss *session) endReply() error {
	if ss.pipelining() {
		return nil
	}
	ss.checkLockstep()
	return ss.flush()
}

func (ss *session) pipelining() bool { return !ss.cfg.Caps.NoPipelining }

// checkLockstep runs before the last bytes of a reply leave: input that is
// already here was sent before the client could have read the reply.
func (ss *session) checkLockstep() {
	if !ss.cfg.StrictLockstep {
		return
	}
	early := ss.r.Buffered() > 0
	if !early {
		if err := ss.conn.SetReadDeadline(time.Now().Add(ss.cfg.LockstepWindow)); err != nil {
			return
		}
		// A timeout here is the normal case; bufio hands the error out
		// once and reads again on the next call.
		_, err := ss.r.Peek(1)
		early = err == nil
	}
	if early {
		ss.srv.count(func(st *Stats) { st.LockstepViolations++ })
		ss.srv.note(ss.rec, func(t *Transcript) { t.LockstepViolations++ })
	}
}

func (ss *session) reply(status string) error {
	if err := ss.beginReply(); err != nil {
		return err
	}
	if err := ss.line(status); err != nil {
		return err
	}
	return ss.endReply()
}

func (ss *session) ok(text string) error {
	if text == "" {
		return ss.reply("+OK")
	}
	return ss.reply("+OK " + text)
}

// fail answers -ERR, with an RFC 2449 §8 response code unless RESP-CODES
// is switched off.
func (ss *session) fail(code, text string) error {
	if code != "" && !ss.cfg.Caps.NoRespCodes {
		text = "[" + code + "] " + text
	}
	return ss.reply("-ERR " + text)
}

// multiline sends a status line, lines byte-stuffed as RFC 1939 §3 asks,
// and the terminating ".".
func (ss *session) multiline(status string, lines []string) error {
	if err := ss.beginReply(); err != nil {
		return err
	}
	if err := ss.line(status); err != nil {
		return err
	}
	for _, l := range lines {
		if strings.HasPrefix(l, ".") {
			l = "." + l
		}
		if err := ss.line(l); err != nil {
			return err
		}
	}
	if err := ss.line("."); err != nil {
		return err
	}
	return ss.endReply()
}

// body sends message data byte-stuffed (RFC 1939 §3) and the terminating
// ".". Data that does not end in a newline gets a CRLF first, since the
// terminator must start a line.
func (ss *session) body(data []byte) error {
	for len(data) > 0 {
		if err := ss.lineDelay(); err != nil {
			return err
		}
		var ln []byte
		end := bytes.IndexByte(data, '\n')
		if ss.cfg.CRLFOnlyStuffing {
			// Only CRLF ends a line; a bare LF is part of it.
			if end = bytes.Index(data, []byte("\r\n")); end >= 0 {
				end++
			}
		}
		if end < 0 {
			ln, data = data, nil
		} else {
			ln, data = data[:end+1], data[end+1:]
		}
		if ln[0] == '.' {
			if err := ss.putString("."); err != nil {
				return err
			}
		}
		if err := ss.put(ln); err != nil {
			return err
		}
		if end < 0 {
			// The terminator must start a line (with CRLFOnlyStuffing,
			// also after a last line that ends in a bare LF).
			if err := ss.putString("\r\n"); err != nil {
				return err
			}
		}
	}
	if ss.budget >= 0 {
		return ss.dropNow()
	}
	return ss.line(".")
}

// Commands.

func (ss *session) command(line string, size int) error {
	verb, arg, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb) // RFC 1939 §3: keywords are case-insensitive
	if ss.cfg.StrictLineLength && size > maxCommand {
		return ss.fail("", "command line too long")
	}
	msg, uid := ss.selector(verb, arg)
	if cf, ok := ss.srv.takeCommand(verb, msg, uid); ok {
		return ss.inject(verb, cf)
	}
	if ss.state == authorization {
		switch verb {
		case "CAPA":
			return ss.capa(arg)
		case "USER":
			return ss.userCmd(arg)
		case "PASS":
			return ss.pass(arg)
		case "APOP":
			return ss.apop(arg)
		case "AUTH":
			return ss.auth(arg)
		case "STLS":
			return ss.stls(arg)
		case "QUIT":
			return ss.quit(arg)
		case "STAT", "LIST", "UIDL", "TOP", "RETR", "DELE", "RSET", "NOOP":
			return ss.fail("", "not logged in")
		}
		return ss.fail("", "unknown command")
	}
	switch verb {
	case "CAPA":
		return ss.capa(arg)
	case "STAT":
		return ss.stat(arg)
	case "LIST":
		return ss.list(arg)
	case "UIDL":
		return ss.uidl(arg)
	case "TOP":
		return ss.top(arg)
	case "RETR":
		return ss.retr(arg)
	case "DELE":
		return ss.dele(arg)
	case "RSET":
		return ss.rset(arg)
	case "NOOP":
		if arg != "" {
			return ss.fail("", "NOOP takes no argument")
		}
		return ss.ok("")
	case "QUIT":
		return ss.quit(arg)
	case "USER", "PASS", "APOP", "AUTH", "STLS":
		return ss.fail("", "already logged in")
	}
	return ss.fail("", "unknown command")
}

// selector finds the message a command names, for fault matching.
func (ss *session) selector(verb, arg string) (int, string) {
	switch verb {
	case "LIST", "UIDL", "TOP", "RETR", "DELE":
	default:
		return 0, ""
	}
	first, _, _ := strings.Cut(arg, " ")
	n, ok := parseNum(first)
	if !ok {
		return 0, ""
	}
	if ss.state == transaction && n <= len(ss.drop) {
		return n, ss.drop[n-1].msg.UID
	}
	return n, ""
}

func (ss *session) inject(verb string, cf CommandFault) error {
	if verb == "QUIT" {
		ss.srv.note(ss.rec, func(t *Transcript) { t.Quit = true })
		ss.release()
	}
	var err error
	switch {
	case cf.Hang:
		ss.silent = true
		return nil
	case cf.Raw != "":
		if err = ss.beginReply(); err == nil {
			if err = ss.putString(cf.Raw); err == nil {
				err = ss.endReply()
			}
		}
	default:
		text := cf.Text
		if text == "" {
			text = "injected failure"
		}
		err = ss.fail(cf.Code, text)
	}
	if err == nil && verb == "QUIT" {
		if err = ss.flush(); err == nil {
			err = errQuit
		}
	}
	return err
}

// parseNum parses a message number: 1 or more, decimal digits only.
func parseNum(s string) (int, bool) {
	n, ok := parseCount(s)
	return n, ok && n > 0
}

// parseCount parses a non-negative decimal number of at most 9 digits.
func parseCount(s string) (int, bool) {
	if s == "" || len(s) > 9 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

func (ss *session) capa(arg string) error {
	c := ss.cfg.Caps
	if c.NoCAPA {
		return ss.fail("", "unknown command")
	}
	if arg != "" {
		return ss.fail("", "CAPA takes no argument")
	}
	// RFC 2449 §5: the capabilities of the AUTHORIZATION state are
	// announced in both states.
	var caps []string
	if !c.NoTOP {
		caps = append(caps, "TOP")
	}
	if !c.NoUIDL {
		caps = append(caps, "UIDL")
	}
	if !c.NoRespCodes {
		caps = append(caps, "RESP-CODES")
	}
	if !c.NoPipelining {
		caps = append(caps, "PIPELINING")
	}
	if c.LoginDelay > 0 {
		caps = append(caps, fmt.Sprintf("LOGIN-DELAY %d", c.LoginDelay))
	}
	if c.Expire != "" {
		caps = append(caps, "EXPIRE "+c.Expire)
	}
	if ss.authAllowed() {
		if !c.NoUSER {
			caps = append(caps, "USER")
		}
		if !c.NoSASL && len(c.SASL) > 0 {
			caps = append(caps, "SASL "+strings.Join(c.SASL, " "))
		}
	}
	if ss.cfg.TLS != nil && !ss.tls {
		caps = append(caps, "STLS")
	}
	if c.Implementation != "" {
		caps = append(caps, "IMPLEMENTATION "+c.Implementation)
	}
	return ss.multiline("+OK Capability list follows", caps)
}

// authAllowed reports whether logins are accepted on this link now.
func (ss *session) authAllowed() bool { return !ss.cfg.TLSBeforeAuth || ss.tls }

// refusePlaintext answers a login attempt on a link that must first be
// encrypted. RFC 3206 §4: [AUTH] marks a problem with the credentials or
// their use, not a temporary one.
func (ss *session) refusePlaintext() error {
	return ss.fail("AUTH", "Plaintext authentication disallowed on non-secure connections")
}

func (ss *session) userCmd(arg string) error {
	switch {
	case ss.cfg.Caps.NoUSER:
		return ss.fail("", "USER is not supported")
	case !ss.authAllowed():
		return ss.refusePlaintext()
	case arg == "":
		return ss.fail("", "USER needs a name")
	}
	ss.user = arg
	return ss.ok("send PASS")
}

func (ss *session) pass(arg string) error {
	switch {
	case ss.cfg.Caps.NoUSER:
		return ss.fail("", "PASS is not supported")
	case !ss.authAllowed():
		return ss.refusePlaintext()
	case ss.user == "":
		return ss.fail("", "send USER first")
	}
	// RFC 1939 §7: PASS has one argument, which may contain spaces.
	user := ss.user
	ss.user = ""
	if !ss.passwordOK(user, arg) {
		return ss.authFailed()
	}
	return ss.login("USER")
}

func (ss *session) passwordOK(user, password string) bool {
	return ss.cfg.Password != "" && user == ss.cfg.User && password == ss.cfg.Password
}

func (ss *session) apop(arg string) error {
	if !ss.cfg.Caps.APOP {
		return ss.fail("", "APOP is not supported")
	}
	if !ss.authAllowed() {
		return ss.refusePlaintext()
	}
	name, digest, ok := strings.Cut(arg, " ")
	if !ok || name == "" || digest == "" {
		return ss.fail("", "usage: APOP name digest")
	}
	// RFC 1939 §7: the digest is MD5(timestamp + secret) in lower-case hex.
	sum := md5.Sum([]byte(ss.timestamp + ss.cfg.Password))
	if ss.cfg.Password == "" || name != ss.cfg.User || digest != hex.EncodeToString(sum[:]) {
		return ss.authFailed()
	}
	return ss.login("APOP")
}

func (ss *session) authFailed() error {
	ss.srv.count(func(st *Stats) { st.AuthFailures++ })
	return ss.fail("AUTH", "Authentication failed")
}

// login opens the maildrop after the credentials were accepted.
func (ss *session) login(how string) error {
	if lf, ok := ss.srv.takeLogin(); ok {
		text := lf.Text
		if text == "" {
			text = stockLoginText(lf.Code)
		}
		return ss.fail(lf.Code, text)
	}
	drop, ok := ss.srv.lock()
	if !ok {
		// RFC 2449 §8.1.1. The session stays open: the client may try
		// again or QUIT (RFC 1939 §4).
		return ss.fail("IN-USE", "Mailbox is locked by another POP3 session")
	}
	ss.locked = true
	ss.drop = drop
	ss.deleted = make([]bool, len(drop))
	ss.state = transaction
	ss.srv.note(ss.rec, func(t *Transcript) { t.Auth = how })
	n, size := ss.totals()
	return ss.ok(fmt.Sprintf("Logged in, %d messages (%d octets)", n, size))
}

// release gives the maildrop lock back.
func (ss *session) release() {
	if ss.locked {
		ss.locked = false
		ss.srv.unlock()
	}
}

func (ss *session) stls(arg string) error {
	if arg != "" {
		return ss.fail("", "STLS takes no argument")
	}
	if ss.cfg.TLS == nil || ss.tls {
		return ss.fail("", "STLS not available")
	}
	if err := ss.ok("Begin TLS negotiation"); err != nil {
		return err
	}
	if err := ss.flush(); err != nil {
		return err
	}
	// RFC 2595 §4: the TLS negotiation starts right after the reply.
	// Plaintext the client sent ahead must not pass for a command sent
	// under TLS (the STARTTLS command injection, CVE-2011-0411).
	if n := ss.r.Buffered(); n > 0 {
		_, _ = ss.r.Discard(n) // buffered bytes: cannot fail
	}
	ss.user = ""
	return ss.handshake()
}

func (ss *session) handshake() error {
	tc := tls.Server(ss.conn, ss.cfg.TLS)
	if err := ss.conn.SetDeadline(time.Now().Add(ss.cfg.IdleTimeout)); err != nil {
		return fmt.Errorf("setting handshake deadline: %w", err)
	}
	if err := tc.Handshake(); err != nil {
		ss.srv.count(func(st *Stats) { st.TLSFailures++ })
		return fmt.Errorf("tls handshake: %w", err)
	}
	ss.setConn(tc)
	ss.tls = true
	ss.srv.note(ss.rec, func(t *Transcript) { t.TLS = true })
	return nil
}

// retrSize is the size the RETR status line reports for message i.
func (ss *session) retrSize(i int) int64 {
	e := ss.drop[i]
	for _, sf := range ss.f.RetrSizes {
		if selects(sf.Msg, sf.UID, i+1, e.msg.UID) {
			return sf.Size
		}
	}
	return ss.size(i)
}

// size is the size the server reports for message i (0-based).
func (ss *session) size(i int) int64 {
	e := ss.drop[i]
	for _, sf := range ss.f.Sizes {
		if selects(sf.Msg, sf.UID, i+1, e.msg.UID) {
			return sf.Size
		}
	}
	return int64(len(e.msg.Data))
}

func (ss *session) totals() (n int, size int64) {
	for i := range ss.drop {
		if !ss.deleted[i] {
			n++
			size += ss.size(i)
		}
	}
	return n, size
}

// message resolves a message-number argument to an index. When it is not
// usable it answers -ERR and returns ok false.
func (ss *session) message(arg string) (idx int, ok bool, err error) {
	n, valid := parseNum(arg)
	switch {
	case !valid:
		return 0, false, ss.fail("", "invalid message number")
	case n > len(ss.drop):
		return 0, false, ss.fail("", "no such message")
	case ss.deleted[n-1]:
		return 0, false, ss.fail("", fmt.Sprintf("message %d already deleted", n))
	}
	return n - 1, true, nil
}

func (ss *session) stat(arg string) error {
	if arg != "" {
		return ss.fail("", "STAT takes no argument")
	}
	n, size := ss.totals()
	return ss.ok(fmt.Sprintf("%d %d", n, size))
}

func (ss *session) list(arg string) error {
	if arg == "" {
		var lines []string
		for i := range ss.drop {
			if !ss.deleted[i] {
				lines = append(lines, fmt.Sprintf("%d %d", i+1, ss.size(i)))
			}
		}
		n, size := ss.totals()
		return ss.multiline(fmt.Sprintf("+OK %d messages (%d octets)", n, size), lines)
	}
	i, ok, err := ss.message(arg)
	if !ok {
		return err
	}
	return ss.ok(fmt.Sprintf("%d %d", i+1, ss.size(i)))
}

func (ss *session) uidl(arg string) error {
	if ss.cfg.Caps.NoUIDL {
		return ss.fail("", "unknown command")
	}
	if arg == "" {
		var lines []string
		for i, e := range ss.drop {
			if !ss.deleted[i] {
				lines = append(lines, fmt.Sprintf("%d %s", i+1, e.msg.UID))
			}
		}
		return ss.multiline("+OK unique-id listing follows", lines)
	}
	i, ok, err := ss.message(arg)
	if !ok {
		return err
	}
	return ss.ok(fmt.Sprintf("%d %s", i+1, ss.drop[i].msg.UID))
}

func (ss *session) top(arg string) error {
	if ss.cfg.Caps.NoTOP {
		return ss.fail("", "unknown command")
	}
	msgArg, linesArg, found := strings.Cut(arg, " ")
	lines, valid := parseCount(linesArg)
	if !found || !valid {
		return ss.fail("", "usage: TOP msg n")
	}
	i, ok, err := ss.message(msgArg)
	if !ok {
		return err
	}
	ss.srv.count(func(st *Stats) { st.Tops++ })
	if err := ss.beginReply(); err != nil {
		return err
	}
	if err := ss.line("+OK top of message follows"); err != nil {
		return err
	}
	if err := ss.body(topOf(ss.drop[i].msg.Data, lines)); err != nil {
		return err
	}
	return ss.endReply()
}

// topOf returns the header, the blank line and the first n body lines of
// a message; all of it if it is shorter (RFC 1939 §7, TOP).
func topOf(data []byte, n int) []byte {
	pos := 0
	for {
		end := bytes.IndexByte(data[pos:], '\n')
		if end < 0 {
			return data // no body
		}
		line := data[pos : pos+end+1]
		pos += end + 1
		if string(line) == "\r\n" || string(line) == "\n" {
			break
		}
	}
	for ; n > 0; n-- {
		end := bytes.IndexByte(data[pos:], '\n')
		if end < 0 {
			return data
		}
		pos += end + 1
	}
	return data[:pos]
}

func (ss *session) retr(arg string) error {
	i, ok, err := ss.message(arg)
	if !ok {
		return err
	}
	e := ss.drop[i]
	drop, dropIt := ss.srv.takeDrop(i+1, e.msg.UID)
	ss.srv.count(func(st *Stats) { st.Retrs++ })
	if err := ss.beginReply(); err != nil {
		return err
	}
	if err := ss.line(fmt.Sprintf("+OK %d octets", ss.retrSize(i))); err != nil {
		return err
	}
	if dropIt {
		ss.budget = max(drop.After, 0)
	}
	if err := ss.body(e.msg.Data); err != nil {
		return err
	}
	return ss.endReply()
}

func (ss *session) dele(arg string) error {
	i, ok, err := ss.message(arg)
	if !ok {
		return err
	}
	// RFC 1939 §5: DELE only marks; the message goes in the UPDATE state.
	ss.deleted[i] = true
	ss.srv.count(func(st *Stats) { st.Deles++ })
	return ss.ok(fmt.Sprintf("message %d deleted", i+1))
}

func (ss *session) rset(arg string) error {
	if arg != "" {
		return ss.fail("", "RSET takes no argument")
	}
	clear(ss.deleted)
	n, size := ss.totals()
	return ss.ok(fmt.Sprintf("maildrop has %d messages (%d octets)", n, size))
}

func (ss *session) quit(arg string) error {
	if arg != "" {
		return ss.fail("", "QUIT takes no argument")
	}
	ss.srv.note(ss.rec, func(t *Transcript) { t.Quit = true })
	text := "POP3 server signing off"
	if ss.state == transaction {
		if ss.f.QuitDrop {
			ss.release()
			return ss.dropNow()
		}
		if !ss.f.QuitNoCommit {
			// RFC 1939 §6: the UPDATE state removes the marked messages
			// and only then answers.
			var marked []*entry
			for i, e := range ss.drop {
				if ss.deleted[i] {
					marked = append(marked, e)
				}
			}
			n := ss.srv.commit(marked)
			ss.srv.note(ss.rec, func(t *Transcript) { t.Committed = true })
			text = fmt.Sprintf("POP3 server signing off (%d messages deleted)", n)
		}
	}
	// The lock goes before the reply, so a client that reconnects as soon
	// as it reads +OK finds the maildrop free.
	ss.release()
	if err := ss.ok(text); err != nil {
		return err
	}
	if err := ss.flush(); err != nil {
		return err
	}
	return errQuit
}
