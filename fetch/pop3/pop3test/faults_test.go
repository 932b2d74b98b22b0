package pop3test

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRetrDrop(t *testing.T) {
	msgs := threeMessages()
	wire := stuff(string(msgs[1].Data))
	body := strings.TrimSuffix(wire, ".\r\n")
	tests := []struct {
		after int
		want  string
	}{
		{0, ""},
		{10, wire[:10]},
		{len(body) - 1, body[:len(body)-1]},
		{len(body), body},       // all of it, but no terminator
		{len(body) + 100, body}, // likewise
		{-5, ""},                // negative counts as 0
		{16, wire[:16]},         // cuts between the stuffing dot and the line
		{17, wire[:17]},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.after), func(t *testing.T) {
			srv, addr := start(t, baseConfig(), msgs...)
			srv.SetFaults(Faults{RetrDrops: []RetrDrop{{Msg: 2, After: tt.after}}})
			c, _ := connect(t, addr)
			c.login()
			c.ok("RETR 1") // another message is not affected
			c.body()
			c.ok("DELE 1")
			if got := c.ok("RETR 2"); got != "+OK 44 octets" {
				t.Errorf("status %q", got)
			}
			if got := c.readAll(); got != tt.want {
				t.Errorf("got %q before the drop, want %q", got, tt.want)
			}
			waitIdle(t, srv)
			if n := len(srv.Messages()); n != 3 {
				t.Errorf("%d messages after the drop, want 3", n)
			}
		})
	}

	t.Run("by UID, once", func(t *testing.T) {
		srv, addr := start(t, baseConfig(), msgs...)
		srv.SetFaults(Faults{RetrDrops: []RetrDrop{{UID: "uid-3", After: 3, Times: 1}}})
		c, _ := connect(t, addr)
		c.login()
		c.ok("RETR 3")
		if got := c.readAll(); got != "Sub" {
			t.Errorf("got %q", got)
		}
		waitIdle(t, srv)
		c, _ = connect(t, addr)
		c.login()
		c.ok("RETR 3")
		if got := c.body() + ".\r\n"; got != stuff(string(msgs[2].Data)) {
			t.Errorf("second RETR %q", got)
		}
	})

	t.Run("pipelined replies before the drop are sent", func(t *testing.T) {
		srv, addr := start(t, baseConfig(), msgs...)
		srv.SetFaults(Faults{RetrDrops: []RetrDrop{{Msg: 2, After: 4}}})
		c, _ := connect(t, addr)
		c.login()
		c.send("RETR 1", "RETR 2", "RETR 3")
		c.okNoSend()
		c.body()
		c.okNoSend()
		if got := c.readAll(); got != "Subj" {
			t.Errorf("got %q", got)
		}
	})
}

func TestQuitFaults(t *testing.T) {
	t.Run("drop before the reply", func(t *testing.T) {
		srv, addr := start(t, baseConfig(), threeMessages()...)
		srv.SetFaults(Faults{QuitDrop: true})
		c, _ := connect(t, addr)
		c.login()
		c.ok("DELE 1")
		c.send("QUIT")
		if got := c.readAll(); got != "" {
			t.Errorf("reply to QUIT %q", got)
		}
		waitIdle(t, srv)
		if n := len(srv.Messages()); n != 3 {
			t.Errorf("%d messages, want 3", n)
		}
		tr := srv.Transcripts()[0]
		if !tr.Quit || tr.Committed {
			t.Errorf("transcript %+v", tr)
		}
		// The lock is free again.
		c, _ = connect(t, addr)
		c.login()
	})

	t.Run("+OK without commit", func(t *testing.T) {
		srv, addr := start(t, baseConfig(), threeMessages()...)
		srv.SetFaults(Faults{QuitNoCommit: true})
		c, _ := connect(t, addr)
		c.login()
		c.ok("DELE 1")
		c.ok("QUIT")
		waitIdle(t, srv)
		if n := len(srv.Messages()); n != 3 {
			t.Errorf("%d messages, want 3", n)
		}
		if st := srv.Stats(); st.Commits != 0 || st.DelesCommitted != 0 {
			t.Errorf("stats %+v", st)
		}
	})

	t.Run("-ERR to QUIT", func(t *testing.T) {
		srv, addr := start(t, baseConfig(), threeMessages()...)
		srv.SetFaults(Faults{Commands: []CommandFault{{Command: "QUIT", Code: "SYS/TEMP", Text: "some deleted messages not removed"}}})
		c, _ := connect(t, addr)
		c.login()
		c.ok("DELE 1")
		c.fail("QUIT", "-ERR [SYS/TEMP] some deleted messages not removed")
		if got := c.readAll(); got != "" {
			t.Errorf("after QUIT %q", got)
		}
		waitIdle(t, srv)
		if n := len(srv.Messages()); n != 3 {
			t.Errorf("%d messages, want 3", n)
		}
	})
}

func TestLoginFaults(t *testing.T) {
	for _, code := range []string{"IN-USE", "LOGIN-DELAY", "SYS/TEMP"} {
		t.Run(code, func(t *testing.T) {
			srv, addr := start(t, baseConfig(), threeMessages()...)
			srv.SetFaults(Faults{Login: LoginFault{Code: code, Times: 1}})
			c, _ := connect(t, addr)
			c.ok("USER " + testUser)
			c.fail("PASS "+testPass, "-ERR ["+code+"] ")
			// Spent: the next try on the same connection gets in.
			c.login()
			if st := srv.Stats(); st.Logins != 1 || st.AuthFailures != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}

	t.Run("every time, any mechanism, custom text", func(t *testing.T) {
		srv, addr := start(t, baseConfig(), threeMessages()...)
		srv.SetFaults(Faults{Login: LoginFault{Code: "LOGIN-DELAY", Text: "wait 15 minutes"}})
		c, _ := connect(t, addr)
		for range 3 {
			c.fail("AUTH PLAIN "+b64("\x00"+testUser+"\x00"+testPass), "-ERR [LOGIN-DELAY] wait 15 minutes")
		}
		// Wrong credentials are still an [AUTH] failure.
		c.fail("AUTH PLAIN "+b64("\x00"+testUser+"\x00nope"), "-ERR [AUTH] ")
		srv.SetFaults(Faults{})
		c.ok("AUTH PLAIN " + b64("\x00"+testUser+"\x00"+testPass))
	})

	t.Run("without RESP-CODES", func(t *testing.T) {
		cfg := baseConfig()
		cfg.Caps.NoRespCodes = true
		srv, addr := start(t, cfg, threeMessages()...)
		srv.SetFaults(Faults{Login: LoginFault{Code: "IN-USE"}})
		c, _ := connect(t, addr)
		c.ok("USER " + testUser)
		if got := c.cmd("PASS " + testPass); got != "-ERR Mailbox is locked by another POP3 session" {
			t.Errorf("got %q", got)
		}
		c.ok("USER " + testUser)
		if got := c.cmd("PASS wrong"); got != "-ERR Authentication failed" {
			t.Errorf("got %q", got)
		}
	})
}

func TestCommandFaults(t *testing.T) {
	srv, addr := start(t, baseConfig(), threeMessages()...)
	srv.SetFaults(Faults{Commands: []CommandFault{
		{Command: "dele", Msg: 2, Code: "SYS/TEMP", Times: 1},
		{Command: "RETR", UID: "uid-3", Text: "cannot read message"},
		{Command: "STAT", Raw: "+OK this is not a number\r\n"},
		{Command: "LIST", Raw: "+OK\r\n1 abc\r\n.\r\n"},
		{Command: "UIDL", Msg: 1, Raw: "garbage without line end "},
		{Command: "CAPA", Code: "SYS/PERM"},
	}})
	c, _ := connect(t, addr)
	c.fail("CAPA", "-ERR [SYS/PERM] injected failure") // before login too
	c.login()
	c.fail("DELE 2", "-ERR [SYS/TEMP] injected failure")
	c.ok("DELE 2") // Times: 1, now spent
	c.fail("RETR 3", "-ERR cannot read message")
	c.ok("RETR 1")
	c.body()
	if got := c.cmd("STAT"); got != "+OK this is not a number" {
		t.Errorf("STAT: %q", got)
	}
	c.ok("LIST 3") // a zero selector matches LIST with or without argument
	if got := c.lines(); !slices.Equal(got, []string{"1 abc"}) {
		t.Errorf("LIST: %q", got)
	}
	c.send("UIDL 1", "NOOP")
	if got := c.line(); got != "garbage without line end +OK" {
		t.Errorf("UIDL 1 then NOOP: %q", got)
	}
	c.ok("UIDL 3") // not matched
	c.ok("QUIT")
	waitIdle(t, srv)
	// The -ERR to the first DELE 2 did not mark it; the second did.
	if got := uids(srv.Messages()); !slices.Equal(got, []string{"uid-1", "uid-3"}) {
		t.Errorf("maildrop %q", got)
	}
	if st := srv.Stats(); st.Retrs != 1 || st.Deles != 1 {
		t.Errorf("stats %+v (injected replies are not counted)", st)
	}
}

func TestHang(t *testing.T) {
	srv, addr := start(t, baseConfig(), threeMessages()...)
	srv.SetFaults(Faults{Commands: []CommandFault{{Command: "RETR", Msg: 2, Hang: true}}})
	c, _ := connect(t, addr)
	c.login()
	c.send("RETR 2")
	c.expectSilence(50 * time.Millisecond)
	c.send("NOOP") // still read and recorded, never answered
	c.expectSilence(20 * time.Millisecond)
	c.c.Close()
	waitIdle(t, srv)
	tr := srv.Transcripts()[0]
	if got := tr.Lines[len(tr.Lines)-2:]; !slices.Equal(got, []string{"RETR 2", "NOOP"}) {
		t.Errorf("lines %q", got)
	}
	if st := srv.Stats(); st.Retrs != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestSilentAfterGreeting(t *testing.T) {
	srv, addr := start(t, baseConfig(), threeMessages()...)
	srv.SetFaults(Faults{SilentAfterGreeting: true})
	c, _ := connect(t, addr)
	c.send("CAPA")
	c.expectSilence(50 * time.Millisecond)
	c.c.Close()
	waitIdle(t, srv)
	if got := srv.Transcripts()[0].Lines; !slices.Equal(got, []string{"CAPA"}) {
		t.Errorf("lines %q", got)
	}

	t.Run("idle timeout still ends it", func(t *testing.T) {
		cfg := baseConfig()
		cfg.IdleTimeout = 30 * time.Millisecond
		srv, addr := start(t, cfg)
		srv.SetFaults(Faults{SilentAfterGreeting: true})
		c, _ := connect(t, addr)
		c.send("CAPA")
		if got := c.readAll(); got != "" {
			t.Errorf("got %q", got)
		}
	})
}

func TestSizeFaults(t *testing.T) {
	msgs := threeMessages()
	srv, addr := start(t, baseConfig(), msgs...)
	srv.SetFaults(Faults{Sizes: []SizeFault{{Msg: 1, Size: 5}, {UID: "uid-3", Size: 1000}}})
	c, _ := connect(t, addr)
	c.login()
	if got := c.ok("STAT"); got != "+OK 3 1049" {
		t.Errorf("STAT %q", got)
	}
	c.ok("LIST")
	if got := c.lines(); !slices.Equal(got, []string{"1 5", "2 44", "3 1000"}) {
		t.Errorf("LIST %q", got)
	}
	if got := c.ok("RETR 1"); got != "+OK 5 octets" {
		t.Errorf("RETR status %q", got)
	}
	if got := c.body() + ".\r\n"; got != stuff(string(msgs[0].Data)) {
		t.Errorf("RETR sent %q, want the real data", got)
	}
}

// elapsed runs f and returns how long it took.
func elapsed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

func TestSlowReplies(t *testing.T) {
	msgs := []Message{{UID: "big", Data: []byte(strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz\r\n", 30))}}
	srv, addr := start(t, baseConfig(), msgs...)
	c, _ := connect(t, addr)
	c.login()

	srv.SetFaults(Faults{ReplyDelay: 40 * time.Millisecond})
	if d := elapsed(func() { c.ok("NOOP") }); d < 40*time.Millisecond {
		t.Errorf("ReplyDelay: NOOP took %v", d)
	}

	// 4 capability lines + status + terminator, each delayed.
	srv.SetFaults(Faults{LineDelay: 10 * time.Millisecond})
	var first string
	d := elapsed(func() {
		first = c.ok("UIDL")
		c.lines()
	})
	if d < 30*time.Millisecond || first != "+OK unique-id listing follows" {
		t.Errorf("LineDelay: UIDL (3 lines) took %v", d)
	}

	// 1,140 octets of body in chunks of 300: at least 3 pauses.
	srv.SetFaults(Faults{ChunkSize: 300, ChunkDelay: 15 * time.Millisecond})
	var body string
	d = elapsed(func() {
		c.ok("RETR 1")
		body = c.body()
	})
	if d < 45*time.Millisecond {
		t.Errorf("ChunkDelay: RETR took %v", d)
	}
	if body+".\r\n" != stuff(string(msgs[0].Data)) {
		t.Error("slow RETR changed the data")
	}

	srv.SetFaults(Faults{})
	c.ok("QUIT")
}

func TestSlowGreeting(t *testing.T) {
	srv, addr := start(t, baseConfig())
	srv.SetFaults(Faults{ReplyDelay: 30 * time.Millisecond})
	if d := elapsed(func() { connect(t, addr) }); d < 30*time.Millisecond {
		t.Errorf("greeting after %v", d)
	}
}

func TestCloseDuringDelay(t *testing.T) {
	srv := NewServer(baseConfig(), threeMessages()...)
	addr, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	c, _ := connect(t, addr)
	c.login()
	srv.SetFaults(Faults{ReplyDelay: time.Hour})
	c.send("NOOP")
	// Close must not wait for the hour.
	if d := elapsed(func() { srv.Close() }); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
	// EOF, or a reset if Close beat the server to reading NOOP.
	if got, _ := io.ReadAll(c.r); len(got) != 0 {
		t.Errorf("got %q", got)
	}
}

// Faults change while sessions run; go test -race checks the locking.
func TestFaultsConcurrent(t *testing.T) {
	srv, addr := start(t, baseConfig(), SampleMessages(10, 1)...)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			srv.SetFaults(Faults{
				Commands: []CommandFault{{Command: "NOOP", Times: 1, Code: "SYS/TEMP"}},
				Sizes:    []SizeFault{{Msg: 1 + i%10, Size: int64(i)}},
			})
		}
	}()
	for range 5 {
		c, _ := connect(t, addr)
		c.login()
		for i := 1; i <= 10; i++ {
			c.send("NOOP")
			c.line() // +OK or the injected -ERR
			if r := c.ok(fmt.Sprintf("RETR %d", i)); r == "" {
				t.Fatal("empty reply")
			}
			c.body()
		}
		c.ok("QUIT")
		_ = srv.Stats()
		_ = srv.Transcripts()
		_ = srv.Messages()
	}
	close(stop)
	wg.Wait()
}
