package pop3

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// greetCapa is a greeting with the RFC 1939 §7 APOP example timestamp and a
// CAPA listing offering every mechanism.
const greetCapa = `
	S: +OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>
	C: CAPA
	S: +OK Capability list follows
	S: TOP
	S: UIDL
	S: USER
	S: RESP-CODES
	S: AUTH-RESP-CODE
	S: SASL PLAIN LOGIN CRAM-MD5 XOAUTH2 OAUTHBEARER
	S: .
`

// capaAfterAuth is the second CAPA every successful login is followed by.
const capaAfterAuth = `
	C: CAPA
	S: +OK
	S: TOP
	S: UIDL
	S: PIPELINING
	S: EXPIRE 30 USER
	S: .
`

var longToken = strings.Repeat("A", 300)

func TestAuthGolden(t *testing.T) {
	tests := []struct {
		name, mech, user, secret string
		greet                    string // default greetCapa
		script                   string // after the greeting
	}{
		{
			name: "user/pass", mech: "user", user: "tim", secret: "tanstaaf",
			script: `
				C: USER tim
				S: +OK
				C: PASS tanstaaf
				S: +OK maildrop locked and ready` + capaAfterAuth,
		},
		{
			name: "apop rfc1939 example", mech: "APOP", user: "mrose", secret: "tanstaaf",
			script: `
				C: APOP mrose c4c9334bac560ecc979e58001b3e22fb
				S: +OK maildrop has 1 message (369 octets)` + capaAfterAuth,
		},
		{
			name: "plain initial response", mech: "plain", user: "tim", secret: "tanstaaf",
			script: `
				C: AUTH PLAIN AHRpbQB0YW5zdGFhZg==
				S: +OK Logged in.` + capaAfterAuth,
		},
		{
			name: "plain without SASL capability: no initial response", mech: "plain", user: "tim", secret: "tanstaaf",
			greet: `
				S: +OK hello
				C: CAPA
				S: +OK
				S: USER
				S: .`,
			script: `
				C: AUTH PLAIN
				S: +
				C: AHRpbQB0YW5zdGFhZg==
				S: +OK` + `
				C: CAPA
				S: +OK
				S: .`,
		},
		{
			name: "login", mech: "LOGIN", user: "tim", secret: "tanstaaf",
			script: `
				C: AUTH LOGIN
				S: + VXNlcm5hbWU6
				C: dGlt
				S: + UGFzc3dvcmQ6
				C: dGFuc3RhYWY=
				S: +OK` + capaAfterAuth,
		},
		{
			name: "cram-md5 rfc2195 example", mech: "cram-md5", user: "tim", secret: "tanstaaftanstaaf",
			script: `
				C: AUTH CRAM-MD5
				S: + PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+
				C: dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw
				S: +OK` + capaAfterAuth,
		},
		{
			name: "xoauth2 initial response", mech: "xoauth2", user: "tim@example.org", secret: "ya29.tok",
			script: `
				C: AUTH XOAUTH2 dXNlcj10aW1AZXhhbXBsZS5vcmcBYXV0aD1CZWFyZXIgeWEyOS50b2sBAQ==
				S: +OK` + capaAfterAuth,
		},
		{
			name: "xoauth2 two-step (Exchange Online, token too long for the AUTH line)", mech: "xoauth2",
			user: "tim@example.org", secret: longToken,
			script: `
				C: AUTH XOAUTH2
				S: +
				C: dXNlcj10aW1AZXhhbXBsZS5vcmcBYXV0aD1CZWFyZXIgQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBAQE=
				S: +OK User successfully authenticated.` + capaAfterAuth,
		},
		{
			name: "oauthbearer initial response", mech: "OAuthBearer", user: "tim@example.org", secret: "ya29.tok",
			script: `
				C: AUTH OAUTHBEARER bixhPXRpbUBleGFtcGxlLm9yZywBYXV0aD1CZWFyZXIgeWEyOS50b2sBAQ==
				S: +OK` + capaAfterAuth,
		},
		{
			name: "oauthbearer escapes the user name", mech: "oauthbearer", user: "a,b=c", secret: "t",
			script: `
				C: AUTH OAUTHBEARER bixhPWE9MkNiPTNEYywBYXV0aD1CZWFyZXIgdAEB
				S: +OK` + capaAfterAuth,
		},
		{
			name: "server without CAPA: no second CAPA", mech: "user", user: "tim", secret: "tanstaaf",
			greet: `
				S: +OK hello
				C: CAPA
				S: -ERR unknown command`,
			script: `
				C: USER tim
				S: +OK
				C: PASS tanstaaf
				S: +OK`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			greet := tt.greet
			if greet == "" {
				greet = greetCapa
			}
			s := start(t, plain, greet+tt.script+"\nC: QUIT\nS: +OK bye\nEOF")
			if err := s.c.Auth(context.Background(), tt.mech, tt.user, tt.secret); err != nil {
				s.fatalf("Auth: %v", err)
			}
			if err := s.c.Quit(context.Background()); err != nil {
				t.Fatalf("Quit: %v", err)
			}
			s.done()
		})
	}
}

func TestAuthCapsAfterLogin(t *testing.T) {
	s := start(t, plain, greetCapa+`
		C: USER tim
		S: +OK
		C: PASS x
		S: +OK`+capaAfterAuth)
	if s.c.Caps().Pipelining() {
		t.Fatal("PIPELINING before login")
	}
	if err := s.c.Auth(context.Background(), "user", "tim", "x"); err != nil {
		t.Fatal(err)
	}
	if !s.c.Caps().Pipelining() {
		t.Fatal("PIPELINING announced after login not picked up")
	}
	if d, ok := s.c.Caps().Expire(); !ok || d != 30 {
		t.Fatalf("Expire = %d, %v", d, ok)
	}
	s.done()
}

func TestAuthEmptyInitialResponse(t *testing.T) {
	// RFC 5034 §4: an empty initial response is sent as "=".
	s := start(t, plain, greetCapa+`
		C: AUTH X-EMPTY =
		S: +OK`)
	if err := s.c.begin(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := s.c.sasl(context.Background(), "X-EMPTY", []byte{}, true, nil)
	s.c.end()
	if err != nil {
		t.Fatal(err)
	}
	s.done()
}

func TestAuthFailures(t *testing.T) {
	tests := []struct {
		name, mech, secret string
		script             string
		cmd, code          string
		temporary          bool
	}{
		{
			name: "pass rejected", mech: "user", secret: "wrong",
			script: `
				C: USER tim
				S: +OK
				C: PASS wrong
				S: -ERR [AUTH] Authentication failed.`,
			cmd: "PASS", code: "AUTH",
		},
		{
			name: "user rejected", mech: "user", secret: "s3cr3t-user",
			script: `
				C: USER tim
				S: -ERR [SYS/PERM] no such mailbox`,
			cmd: "USER", code: "SYS/PERM",
		},
		{
			name: "maildrop in use", mech: "apop", secret: "tanstaaf",
			script: `
				C: APOP tim c4c9334bac560ecc979e58001b3e22fb
				S: -ERR [IN-USE] Mailbox is locked by another POP3 session`,
			cmd: "APOP", code: "IN-USE", temporary: true,
		},
		{
			name: "login delay", mech: "plain", secret: "tanstaaf",
			script: `
				C: AUTH PLAIN AHRpbQB0YW5zdGFhZg==
				S: -ERR [LOGIN-DELAY] wait 5 minutes`,
			cmd: "AUTH", code: "LOGIN-DELAY", temporary: true,
		},
		{
			name: "xoauth2 error challenge answered with an empty line", mech: "xoauth2", secret: "ya29.tok",
			script: `
				C: AUTH XOAUTH2 dXNlcj10aW1AZXhhbXBsZS5vcmcBYXV0aD1CZWFyZXIgeWEyOS50b2sBAQ==
				S: + eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==
				C: 
				S: -ERR [AUTH] Invalid credentials`,
			cmd: "AUTH", code: "AUTH",
		},
		{
			name: "oauthbearer error challenge answered with 0x01", mech: "oauthbearer", secret: "ya29.tok",
			script: `
				C: AUTH OAUTHBEARER bixhPXRpbUBleGFtcGxlLm9yZywBYXV0aD1CZWFyZXIgeWEyOS50b2sBAQ==
				S: + eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==
				C: AQ==
				S: -ERR [SYS/TEMP] try later`,
			cmd: "AUTH", code: "SYS/TEMP", temporary: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user := "tim"
			if strings.HasPrefix(tt.mech, "x") || strings.HasPrefix(tt.mech, "o") {
				user = "tim@example.org"
			}
			s := start(t, plain, greetCapa+tt.script+"\nC: NOOP\nS: +OK")
			err := s.c.Auth(context.Background(), tt.mech, user, tt.secret)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Auth error = %v, want *Error", err)
			}
			if e.Command != tt.cmd || e.Code != tt.code || e.Temporary() != tt.temporary {
				t.Fatalf("got Command %q Code %q Temporary %v, want %q %q %v", e.Command, e.Code, e.Temporary(), tt.cmd, tt.code, tt.temporary)
			}
			if strings.Contains(err.Error(), tt.secret) {
				t.Fatalf("error text %q contains the secret", err)
			}
			// A -ERR does not poison.
			if err := s.c.Noop(context.Background()); err != nil {
				t.Fatalf("Noop after failed auth: %v", err)
			}
			s.done()
		})
	}
}

func TestAuthCancelOnBadChallenge(t *testing.T) {
	// A second challenge to PLAIN makes the client cancel with "*"
	// (RFC 5034 §4); the server answers -ERR and the session goes on.
	s := start(t, plain, greetCapa+`
		C: AUTH PLAIN AHRpbQB0YW5zdGFhZg==
		S: + bW9yZQ==
		C: *
		S: -ERR cancelled
		C: NOOP
		S: +OK`)
	err := s.c.Auth(context.Background(), "plain", "tim", "tanstaaf")
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("Auth = %v, want ErrProtocol", err)
	}
	if err := s.c.Noop(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.done()
}

func TestAutoMechanism(t *testing.T) {
	tests := []struct {
		name  string
		tls   bool
		capa  string // CAPA lines, "-" for no CAPA support
		stamp bool
		want  string // "" for ErrNoMechanism
	}{
		{"tls: PLAIN over CRAM-MD5", true, "USER\nSASL CRAM-MD5 PLAIN LOGIN", true, "plain"},
		{"tls: LOGIN over USER", true, "USER\nSASL LOGIN", true, "login"},
		{"tls: USER over CRAM-MD5 and APOP", true, "USER\nSASL CRAM-MD5", true, "user"},
		{"tls: CRAM-MD5 over APOP", true, "SASL CRAM-MD5", true, "cram-md5"},
		{"tls: APOP only when nothing else", true, "TOP", true, "apop"},
		{"tls: no CAPA means USER", true, "-", true, "user"},
		{"plain: CRAM-MD5 first", false, "USER\nSASL PLAIN CRAM-MD5", true, "cram-md5"},
		{"plain: APOP over PLAIN", false, "USER\nSASL PLAIN", true, "apop"},
		{"plain: PLAIN over USER", false, "USER\nSASL PLAIN", false, "plain"},
		{"plain: USER", false, "USER", false, "user"},
		{"plain: no CAPA, APOP", false, "-", true, "apop"},
		{"nothing offered", false, "TOP", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Client{timestamp: ""}
			if tt.stamp {
				c.timestamp = "<1.2@x>"
			}
			if tt.capa != "-" {
				var lines [][]string
				for _, l := range strings.Split(tt.capa, "\n") {
					lines = append(lines, strings.Fields(l))
				}
				c.caps, c.capaOK = buildCapabilities(lines), true
			}
			if tt.tls {
				c.tls = tlsConnPlaceholder()
			}
			got, err := c.AutoMechanism()
			if tt.want == "" {
				if !errors.Is(err, ErrNoMechanism) {
					t.Fatalf("got %q, %v; want ErrNoMechanism", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestAuthAutoGolden(t *testing.T) {
	// Plaintext by name, everything offered: CRAM-MD5 wins.
	s := start(t, plain, greetCapa+`
		C: AUTH CRAM-MD5
		S: + PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+
		C: dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw
		S: +OK`+capaAfterAuth)
	if err := s.c.Auth(context.Background(), "auto", "tim", "tanstaaftanstaaf"); err != nil {
		t.Fatal(err)
	}
	s.done()
}

func TestAuthInjection(t *testing.T) {
	for _, tc := range []struct{ mech, user, secret string }{
		{"user", "tim\r\nDELE 1", "x"},
		{"user", "tim", "x\r\nDELE 1"},
		{"user", "tim", "x\nQUIT"},
		{"apop", "tim\rx", "x"},
		{"plain", "tim", "a\x00b"},
		{"xoauth2", "tim\n", "token"},
	} {
		// Nothing but the greeting exchange may reach the server.
		s := start(t, plain, greetCapa+"EOF")
		err := s.c.Auth(context.Background(), tc.mech, tc.user, tc.secret)
		if !errors.Is(err, ErrBadArgument) {
			t.Fatalf("%q/%q: Auth = %v, want ErrBadArgument", tc.user, tc.secret, err)
		}
		if strings.Contains(err.Error(), "DELE") || strings.Contains(err.Error(), tc.secret) {
			t.Fatalf("error %q repeats the argument", err)
		}
		s.c.Close()
		s.done()
	}
}

func TestAuthUnknownMechanism(t *testing.T) {
	s := start(t, plain, greetCapa+"EOF")
	if err := s.c.Auth(context.Background(), "gssapi", "tim", "x"); !errors.Is(err, ErrNoMechanism) {
		t.Fatalf("Auth = %v", err)
	}
	s.c.Close()
	s.done()
}

func TestAuthAPOPWithoutTimestamp(t *testing.T) {
	s := start(t, plain, "S: +OK no stamp\nC: CAPA\nS: -ERR\nEOF")
	if err := s.c.Auth(context.Background(), "apop", "tim", "x"); !errors.Is(err, ErrNoMechanism) {
		t.Fatalf("Auth = %v", err)
	}
	s.c.Close()
	s.done()
}
