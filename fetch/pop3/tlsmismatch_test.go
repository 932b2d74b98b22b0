package pop3

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// serveOnce accepts one connection on loopback, writes greet to it and
// keeps it open until the test ends.
func serveOnce(t *testing.T, greet []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write(greet)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}()
	return ln.Addr().String()
}

// TestImplicitTLSAgainstPlainPort: the server greets in the clear while
// the client starts a TLS handshake.
func TestImplicitTLSAgainstPlainPort(t *testing.T) {
	addr := serveOnce(t, []byte("+OK Dovecot ready.\r\n"))
	_, err := Dial(context.Background(), addr, Options{Security: SecurityImplicit, ServerName: "pop.example.test", Timeout: 20 * time.Second})
	if !errors.Is(err, ErrNotTLS) || !strings.Contains(err.Error(), `"+OK D"`) {
		t.Fatalf("Dial = %v, want ErrNotTLS quoting the greeting", err)
	}
}

// TestPlainAgainstTLSPort: the first bytes are a TLS alert record; the
// client says so at once instead of waiting for a line end.
func TestPlainAgainstTLSPort(t *testing.T) {
	for name, rec := range map[string][]byte{
		"alert":     {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32},
		"handshake": {0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00},
	} {
		t.Run(name, func(t *testing.T) {
			addr := serveOnce(t, rec)
			start := time.Now()
			_, err := Dial(context.Background(), addr, Options{Security: SecurityNone, Timeout: 30 * time.Second})
			if !errors.Is(err, ErrUnexpectedTLS) {
				t.Fatalf("Dial = %v, want ErrUnexpectedTLS", err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Fatalf("took %v: waited for the timeout", d)
			}
		})
	}
}

// TestSilentServerHintsImplicitTLS: a port that says nothing (a TLS port
// waits for the client) times out with a hint.
func TestSilentServerHintsImplicitTLS(t *testing.T) {
	addr := serveOnce(t, nil)
	_, err := Dial(context.Background(), addr, Options{Security: SecurityNone, Timeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "implicit TLS") {
		t.Fatalf("Dial = %v, want a timeout naming implicit TLS", err)
	}
}

// TestCancelCauseNamed: a cancellation with a cause reports the cause
// ("interrupted", not "context canceled") and is still context.Canceled.
func TestCancelCauseNamed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Dial(ctx, ln.Addr().String(), Options{Security: SecurityNone, Timeout: 30 * time.Second})
		done <- err
	}()
	conn := <-accepted
	defer conn.Close()
	cancel(errors.New("interrupted"))
	err = <-done
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "interrupted") || strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("Dial = %v, want the cause named, wrapping context.Canceled", err)
	}
}
