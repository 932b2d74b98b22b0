package deliver_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"sync"
	"syscall"
	"testing"

	"github.com/emersion/go-smtp"
)

// mta is an in-process SMTP or LMTP server (emersion/go-smtp) for the
// SMTP target's tests: it keeps what it accepts, counts connections,
// records the wire, and fails on cue through its fail hook.
type mta struct {
	srv  *smtp.Server
	l    net.Listener
	Addr string // "127.0.0.1:port", "unix:/path" or "pipe"

	mu    sync.Mutex
	msgs  []mail
	conns int
	nmsg  int
	wire  bytes.Buffer
	fail  func(ev event) error

	// release is closed when the test ends: hooks that stall a session
	// wait for it.
	release chan struct{}
}

// mail is one accepted message.
type mail struct {
	from  string
	opts  smtp.MailOptions
	rcpts []string
	data  []byte
}

// event is the moment a fail hook is asked about.
type event struct {
	stage string // "mail", "rcpt", "data" (after 354, before the data is read), "dot" (data read, before the reply)
	n     int    // the transaction's number on this server, from 1
	arg   string // the address for mail and rcpt; the recipient at "dot" for LMTP
	conn  *smtp.Conn
}

// startMTA serves on l until the test ends. setup may change the server
// (LMTP, SIZE, SMTPUTF8, TLS) before it starts.
func startMTA(t testing.TB, l net.Listener, setup func(*smtp.Server)) *mta {
	t.Helper()
	m := &mta{l: l, release: make(chan struct{})}
	m.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		m.mu.Lock()
		m.conns++
		m.mu.Unlock()
		return &mtaSession{m: m, c: c}, nil
	}))
	m.srv.Domain = "mta.test"
	m.srv.ErrorLog = log.New(io.Discard, "", 0)
	m.srv.Debug = wireWriter{m}
	m.srv.AllowInsecureAuth = true
	if setup != nil {
		setup(m.srv)
	}
	switch a := l.Addr().(type) {
	case *net.UnixAddr:
		m.Addr = "unix:" + a.Name
	default:
		m.Addr = a.String()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.srv.Serve(l)
	}()
	t.Cleanup(func() {
		close(m.release)
		m.srv.Close()
		// Serve may not have registered l with the server yet.
		l.Close()
		<-done
	})
	return m
}

// newTCPMTA starts an mta on 127.0.0.1 and a free port.
func newTCPMTA(t testing.TB, setup func(*smtp.Server)) *mta {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startMTA(t, l, setup)
}

type wireWriter struct{ m *mta }

func (w wireWriter) Write(p []byte) (int, error) {
	w.m.mu.Lock()
	defer w.m.mu.Unlock()
	return w.m.wire.Write(p)
}

func (m *mta) setFail(f func(event) error) {
	m.mu.Lock()
	m.fail = f
	m.mu.Unlock()
}

func (m *mta) check(ev event) error {
	m.mu.Lock()
	f := m.fail
	m.mu.Unlock()
	if f == nil {
		return nil
	}
	return f(ev)
}

// messages returns the data of the accepted messages.
func (m *mta) messages() [][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([][]byte, len(m.msgs))
	for i, x := range m.msgs {
		out[i] = bytes.Clone(x.data)
	}
	return out
}

func (m *mta) mails() []mail {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]mail(nil), m.msgs...)
}

func (m *mta) connections() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.conns
}

func (m *mta) transcript() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.wire.String()
}

type mtaSession struct {
	m   *mta
	c   *smtp.Conn
	n   int
	cur mail
}

func (s *mtaSession) Reset()        { s.cur = mail{} }
func (s *mtaSession) Logout() error { return nil }

func (s *mtaSession) Mail(from string, opts *smtp.MailOptions) error {
	s.m.mu.Lock()
	s.m.nmsg++
	s.n = s.m.nmsg
	s.m.mu.Unlock()
	if err := s.m.check(event{stage: "mail", n: s.n, arg: from, conn: s.c}); err != nil {
		return err
	}
	s.cur = mail{from: from}
	if opts != nil {
		s.cur.opts = *opts
	}
	return nil
}

func (s *mtaSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := s.m.check(event{stage: "rcpt", n: s.n, arg: to, conn: s.c}); err != nil {
		return err
	}
	s.cur.rcpts = append(s.cur.rcpts, to)
	return nil
}

// read takes the message; an error (the connection dropped, the hook
// said no) means nothing is stored.
func (s *mtaSession) read(r io.Reader) ([]byte, error) {
	if err := s.m.check(event{stage: "data", n: s.n, conn: s.c}); err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func (s *mtaSession) Data(r io.Reader) error {
	b, err := s.read(r)
	if err != nil {
		return err
	}
	if err := s.m.check(event{stage: "dot", n: s.n, conn: s.c}); err != nil {
		return err
	}
	s.store(b, s.cur.rcpts)
	return nil
}

// LMTPData answers per recipient (RFC 2033 §4.2), asking the hook for each.
func (s *mtaSession) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	b, err := s.read(r)
	if err != nil {
		return err
	}
	var got []string
	errs := make([]error, len(s.cur.rcpts))
	for i, rc := range s.cur.rcpts {
		errs[i] = s.m.check(event{stage: "dot", n: s.n, arg: rc, conn: s.c})
		if errs[i] == nil {
			got = append(got, rc)
		}
	}
	// Stored before any reply goes out: go-smtp sends each recipient's
	// reply as soon as its status is set.
	if len(got) > 0 {
		s.store(b, got)
	}
	for i, rc := range s.cur.rcpts {
		status.SetStatus(rc, errs[i])
	}
	return nil
}

func (s *mtaSession) store(b []byte, rcpts []string) {
	m := s.cur
	m.data = b
	m.rcpts = rcpts
	s.m.mu.Lock()
	s.m.msgs = append(s.m.msgs, m)
	s.m.mu.Unlock()
}

// pipeListener hands out in-memory connections (net.Pipe), so that tests
// can run inside a synctest bubble, where time is virtual.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

// dial is an SMTPOptions.Dial that connects to l.
func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		return nil, &net.OpError{Op: "dial", Net: "pipe", Err: syscall.ECONNREFUSED}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// reply makes an SMTP error reply for fail hooks.
func reply(code int, text string) error {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{code / 100, 0, 0}, Message: text}
}

// dropConn closes the connection under the session: the client sees it
// gone without a reply.
func dropConn(ev event) error {
	ev.conn.Conn().Close()
	return errors.New("dropped")
}
