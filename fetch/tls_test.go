package fetch_test

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"popsync/configs"
	"popsync/fetch/pop3"
	"popsync/fetch/pop3/pop3test"
	"popsync/internal/testcert"
)

// tlsEnv is newEnv with a TLS server: implicit TLS, or STLS offered.
func tlsEnv(t *testing.T, cert tls.Certificate, implicit bool, caps pop3test.Caps) *env {
	t.Helper()
	cfg := pop3test.Config{Caps: caps, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, ImplicitTLS: implicit}
	e := newEnv(t, pop3test.SampleMessages(4, 300), cfg)
	e.acct.TLS = configs.TLSImplicit
	if !implicit {
		e.acct.TLS = configs.TLSStartTLS
	}
	return e
}

func mustCert(t *testing.T, make func(...string) (tls.Certificate, *x509.Certificate, error)) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	c, x, err := make()
	if err != nil {
		t.Fatal(err)
	}
	return c, x
}

// caFile writes the certificate as the account's trusted CA, so that only
// the flaw under test remains.
func caFile(t *testing.T, x *x509.Certificate) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pop3test.CertPEM(x), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// nulNameCert makes a self-signed certificate for "localhost\x00.evil.example"
// (CVE-2009-2666: a CA signs the attacker's domain, a C client compares
// up to the NUL and sees "localhost"), as DNS name and as common name.
func nulNameCert(t *testing.T) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	c, err := testcert.New(testcert.Options{Hosts: []string{"localhost\x00.evil.example"}})
	if err != nil {
		t.Fatal(err)
	}
	return c.TLS, c.X509
}

// wantNoCredentials fails if any session of the server saw a login
// command or the password.
func (e *env) wantNoCredentials() {
	e.t.Helper()
	for _, tr := range e.srv.Transcripts() {
		for _, l := range tr.Lines {
			v := strings.ToUpper(l)
			if strings.HasPrefix(v, "USER") || strings.HasPrefix(v, "PASS") || strings.HasPrefix(v, "AUTH") ||
				strings.HasPrefix(v, "APOP") || strings.Contains(l, testPass) {
				e.t.Fatalf("credentials reached the server: %q (session lines %q)", l, tr.Lines)
			}
		}
		if tr.Auth != "" {
			e.t.Fatalf("the server saw a login by %s", tr.Auth)
		}
	}
}

func TestUntrustedCertificatesRefusedByDefault(t *testing.T) {
	selfSigned, ssX := mustCert(t, pop3test.SelfSigned)
	expired, exX := mustCert(t, pop3test.ExpiredCert)
	wrongHost, whX := mustCert(t, func(...string) (tls.Certificate, *x509.Certificate, error) { return pop3test.WrongHostCert() })
	nul, nulX := nulNameCert(t)
	cases := []struct {
		name       string
		cert       tls.Certificate
		x          *x509.Certificate
		trustCA    bool   // tls_ca_file holds the cert: only the flaw under test remains
		serverName string // tls_server_name
		reason     string
	}{
		{"self-signed", selfSigned, ssX, false, "", "signed by an unknown authority"},
		{"expired", expired, exX, true, "", "expired"},
		{"wrong host", wrongHost, whX, true, "", `not valid for host "127.0.0.1"`},
		{"NUL in name", nul, nulX, true, "localhost", `not valid for host "localhost"`},
	}
	for _, tc := range cases {
		for _, implicit := range []bool{true, false} {
			mode := "implicit"
			if !implicit {
				mode = "starttls"
			}
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				e := tlsEnv(t, tc.cert, implicit, pop3test.Caps{})
				if tc.trustCA {
					e.acct.TLSCAFile = caFile(t, tc.x)
				}
				e.acct.TLSServerName = tc.serverName
				r := e.poll()
				if !errors.Is(r.Err, pop3.ErrCertificate) {
					t.Fatalf("poll error = %v, want ErrCertificate", r.Err)
				}
				sum := sha256.Sum256(tc.x.Raw)
				msg := r.Err.Error()
				for _, want := range []string{tc.reason, "pin", pop3.FormatFingerprint(sum[:])} {
					if !strings.Contains(msg, want) {
						t.Errorf("error does not say %q: %s", want, msg)
					}
				}
				if r.Delivered != 0 {
					t.Fatalf("delivered %d over an untrusted link", r.Delivered)
				}
				e.wantNoCredentials()
				// The client hangs up on the bad certificate; the server
				// counts the failed handshake when its session ends.
				if err := e.srv.WaitIdle(t.Context()); err != nil {
					t.Fatal(err)
				}
				if st := e.srv.Stats(); st.TLSFailures == 0 {
					t.Errorf("server saw no failed handshake: %+v", st)
				}
			})
		}
	}
}

func TestPinnedFingerprint(t *testing.T) {
	cert, x := mustCert(t, pop3test.SelfSigned)
	_, otherX := mustCert(t, pop3test.SelfSigned)

	t.Run("right pin accepted", func(t *testing.T) {
		e := tlsEnv(t, cert, true, pop3test.Caps{})
		e.acct.TLSFingerprint = pop3test.Fingerprint(x)
		if r := e.mustPoll(); r.Delivered != len(e.msgs) {
			t.Fatalf("delivered %d", r.Delivered)
		}
		e.wantExactlyOnce(e.msgs)
	})
	t.Run("right pin over STLS", func(t *testing.T) {
		e := tlsEnv(t, cert, false, pop3test.Caps{})
		e.acct.TLSFingerprint = pop3test.Fingerprint(x)
		e.mustPoll()
		e.wantExactlyOnce(e.msgs)
	})
	t.Run("wrong pin refused", func(t *testing.T) {
		e := tlsEnv(t, cert, true, pop3test.Caps{})
		e.acct.TLSFingerprint = pop3test.Fingerprint(otherX)
		r := e.poll()
		if !errors.Is(r.Err, pop3.ErrFingerprintMismatch) {
			t.Fatalf("poll error = %v, want ErrFingerprintMismatch", r.Err)
		}
		sum := sha256.Sum256(x.Raw)
		if !strings.Contains(r.Err.Error(), pop3.FormatFingerprint(sum[:])) {
			t.Errorf("error does not name the presented certificate: %v", r.Err)
		}
		e.wantNoCredentials()
		e.wantExactlyOnce(nil)
	})
	t.Run("pin replaces the host check", func(t *testing.T) {
		// A pinned certificate is the one trusted, whatever name it has.
		wh, whX := mustCert(t, func(...string) (tls.Certificate, *x509.Certificate, error) { return pop3test.WrongHostCert() })
		e := tlsEnv(t, wh, true, pop3test.Caps{})
		e.acct.TLSFingerprint = pop3test.Fingerprint(whX)
		e.mustPoll()
		e.wantExactlyOnce(e.msgs)
	})
}

func TestSTARTTLSRequiredBeforeCredentials(t *testing.T) {
	cert, x := mustCert(t, pop3test.SelfSigned)
	t.Run("server without STLS", func(t *testing.T) {
		e := newEnv(t, pop3test.SampleMessages(3, 310), pop3test.Config{})
		e.acct.TLS = configs.TLSStartTLS
		r := e.poll()
		if !errors.Is(r.Err, pop3.ErrTLSRequired) {
			t.Fatalf("poll error = %v, want ErrTLSRequired", r.Err)
		}
		e.wantNoCredentials()
		// Only CAPA was said in the clear.
		for _, tr := range e.srv.Transcripts() {
			if !slices.Equal(tr.Lines, []string{"CAPA"}) {
				t.Fatalf("sent in the clear: %q", tr.Lines)
			}
		}
	})
	t.Run("server refusing STLS", func(t *testing.T) {
		e := tlsEnv(t, cert, false, pop3test.Caps{})
		e.acct.TLSCAFile = caFile(t, x)
		e.srv.SetFaults(pop3test.Faults{Commands: []pop3test.CommandFault{{Command: "STLS", Code: "SYS/TEMP", Text: "no TLS today"}}})
		r := e.poll()
		if !errors.Is(r.Err, pop3.ErrTLSRequired) || !strings.Contains(r.Err.Error(), "no TLS today") {
			t.Fatalf("poll error = %v, want ErrTLSRequired with the server's words", r.Err)
		}
		e.wantNoCredentials()
	})
	t.Run("password only after STLS", func(t *testing.T) {
		e := tlsEnv(t, cert, false, pop3test.Caps{})
		e.acct.TLSCAFile = caFile(t, x)
		e.mustPoll()
		e.wantExactlyOnce(e.msgs)
		for _, tr := range e.srv.Transcripts() {
			stls := slices.Index(tr.Lines, "STLS")
			for i, l := range tr.Lines {
				if strings.Contains(l, testPass) || strings.HasPrefix(l, "AUTH") || strings.HasPrefix(l, "USER") {
					if stls < 0 || i < stls {
						t.Fatalf("credential line %d %q before STLS (line %d)", i, l, stls)
					}
				}
			}
			if !tr.TLS {
				t.Fatal("session did not end encrypted")
			}
		}
	})
}

func TestNoPasswordInTheClearUnlessAskedFor(t *testing.T) {
	// Every mechanism a server could offer, on a plaintext server, with
	// every TLS setting but "none": the password never leaves.
	for _, tlsMode := range []string{configs.TLSImplicit, configs.TLSStartTLS} {
		for _, auth := range []string{configs.AuthAuto, configs.AuthUser, configs.AuthPlain, configs.AuthLogin, configs.AuthAPOP, configs.AuthCRAMMD5, configs.AuthXOAuth2} {
			t.Run(tlsMode+"/"+auth, func(t *testing.T) {
				e := newEnv(t, pop3test.SampleMessages(2, 320), pop3test.Config{Caps: pop3test.Caps{APOP: true}})
				e.acct.TLS, e.acct.Auth = tlsMode, auth
				e.acct.Timeout = configs.Duration(2 * time.Second)
				r := e.poll()
				if r.Err == nil {
					t.Fatal("a poll with TLS required succeeded against a plaintext server")
				}
				e.wantNoCredentials()
			})
		}
	}
	// tls = "none" is the explicit opt-in: then it is sent.
	e := newEnv(t, pop3test.SampleMessages(2, 321), pop3test.Config{})
	e.acct.Auth = configs.AuthUser
	e.mustPoll()
	if tr := e.srv.Transcripts(); len(tr) == 0 || tr[0].Auth != "USER" {
		t.Fatalf("with tls = none the login did not happen: %+v", tr)
	}
}

func TestAPOPNeverChosenOverStrongerMechanism(t *testing.T) {
	cert, x := mustCert(t, pop3test.SelfSigned)
	cases := []struct {
		name     string
		implicit bool // false: plaintext (tls = "none")
		caps     pop3test.Caps
		want     string
	}{
		{"TLS with PLAIN", true, pop3test.Caps{APOP: true}, "PLAIN"},
		{"TLS with USER only", true, pop3test.Caps{APOP: true, NoSASL: true}, "USER"},
		{"TLS with CRAM-MD5 only", true, pop3test.Caps{APOP: true, NoUSER: true, SASL: []string{"CRAM-MD5"}}, "CRAM-MD5"},
		{"plaintext with CRAM-MD5", false, pop3test.Caps{APOP: true}, "CRAM-MD5"},
		// Without TLS and without CRAM-MD5, APOP is what keeps the
		// password off the wire; it is the strongest on offer.
		{"plaintext with USER and PLAIN", false, pop3test.Caps{APOP: true, SASL: []string{"PLAIN"}}, "APOP"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var e *env
			if tc.implicit {
				e = tlsEnv(t, cert, true, tc.caps)
				e.acct.TLSCAFile = caFile(t, x)
			} else {
				e = newEnv(t, pop3test.SampleMessages(2, 330), pop3test.Config{Caps: tc.caps})
			}
			e.acct.Auth = configs.AuthAuto
			e.mustPoll()
			tr := e.srv.Transcripts()
			if len(tr) != 1 || tr[0].Auth != tc.want {
				t.Fatalf("logged in with %q, want %q", tr[0].Auth, tc.want)
			}
		})
	}
}
