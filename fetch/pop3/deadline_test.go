package pop3

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestSilentServerTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, conn := newFake(t)
		f.start(`
			S: +OK hi
			C: CAPA
			EOF`)
		begin := time.Now()
		_, err := NewClient(bg, conn, Options{Security: SecurityNone, Timeout: 30 * time.Second})
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("NewClient = %v, want a deadline error", err)
		}
		if d := time.Since(begin); d != 30*time.Second {
			t.Fatalf("gave up after %v, want 30s", d)
		}
		if err := f.wait(conn); err != nil {
			t.Fatal(err)
		}
	})
}

func TestSlowServerWithinTimeout(t *testing.T) {
	// A server that thinks for 25s before each reply, with a 30s timeout,
	// is fine although the whole takes over a minute: every command sent
	// starts a new wait. So is a listing that goes on in 200-octet bursts
	// 20s apart: each burst brings MinProgress octets within the timeout.
	synctest.Test(t, func(t *testing.T) {
		server, conn := net.Pipe()
		defer server.Close()
		burst := strings.Repeat("X-CAPABILITY-PADDING\r\n", 10) // 220 octets
		go func() {
			buf := make([]byte, 64)
			time.Sleep(25 * time.Second)
			server.Write([]byte("+OK hi\r\n"))
			server.Read(buf) // CAPA
			time.Sleep(25 * time.Second)
			server.Write([]byte("+OK\r\nUIDL\r\n" + burst))
			for range 2 {
				time.Sleep(20 * time.Second)
				server.Write([]byte(burst))
			}
			server.Write([]byte(".\r\n"))
			server.Read(buf) // NOOP
			time.Sleep(25 * time.Second)
			server.Write([]byte("+OK\r\n"))
			server.Read(buf) // until the client closes
		}()
		begin := time.Now()
		c, err := NewClient(bg, conn, Options{Security: SecurityNone, Timeout: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Noop(bg); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(begin); d != 115*time.Second || !c.Caps().Has("UIDL") {
			t.Fatalf("took %v, caps %v", d, c.Caps())
		}
		c.Close()
	})
}

func TestTricklingServerTimesOut(t *testing.T) {
	// One octet a second: every read returns something, so a deadline
	// refreshed per read would never fire. The read budget does, after
	// the timeout, with what the server managed to send.
	synctest.Test(t, func(t *testing.T) {
		server, conn := net.Pipe()
		done := make(chan struct{})
		defer func() {
			server.Close()
			<-done
		}()
		go func() {
			defer close(done)
			for _, b := range []byte("+OK a greeting that takes its time\r\n") {
				if _, err := server.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(time.Second)
			}
		}()
		begin := time.Now()
		// 10.5s: the octet sent at 10s arrives well before the deadline.
		_, err := NewClient(bg, conn, Options{Security: SecurityNone, Timeout: 10500 * time.Millisecond})
		if !errors.Is(err, ErrTooSlow) || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("NewClient = %v, want ErrTooSlow", err)
		}
		if !strings.Contains(err.Error(), "11 octets in 10.5s") {
			t.Errorf("error does not say how little came: %v", err)
		}
		if d := time.Since(begin); d != 10500*time.Millisecond {
			t.Fatalf("gave up after %v, want 10.5s", d)
		}
	})
}

func TestServerNotReadingTimesOut(t *testing.T) {
	// Writes have deadlines too: a server that stops reading cannot hang
	// the client (net.Pipe has no buffer, so the write blocks at once).
	synctest.Test(t, func(t *testing.T) {
		server, conn := net.Pipe()
		defer server.Close()
		go server.Write([]byte("+OK hi\r\n"))
		begin := time.Now()
		_, err := NewClient(bg, conn, Options{Security: SecurityNone, Timeout: 10 * time.Second})
		if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "sending") {
			t.Fatalf("NewClient = %v", err)
		}
		if d := time.Since(begin); d != 10*time.Second {
			t.Fatalf("gave up after %v", d)
		}
	})
}

func TestContextDeadlineMidCommand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, conn := newFake(t)
		f.start(dovecotStart + `
			C: NOOP
			EOF`)
		c, err := NewClient(bg, conn, Options{Security: SecurityNone})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(bg, 5*time.Second)
		defer cancel()
		begin := time.Now()
		err = c.Noop(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Noop = %v", err)
		}
		if d := time.Since(begin); d != 5*time.Second {
			t.Fatalf("Noop returned after %v, want the context's 5s", d)
		}
		if err := c.Noop(bg); !errors.Is(err, ErrPoisoned) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Noop after cancel = %v", err)
		}
		if err := f.wait(conn); err != nil {
			t.Fatal(err)
		}
	})
}

func TestCancelMidRetr(t *testing.T) {
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	s := startWith(t, plain, dovecotStart+`
		C: RETR 1
		S: +OK
		S: partial
		HOOK cancel
		EOF`, func(f *fake) { f.hooks["cancel"] = cancel })
	if s.err != nil {
		t.Fatal(s.err)
	}
	r, err := s.c.Retr(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if !errors.Is(err, context.Canceled) || string(b) != "partial\r\n" {
		t.Fatalf("ReadAll = %q, %v", b, err)
	}
	if err := s.c.Quit(bg); !errors.Is(err, ErrPoisoned) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Quit = %v", err)
	}
	s.done()
}

func TestCancelledBeforeCall(t *testing.T) {
	ctx, cancel := context.WithCancel(bg)
	s := start(t, plain, dovecotStart+`
		C: NOOP
		S: +OK
		C: NOOP
		S: +OK`)
	if err := s.c.Noop(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	// Nothing was sent: not poisoned.
	if err := s.c.Noop(ctx); !errors.Is(err, context.Canceled) || errors.Is(err, ErrPoisoned) {
		t.Fatalf("Noop = %v", err)
	}
	// A cancellation after an operation does not leak into the next.
	if err := s.c.Noop(bg); err != nil {
		t.Fatal(err)
	}
	s.done()
}

func TestTraceRedaction(t *testing.T) {
	const secret = "hunter2-very-secret"
	script := greetCapa + `
		C: USER tim
		S: +OK
		C: PASS ` + secret + `
		S: +OK
		C: CAPA
		S: -ERR
		C: RETR 1
		S: +OK
		S: body line
		S: .`
	run := func(traceAuth bool, level slog.Level) string {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level}))
		s := start(t, Options{Security: SecurityNone, Logger: log, TraceAuth: traceAuth}, script)
		if err := s.c.Auth(bg, "user", "tim", secret); err != nil {
			t.Fatal(err)
		}
		r, err := s.c.Retr(bg, 1)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, r)
		s.done()
		return buf.String()
	}
	out := run(false, LevelTraceAuth)
	for _, want := range []string{`line="PASS <redacted>"`, `line="USER tim"`, `line="RETR 1"`, "bytes=11", `line="+OK POP3 server ready`} {
		if !strings.Contains(out, want) {
			t.Errorf("trace lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, secret) || strings.Contains(out, "body line") {
		t.Errorf("trace shows the secret or the body:\n%s", out)
	}
	if out := run(true, LevelTrace); strings.Contains(out, secret) {
		t.Errorf("TraceAuth without LevelTraceAuth enabled shows the secret:\n%s", out)
	}
	if out := run(true, LevelTraceAuth); !strings.Contains(out, "PASS "+secret) {
		t.Errorf("TraceAuth at LevelTraceAuth does not show the PASS line:\n%s", out)
	}
	if out := run(false, slog.LevelDebug); out != "" {
		t.Errorf("trace at Debug level:\n%s", out)
	}
}

func TestTraceRedactsSASL(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: LevelTrace}))
	s := start(t, Options{Security: SecurityNone, Logger: log}, greetCapa+`
		C: AUTH PLAIN AHRpbQB0YW5zdGFhZg==
		S: +OK
		C: CAPA
		S: -ERR
		C: AUTH LOGIN
		S: + VXNlcm5hbWU6
		C: dGlt
		S: + UGFzc3dvcmQ6
		C: dGFuc3RhYWY=
		S: +OK`)
	if err := s.c.Auth(bg, "plain", "tim", "tanstaaf"); err != nil {
		t.Fatal(err)
	}
	if err := s.c.Auth(bg, "login", "tim", "tanstaaf"); err != nil {
		t.Fatal(err)
	}
	s.done()
	out := buf.String()
	if strings.Contains(out, "AHRpbQB0YW5zdGFhZg") || strings.Contains(out, "dGFuc3RhYWY") || strings.Contains(out, "tanstaaf") {
		t.Fatalf("trace shows credentials:\n%s", out)
	}
	if !strings.Contains(out, `line="AUTH PLAIN <redacted>"`) || !strings.Contains(out, `line=<redacted>`) {
		t.Fatalf("trace lacks the redacted lines:\n%s", out)
	}
}
