package pop3

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func tlsConnPlaceholder() *tls.Conn { return new(tls.Conn) }

func TestGreetingAndCapa(t *testing.T) {
	s := start(t, plain, `
		S: +OK Dovecot ready. <3a1.5f3c2a1b@mail.example.net>
		C: CAPA
		S: +OK
		S: CAPA
		S: TOP
		S: UIDL
		S: RESP-CODES
		S: PIPELINING
		S: AUTH-RESP-CODE
		S: USER
		S: SASL PLAIN LOGIN
		S: LOGIN-DELAY 900
		S: EXPIRE NEVER
		S: IMPLEMENTATION Dovecot (Debian) 2.3
		S: .`)
	c := s.c
	if got := c.Greeting(); got != "Dovecot ready. <3a1.5f3c2a1b@mail.example.net>" {
		t.Errorf("Greeting = %q", got)
	}
	if c.timestamp != "<3a1.5f3c2a1b@mail.example.net>" {
		t.Errorf("timestamp = %q", c.timestamp)
	}
	caps := c.Caps()
	for _, n := range []string{"top", "UIDL", "Pipelining", "USER", "RESP-CODES"} {
		if !caps.Has(n) {
			t.Errorf("Has(%q) = false", n)
		}
	}
	if caps.Has("STLS") {
		t.Error("Has(STLS) = true")
	}
	if !slices.Equal(caps.SASL(), []string{"PLAIN", "LOGIN"}) {
		t.Errorf("SASL = %v", caps.SASL())
	}
	if !caps.Pipelining() {
		t.Error("Pipelining = false")
	}
	if got := caps.Implementation(); got != "Dovecot (Debian) 2.3" {
		t.Errorf("Implementation = %q", got)
	}
	if d, ok := caps.LoginDelay(); !ok || d != 900*time.Second {
		t.Errorf("LoginDelay = %v, %v", d, ok)
	}
	if d, ok := caps.Expire(); !ok || d != -1 {
		t.Errorf("Expire = %v, %v", d, ok)
	}
	if c.TLS() {
		t.Error("TLS = true on a plaintext session")
	}
	if len(caps.Names()) != 11 || caps.Names()[0] != "CAPA" {
		t.Errorf("Names = %v", caps.Names())
	}
	s.done()
}

func TestNoCapa(t *testing.T) {
	s := start(t, plain, `
		S: +OK POP3 ready
		C: CAPA
		S: -ERR unknown command`)
	if !s.c.Caps().Empty() || s.c.Caps().Pipelining() {
		t.Fatalf("Caps = %v", s.c.Caps())
	}
	if m, err := s.c.AutoMechanism(); err != nil || m != "user" {
		t.Fatalf("AutoMechanism = %q, %v", m, err)
	}
	s.done()
}

func TestGreetingError(t *testing.T) {
	s := startNoCheck(t, plain, `S: -ERR [SYS/TEMP] Too many connections`)
	var e *Error
	if !errors.As(s.err, &e) || e.Command != "greeting" || e.Code != "SYS/TEMP" || !e.Temporary() {
		t.Fatalf("NewClient = %v", s.err)
	}
	s.done()
}

func TestGreetingGarbage(t *testing.T) {
	s := startNoCheck(t, plain, `S: * OK IMAP4rev1 ready`)
	if !errors.Is(s.err, ErrProtocol) {
		t.Fatalf("NewClient = %v", s.err)
	}
	s.done()
}

func TestSecurityValidated(t *testing.T) {
	_, conn := net.Pipe()
	defer conn.Close()
	if _, err := NewClient(context.Background(), conn, Options{Security: 7}); !errors.Is(err, ErrBadOption) {
		t.Fatalf("NewClient = %v", err)
	}
	if _, err := NewClient(context.Background(), conn, Options{Fingerprint: "abc"}); !errors.Is(err, ErrBadOption) {
		t.Fatalf("NewClient bad fingerprint = %v", err)
	}
	if _, err := NewClient(context.Background(), conn, Options{CAFile: "/nonexistent/ca.pem", ServerName: "x"}); !errors.Is(err, ErrBadOption) {
		t.Fatalf("NewClient bad CA file = %v", err)
	}
}

func TestParseFingerprint(t *testing.T) {
	want := "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"
	for _, in := range []string{
		want,
		strings.ToLower(want),
		strings.ReplaceAll(want, ":", ""),
		"sha256:" + strings.ReplaceAll(strings.ToLower(want), ":", ""),
		" " + strings.ReplaceAll(want, ":", " ") + " ",
	} {
		b, err := ParseFingerprint(in)
		if err != nil || FormatFingerprint(b) != want {
			t.Errorf("ParseFingerprint(%q) = %x, %v", in, b, err)
		}
	}
	for _, in := range []string{"", "AB:CD", want + ":00", strings.Replace(want, "A", "G", 1)} {
		if _, err := ParseFingerprint(in); !errors.Is(err, ErrBadOption) {
			t.Errorf("ParseFingerprint(%q) = %v", in, err)
		}
	}
}

const tlsHost = "mail.example.test"

// tlsScript is an implicit TLS session up to CAPA.
const tlsScript = `
	TLS
	S: +OK ready
	C: CAPA
	S: +OK
	S: USER
	S: .
	C: QUIT
	S: +OK
	EOF`

func startTLS(t *testing.T, cert testCert, opts Options, script string) *session {
	t.Helper()
	return startWith(t, opts, script, func(f *fake) { f.cert = cert.cert })
}

func TestImplicitTLS(t *testing.T) {
	cert := newTestCert(t, certOpts{hosts: []string{tlsHost}})
	other := newTestCert(t, certOpts{hosts: []string{tlsHost}})

	t.Run("self-signed refused by default", func(t *testing.T) {
		s := startTLS(t, cert, Options{ServerName: tlsHost}, "TLS-FAIL")
		if !errors.Is(s.err, ErrCertificate) {
			t.Fatalf("NewClient = %v, want ErrCertificate", s.err)
		}
		msg := s.err.Error()
		if !strings.Contains(msg, "unknown authority") || !strings.Contains(msg, cert.fp) {
			t.Fatalf("error %q does not name the problem and the fingerprint %s", msg, cert.fp)
		}
		s.done()
	})
	t.Run("pinned fingerprint accepted", func(t *testing.T) {
		// A pin needs no server name and ignores the chain.
		s := startTLS(t, cert, Options{Fingerprint: strings.ToLower(cert.fp)}, tlsScript)
		if s.err != nil {
			t.Fatal(s.err)
		}
		if !s.c.TLS() {
			t.Fatal("TLS = false")
		}
		st, ok := s.c.TLSState()
		if !ok || st.Version < tls.VersionTLS12 {
			t.Fatalf("TLSState = %v, %v", st.Version, ok)
		}
		if err := s.c.Quit(context.Background()); err != nil {
			t.Fatal(err)
		}
		s.done()
	})
	t.Run("wrong pin refused", func(t *testing.T) {
		s := startTLS(t, cert, Options{ServerName: tlsHost, Fingerprint: other.fp}, "TLS-FAIL")
		if !errors.Is(s.err, ErrFingerprintMismatch) || !strings.Contains(s.err.Error(), cert.fp) {
			t.Fatalf("NewClient = %v, want ErrFingerprintMismatch naming %s", s.err, cert.fp)
		}
		s.done()
	})
	t.Run("CA file accepted", func(t *testing.T) {
		s := startTLS(t, cert, Options{ServerName: tlsHost, CAFile: cert.caFile(t)}, tlsScript)
		if s.err != nil {
			t.Fatal(s.err)
		}
		if err := s.c.Quit(context.Background()); err != nil {
			t.Fatal(err)
		}
		s.done()
	})
	t.Run("wrong host refused", func(t *testing.T) {
		s := startTLS(t, cert, Options{ServerName: "pop.other.test", CAFile: cert.caFile(t)}, "TLS-FAIL")
		if !errors.Is(s.err, ErrCertificate) || !strings.Contains(s.err.Error(), `not valid for host "pop.other.test"`) ||
			!strings.Contains(s.err.Error(), cert.fp) {
			t.Fatalf("NewClient = %v", s.err)
		}
		s.done()
	})
	t.Run("expired refused", func(t *testing.T) {
		old := newTestCert(t, certOpts{hosts: []string{tlsHost}, notAfter: time.Now().Add(-time.Hour)})
		s := startTLS(t, old, Options{ServerName: tlsHost, CAFile: old.caFile(t)}, "TLS-FAIL")
		if !errors.Is(s.err, ErrCertificate) || !strings.Contains(s.err.Error(), "expired") {
			t.Fatalf("NewClient = %v", s.err)
		}
		s.done()
	})
	t.Run("TLS 1.1 refused", func(t *testing.T) {
		s := startWith(t, Options{Fingerprint: cert.fp}, "TLS-FAIL", func(f *fake) {
			f.cert, f.tlsMax = cert.cert, tls.VersionTLS11
		})
		if s.err == nil || !strings.Contains(s.err.Error(), "TLS handshake") {
			t.Fatalf("NewClient = %v", s.err)
		}
		s.done()
	})
	t.Run("no server name", func(t *testing.T) {
		s := startTLS(t, cert, Options{}, "EOF")
		if !errors.Is(s.err, ErrBadOption) {
			t.Fatalf("NewClient = %v", s.err)
		}
		s.done()
	})
}

func TestSTLS(t *testing.T) {
	cert := newTestCert(t, certOpts{hosts: []string{tlsHost}})
	opts := Options{Security: SecuritySTARTTLS, ServerName: tlsHost, CAFile: cert.caFile(t)}

	t.Run("upgrade and CAPA again", func(t *testing.T) {
		s := startTLS(t, cert, opts, `
			S: +OK ready
			C: CAPA
			S: +OK
			S: STLS
			S: PIPELINING
			S: SASL X-PRE-TLS
			S: .
			C: STLS
			S: +OK Begin TLS negotiation now.
			TLS
			C: CAPA
			S: +OK
			S: USER
			S: SASL PLAIN
			S: .
			C: AUTH PLAIN AHRpbQB0YW5zdGFhZg==
			S: +OK
			C: CAPA
			S: +OK
			S: .
			C: QUIT
			S: +OK
			EOF`)
		if s.err != nil {
			t.Fatal(s.err)
		}
		c := s.c
		if !c.TLS() {
			t.Fatal("TLS = false after STLS")
		}
		if c.Caps().Pipelining() || c.Caps().HasSASL("X-PRE-TLS") || !c.Caps().HasSASL("PLAIN") {
			t.Fatalf("pre-TLS capabilities kept: %v", c.Caps())
		}
		if err := c.Auth(context.Background(), "auto", "tim", "tanstaaf"); err != nil {
			t.Fatal(err)
		}
		if err := c.Quit(context.Background()); err != nil {
			t.Fatal(err)
		}
		s.done()
	})
	t.Run("not offered: error before any credential", func(t *testing.T) {
		s := startTLS(t, cert, opts, `
			S: +OK ready
			C: CAPA
			S: +OK
			S: USER
			S: SASL PLAIN
			S: .
			EOF`)
		if !errors.Is(s.err, ErrTLSRequired) {
			t.Fatalf("NewClient = %v, want ErrTLSRequired", s.err)
		}
		s.done()
	})
	t.Run("no CAPA, STLS refused", func(t *testing.T) {
		s := startTLS(t, cert, opts, `
			S: +OK ready
			C: CAPA
			S: -ERR what?
			C: STLS
			S: -ERR what?
			EOF`)
		var e *Error
		if !errors.Is(s.err, ErrTLSRequired) || !errors.As(s.err, &e) || e.Command != "STLS" {
			t.Fatalf("NewClient = %v", s.err)
		}
		s.done()
	})
	t.Run("plaintext injected after STLS reply", func(t *testing.T) {
		s := startTLS(t, cert, opts, `
			S: +OK ready
			C: CAPA
			S: +OK
			S: STLS
			S: .
			C: STLS
			S: +OK go ahead
			S: +OK injected`)
		if !errors.Is(s.err, ErrProtocol) {
			t.Fatalf("NewClient = %v", s.err)
		}
		s.wait() // the client hung up before the fake finished writing
	})
	t.Run("certificate refused after STLS", func(t *testing.T) {
		o := opts
		o.CAFile = ""
		s := startTLS(t, cert, o, `
			S: +OK ready
			C: CAPA
			S: +OK
			S: STLS
			S: .
			C: STLS
			S: +OK
			TLS-FAIL`)
		if !errors.Is(s.err, ErrCertificate) {
			t.Fatalf("NewClient = %v", s.err)
		}
		s.done()
	})
}

func TestPlaintextAuthRefused(t *testing.T) {
	// A client built for TLS whose link is not encrypted must not send a
	// password; the only such state is an invalid one, so build it.
	s := start(t, plain, greetCapa+"EOF")
	s.c.opts.Security = SecurityImplicit
	if err := s.c.Auth(context.Background(), "plain", "tim", "x"); !errors.Is(err, ErrPlaintextAuth) {
		t.Fatalf("Auth = %v", err)
	}
	s.c.Close()
	s.done()
}

func TestDialLoopback(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cert := newTestCert(t, certOpts{hosts: []string{"127.0.0.1"}})
	served := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			served <- err
			return
		}
		defer conn.Close()
		tc := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{cert.cert}})
		if _, err := tc.Write([]byte("+OK hi\r\n")); err != nil {
			served <- err
			return
		}
		buf := make([]byte, 64)
		n, err := tc.Read(buf)
		if err != nil || string(buf[:n]) != "CAPA\r\n" {
			served <- errors.New("no CAPA: " + string(buf[:n]))
			return
		}
		tc.Write([]byte("-ERR no\r\n"))
		n, _ = tc.Read(buf)
		if string(buf[:n]) != "QUIT\r\n" {
			served <- errors.New("no QUIT")
			return
		}
		tc.Write([]byte("+OK bye\r\n"))
		served <- nil
	}()
	// The host part of the address is the server name: an IP SAN here.
	c, err := Dial(context.Background(), l.Addr().String(), Options{CAFile: cert.caFile(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}
