package pop3test

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func unb64(t *testing.T, s string) string {
	t.Helper()
	d, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("decoding %q: %v", s, err)
	}
	return string(d)
}

// challenge reads a "+ " continuation and returns its decoded text.
func (c *client) challenge() string {
	c.t.Helper()
	l := c.line()
	data, ok := strings.CutPrefix(l, "+ ")
	if !ok {
		c.t.Fatalf("got %q, want a \"+ \" challenge", l)
	}
	return unb64(c.t, data)
}

func TestAPOP(t *testing.T) {
	cfg := baseConfig()
	cfg.Caps.APOP = true
	srv, addr := start(t, cfg, threeMessages()...)
	digest := func(greeting, secret string) string {
		ts := greeting[strings.Index(greeting, "<"):]
		if !strings.HasSuffix(ts, ">") {
			t.Fatalf("no timestamp in greeting %q", greeting)
		}
		sum := md5.Sum([]byte(ts + secret))
		return hex.EncodeToString(sum[:])
	}

	c, g1 := connect(t, addr)
	c.fail("APOP "+testUser+" "+digest(g1, "wrong"), "-ERR [AUTH] ")
	c.fail("APOP "+testUser+" "+strings.ToUpper(digest(g1, testPass)), "-ERR [AUTH] ") // RFC 1939: lower-case hex
	c.fail("APOP nobody "+digest(g1, testPass), "-ERR [AUTH] ")
	c.fail("APOP "+testUser, "-ERR")
	c.ok("APOP " + testUser + " " + digest(g1, testPass))
	c.ok("QUIT")

	// Every greeting has its own timestamp; an old digest is no good.
	c2, g2 := connect(t, addr)
	if g1 == g2 {
		t.Fatalf("two greetings with the same timestamp: %q", g1)
	}
	c2.fail("APOP "+testUser+" "+digest(g1, testPass), "-ERR [AUTH] ")
	c2.ok("APOP " + testUser + " " + digest(g2, testPass))
	c2.ok("QUIT")
	waitIdle(t, srv)
	if tr := srv.Transcripts()[0]; tr.Auth != "APOP" {
		t.Errorf("Auth = %q", tr.Auth)
	}

	t.Run("not offered", func(t *testing.T) {
		_, addr := start(t, baseConfig())
		c, g := connect(t, addr)
		if strings.Contains(g, "<") {
			t.Errorf("timestamp in greeting %q without APOP", g)
		}
		c.fail("APOP "+testUser+" 0123456789abcdef0123456789abcdef", "-ERR")
	})
}

func TestAuthPlain(t *testing.T) {
	srv, addr := start(t, baseConfig(), threeMessages()...)
	good := b64("\x00" + testUser + "\x00" + testPass)

	c, _ := connect(t, addr)
	c.fail("AUTH PLAIN "+b64("\x00"+testUser+"\x00wrong"), "-ERR [AUTH] ")
	c.fail("AUTH PLAIN "+b64("bob\x00"+testUser+"\x00"+testPass), "-ERR [AUTH] ") // foreign authzid
	c.fail("AUTH PLAIN =", "-ERR [AUTH] ")                                        // empty response
	c.fail("AUTH PLAIN !!!", "-ERR")                                              // not base64
	c.fail("AUTH NOPE", "-ERR")
	c.ok("AUTH PLAIN " + good)
	c.ok("QUIT")

	// Without an initial response: an empty challenge, then the response.
	c, _ = connect(t, addr)
	c.send("auth plain")
	if ch := c.line(); ch != "+ " {
		t.Errorf("challenge %q, want \"+ \"", ch)
	}
	c.ok(good)
	c.ok("QUIT")

	// With the authzid equal to the user.
	c, _ = connect(t, addr)
	c.ok("AUTH PLAIN " + b64(testUser+"\x00"+testUser+"\x00"+testPass))
	c.ok("QUIT")

	// "*" cancels (RFC 5034 §4).
	c, _ = connect(t, addr)
	c.send("AUTH PLAIN")
	c.challenge()
	c.fail("*", "-ERR")
	c.fail("AUTH PLAIN", "+ ")
	c.fail("not base64!", "-ERR")
	c.c.Close()

	waitIdle(t, srv)
	if st := srv.Stats(); st.Logins != 3 || st.AuthFailures != 3 {
		t.Errorf("stats %+v", st)
	}
	if tr := srv.Transcripts()[0]; tr.Auth != "PLAIN" {
		t.Errorf("Auth = %q", tr.Auth)
	}
}

func TestAuthLogin(t *testing.T) {
	_, addr := start(t, baseConfig(), threeMessages()...)
	c, _ := connect(t, addr)
	c.send("AUTH LOGIN")
	if ch := c.challenge(); ch != "Username:" {
		t.Errorf("challenge %q", ch)
	}
	c.send(b64(testUser))
	if ch := c.challenge(); ch != "Password:" {
		t.Errorf("challenge %q", ch)
	}
	c.ok(b64(testPass))
	c.ok("QUIT")

	// The user name as initial response.
	c, _ = connect(t, addr)
	c.send("AUTH LOGIN " + b64(testUser))
	if ch := c.challenge(); ch != "Password:" {
		t.Errorf("challenge %q", ch)
	}
	c.fail(b64("wrong"), "-ERR [AUTH] ")
}

func TestAuthCRAMMD5(t *testing.T) {
	_, addr := start(t, baseConfig(), threeMessages()...)
	respond := func(ch, secret string) string {
		mac := hmac.New(md5.New, []byte(secret))
		mac.Write([]byte(ch))
		return b64(testUser + " " + hex.EncodeToString(mac.Sum(nil)))
	}
	c, _ := connect(t, addr)
	c.send("AUTH CRAM-MD5")
	ch := c.challenge()
	if !strings.HasPrefix(ch, "<") || !strings.HasSuffix(ch, ">") {
		t.Errorf("challenge %q is not msg-id shaped (RFC 2195)", ch)
	}
	c.fail(respond(ch, "wrong"), "-ERR [AUTH] ")

	c.send("AUTH CRAM-MD5")
	ch2 := c.challenge()
	if ch2 == ch {
		t.Error("the same challenge twice")
	}
	c.fail(respond(ch, testPass), "-ERR [AUTH] ") // replay of the old challenge
	c.send("AUTH CRAM-MD5")
	c.ok(respond(c.challenge(), testPass))

	c2, _ := connect(t, addr)
	c2.fail("AUTH CRAM-MD5 "+b64("x"), "-ERR") // no initial response in CRAM-MD5
}

func xoauth2(user, token string) string {
	return b64("user=" + user + "\x01auth=Bearer " + token + "\x01\x01")
}

func TestAuthXOAUTH2(t *testing.T) {
	srv, addr := start(t, baseConfig(), threeMessages()...)

	c, _ := connect(t, addr)
	c.ok("AUTH XOAUTH2 " + xoauth2(testUser, "tok-123"))
	c.ok("QUIT")

	// The two-step form Exchange Online uses: "+ " and the token alone.
	c, _ = connect(t, addr)
	c.send("AUTH XOAUTH2")
	if ch := c.line(); ch != "+ " {
		t.Errorf("challenge %q", ch)
	}
	c.ok(xoauth2(testUser, "tok-123"))
	c.ok("QUIT")

	// A failure is a plain -ERR by default.
	c, _ = connect(t, addr)
	c.fail("AUTH XOAUTH2 "+xoauth2(testUser, "bad"), "-ERR [AUTH] ")
	c.fail("AUTH XOAUTH2 "+xoauth2("mallory", "tok-123"), "-ERR [AUTH] ")
	c.fail("AUTH XOAUTH2 "+b64("auth=Bearer tok-123\x01\x01"), "-ERR [AUTH] ") // no user
	// The password is not a token.
	c.fail("AUTH XOAUTH2 "+xoauth2(testUser, testPass), "-ERR [AUTH] ")
	c.c.Close()
	waitIdle(t, srv)
	if tr := srv.Transcripts()[0]; tr.Auth != "XOAUTH2" {
		t.Errorf("Auth = %q", tr.Auth)
	}

	t.Run("error challenge", func(t *testing.T) {
		cfg := baseConfig()
		cfg.XOAUTH2ErrorChallenge = true
		_, addr := start(t, cfg)
		c, _ := connect(t, addr)
		c.send("AUTH XOAUTH2 " + xoauth2(testUser, "bad"))
		if ch := c.challenge(); !strings.Contains(ch, `"status":"401"`) {
			t.Errorf("error challenge %q", ch)
		}
		c.fail("", "-ERR [AUTH] ")
	})

	t.Run("no token configured", func(t *testing.T) {
		cfg := baseConfig()
		cfg.Token = ""
		_, addr := start(t, cfg)
		c, _ := connect(t, addr)
		c.fail("AUTH XOAUTH2 "+xoauth2(testUser, ""), "-ERR [AUTH] ")
	})
}

func TestAuthOAUTHBEARER(t *testing.T) {
	_, addr := start(t, baseConfig(), threeMessages()...)
	resp := func(gs2, token string) string {
		return b64(gs2 + "\x01host=127.0.0.1\x01port=110\x01auth=Bearer " + token + "\x01\x01")
	}
	c, _ := connect(t, addr)
	c.ok("AUTH OAUTHBEARER " + resp("n,a="+testUser+",", "tok-123"))
	c.ok("QUIT")

	c, _ = connect(t, addr)
	c.ok("AUTH OAUTHBEARER " + resp("n,,", "tok-123")) // no authzid: the token names the user
	c.ok("QUIT")

	// RFC 7628 §3.2.3: a failure is an error challenge, answered by ^A.
	c, _ = connect(t, addr)
	c.send("AUTH OAUTHBEARER " + resp("n,a="+testUser+",", "bad"))
	if ch := c.challenge(); !strings.Contains(ch, "invalid_token") {
		t.Errorf("error challenge %q", ch)
	}
	c.fail(b64("\x01"), "-ERR [AUTH] ")
	c.send("AUTH OAUTHBEARER " + resp("n,a=mallory,", "tok-123"))
	c.challenge()
	c.fail(b64("\x01"), "-ERR [AUTH] ")

	// Two-step form.
	c.send("AUTH OAUTHBEARER")
	if ch := c.line(); ch != "+ " {
		t.Errorf("challenge %q", ch)
	}
	c.ok(resp("n,a="+testUser+",", "tok-123"))
}

func TestAuthMechanismList(t *testing.T) {
	cfg := baseConfig()
	cfg.Caps.SASL = []string{"PLAIN", "SCRAM-SHA-256"}
	_, addr := start(t, cfg, threeMessages()...)
	c, _ := connect(t, addr)
	c.ok("AUTH")
	if got := c.lines(); !slices.Equal(got, []string{"PLAIN", "SCRAM-SHA-256"}) {
		t.Errorf("AUTH list %q", got)
	}
	c.fail("AUTH LOGIN", "-ERR")         // not offered
	c.fail("AUTH SCRAM-SHA-256", "-ERR") // offered, not implemented
	c.ok("AUTH PLAIN " + b64("\x00"+testUser+"\x00"+testPass))

	t.Run("no SASL", func(t *testing.T) {
		cfg := baseConfig()
		cfg.Caps.NoSASL = true
		_, addr := start(t, cfg)
		c, _ := connect(t, addr)
		c.fail("AUTH PLAIN "+b64("\x00"+testUser+"\x00"+testPass), "-ERR")
		c.fail("AUTH", "-ERR")
	})
}

func TestEmptyPasswordRefusesPasswordLogins(t *testing.T) {
	cfg := baseConfig()
	cfg.Password = ""
	_, addr := start(t, cfg)
	c, _ := connect(t, addr)
	c.ok("USER " + testUser)
	c.fail("PASS ", "-ERR [AUTH] ")
	c.fail("AUTH PLAIN "+b64("\x00"+testUser+"\x00"), "-ERR [AUTH] ")
	c.ok("AUTH XOAUTH2 " + xoauth2(testUser, "tok-123"))
}

func TestSTLS(t *testing.T) {
	tlsCfg, roots := tlsPair(t)
	cfg := baseConfig()
	cfg.TLS = tlsCfg
	cfg.TLSBeforeAuth = true
	srv, addr := start(t, cfg, threeMessages()...)

	c, _ := connect(t, addr)
	c.fail("USER "+testUser, "-ERR [AUTH] ")
	c.fail("AUTH PLAIN "+b64("\x00"+testUser+"\x00"+testPass), "-ERR [AUTH] ")
	c.fail("STLS now", "-ERR")
	c.ok("STLS")
	c.startTLS(roots)
	c.ok("CAPA")
	caps := c.lines()
	if slices.Contains(caps, "STLS") || !slices.Contains(caps, "USER") {
		t.Errorf("CAPA after STLS: %q", caps)
	}
	c.fail("STLS", "-ERR")
	c.login()
	c.ok("RETR 1")
	c.body()
	c.ok("QUIT")
	waitIdle(t, srv)
	if tr := srv.Transcripts()[0]; !tr.TLS || tr.Auth != "USER" {
		t.Errorf("transcript %+v", tr)
	}

	t.Run("plaintext sent ahead is discarded", func(t *testing.T) {
		srv, addr := start(t, cfg, threeMessages()...)
		c, _ := connect(t, addr)
		// CVE-2011-0411: a command injected behind STLS must not run
		// inside the TLS session.
		c.send("STLS", "CAPA")
		c.okNoSend()
		c.startTLS(roots)
		if got := c.ok("QUIT"); got != "+OK POP3 server signing off" {
			t.Errorf("first reply under TLS %q, want the QUIT reply", got)
		}
		waitIdle(t, srv)
		if got := srv.Transcripts()[0].Lines; !slices.Equal(got, []string{"STLS", "QUIT"}) {
			t.Errorf("lines %q", got)
		}
	})

	t.Run("handshake failure", func(t *testing.T) {
		srv, addr := start(t, cfg)
		c, _ := connect(t, addr)
		c.ok("STLS")
		tc := tls.Client(c.c, &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "127.0.0.1"})
		if err := tc.Handshake(); err == nil {
			t.Fatal("handshake with an unknown CA succeeded")
		}
		tc.Close()
		waitIdle(t, srv)
		if st := srv.Stats(); st.TLSFailures != 1 {
			t.Errorf("TLSFailures = %d", st.TLSFailures)
		}
	})

	t.Run("not configured", func(t *testing.T) {
		_, addr := start(t, baseConfig())
		c, _ := connect(t, addr)
		c.fail("STLS", "-ERR")
	})
}

func TestImplicitTLS(t *testing.T) {
	tlsCfg, roots := tlsPair(t)
	cfg := baseConfig()
	cfg.TLS = tlsCfg
	cfg.ImplicitTLS = true
	srv, addr := start(t, cfg, threeMessages()...)
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := wrap(t, conn)
	c.okNoSend()
	c.ok("CAPA")
	if caps := c.lines(); slices.Contains(caps, "STLS") {
		t.Errorf("STLS advertised under implicit TLS: %q", caps)
	}
	c.fail("STLS", "-ERR")
	c.login()
	c.ok("QUIT")
	waitIdle(t, srv)
	if tr := srv.Transcripts()[0]; !tr.TLS {
		t.Errorf("transcript %+v", tr)
	}

	t.Run("needs a TLS config", func(t *testing.T) {
		defer func() {
			if recover() == nil {
				t.Error("NewServer accepted ImplicitTLS without TLS")
			}
		}()
		NewServer(Config{ImplicitTLS: true})
	})
}

func TestImplicitTLSOverPipe(t *testing.T) {
	tlsCfg, roots := tlsPair(t)
	cfg := baseConfig()
	cfg.TLS = tlsCfg
	cfg.ImplicitTLS = true
	srv := NewServer(cfg, threeMessages()...)
	defer srv.Close()
	a, b := net.Pipe()
	done := make(chan struct{})
	go func() {
		srv.ServeConn(a)
		close(done)
	}()
	tc := tls.Client(b, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	c := wrap(t, tc)
	c.okNoSend()
	c.login()
	c.ok("QUIT")
	<-done
	if st := srv.Stats(); st.Logins != 1 {
		t.Errorf("stats %+v", st)
	}
}

// The lockstep probe reads with a short deadline; over TLS that must not
// break the stream.
func TestStrictLockstepOverTLS(t *testing.T) {
	tlsCfg, roots := tlsPair(t)
	cfg := baseConfig()
	cfg.TLS = tlsCfg
	cfg.Caps.NoPipelining = true
	cfg.StrictLockstep = true
	msgs := SampleMessages(3, 5)
	srv, addr := start(t, cfg, msgs...)
	c, _ := connect(t, addr)
	c.ok("STLS")
	c.startTLS(roots)
	c.login()
	for i, m := range msgs {
		c.ok(fmt.Sprintf("RETR %d", i+1))
		if got := c.body() + ".\r\n"; got != stuff(string(m.Data)) {
			t.Errorf("message %d differs", i+1)
		}
	}
	if n := srv.Stats().LockstepViolations; n != 0 {
		t.Errorf("violations = %d", n)
	}
	c.send("NOOP", "NOOP")
	c.okNoSend()
	c.okNoSend()
	c.ok("QUIT")
	if n := srv.Stats().LockstepViolations; n < 1 {
		t.Errorf("violations = %d after pipelining under TLS", n)
	}
}
