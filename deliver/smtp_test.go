package deliver_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"popsync/deliver"
	"popsync/deliver/delivertest"
	"popsync/internal/credential"
	"popsync/internal/testcert"
)

// send delivers msg through tg in one Write and returns the first error of
// Begin, Write or Close.
func send(tg deliver.Target, msg []byte, meta deliver.Meta) error {
	d, err := tg.Begin(context.Background(), meta)
	if err != nil {
		return err
	}
	if _, err := d.Write(msg); err != nil {
		d.Abort()
		return err
	}
	return d.Close()
}

func newSMTP(t testing.TB, opts deliver.SMTPOptions) *deliver.SMTP {
	t.Helper()
	if opts.Rcpt == nil {
		opts.Rcpt = []string{"me@example.test"}
	}
	if opts.Helo == "" {
		opts.Helo = "popsync.test"
	}
	tg, err := deliver.NewSMTP(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Close() })
	return tg
}

func newLMTP(t testing.TB, opts deliver.SMTPOptions) *deliver.SMTP {
	t.Helper()
	if opts.Helo == "" {
		opts.Helo = "popsync.test"
	}
	tg, err := deliver.NewLMTP(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Close() })
	return tg
}

// mtaStore gives each test its own server, the same for every target the
// test opens.
type mtaStore struct {
	mu   sync.Mutex
	mtas map[*testing.T]*mta
	new  func(t *testing.T) *mta
}

func (s *mtaStore) get(t *testing.T) *mta {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mtas == nil {
		s.mtas = make(map[*testing.T]*mta)
	}
	m, ok := s.mtas[t]
	if !ok {
		m = s.new(t)
		s.mtas[t] = m
	}
	return m
}

// readMTA returns what the server accepted. SMTP cannot carry an empty
// message: the DATA writer of go-smtp (net/textproto's DotWriter) ends an
// empty body with CRLF before the final dot, so the server gets one empty
// line. That is the one byte difference the suite is spared here;
// TestSMTPEmptyMessage pins it.
func readMTA(m *mta) [][]byte {
	msgs := m.messages()
	for i, b := range msgs {
		if string(b) == "\r\n" {
			msgs[i] = nil
		}
	}
	return msgs
}

func TestSMTPSuite(t *testing.T) {
	store := &mtaStore{new: func(t *testing.T) *mta { return newTCPMTA(t, nil) }}
	delivertest.RunSuite(t, func(t *testing.T) deliver.Target {
		return newSMTP(t, deliver.SMTPOptions{Addr: store.get(t).Addr})
	}, func(t *testing.T) [][]byte { return readMTA(store.get(t)) })
}

func TestLMTPSuite(t *testing.T) {
	store := &mtaStore{new: func(t *testing.T) *mta {
		// Unix socket paths are short (108 bytes): not under t.TempDir.
		dir, err := os.MkdirTemp("", "lmtp")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		l, err := net.Listen("unix", filepath.Join(dir, "s"))
		if err != nil {
			t.Fatal(err)
		}
		return startMTA(t, l, func(s *smtp.Server) { s.LMTP = true })
	}}
	delivertest.RunSuite(t, func(t *testing.T) deliver.Target {
		return newLMTP(t, deliver.SMTPOptions{Addr: store.get(t).Addr, Rcpt: []string{"a@example.test", "b@example.test"}})
	}, func(t *testing.T) [][]byte { return readMTA(store.get(t)) })
}

func TestSMTPEmptyMessage(t *testing.T) {
	m := newTCPMTA(t, nil)
	tg := newSMTP(t, deliver.SMTPOptions{Addr: m.Addr})
	if err := send(tg, nil, deliver.Meta{}); err != nil {
		t.Fatal(err)
	}
	if got := m.messages(); len(got) != 1 || string(got[0]) != "\r\n" {
		t.Errorf("server got %q, want one empty line", got)
	}
}

// msg is a small message with header fields and a body.
func msg(header, body string) []byte {
	return []byte(header + "From: a@example.net\r\nSubject: test\r\n\r\n" + body)
}

func TestSMTPEnvelopeSender(t *testing.T) {
	m := newTCPMTA(t, nil)
	tests := []struct {
		name, from, header, want string
	}{
		{"return-path", "fallback@example.test", "Return-Path: <bounce@example.net>\r\n", "bounce@example.net"},
		{"null sender stays null", "fallback@example.test", "Return-Path: <>\r\n", ""},
		{"after popsync's Received", "fallback@example.test", "Received: from pop by popsync; Tue, 25 Nov 2025 09:00:00 +0000\r\nReturn-Path: <x@example.net>\r\n", "x@example.net"},
		{"folded, lower case", "", "return-path:\r\n <folded@example.net>\r\n", "folded@example.net"},
		{"first of two wins", "", "Return-Path: <new@example.net>\r\nReturn-Path: <old@example.net>\r\n", "new@example.net"},
		{"no return-path: from", "fallback@example.test", "", "fallback@example.test"},
		{"no return-path, no from: null", "", "", ""},
		{"unusable return-path: from", "fallback@example.test", "Return-Path: <\"quoted local\"@example.net>\r\n", "fallback@example.test"},
		{"return-path in the body is not read", "fallback@example.test", "", "fallback@example.test"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := newSMTP(t, deliver.SMTPOptions{Addr: m.Addr, From: tc.from})
			before := len(m.mails())
			body := "hello\r\n"
			if strings.Contains(tc.name, "body") {
				body = "Return-Path: <body@example.net>\r\n"
			}
			if err := send(tg, msg(tc.header, body), deliver.Meta{}); err != nil {
				t.Fatal(err)
			}
			got := m.mails()[before:]
			if len(got) != 1 || got[0].from != tc.want {
				t.Fatalf("MAIL FROM = %+v, want <%s>", got, tc.want)
			}
		})
	}
}

// TestSMTPHeaderLimit: a header section longer than MaxHeader is not
// searched past the limit; the message still goes through whole.
func TestSMTPHeaderLimit(t *testing.T) {
	m := newTCPMTA(t, nil)
	tg := newSMTP(t, deliver.SMTPOptions{Addr: m.Addr, From: "fallback@example.test", MaxHeader: 1024})
	long := "X-Long: start" + strings.Repeat("\r\n folded line of the long header field", 40) + "\r\n"
	in := msg(long+"Return-Path: <late@example.net>\r\n", "body\r\n")
	if err := send(tg, in, deliver.Meta{}); err != nil {
		t.Fatal(err)
	}
	got := m.mails()
	if len(got) != 1 || got[0].from != "fallback@example.test" || !bytes.Equal(got[0].data, in) {
		t.Fatalf("got %+v", got)
	}
	// Within the limit the same field is found, also in one-byte writes.
	in = msg("Return-Path: <early@example.net>\r\n", "body\r\n")
	d, err := tg.Begin(context.Background(), deliver.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		if _, err := d.Write(in[i : i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if got := m.mails(); len(got) != 2 || got[1].from != "early@example.net" || !bytes.Equal(got[1].data, in) {
		t.Fatalf("got %+v", got[1:])
	}
}

// TestSMTPWire checks what goes on the wire: dot-stuffing, bare LF as
// CRLF, a CRLF added before the final dot, BODY=8BITMIME when offered.
func TestSMTPWire(t *testing.T) {
	m := newTCPMTA(t, nil)
	tg := newSMTP(t, deliver.SMTPOptions{Addr: m.Addr})
	in := []byte("Subject: dots\r\n\r\n.\r\n..two\r\n.x\nbare LF line\nlone\rCR\r\nno final newline")
	d, err := tg.Begin(context.Background(), deliver.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	// A CRLF split across two writes stays one CRLF.
	for _, part := range [][]byte{in[:16], in[16:]} {
		if _, err := d.Write(part); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// A bare CR becomes CRLF, as a bare LF does.
	wantData := "Subject: dots\r\n\r\n.\r\n..two\r\n.x\r\nbare LF line\r\nlone\r\nCR\r\nno final newline\r\n"
	if got := m.messages(); len(got) != 1 || string(got[0]) != wantData {
		t.Fatalf("server got %q\nwant %q", got, wantData)
	}
	if d.Size() != int64(len(wantData)-2) {
		t.Errorf("Size() = %d, want %d (bare LF and bare CR counted as CRLF)", d.Size(), len(wantData)-2)
	}
	wire := m.transcript()
	wantWire := "Subject: dots\r\n\r\n..\r\n...two\r\n..x\r\nbare LF line\r\nlone\r\nCR\r\nno final newline\r\n.\r\n"
	if !strings.Contains(wire, wantWire) {
		t.Errorf("wire lacks the dot-stuffed data %q:\n%s", wantWire, wire)
	}
	if !strings.Contains(wire, "MAIL FROM:<> BODY=8BITMIME\r\n") {
		t.Errorf("MAIL FROM without BODY=8BITMIME:\n%s", wire)
	}
	if !strings.Contains(wire, "EHLO popsync.test\r\n") {
		t.Errorf("no EHLO with the configured name:\n%s", wire)
	}
}

func TestSMTPUTF8(t *testing.T) {
	for _, offered := range []bool{false, true} {
		t.Run(fmt.Sprint("offered=", offered), func(t *testing.T) {
			m := newTCPMTA(t, func(s *smtp.Server) { s.EnableSMTPUTF8 = offered })
			tg := newSMTP(t, deliver.SMTPOptions{Addr: m.Addr, From: "fallback@example.test"})
			ascii := msg("Return-Path: <a@example.net>\r\n", "body: é\r\n")
			utf8Header := msg("Return-Path: <a@example.net>\r\nSubject: é\r\n", "")
			utf8Sender := msg("Return-Path: <josé@example.net>\r\n", "")
			for _, in := range [][]byte{ascii, utf8Header, utf8Sender} {
				if err := send(tg, in, deliver.Meta{}); err != nil {
					t.Fatal(err)
				}
			}
			got := m.mails()
			if len(got) != 3 {
				t.Fatalf("%d messages", len(got))
			}
			if got[0].opts.UTF8 {
				t.Error("SMTPUTF8 declared for an ASCII envelope and header (8-bit body only)")
			}
			if got[1].opts.UTF8 != offered {
				t.Errorf("UTF-8 header: SMTPUTF8 = %v, want %v", got[1].opts.UTF8, offered)
			}
			wantFrom := "josé@example.net"
			if !offered {
				wantFrom = "fallback@example.test"
			}
			if got[2].from != wantFrom || got[2].opts.UTF8 != offered {
				t.Errorf("UTF-8 sender: MAIL FROM <%s> SMTPUTF8=%v, want <%s> %v", got[2].from, got[2].opts.UTF8, wantFrom, offered)
			}
		})
	}
}

func TestSMTPSize(t *testing.T) {
	m := newTCPMTA(t, func(s *smtp.Server) { s.MaxMessageBytes = 1000 })
	tg := newSMTP(t, deliver.SMTPOptions{Addr: m.Addr})
	big := msg("", strings.Repeat("0123456789\r\n", 200))

	// LIST announced it: refused before anything is sent.
	_, err := tg.Begin(context.Background(), deliver.Meta{Size: int64(len(big))})
	if !deliver.IsPermanent(err) || !errors.Is(err, deliver.ErrTooLarge) {
		t.Fatalf("Begin of an oversized message: %v, want permanent ErrTooLarge", err)
	}
	if strings.Contains(m.transcript(), "MAIL FROM") {
		t.Error("MAIL FROM sent for a message over SIZE")
	}

	// LIST understated it: refused while streaming, the connection dropped
	// before the final dot.
	err = send(tg, big, deliver.Meta{Size: 10})
	if !deliver.IsPermanent(err) || !errors.Is(err, deliver.ErrTooLarge) {
		t.Fatalf("streaming past SIZE: %v, want permanent ErrTooLarge", err)
	}
	var de *deliver.DeliveryError
	if !errors.As(err, &de) || de.Stage != deliver.StageSize {
		t.Errorf("stage of %v, want %q", err, deliver.StageSize)
	}

	// A message that fits still goes through.
	small := msg("", "small\r\n")
	if err := send(tg, small, deliver.Meta{Size: int64(len(small))}); err != nil {
		t.Fatal(err)
	}
	if got := m.messages(); len(got) != 1 || !bytes.Equal(got[0], small) {
		t.Fatalf("server got %d messages", len(got))
	}
}

// TestSMTPOneSession: many messages, one connection, no RSET between
// them: the reply to the final dot ended each transaction.
func TestSMTPOneSession(t *testing.T) {
	m := newTCPMTA(t, nil)
	tg := newSMTP(t, deliver.SMTPOptions{Addr: m.Addr})
	const n = 20
	for i := range n {
		if err := send(tg, delivertest.Message(i, 500), deliver.Meta{}); err != nil {
			t.Fatal(err)
		}
	}
	if c := m.connections(); c != 1 {
		t.Errorf("%d connections for %d messages, want 1", c, n)
	}
	if r := strings.Count(m.transcript(), "RSET\r\n"); r != 0 {
		t.Errorf("%d RSETs, want none", r)
	}
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.transcript(), "QUIT\r\n221") {
		t.Error("Close did not QUIT")
	}
	if got := len(m.messages()); got != n {
		t.Errorf("%d messages arrived, want %d", got, n)
	}
}

// TestSMTPReconnect: the server closed the idle session between two
// messages; the next message opens a new one without an error.
func TestSMTPReconnect(t *testing.T) {
	m := newTCPMTA(t, nil)
	var (
		mu   sync.Mutex
		last *smtp.Conn
	)
	m.setFail(func(ev event) error {
		mu.Lock()
		last = ev.conn
		mu.Unlock()
		return nil
	})
	tg := newSMTP(t, deliver.SMTPOptions{Addr: m.Addr})
	if err := send(tg, msg("", "one\r\n"), deliver.Meta{}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	last.Close()
	mu.Unlock()
	if err := send(tg, msg("", "two\r\n"), deliver.Meta{}); err != nil {
		t.Fatalf("after the server closed the idle session: %v", err)
	}
	if c := m.connections(); c != 2 {
		t.Errorf("%d connections, want 2", c)
	}
	if got := len(m.messages()); got != 2 {
		t.Errorf("%d messages arrived, want 2", got)
	}
}

// TestSMTPFaults injects server failures at each step. For each: the
// right classification, nothing stored, and the next message goes through
// on the same session or a new one. Time is virtual: the slow cases wait
// for the real default deadlines.
func TestSMTPFaults(t *testing.T) {
	stall := func(m **mta) func(event) error {
		return func(event) error {
			<-(*m).release
			return errors.New("released")
		}
	}
	type fault struct {
		name      string
		stage     string // where the hook fires: "mail", "rcpt", "data", "dot"
		hook      func(m **mta) func(event) error
		temporary bool
		code      int
		newConn   bool          // the next message needs a new connection
		wait      time.Duration // at least this much virtual time passes
	}
	replyHook := func(code int) func(**mta) func(event) error {
		return func(**mta) func(event) error {
			return func(event) error { return reply(code, "injected") }
		}
	}
	drop := func(**mta) func(event) error { return dropConn }
	faults := []fault{
		{name: "MAIL 421", stage: "mail", hook: replyHook(421), temporary: true, code: 421, newConn: true},
		{name: "MAIL 451", stage: "mail", hook: replyHook(451), temporary: true, code: 451},
		{name: "MAIL 550", stage: "mail", hook: replyHook(550), code: 550},
		{name: "MAIL 530 is about the session", stage: "mail", hook: replyHook(530), temporary: true, code: 530},
		{name: "RCPT 452", stage: "rcpt", hook: replyHook(452), temporary: true, code: 452},
		{name: "RCPT 550", stage: "rcpt", hook: replyHook(550), code: 550},
		{name: "RCPT 552 means too many recipients", stage: "rcpt", hook: replyHook(552), temporary: true, code: 552},
		{name: "DATA 451", stage: "dot", hook: replyHook(451), temporary: true, code: 451},
		{name: "DATA 452", stage: "dot", hook: replyHook(452), temporary: true, code: 452},
		{name: "DATA 552", stage: "dot", hook: replyHook(552), code: 552},
		{name: "DATA 554", stage: "dot", hook: replyHook(554), code: 554},
		{name: "DATA 421", stage: "dot", hook: replyHook(421), temporary: true, code: 421, newConn: true},
		{name: "drop after DATA", stage: "data", hook: drop, temporary: true, newConn: true},
		{name: "drop before the final reply", stage: "dot", hook: drop, temporary: true, newConn: true},
		{name: "slow MAIL reply", stage: "mail", hook: stall, temporary: true, newConn: true, wait: deliver.DefaultCommandTimeout},
		{name: "slow final reply", stage: "dot", hook: stall, temporary: true, newConn: true, wait: deliver.DefaultDataTimeout},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := newPipeListener()
				var m *mta
				m = startMTA(t, l, nil)
				hook := f.hook(&m)
				m.setFail(func(ev event) error {
					if ev.n == 1 && ev.stage == f.stage {
						return hook(ev)
					}
					return nil
				})
				tg := newSMTP(t, deliver.SMTPOptions{Addr: "mta.test:25", Dial: l.dial})
				start := time.Now()
				err := send(tg, msg("", "first\r\n"), deliver.Meta{})
				var de *deliver.DeliveryError
				if !errors.As(err, &de) {
					t.Fatalf("error %v (%T), want a *DeliveryError", err, err)
				}
				if de.Temporary != f.temporary || deliver.IsTemporary(err) != f.temporary || deliver.IsPermanent(err) == f.temporary {
					t.Errorf("%v: temporary = %v, want %v", err, de.Temporary, f.temporary)
				}
				if de.Code != f.code {
					t.Errorf("%v: code %d, want %d", err, de.Code, f.code)
				}
				if de.TargetDown() {
					t.Errorf("%v: TargetDown for a message failure", err)
				}
				if el := time.Since(start); el < f.wait {
					t.Errorf("failed after %v, want at least %v", el, f.wait)
				}
				if err := send(tg, msg("", "second\r\n"), deliver.Meta{}); err != nil {
					t.Fatalf("next message: %v", err)
				}
				if got := m.messages(); len(got) != 1 || !bytes.Contains(got[0], []byte("second")) {
					t.Errorf("server stored %q, want only the second message", got)
				}
				want := 1
				if f.newConn {
					want = 2
				}
				if c := m.connections(); c != want {
					t.Errorf("%d connections, want %d", c, want)
				}
			})
		})
	}
}

// TestSMTPCanceled: a context that ends mid-message drops the session;
// nothing is delivered and the error is temporary.
func TestSMTPCanceled(t *testing.T) {
	m := newTCPMTA(t, nil)
	tg := newSMTP(t, deliver.SMTPOptions{Addr: m.Addr})
	ctx, cancel := context.WithCancel(context.Background())
	d, err := tg.Begin(ctx, deliver.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Write(msg("", "part one\r\n")); err != nil {
		t.Fatal(err)
	}
	cancel()
	_, werr := d.Write([]byte("part two\r\n"))
	cerr := d.Close()
	if werr == nil && cerr == nil {
		t.Fatal("delivery went through after its context was canceled")
	}
	err = cerr
	if werr != nil {
		err = werr
	}
	if !errors.Is(err, context.Canceled) || !deliver.IsTemporary(err) {
		t.Errorf("error %v, want temporary context.Canceled", err)
	}
	if err := send(tg, msg("", "next\r\n"), deliver.Meta{}); err != nil {
		t.Fatal(err)
	}
	if got := m.messages(); len(got) != 1 || !bytes.Contains(got[0], []byte("next")) {
		t.Errorf("server stored %q", got)
	}
}

// TestSMTPRefused: a server that is not there is a temporary, target-wide
// failure, and the target does not dial again for every message.
func TestSMTPRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dials := 0
	d := &net.Dialer{}
	tg := newSMTP(t, deliver.SMTPOptions{Addr: addr, Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials++
		return d.DialContext(ctx, network, addr)
	}})
	for range 3 {
		_, err := tg.Begin(context.Background(), deliver.Meta{})
		var de *deliver.DeliveryError
		if !errors.As(err, &de) || !de.Temporary || !de.TargetDown() || de.Stage != deliver.StageConnect {
			t.Fatalf("Begin: %v, want a temporary connect failure", err)
		}
	}
	if dials != 1 {
		t.Errorf("%d dials, want 1", dials)
	}
	if err := tg.Check(context.Background()); err == nil {
		t.Error("Check of a closed port succeeded")
	}
}

// TestSMTPNoAuthOffered: a session that cannot be set up as configured is
// a target-wide temporary failure, not a verdict on the message.
func TestSMTPNoAuthOffered(t *testing.T) {
	m := newTCPMTA(t, nil)
	tg := newSMTP(t, deliver.SMTPOptions{Addr: m.Addr, User: "u", Password: credential.Literal("p")})
	_, err := tg.Begin(context.Background(), deliver.Meta{})
	var de *deliver.DeliveryError
	if !errors.As(err, &de) || !de.Temporary || de.Stage != deliver.StageAuth || !errors.Is(err, deliver.ErrNoAuth) {
		t.Fatalf("Begin against a server without AUTH: %v", err)
	}
}

func TestLMTPRecipients(t *testing.T) {
	rcpts := []string{"a@example.test", "b@example.test", "c@example.test"}
	tests := []struct {
		name      string
		replies   map[string]int // recipient → code after the dot; absent: 250
		wantErr   bool
		temporary bool
		delivered []string
		partial   bool
	}{
		{name: "all accept"},
		{name: "one 450", replies: map[string]int{"b@example.test": 450}, wantErr: true, temporary: true,
			delivered: []string{"a@example.test", "c@example.test"}, partial: true},
		{name: "one 550", replies: map[string]int{"c@example.test": 550}, wantErr: true,
			delivered: []string{"a@example.test", "b@example.test"}, partial: true},
		{name: "550 and 452: temporary wins", replies: map[string]int{"a@example.test": 550, "b@example.test": 452}, wantErr: true, temporary: true,
			delivered: []string{"c@example.test"}, partial: true},
		{name: "all 550", replies: map[string]int{"a@example.test": 550, "b@example.test": 550, "c@example.test": 550}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newTCPMTA(t, func(s *smtp.Server) { s.LMTP = true })
			m.setFail(func(ev event) error {
				if code := tc.replies[ev.arg]; ev.stage == "dot" && code != 0 {
					return reply(code, "no")
				}
				return nil
			})
			tg := newLMTP(t, deliver.SMTPOptions{Addr: m.Addr, Rcpt: rcpts})
			err := send(tg, msg("", "hi\r\n"), deliver.Meta{})
			if !tc.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(m.transcript(), "LHLO popsync.test") {
					t.Error("no LHLO")
				}
				return
			}
			var de *deliver.DeliveryError
			if !errors.As(err, &de) {
				t.Fatalf("error %v, want *DeliveryError", err)
			}
			if de.Temporary != tc.temporary || de.Stage != deliver.StageReply {
				t.Errorf("%v: temporary %v stage %s, want %v %s", err, de.Temporary, de.Stage, tc.temporary, deliver.StageReply)
			}
			if got := de.Delivered(); fmt.Sprint(got) != fmt.Sprint(tc.delivered) {
				t.Errorf("Delivered() = %v, want %v", got, tc.delivered)
			}
			if errors.Is(err, deliver.ErrPartial) != tc.partial {
				t.Errorf("%v: ErrPartial = %v, want %v", err, !tc.partial, tc.partial)
			}
			if len(de.Rcpts) != len(rcpts) {
				t.Fatalf("Rcpts = %+v", de.Rcpts)
			}
			for i, r := range de.Rcpts {
				want := 250
				if c := tc.replies[r.Rcpt]; c != 0 {
					want = c
				}
				if r.Rcpt != rcpts[i] || r.Code != want {
					t.Errorf("Rcpts[%d] = %+v, want %s %d", i, r, rcpts[i], want)
				}
			}
			// The session survives per-recipient refusals.
			m.setFail(nil)
			if err := send(tg, msg("", "again\r\n"), deliver.Meta{}); err != nil {
				t.Fatal(err)
			}
			if c := m.connections(); c != 1 {
				t.Errorf("%d connections, want 1", c)
			}
		})
	}
}

// TestSMTPRcptRefusedSendsNoData: when one of several recipients is
// refused at RCPT, nobody gets the message (no DATA), so a retry
// duplicates nothing.
func TestSMTPRcptRefusedSendsNoData(t *testing.T) {
	m := newTCPMTA(t, nil)
	m.setFail(func(ev event) error {
		if ev.stage == "rcpt" && ev.arg == "b@example.test" {
			return reply(550, "no such user")
		}
		return nil
	})
	tg := newSMTP(t, deliver.SMTPOptions{Addr: m.Addr, Rcpt: []string{"a@example.test", "b@example.test"}})
	err := send(tg, msg("", "x\r\n"), deliver.Meta{})
	var de *deliver.DeliveryError
	if !errors.As(err, &de) || de.Temporary || de.Stage != deliver.StageRcpt || len(de.Rcpts) != 2 || de.Rcpts[1].Code != 550 {
		t.Fatalf("error %v", err)
	}
	if len(de.Delivered()) != 0 {
		t.Errorf("Delivered() = %v at RCPT", de.Delivered())
	}
	if strings.Contains(m.transcript(), "\r\nDATA\r\n") {
		t.Error("DATA sent although a recipient was refused")
	}
	if !strings.Contains(err.Error(), "<b@example.test> 550") {
		t.Errorf("error text %q does not name the refused recipient", err)
	}
}

// selfSigned makes a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	c, err := testcert.New(testcert.Options{Hosts: []string{"mta.test", "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	return c.TLS, c.Pool()
}

// authSession adds AUTH PLAIN to mtaSession.
type authSession struct {
	*mtaSession
	authed *authedAs
}

// authedAs is who logged in last.
type authedAs struct {
	mu   sync.Mutex
	user string
}

func (a *authedAs) get() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.user
}

func (s authSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s authSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if user != "me" || pass != "secret" {
			return errors.New("bad credentials")
		}
		s.authed.mu.Lock()
		s.authed.user = user
		s.authed.mu.Unlock()
		return nil
	}), nil
}

func TestSMTPTLSAndAuth(t *testing.T) {
	cert, pool := selfSigned(t)
	for _, mode := range []string{deliver.TLSStartTLS, deliver.TLSImplicit} {
		t.Run(mode, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
			if mode == deliver.TLSImplicit {
				l = tls.NewListener(l, cfg)
			}
			authed := &authedAs{}
			m := startMTA(t, l, func(s *smtp.Server) {
				s.TLSConfig = cfg
				s.AllowInsecureAuth = false
				be := s.Backend
				s.Backend = smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
					sess, err := be.NewSession(c)
					return authSession{sess.(*mtaSession), authed}, err
				})
			})
			tg := newSMTP(t, deliver.SMTPOptions{Addr: m.Addr, TLS: mode, TLSConfig: &tls.Config{RootCAs: pool},
				User: "me", Password: credential.Literal("secret")})
			if err := tg.Check(context.Background()); err != nil {
				t.Fatalf("Check: %v", err)
			}
			if err := send(tg, msg("", "secret stuff\r\n"), deliver.Meta{}); err != nil {
				t.Fatal(err)
			}
			if got := authed.get(); got != "me" || len(m.messages()) != 1 {
				t.Errorf("authenticated as %q, %d messages", got, len(m.messages()))
			}

			// A certificate that is not trusted: temporary, target-wide.
			bad := newSMTP(t, deliver.SMTPOptions{Addr: m.Addr, TLS: mode})
			_, err = bad.Begin(context.Background(), deliver.Meta{})
			var de *deliver.DeliveryError
			if !errors.As(err, &de) || !de.Temporary || !de.TargetDown() {
				t.Errorf("untrusted certificate: %v", err)
			}
		})
	}
}

// TestSMTPInsecureAuth: the password never goes over plain text to a
// non-loopback peer (here an in-memory pipe, which is not loopback).
func TestSMTPInsecureAuth(t *testing.T) {
	l := newPipeListener()
	m := startMTA(t, l, nil)
	tg := newSMTP(t, deliver.SMTPOptions{Addr: "mta.test:25", Dial: l.dial, User: "me", Password: credential.Literal("secret")})
	_, err := tg.Begin(context.Background(), deliver.Meta{})
	if !errors.Is(err, deliver.ErrInsecureAuth) || !deliver.IsTemporary(err) {
		t.Fatalf("Begin: %v, want ErrInsecureAuth", err)
	}
	if strings.Contains(m.transcript(), "AUTH") {
		t.Error("AUTH sent over plain text")
	}
	if strings.Contains(err.Error(), "secret") {
		t.Error("the password is in the error")
	}
}

func TestSMTPOptionsRefused(t *testing.T) {
	for _, o := range []deliver.SMTPOptions{
		{Addr: "no-port", Rcpt: []string{"a@b"}},
		{Addr: "h:25"},
		{Addr: "h:25", Rcpt: []string{"a b@c"}},
		{Addr: "h:25", Rcpt: []string{"a@b"}, From: "<x>"},
		{Addr: "h:25", Rcpt: []string{"a@b"}, TLS: "sometimes"},
		{Addr: "h:25", Rcpt: []string{"a@b"}, Helo: "two words"},
	} {
		if _, err := deliver.NewSMTP(o); err == nil {
			t.Errorf("NewSMTP(%+v) succeeded", o)
		}
	}
	if _, err := deliver.NewLMTP(deliver.SMTPOptions{Addr: "h:24", Rcpt: []string{"a@b"}, TLS: deliver.TLSStartTLS}); err == nil {
		t.Error("NewLMTP with STARTTLS succeeded")
	}
	if _, err := deliver.NewSMTP(deliver.SMTPOptions{Addr: "unix:/x", Rcpt: []string{"a@b"}}); err == nil {
		t.Error("NewSMTP with a unix socket succeeded")
	}
}
