// Package hostile is a POP3 server that attacks its client, for popsync's
// hardening tests.
//
// It speaks enough of RFC 1939 and RFC 2449 (USER/PASS, CAPA, STAT, LIST,
// UIDL, RETR, TOP, DELE, NOOP, RSET, QUIT, and STLS in CAPA) to get a
// client to the point where an Attack starts, and then misbehaves in one
// chosen way: an endless status line, an endless message, a message larger
// than LIST said, a listing with millions of entries generated on the fly,
// unique-ids that break RFC 1939 §7, garbage instead of a status line, a
// "+OK" to STLS followed by plaintext, silence, or replies trickled one
// byte at a time.
//
// It is responsible for being hostile in a controlled, bounded way: every
// endless stream stops when the client hangs up or Close is called, large
// listings are generated lazily and never held in memory, and every
// goroutine belongs to the Server and ends in Close. It is not a correct
// POP3 server: it never deletes anything (DELE and QUIT answer +OK and
// commit nothing), it checks credentials with a plain comparison, and it
// does not take part in the fake server's fault language (package
// pop3test); the two are separate on purpose.
package hostile

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Attack is the misbehaviour a Server shows.
type Attack int

const (
	// None is a well-behaved server, for control runs.
	None Attack = iota
	// EndlessLine answers the command named in Script.At (the greeting
	// when empty) with "+OK " and then status-line octets without end: no
	// CRLF ever comes.
	EndlessLine
	// EndlessMessage answers RETR (and TOP) with "+OK" and then message
	// lines without end: the terminating "." never comes.
	EndlessMessage
	// OversizedMessage reports Script.ListedSize octets in LIST and STAT
	// for every message and sends Script.BodySize octets of body for it.
	OversizedMessage
	// HugeUIDL answers UIDL with Script.Entries entries, made up as they
	// are sent, for a LIST of the real messages.
	HugeUIDL
	// HugeList answers LIST with Script.Entries entries, made up as they
	// are sent.
	HugeList
	// BadUIDs sends Script.UIDs verbatim in the UIDL listing, whatever
	// they hold (control characters, spaces, 10 KB).
	BadUIDs
	// Garbage answers the command named in Script.At (the greeting when
	// empty) with Script.Garbage instead of a status line, and closes.
	Garbage
	// STLSPlaintext advertises STLS, answers it "+OK", and then goes on in
	// plaintext instead of a TLS handshake.
	STLSPlaintext
	// Silence answers the command named in Script.At (sends the greeting
	// when At is empty) and then reads but never answers.
	Silence
	// Trickle sends every octet of every reply, the greeting included,
	// Script.ByteDelay apart.
	Trickle
)

var attackNames = map[Attack]string{
	None: "none", EndlessLine: "endless status line", EndlessMessage: "endless message",
	OversizedMessage: "message larger than listed", HugeUIDL: "huge UIDL listing",
	HugeList: "huge LIST listing", BadUIDs: "invalid unique-ids", Garbage: "garbage reply",
	STLSPlaintext: "plaintext after STLS", Silence: "silence", Trickle: "trickled replies",
}

func (a Attack) String() string {
	if s, ok := attackNames[a]; ok {
		return s
	}
	return "Attack(" + strconv.Itoa(int(a)) + ")"
}

// Script is what a Server holds and how it attacks.
type Script struct {
	Attack Attack
	// User and Password are the only credentials accepted (USER/PASS).
	User, Password string
	// Messages are the maildrop, CRLF line endings, not dot-stuffed.
	Messages [][]byte
	// UIDs are the unique-ids of Messages, sent verbatim; missing ones
	// are "uid-N".
	UIDs []string
	// At names the command (upper case) at which EndlessLine, Garbage
	// and Silence start; empty means the greeting.
	At string
	// Garbage is what Garbage sends; default "* OK IMAP4rev1 ready\r\n".
	Garbage string
	// Entries is the length of a HugeUIDL or HugeList listing.
	Entries int
	// ListedSize and BodySize are for OversizedMessage.
	ListedSize, BodySize int64
	// ByteDelay is the pause between octets for Trickle (default 1s).
	ByteDelay time.Duration
	// AfterHello makes STLSPlaintext wait for the client's first TLS
	// bytes (its ClientHello) before it answers them in plaintext;
	// otherwise the plaintext follows the "+OK" at once.
	AfterHello bool
	// IdleTimeout bounds every read of a session (default 1 minute), so a
	// client that hangs does not hold the server forever.
	IdleTimeout time.Duration
}

// Server is a running hostile server. Close stops it and every session.
type Server struct {
	s  Script
	ln net.Listener

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	lines    []string // every line received, in order, across sessions
	sent     int64    // octets written, across sessions
	sessions int
	closed   bool

	quit chan struct{}
	wg   sync.WaitGroup
}

// errStop ends a session on purpose.
var errStop = errors.New("session ended by the script")

// Start listens on 127.0.0.1 on a free port and serves in the background
// until Close.
func Start(s Script) (*Server, error) {
	if s.Garbage == "" {
		s.Garbage = "* OK IMAP4rev1 ready\r\n"
	}
	if s.ByteDelay <= 0 {
		s.ByteDelay = time.Second
	}
	if s.IdleTimeout <= 0 {
		s.IdleTimeout = time.Minute
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening on loopback: %w", err)
	}
	srv := &Server{s: s, ln: ln, conns: make(map[net.Conn]struct{}), quit: make(chan struct{})}
	srv.wg.Add(1)
	go srv.accept()
	return srv, nil
}

// Addr is the address to dial, "127.0.0.1:port".
func (srv *Server) Addr() string { return srv.ln.Addr().String() }

// Lines returns every line the server received, across sessions.
func (srv *Server) Lines() []string {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return append([]string(nil), srv.lines...)
}

// Sent returns how many octets the server wrote, across sessions.
func (srv *Server) Sent() int64 {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.sent
}

// Sessions returns how many connections were accepted.
func (srv *Server) Sessions() int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.sessions
}

// Close stops accepting, closes every session and waits for their
// goroutines. It is safe to call more than once.
func (srv *Server) Close() error {
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		return nil
	}
	srv.closed = true
	close(srv.quit)
	for c := range srv.conns {
		c.Close()
	}
	srv.mu.Unlock()
	err := srv.ln.Close()
	srv.wg.Wait()
	return err
}

func (srv *Server) accept() {
	defer srv.wg.Done()
	for {
		c, err := srv.ln.Accept()
		if err != nil {
			return
		}
		srv.mu.Lock()
		if srv.closed {
			srv.mu.Unlock()
			c.Close()
			return
		}
		srv.conns[c] = struct{}{}
		srv.sessions++
		srv.mu.Unlock()
		srv.wg.Add(1)
		go func() {
			defer srv.wg.Done()
			defer func() {
				srv.mu.Lock()
				delete(srv.conns, c)
				srv.mu.Unlock()
				c.Close()
			}()
			ss := &session{srv: srv, c: c, r: bufio.NewReader(c)}
			_ = ss.run()
		}()
	}
}

// session is one client connection.
type session struct {
	srv    *Server
	c      net.Conn
	r      *bufio.Reader
	authed bool
	user   string
}

func (ss *session) script() *Script { return &ss.srv.s }

// write sends b, trickled for Trickle, and counts it.
func (ss *session) write(b []byte) error {
	if ss.script().Attack == Trickle {
		t := time.NewTimer(0)
		defer t.Stop()
		for i := range b {
			select {
			case <-t.C:
			case <-ss.srv.quit:
				return errStop
			}
			if err := ss.writeRaw(b[i : i+1]); err != nil {
				return err
			}
			t.Reset(ss.script().ByteDelay)
		}
		return nil
	}
	return ss.writeRaw(b)
}

func (ss *session) writeRaw(b []byte) error {
	// A client that stops reading must not hold the session forever.
	_ = ss.c.SetWriteDeadline(time.Now().Add(ss.script().IdleTimeout))
	n, err := ss.c.Write(b)
	ss.srv.mu.Lock()
	ss.srv.sent += int64(n)
	ss.srv.mu.Unlock()
	return err
}

func (ss *session) line(format string, args ...any) error {
	return ss.write([]byte(fmt.Sprintf(format, args...) + "\r\n"))
}

// endless writes chunks made by next until the client or the server hangs
// up. next gets the chunk number.
func (ss *session) endless(next func(i int) []byte) error {
	for i := 0; ; i++ {
		select {
		case <-ss.srv.quit:
			return errStop
		default:
		}
		if err := ss.write(next(i)); err != nil {
			return err
		}
	}
}

// attackHere runs the command-triggered attacks for verb (the greeting is
// ""); handled reports that the attack took over the reply.
func (ss *session) attackHere(verb string) (handled bool, err error) {
	s := ss.script()
	if s.At != verb {
		return false, nil
	}
	switch s.Attack {
	case EndlessLine:
		if err := ss.write([]byte("+OK ")); err != nil {
			return true, err
		}
		chunk := []byte(strings.Repeat("x", 4096))
		return true, ss.endless(func(int) []byte { return chunk })
	case Garbage:
		ss.write([]byte(s.Garbage))
		return true, errStop
	case Silence:
		if verb != "" {
			// The command is answered as usual; silence comes after.
			return false, nil
		}
		if err := ss.line("+OK hostile POP3 server ready"); err != nil {
			return true, err
		}
		return true, ss.silent()
	}
	return false, nil
}

// silent reads and records lines and never answers.
func (ss *session) silent() error {
	for {
		if _, err := ss.readLine(); err != nil {
			return err
		}
	}
}

func (ss *session) readLine() (string, error) {
	_ = ss.c.SetReadDeadline(time.Now().Add(ss.script().IdleTimeout))
	l, err := ss.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	l = strings.TrimRight(l, "\r\n")
	ss.srv.mu.Lock()
	ss.srv.lines = append(ss.srv.lines, l)
	ss.srv.mu.Unlock()
	return l, nil
}

func (ss *session) run() error {
	if handled, err := ss.attackHere(""); handled {
		return err
	}
	if err := ss.line("+OK hostile POP3 server ready"); err != nil {
		return err
	}
	silentNow := false
	for {
		l, err := ss.readLine()
		if err != nil {
			return err
		}
		if silentNow {
			continue
		}
		verb, arg, _ := strings.Cut(l, " ")
		verb = strings.ToUpper(verb)
		if handled, err := ss.attackHere(verb); handled {
			return err
		}
		if err := ss.command(verb, arg); err != nil {
			return err
		}
		if ss.script().Attack == Silence && ss.script().At == verb {
			silentNow = true
		}
	}
}

func (ss *session) command(verb, arg string) error {
	s := ss.script()
	switch verb {
	case "CAPA":
		caps := "+OK\r\nUSER\r\nUIDL\r\nTOP\r\nPIPELINING\r\n"
		if s.Attack == STLSPlaintext {
			caps += "STLS\r\n"
		}
		return ss.write([]byte(caps + ".\r\n"))
	case "STLS":
		if s.Attack != STLSPlaintext {
			return ss.line("-ERR not offered")
		}
		// The client now starts a handshake; it gets a POP3 line instead.
		if !s.AfterHello {
			return ss.line("+OK begin TLS negotiation\r\n+OK plaintext is fine too")
		}
		if err := ss.line("+OK begin TLS negotiation"); err != nil {
			return err
		}
		_ = ss.c.SetReadDeadline(time.Now().Add(s.IdleTimeout))
		if _, err := ss.r.ReadByte(); err != nil {
			return err
		}
		return ss.line("+OK plaintext is fine too")
	case "USER":
		ss.user = arg
		return ss.line("+OK")
	case "PASS":
		if ss.user != s.User || arg != s.Password {
			return ss.line("-ERR [AUTH] invalid login")
		}
		ss.authed = true
		return ss.line("+OK logged in")
	case "QUIT":
		ss.line("+OK bye")
		return errStop
	case "NOOP", "RSET":
		return ss.line("+OK")
	}
	if !ss.authed {
		return ss.line("-ERR not logged in")
	}
	switch verb {
	case "STAT":
		var total int64
		for i := range s.Messages {
			total += ss.listedSize(i)
		}
		return ss.line("+OK %d %d", len(s.Messages), total)
	case "LIST":
		return ss.list()
	case "UIDL":
		return ss.uidl()
	case "RETR", "TOP":
		f := strings.Fields(arg)
		n, err := strconv.Atoi(firstOr(f, ""))
		if err != nil || n < 1 || n > len(s.Messages) {
			return ss.line("-ERR no such message")
		}
		return ss.retr(n - 1)
	case "DELE":
		return ss.line("+OK marked")
	}
	return ss.line("-ERR unknown command")
}

func firstOr(f []string, def string) string {
	if len(f) == 0 {
		return def
	}
	return f[0]
}

func (ss *session) listedSize(i int) int64 {
	if ss.script().Attack == OversizedMessage {
		return ss.script().ListedSize
	}
	return int64(len(ss.script().Messages[i]))
}

func (ss *session) uid(i int) string {
	if i < len(ss.script().UIDs) {
		return ss.script().UIDs[i]
	}
	return "uid-" + strconv.Itoa(i+1)
}

func (ss *session) list() error {
	s := ss.script()
	if s.Attack == HugeList {
		if err := ss.write([]byte("+OK\r\n")); err != nil {
			return err
		}
		return ss.lazyListing(func(n int) string { return strconv.Itoa(n) + " 1000" })
	}
	var b strings.Builder
	b.WriteString("+OK\r\n")
	for i := range s.Messages {
		fmt.Fprintf(&b, "%d %d\r\n", i+1, ss.listedSize(i))
	}
	b.WriteString(".\r\n")
	return ss.write([]byte(b.String()))
}

func (ss *session) uidl() error {
	s := ss.script()
	if s.Attack == HugeUIDL {
		if err := ss.write([]byte("+OK\r\n")); err != nil {
			return err
		}
		return ss.lazyListing(func(n int) string { return fmt.Sprintf("%d uid-%d", n, n) })
	}
	var b strings.Builder
	b.WriteString("+OK\r\n")
	for i := range s.Messages {
		fmt.Fprintf(&b, "%d %s\r\n", i+1, ss.uid(i))
	}
	b.WriteString(".\r\n")
	return ss.write([]byte(b.String()))
}

// lazyListing sends Script.Entries lines made by entry (1-based) and the
// terminator, in chunks, holding no more than one chunk.
func (ss *session) lazyListing(entry func(n int) string) error {
	n := ss.script().Entries
	var b strings.Builder
	for i := 1; i <= n; i++ {
		b.WriteString(entry(i))
		b.WriteString("\r\n")
		if b.Len() >= 32<<10 {
			if err := ss.write([]byte(b.String())); err != nil {
				return err
			}
			b.Reset()
		}
	}
	b.WriteString(".\r\n")
	return ss.write([]byte(b.String()))
}

func (ss *session) retr(i int) error {
	s := ss.script()
	switch s.Attack {
	case EndlessMessage:
		if err := ss.write([]byte("+OK message follows\r\nSubject: endless\r\n\r\n")); err != nil {
			return err
		}
		chunk := []byte(strings.Repeat("All work and no play makes a dull server.\r\n", 100))
		return ss.endless(func(int) []byte { return chunk })
	case OversizedMessage:
		if err := ss.line("+OK %d octets", s.ListedSize); err != nil {
			return err
		}
		line := []byte(strings.Repeat("y", 78) + "\r\n")
		var sent int64
		for sent < s.BodySize {
			if err := ss.write(line); err != nil {
				return err
			}
			sent += int64(len(line))
		}
		return ss.write([]byte(".\r\n"))
	}
	var b strings.Builder
	b.WriteString("+OK message follows\r\n")
	msg := string(s.Messages[i])
	for l := range strings.Lines(msg) {
		if strings.HasPrefix(l, ".") {
			b.WriteByte('.')
		}
		b.WriteString(l)
	}
	if !strings.HasSuffix(msg, "\n") {
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return ss.write([]byte(b.String()))
}
