package pop3test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCapabilities(t *testing.T) {
	tlsCfg, _ := tlsPair(t)
	tests := []struct {
		name string
		cfg  func(*Config)
		want []string
	}{
		{"default", func(*Config) {}, []string{
			"TOP", "UIDL", "RESP-CODES", "PIPELINING", "USER",
			"SASL PLAIN LOGIN CRAM-MD5 XOAUTH2 OAUTHBEARER"}},
		{"minimal", func(c *Config) {
			c.Caps = Caps{NoTOP: true, NoUIDL: true, NoRespCodes: true, NoPipelining: true, NoSASL: true}
		}, []string{"USER"}},
		{"extras", func(c *Config) {
			c.Caps = Caps{NoUSER: true, SASL: []string{"XOAUTH2"}, LoginDelay: 900, Expire: "NEVER", Implementation: "pop3test 1"}
			c.TLS = tlsCfg
		}, []string{
			"TOP", "UIDL", "RESP-CODES", "PIPELINING", "LOGIN-DELAY 900", "EXPIRE NEVER",
			"SASL XOAUTH2", "STLS", "IMPLEMENTATION pop3test 1"}},
		{"tls before auth", func(c *Config) {
			c.TLS = tlsCfg
			c.TLSBeforeAuth = true
		}, []string{"TOP", "UIDL", "RESP-CODES", "PIPELINING", "STLS"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig()
			tt.cfg(&cfg)
			_, addr := start(t, cfg)
			c, _ := connect(t, addr)
			if got := c.ok("CAPA"); got != "+OK Capability list follows" {
				t.Errorf("status %q", got)
			}
			if got := c.lines(); !slices.Equal(got, tt.want) {
				t.Errorf("CAPA\n got %q\nwant %q", got, tt.want)
			}
		})
	}

	t.Run("no CAPA", func(t *testing.T) {
		cfg := baseConfig()
		cfg.Caps.NoCAPA = true
		_, addr := start(t, cfg)
		c, _ := connect(t, addr)
		c.fail("CAPA", "-ERR")
	})
}

func TestGreeting(t *testing.T) {
	cfg := baseConfig()
	cfg.Greeting = "Dovecot ready."
	_, addr := start(t, cfg)
	if _, g := connect(t, addr); g != "+OK Dovecot ready." {
		t.Errorf("greeting %q", g)
	}
}

func TestTransactionCommands(t *testing.T) {
	msgs := threeMessages()
	srv, addr := start(t, baseConfig(), msgs...)
	c, _ := connect(t, addr)

	c.fail("USER", "-ERR")
	c.fail("PASS "+testPass, "-ERR") // no USER yet
	c.ok("USER " + testUser)
	c.fail("PASS wrong", "-ERR [AUTH] ")
	c.fail("PASS "+testPass, "-ERR") // a failed PASS forgets the USER (RFC 1939 §7)
	c.ok("USER " + testUser)
	if got := c.ok("PASS " + testPass); got != "+OK Logged in, 3 messages (101 octets)" {
		t.Errorf("PASS: %q", got)
	}

	if got := c.ok("STAT"); got != "+OK 3 101" {
		t.Errorf("STAT: %q", got)
	}
	if got := c.ok("LIST"); got != "+OK 3 messages (101 octets)" {
		t.Errorf("LIST: %q", got)
	}
	if got, want := c.lines(), []string{"1 23", "2 44", "3 34"}; !slices.Equal(got, want) {
		t.Errorf("LIST lines %q, want %q", got, want)
	}
	if got := c.ok("LIST 2"); got != "+OK 2 44" {
		t.Errorf("LIST 2: %q", got)
	}
	c.ok("UIDL")
	if got, want := c.lines(), []string{"1 uid-1", "2 uid-2", "3 uid-3"}; !slices.Equal(got, want) {
		t.Errorf("UIDL lines %q, want %q", got, want)
	}
	if got := c.ok("uidl 3"); got != "+OK 3 uid-3" { // keywords are case-insensitive
		t.Errorf("UIDL 3: %q", got)
	}
	for i, m := range msgs {
		if got, want := c.ok(fmt.Sprintf("RETR %d", i+1)), fmt.Sprintf("+OK %d octets", len(m.Data)); got != want {
			t.Errorf("RETR %d: %q, want %q", i+1, got, want)
		}
		if got, want := c.body()+".\r\n", stuff(string(m.Data)); got != want {
			t.Errorf("RETR %d body\n got %q\nwant %q", i+1, got, want)
		}
	}
	c.ok("NOOP")
	c.ok("DELE 1")
	c.fail("DELE 1", "-ERR")
	c.fail("LIST 1", "-ERR")
	c.fail("RETR 1", "-ERR")
	c.fail("UIDL 1", "-ERR")
	if got := c.ok("STAT"); got != "+OK 2 78" {
		t.Errorf("STAT after DELE: %q", got)
	}
	c.ok("LIST")
	if got, want := c.lines(), []string{"2 44", "3 34"}; !slices.Equal(got, want) {
		t.Errorf("LIST after DELE %q, want %q", got, want)
	}
	if got := c.ok("RSET"); got != "+OK maildrop has 3 messages (101 octets)" {
		t.Errorf("RSET: %q", got)
	}
	c.ok("RETR 1")
	c.body()
	c.ok("DELE 3")
	if got := c.ok("QUIT"); got != "+OK POP3 server signing off (1 messages deleted)" {
		t.Errorf("QUIT: %q", got)
	}
	if rest := c.readAll(); rest != "" {
		t.Errorf("after QUIT: %q", rest)
	}
	if got, want := uids(srv.Messages()), []string{"uid-1", "uid-2"}; !slices.Equal(got, want) {
		t.Errorf("maildrop %q, want %q", got, want)
	}
	st := srv.Stats()
	if st.Retrs != 4 || st.Deles != 2 || st.Commits != 1 || st.DelesCommitted != 1 || st.Logins != 1 || st.AuthFailures != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestBadArguments(t *testing.T) {
	_, addr := start(t, baseConfig(), threeMessages()...)
	c, _ := connect(t, addr)
	for _, cmd := range []string{"STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL"} {
		c.fail(cmd, "-ERR") // not in the TRANSACTION state yet
	}
	c.fail("FOO", "-ERR")
	c.login()
	for _, cmd := range []string{
		"RETR", "RETR 0", "RETR 4", "RETR x", "RETR -1", "RETR 1 2", "RETR +1", "LIST 9",
		"TOP 1", "TOP 1 -1", "TOP x 1", "TOP 1 x", "DELE 1000000000", "STAT 1", "NOOP x", "RSET 1", "QUIT now",
		"USER " + testUser, "PASS x", "APOP a b", "AUTH PLAIN", "STLS", "LAST", "",
	} {
		c.fail(cmd, "-ERR")
	}
	c.ok("STAT")
}

func TestTop(t *testing.T) {
	msgs := []Message{
		{UID: "a", Data: []byte("Subject: t\r\nX: y\r\n\r\nl1\r\n.l2\r\nl3\r\n")},
		{UID: "b", Data: []byte("Subject: only a header\r\n")},
		{UID: "c", Data: []byte("Subject: lf\n\nbody 1\nbody 2\n")},
	}
	srv, addr := start(t, baseConfig(), msgs...)
	c, _ := connect(t, addr)
	c.login()
	tests := []struct {
		cmd, want string
	}{
		{"TOP 1 0", "Subject: t\r\nX: y\r\n\r\n.\r\n"},
		{"TOP 1 2", "Subject: t\r\nX: y\r\n\r\nl1\r\n..l2\r\n.\r\n"},
		{"TOP 1 3", stuff(string(msgs[0].Data))},
		{"TOP 1 99", stuff(string(msgs[0].Data))},
		{"TOP 2 5", "Subject: only a header\r\n.\r\n"},
		{"TOP 3 1", "Subject: lf\n\nbody 1\n.\r\n"},
	}
	for _, tt := range tests {
		if got := c.ok(tt.cmd); got != "+OK top of message follows" {
			t.Errorf("%s: %q", tt.cmd, got)
		}
		if got := c.body() + ".\r\n"; got != tt.want {
			t.Errorf("%s\n got %q\nwant %q", tt.cmd, got, tt.want)
		}
	}
	if n := srv.Stats().Tops; n != len(tests) {
		t.Errorf("Tops = %d", n)
	}
}

func TestDotStuffing(t *testing.T) {
	tests := []struct{ data, wire string }{
		{".\r\n", "..\r\n.\r\n"},
		{"..\r\n.x\r\n", "...\r\n..x\r\n.\r\n"},
		{"a\r\n.\r\nb", "a\r\n..\r\nb\r\n.\r\n"},
		{"lf only\n.dot\n", "lf only\n..dot\n.\r\n"},
		{"", ".\r\n"},
		{"x.\r\n .\r\n", "x.\r\n .\r\n.\r\n"},
	}
	var msgs []Message
	for i, tt := range tests {
		msgs = append(msgs, Message{UID: fmt.Sprint(i), Data: []byte(tt.data)})
	}
	_, addr := start(t, baseConfig(), msgs...)
	c, _ := connect(t, addr)
	c.login()
	for i, tt := range tests {
		c.ok(fmt.Sprintf("RETR %d", i+1))
		if got := c.body() + ".\r\n"; got != tt.wire {
			t.Errorf("RETR of %q\n got %q\nwant %q", tt.data, got, tt.wire)
		}
		if got := stuff(tt.data); got != tt.wire {
			t.Errorf("reference stuff(%q) = %q", tt.data, got)
		}
	}
}

func TestNoUIDLNoTOP(t *testing.T) {
	cfg := baseConfig()
	cfg.Caps.NoUIDL = true
	cfg.Caps.NoTOP = true
	_, addr := start(t, cfg, threeMessages()...)
	c, _ := connect(t, addr)
	c.login()
	c.fail("UIDL", "-ERR")
	c.fail("UIDL 1", "-ERR")
	c.fail("TOP 1 0", "-ERR")
	c.ok("RETR 1")
}

func TestNoUSER(t *testing.T) {
	cfg := baseConfig()
	cfg.Caps.NoUSER = true
	_, addr := start(t, cfg, threeMessages()...)
	c, _ := connect(t, addr)
	c.fail("USER "+testUser, "-ERR")
	c.fail("PASS "+testPass, "-ERR")
}

func TestDuplicateUIDs(t *testing.T) {
	_, addr := start(t, baseConfig(),
		Message{UID: "same", Data: []byte("a\r\n")},
		Message{UID: "same", Data: []byte("b\r\n")})
	c, _ := connect(t, addr)
	c.login()
	c.ok("UIDL")
	if got, want := c.lines(), []string{"1 same", "2 same"}; !slices.Equal(got, want) {
		t.Errorf("UIDL %q, want %q", got, want)
	}
}

// RFC 1939 §6: deletions happen in the UPDATE state, after QUIT.
func TestDeleteOnlyAtQuit(t *testing.T) {
	srv, addr := start(t, baseConfig(), threeMessages()...)
	c, _ := connect(t, addr)
	c.login()
	c.ok("DELE 1")
	c.ok("DELE 3")
	if n := len(srv.Messages()); n != 3 {
		t.Fatalf("after DELE, before QUIT: %d messages, want 3", n)
	}
	c.ok("QUIT")
	if got := uids(srv.Messages()); !slices.Equal(got, []string{"uid-2"}) {
		t.Errorf("after QUIT: %q", got)
	}
	tr := srv.Transcripts()[0]
	if !tr.Quit || !tr.Committed || tr.Auth != "USER" {
		t.Errorf("transcript %+v", tr)
	}
}

func TestDroppedConnectionCommitsNothing(t *testing.T) {
	srv, addr := start(t, baseConfig(), threeMessages()...)
	c, _ := connect(t, addr)
	c.login()
	c.ok("DELE 1")
	c.ok("DELE 2")
	c.c.Close()
	waitIdle(t, srv)
	if n := len(srv.Messages()); n != 3 {
		t.Errorf("%d messages after a drop, want 3", n)
	}
	st := srv.Stats()
	if st.Commits != 0 || st.DelesCommitted != 0 || st.Active != 0 {
		t.Errorf("stats %+v", st)
	}
	if tr := srv.Transcripts()[0]; tr.Quit || tr.Committed || !tr.Done {
		t.Errorf("transcript %+v", tr)
	}
	// The lock went with the session.
	c2, _ := connect(t, addr)
	c2.login()
}

func TestQuitInAuthorization(t *testing.T) {
	srv, addr := start(t, baseConfig(), threeMessages()...)
	c, _ := connect(t, addr)
	c.ok("QUIT")
	if rest := c.readAll(); rest != "" {
		t.Errorf("after QUIT: %q", rest)
	}
	waitIdle(t, srv)
	if st := srv.Stats(); st.Commits != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestMaildropLock(t *testing.T) {
	srv, addr := start(t, baseConfig(), threeMessages()...)
	a, _ := connect(t, addr)
	a.login()
	a.ok("DELE 1")

	b, _ := connect(t, addr)
	b.ok("USER " + testUser)
	b.fail("PASS "+testPass, "-ERR [IN-USE] ")
	b.ok("QUIT")

	// The lock is given back before QUIT is answered, so a client that
	// reconnects at once gets in.
	a.ok("QUIT")
	c, _ := connect(t, addr)
	if got := c.ok("USER " + testUser); got == "" {
		t.Fatal("no reply")
	}
	if got := c.ok("PASS " + testPass); got != "+OK Logged in, 2 messages (78 octets)" {
		t.Errorf("PASS: %q", got)
	}
	if st := srv.Stats(); st.Logins != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestNoLock(t *testing.T) {
	cfg := baseConfig()
	cfg.NoLock = true
	srv, addr := start(t, cfg, threeMessages()...)
	a, _ := connect(t, addr)
	a.login()
	b, _ := connect(t, addr)
	b.login()
	a.ok("DELE 1")
	b.ok("DELE 1")
	b.ok("DELE 2")
	a.ok("QUIT")
	b.ok("QUIT")
	if got := uids(srv.Messages()); !slices.Equal(got, []string{"uid-3"}) {
		t.Errorf("maildrop %q", got)
	}
	if st := srv.Stats(); st.DelesCommitted != 2 {
		t.Errorf("DelesCommitted = %d, want 2 (message 1 counted once)", st.DelesCommitted)
	}
}

func TestAddDuringSession(t *testing.T) {
	srv, addr := start(t, baseConfig(), threeMessages()...)
	c, _ := connect(t, addr)
	c.login()
	srv.Add(Message{UID: "late", Data: []byte("x\r\n")})
	if got := c.ok("STAT"); got != "+OK 3 101" {
		t.Errorf("STAT sees a message added after login: %q", got)
	}
	c.ok("QUIT")
	c2, _ := connect(t, addr)
	c2.login()
	if got := c2.ok("STAT"); got != "+OK 4 104" {
		t.Errorf("STAT in the next session: %q", got)
	}
}

func TestMessagesAreCopies(t *testing.T) {
	data := []byte("abc\r\n")
	srv := NewServer(baseConfig(), Message{UID: "1", Data: data})
	defer srv.Close()
	data[0] = 'X'
	got := srv.Messages()
	got[0].Data[1] = 'Y'
	if s := string(srv.Messages()[0].Data); s != "abc\r\n" {
		t.Errorf("stored data changed to %q", s)
	}
}

func TestPipelining(t *testing.T) {
	srv, addr := start(t, baseConfig(), threeMessages()...)
	c, _ := connect(t, addr)
	// Everything in one write, before any reply is read (RFC 2449 §6.6).
	c.send("CAPA", "USER "+testUser, "PASS "+testPass, "STAT", "LIST 2", "RETR 2", "UIDL", "DELE 2", "NOOP", "QUIT")
	c.okNoSend() // CAPA
	c.lines()
	want := []string{"+OK send PASS", "+OK Logged in, 3 messages (101 octets)", "+OK 3 101", "+OK 2 44", "+OK 44 octets"}
	for _, w := range want {
		if got := c.line(); got != w {
			t.Errorf("got %q, want %q", got, w)
		}
	}
	if got, want := c.body()+".\r\n", stuff(string(threeMessages()[1].Data)); got != want {
		t.Errorf("RETR body %q", got)
	}
	if got := c.line(); got != "+OK unique-id listing follows" {
		t.Errorf("UIDL: %q", got)
	}
	c.lines()
	for _, w := range []string{"+OK message 2 deleted", "+OK", "+OK POP3 server signing off (1 messages deleted)"} {
		if got := c.line(); got != w {
			t.Errorf("got %q, want %q", got, w)
		}
	}
	if n := srv.Stats().LockstepViolations; n != 0 {
		t.Errorf("violations counted while PIPELINING is advertised: %d", n)
	}
}

// ok with an empty command would send an empty line; this sends nothing.
func (c *client) okNoSend() string {
	c.t.Helper()
	r := c.line()
	if !strings.HasPrefix(r, "+OK") {
		c.t.Fatalf("got %q, want +OK", r)
	}
	return r
}

func TestStrictLockstep(t *testing.T) {
	cfg := baseConfig()
	cfg.Caps.NoPipelining = true
	cfg.StrictLockstep = true

	t.Run("lockstep client", func(t *testing.T) {
		srv, addr := start(t, cfg, threeMessages()...)
		c, _ := connect(t, addr)
		c.ok("CAPA")
		c.lines()
		c.login()
		c.ok("RETR 1")
		c.body()
		c.ok("QUIT")
		waitIdle(t, srv)
		if n := srv.Stats().LockstepViolations; n != 0 {
			t.Errorf("violations = %d, want 0", n)
		}
	})

	t.Run("pipelining client", func(t *testing.T) {
		srv, addr := start(t, cfg, threeMessages()...)
		c, _ := connect(t, addr)
		c.send("USER "+testUser, "PASS "+testPass, "STAT", "QUIT")
		for range 4 {
			c.okNoSend()
		}
		waitIdle(t, srv)
		if n := srv.Stats().LockstepViolations; n < 1 {
			t.Errorf("violations = %d, want at least 1", n)
		}
		if n := srv.Transcripts()[0].LockstepViolations; n < 1 {
			t.Errorf("transcript violations = %d", n)
		}
	})

	t.Run("command before greeting", func(t *testing.T) {
		// A long window makes this deterministic: the probe before the
		// greeting returns as soon as the early command arrives.
		cfg := cfg
		cfg.LockstepWindow = testDeadline
		srv, addr := start(t, cfg, threeMessages()...)
		c := dial(t, addr)
		c.send("CAPA")
		c.okNoSend() // greeting, sent after the violation was counted
		if n := srv.Stats().LockstepViolations; n != 1 {
			t.Errorf("violations = %d, want 1", n)
		}
	})
}

func TestLineLength(t *testing.T) {
	t.Run("strict", func(t *testing.T) {
		cfg := baseConfig()
		cfg.StrictLineLength = true
		_, addr := start(t, cfg)
		c, _ := connect(t, addr)
		// "USER " + name + CRLF: 255 octets pass, 256 do not (RFC 2449 §4).
		c.ok("USER " + strings.Repeat("a", 255-7))
		c.fail("USER "+strings.Repeat("a", 256-7), "-ERR")
		c.fail("AUTH PLAIN "+strings.Repeat("A", 300), "-ERR")
	})
	t.Run("hard limit", func(t *testing.T) {
		srv, addr := start(t, baseConfig())
		c, _ := connect(t, addr)
		c.fail("USER "+strings.Repeat("x", 100<<10), "-ERR")
		c.ok("USER " + testUser) // the session goes on
		c.ok("QUIT")
		waitIdle(t, srv)
		l := srv.Transcripts()[0].Lines[0]
		if len(l) != maxLine+3 || !strings.HasSuffix(l, "...") {
			t.Errorf("recorded long line of %d octets ending %q", len(l), l[len(l)-5:])
		}
	})
	t.Run("lenient by default", func(t *testing.T) {
		_, addr := start(t, baseConfig())
		c, _ := connect(t, addr)
		c.ok("USER " + strings.Repeat("a", 1000))
	})
}

func TestBareLFCommands(t *testing.T) {
	_, addr := start(t, baseConfig(), threeMessages()...)
	c, _ := connect(t, addr)
	if _, err := c.c.Write([]byte("USER " + testUser + "\nPASS " + testPass + "\nSTAT\n")); err != nil {
		t.Fatal(err)
	}
	c.okNoSend()
	c.okNoSend()
	if got := c.okNoSend(); got != "+OK 3 101" {
		t.Errorf("STAT: %q", got)
	}
}

func TestTranscript(t *testing.T) {
	srv, addr := start(t, baseConfig(), threeMessages()...)
	c, _ := connect(t, addr)
	c.ok("CAPA")
	c.lines()
	c.login()
	c.ok("QUIT")
	waitIdle(t, srv)
	trs := srv.Transcripts()
	if len(trs) != 1 {
		t.Fatalf("%d transcripts", len(trs))
	}
	tr := trs[0]
	want := []string{"CAPA", "USER " + testUser, "PASS " + testPass, "QUIT"}
	if !slices.Equal(tr.Lines, want) || tr.Session != 1 || tr.Remote == "" || tr.TLS || !tr.Done {
		t.Errorf("transcript %+v", tr)
	}
}

func TestIdleTimeout(t *testing.T) {
	cfg := baseConfig()
	cfg.IdleTimeout = 50 * time.Millisecond
	srv, addr := start(t, cfg, threeMessages()...)
	c, _ := connect(t, addr)
	c.login()
	c.ok("DELE 1")
	// The server gives up on the silent client and closes.
	if rest := c.readAll(); rest != "" {
		t.Errorf("got %q", rest)
	}
	waitIdle(t, srv)
	if n := len(srv.Messages()); n != 3 {
		t.Errorf("%d messages after a timed-out session", n)
	}
}

func TestWaitIdleContext(t *testing.T) {
	srv, addr := start(t, baseConfig())
	connect(t, addr)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := srv.WaitIdle(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitIdle with a session open: %v", err)
	}
}

func TestCloseEndsSessions(t *testing.T) {
	srv := NewServer(baseConfig(), threeMessages()...)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()

	c, _ := connect(t, l.Addr().String())
	c.login()
	c.ok("DELE 1")
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve returned %v", err)
	}
	if rest := c.readAll(); rest != "" {
		t.Errorf("got %q", rest)
	}
	if n := len(srv.Messages()); n != 3 {
		t.Errorf("%d messages after Close", n)
	}
	if st := srv.Stats(); st.Active != 0 {
		t.Errorf("active sessions after Close: %d", st.Active)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := srv.Listen(); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Listen after Close: %v", err)
	}
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(l2); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Close: %v", err)
	}

	// ServeConn after Close closes the connection at once.
	a, b := net.Pipe()
	done := make(chan struct{})
	go func() {
		srv.ServeConn(a)
		close(done)
	}()
	<-done
	if _, err := b.Read(make([]byte, 1)); err == nil {
		t.Error("read from a connection ServeConn should have closed")
	}
}

func TestServeConnPipe(t *testing.T) {
	srv := NewServer(baseConfig(), threeMessages()...)
	defer srv.Close()
	a, b := net.Pipe()
	done := make(chan struct{})
	go func() {
		srv.ServeConn(a)
		close(done)
	}()
	c := wrap(t, b)
	c.okNoSend()
	c.login()
	c.ok("DELE 2")
	c.ok("QUIT")
	<-done
	if got := uids(srv.Messages()); !slices.Equal(got, []string{"uid-1", "uid-3"}) {
		t.Errorf("maildrop %q", got)
	}
}
