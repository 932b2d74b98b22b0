package pop3test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"
)

// Errors returned by this package, and the internal ones that end a
// session.
var (
	// ErrServerClosed is returned by Serve once Close was called.
	ErrServerClosed = errors.New("pop3test: server closed")

	// errQuit ends a session after QUIT was answered.
	errQuit = errors.New("session ended by QUIT")
	// errDropped ends a session whose connection an injected fault dropped.
	errDropped = errors.New("connection dropped by injected fault")
	// errClosing ends a session because the server is closing.
	errClosing = errors.New("server closing")
	// errAuthCanceled reports a SASL exchange the client canceled with "*".
	errAuthCanceled = errors.New("authentication canceled by client")
	// errBadResponse reports a SASL response that is not valid base64.
	errBadResponse = errors.New("invalid base64 in SASL response")
	// errLineTooLong reports a client line longer than maxLine.
	errLineTooLong = errors.New("line too long")
)

// DefaultIdleTimeout is how long a session waits for the next client line
// (and for a write to complete) when Config.IdleTimeout is zero.
const DefaultIdleTimeout = 10 * time.Minute

// defaultLockstepWindow is how long Config.StrictLockstep waits for an
// early command before a reply is sent, when Config.LockstepWindow is zero.
const defaultLockstepWindow = time.Millisecond

// defaultSASL is the mechanism list used when Caps.SASL is nil.
var defaultSASL = []string{"PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER"}

// Message is one message in the maildrop.
type Message struct {
	// UID is sent verbatim as the UIDL unique-id. Nothing checks it, so a
	// test can store duplicate or invalid UIDs (RFC 1939 §7 wants 1 to 70
	// characters in 0x21..0x7E) to see how a client copes.
	UID string
	// Data is the message as stored: CRLF line endings, not dot-stuffed.
	// It is sent as is apart from dot-stuffing, so bare LF endings reach the
	// client unchanged. A client that follows RFC 1939 §3 reads a "."
	// after a bare LF as data, so Data whose last line ends in a bare LF
	// never ends for it unless Config.CRLFOnlyStuffing is set (which
	// sends a CRLF before the terminator then).
	Data []byte
}

// Caps selects the capabilities the server advertises in CAPA (RFC 2449 §6)
// and, with them, the commands it accepts. The zero value is a full-featured
// server: TOP, UIDL, RESP-CODES, PIPELINING, USER and SASL with every
// mechanism this package implements; APOP, LOGIN-DELAY, EXPIRE and
// IMPLEMENTATION are opt-in. STLS is advertised when Config.TLS is set and
// Config.ImplicitTLS is not.
type Caps struct {
	// NoCAPA makes CAPA answer -ERR, as a server older than RFC 2449 does.
	NoCAPA bool
	// NoUIDL hides UIDL; the UIDL command then answers -ERR.
	NoUIDL bool
	// NoTOP hides TOP; the TOP command then answers -ERR.
	NoTOP bool
	// NoPipelining hides PIPELINING. Commands are still read in order;
	// see Config.StrictLockstep to catch clients that pipeline anyway.
	NoPipelining bool
	// NoUSER hides USER; USER and PASS then answer -ERR.
	NoUSER bool
	// NoRespCodes hides RESP-CODES, and every -ERR the server makes
	// (injected ones included) carries no [CODE].
	NoRespCodes bool
	// NoSASL hides SASL; AUTH then answers -ERR.
	NoSASL bool
	// SASL lists the mechanisms advertised and accepted, in this order.
	// nil means PLAIN LOGIN CRAM-MD5 XOAUTH2 OAUTHBEARER. A name this
	// package does not implement is advertised but AUTH with it answers
	// -ERR.
	SASL []string
	// APOP puts an RFC 1939 §7 timestamp in the greeting and accepts APOP.
	APOP bool
	// LoginDelay, when positive, advertises "LOGIN-DELAY n" (seconds).
	LoginDelay int
	// Expire, when set, advertises "EXPIRE <Expire>" (e.g. "NEVER", "31").
	Expire string
	// Implementation, when set, advertises "IMPLEMENTATION <Implementation>".
	Implementation string
}

// Config configures a Server. The zero value (plus User and Password) is a
// plaintext server with the capabilities of a zero Caps.
type Config struct {
	// User is the only account. Password is its password for USER/PASS,
	// APOP, PLAIN, LOGIN and CRAM-MD5; an empty Password makes all of those
	// fail. Token is the OAuth 2.0 bearer token for XOAUTH2 and
	// OAUTHBEARER; an empty Token makes those fail.
	User, Password, Token string

	Caps Caps

	// TLS enables STLS (RFC 2595) or, with ImplicitTLS, TLS from the first
	// byte. NewServer panics if ImplicitTLS is set without TLS.
	TLS         *tls.Config
	ImplicitTLS bool
	// TLSBeforeAuth refuses USER, PASS, APOP and AUTH with -ERR [AUTH]
	// until STLS succeeded, and leaves USER and SASL out of CAPA until
	// then, the way a server that forbids plaintext logins behaves.
	TLSBeforeAuth bool

	// Greeting is the text after "+OK " in the greeting (default
	// "POP3 server ready"). With Caps.APOP the timestamp is appended.
	Greeting string

	// NoLock lets several sessions open the maildrop at once; by default a
	// second login while one session holds the maildrop gets -ERR [IN-USE]
	// (RFC 1939 §4, RFC 2449 §8.1.1).
	NoLock bool

	// IdleTimeout bounds every read and write of a session
	// (default DefaultIdleTimeout). A session that hits it is closed
	// without committing.
	IdleTimeout time.Duration

	// StrictLockstep counts a violation (Stats.LockstepViolations) each
	// time a client sends a line before the previous reply was completely
	// sent, while PIPELINING is not advertised. Before the last bytes of
	// every reply the server looks for early input for up to
	// LockstepWindow (default 1ms), so this slows every reply by that much.
	// It may miss a violation (a command still in flight) but never
	// reports one that did not happen.
	StrictLockstep bool
	LockstepWindow time.Duration

	// StrictLineLength answers -ERR to command lines longer than 255
	// octets including CRLF (RFC 2449 §4; RFC 5034 §4 for AUTH with an
	// initial response). SASL continuation lines are not limited by it.
	StrictLineLength bool

	// CRLFOnlyStuffing makes the server byte-stuff (RFC 1939 §3) only at
	// the start of a message and after CRLF, and pass a bare LF through
	// as data, as a server that knows only CRLF lines does. A message
	// holding "\n.\n" then goes out with that "." unstuffed: the
	// message-smuggling case, which a client must read as data. By
	// default every line start after an LF is stuffed.
	CRLFOnlyStuffing bool

	// XOAUTH2ErrorChallenge makes a failed XOAUTH2 answer with a "+ "
	// challenge holding a JSON error and wait for the client's (empty)
	// response before -ERR, as Google documents. Without it a failed
	// XOAUTH2 gets -ERR at once, as Microsoft's servers do. OAUTHBEARER
	// always uses the challenge (RFC 7628 §3.2.3).
	XOAUTH2ErrorChallenge bool

	// Logger receives session start and end at Debug level; nil is silent.
	Logger *slog.Logger
}

// Stats are counters over the server's life.
type Stats struct {
	Sessions           int // sessions started
	Active             int // sessions running now
	Logins             int // successful logins (the maildrop was opened)
	AuthFailures       int // rejected credentials
	TLSFailures        int // failed TLS handshakes (implicit or after STLS)
	Retrs              int // RETR commands answered +OK
	Tops               int // TOP commands answered +OK
	Deles              int // DELE commands answered +OK (marks, not removals)
	Commits            int // QUITs that committed the UPDATE state
	DelesCommitted     int // messages removed from the maildrop by a commit
	LockstepViolations int // see Config.StrictLockstep
}

// Transcript is what one session received and how it ended.
type Transcript struct {
	Session int    // 1-based, in the order sessions started
	Remote  string // the client's address
	// Lines holds every line received from the client, SASL responses
	// included, without the line ending, in order. Passwords are not
	// redacted. A line longer than 64 KiB is cut and ends in "...".
	Lines []string
	// Auth names how the client logged in: "USER", "APOP" or the SASL
	// mechanism ("PLAIN", ...). Empty if it did not.
	Auth string
	TLS  bool // the session was encrypted when it ended
	Quit bool // QUIT was received
	// Committed reports that QUIT reached the UPDATE state and the
	// deletions were applied.
	Committed          bool
	LockstepViolations int
	Done               bool // the session has ended
}

type entry struct{ msg Message }

// Server is a fake POP3 server over one in-memory maildrop. It is safe for
// concurrent use.
type Server struct {
	cfg Config

	mu        sync.Mutex
	drop      []*entry
	locked    bool
	faults    Faults
	used      faultUse
	stats     Stats
	records   []*Transcript
	conns     map[net.Conn]struct{}
	listeners map[net.Listener]struct{}
	idle      chan struct{} // closed while no session runs
	closed    bool
	quit      chan struct{} // closed by Close

	wg sync.WaitGroup
}

// NewServer returns a server holding msgs. It panics if cfg.ImplicitTLS is
// set without cfg.TLS.
func NewServer(cfg Config, msgs ...Message) *Server {
	if cfg.ImplicitTLS && cfg.TLS == nil {
		panic("pop3test: Config.ImplicitTLS needs Config.TLS")
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.LockstepWindow <= 0 {
		cfg.LockstepWindow = defaultLockstepWindow
	}
	if cfg.Greeting == "" {
		cfg.Greeting = "POP3 server ready"
	}
	if cfg.Caps.SASL == nil {
		cfg.Caps.SASL = defaultSASL
	}
	cfg.Caps.SASL = slices.Clone(cfg.Caps.SASL)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	idle := make(chan struct{})
	close(idle)
	s := &Server{
		cfg:       cfg,
		conns:     make(map[net.Conn]struct{}),
		listeners: make(map[net.Listener]struct{}),
		idle:      idle,
		quit:      make(chan struct{}),
	}
	s.Add(msgs...)
	return s
}

// Listen listens on 127.0.0.1 on a free port and serves in the background
// until Close. It returns the address to dial.
func (s *Server) Listen() (addr string, err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listening on loopback: %w", err)
	}
	if err := s.track(l); err != nil {
		l.Close()
		return "", err
	}
	go func() {
		defer s.wg.Done()
		if err := s.acceptLoop(l); !errors.Is(err, ErrServerClosed) {
			s.cfg.Logger.Error("pop3test: listener stopped", "addr", l.Addr(), "err", err)
		}
	}()
	return l.Addr().String(), nil
}

// Serve accepts connections on l and serves each in its own goroutine. It
// returns ErrServerClosed after Close, or the listener's error; either way
// l is closed.
func (s *Server) Serve(l net.Listener) error {
	if err := s.track(l); err != nil {
		l.Close()
		return err
	}
	defer s.wg.Done()
	return s.acceptLoop(l)
}

// track registers a listener and counts its accept loop in s.wg.
func (s *Server) track(l net.Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.wg.Add(1)
	return nil
}

func (s *Server) acceptLoop(l net.Listener) error {
	defer func() {
		l.Close()
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(backoff):
					continue
				case <-s.quit:
					return ErrServerClosed
				}
			}
			return fmt.Errorf("accepting connection: %w", err)
		}
		backoff = 0
		// The accept loop holds a count in s.wg, so this Add cannot race
		// with Close's Wait.
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.ServeConn(c)
		}()
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// ServeConn runs one session on c and returns when it ends. It closes c.
// After Close it closes c at once.
func (s *Server) ServeConn(c net.Conn) {
	rec, ok := s.register(c)
	if !ok {
		c.Close()
		return
	}
	defer s.wg.Done()
	ss := newSession(s, c, rec)
	s.cfg.Logger.Debug("pop3test: session start", "session", rec.Session, "remote", rec.Remote)
	err := ss.run()
	ss.release()
	c.Close()
	s.unregister(c, rec)
	s.cfg.Logger.Debug("pop3test: session end", "session", rec.Session, "reason", err)
}

func (s *Server) register(c net.Conn) (*Transcript, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false
	}
	s.wg.Add(1)
	s.conns[c] = struct{}{}
	if s.stats.Active == 0 {
		s.idle = make(chan struct{})
	}
	s.stats.Active++
	s.stats.Sessions++
	rec := &Transcript{Session: s.stats.Sessions}
	if a := c.RemoteAddr(); a != nil {
		rec.Remote = a.String()
	}
	s.records = append(s.records, rec)
	return rec, true
}

func (s *Server) unregister(c net.Conn, rec *Transcript) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	rec.Done = true
	s.stats.Active--
	if s.stats.Active == 0 {
		close(s.idle)
	}
}

// Close stops the listeners, closes every session's connection (nothing
// is committed for them) and waits for all goroutines to return. Further
// calls return nil.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	close(s.quit)
	var first error
	for l := range s.listeners {
		if err := l.Close(); err != nil && first == nil && !errors.Is(err, net.ErrClosed) {
			first = fmt.Errorf("closing listener: %w", err)
		}
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return first
}

// WaitIdle blocks until no session is running, or ctx is done. Tests use
// it after a client hung up, before looking at Stats or starting a session
// that needs the maildrop lock.
func (s *Server) WaitIdle(ctx context.Context) error {
	s.mu.Lock()
	ch := s.idle
	s.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for sessions to end: %w", ctx.Err())
	}
}

// Add appends messages to the maildrop. Sessions that already opened the
// maildrop do not see them. Data is copied.
func (s *Server) Add(msgs ...Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		s.drop = append(s.drop, &entry{msg: Message{UID: m.UID, Data: slices.Clone(m.Data)}})
	}
}

// Messages returns a copy of the maildrop as it is now: committed
// deletions are gone, pending ones (DELE without QUIT) are still there.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, len(s.drop))
	for i, e := range s.drop {
		out[i] = Message{UID: e.msg.UID, Data: slices.Clone(e.msg.Data)}
	}
	return out
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Transcripts returns a copy of every session's transcript, oldest first.
func (s *Server) Transcripts() []Transcript {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Transcript, len(s.records))
	for i, r := range s.records {
		out[i] = *r
		out[i].Lines = slices.Clone(r.Lines)
	}
	return out
}

// lock takes the maildrop lock and returns a snapshot of the maildrop.
func (s *Server) lock() ([]*entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locked && !s.cfg.NoLock {
		return nil, false
	}
	s.locked = true
	s.stats.Logins++
	return slices.Clone(s.drop), true
}

func (s *Server) unlock() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.locked = false
}

// commit removes the marked entries from the maildrop (RFC 1939 §6) and
// returns how many were still there.
func (s *Server) commit(marked []*entry) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	set := make(map[*entry]bool, len(marked))
	for _, e := range marked {
		set[e] = true
	}
	n := 0
	s.drop = slices.DeleteFunc(s.drop, func(e *entry) bool {
		if set[e] {
			n++
			return true
		}
		return false
	})
	s.stats.Commits++
	s.stats.DelesCommitted += n
	return n
}

// count applies f to the stats under the lock.
func (s *Server) count(f func(*Stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.stats)
}

// note applies f to a session's transcript under the lock.
func (s *Server) note(rec *Transcript, f func(*Transcript)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(rec)
}
