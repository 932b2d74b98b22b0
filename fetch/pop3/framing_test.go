package pop3

import (
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
)

// forged is what a sender puts into a message to smuggle a reply past a
// server that stuffs dots only after CRLF and passes bare LF through.
const forged = "+OK\r\nFrom: ceo@victim.example\r\nSubject: wire the money\r\n\r\npay now\r\n"

// retrAll runs RetrEach over ids and returns the bodies read, in order.
func retrAll(c *Client, ids []int) ([]string, error) {
	var out []string
	err := c.RetrEach(bg, ids, func(id int, r io.Reader, err error) error {
		if err != nil {
			return err
		}
		b, err := readAll(r)
		out = append(out, string(b))
		return err
	})
	return out, err
}

func TestBareLFTerminatorIsData(t *testing.T) {
	for _, trick := range []string{"\n.\n", "\n.\r\n", "\r\n.\n"} {
		t.Run(strconv.Quote(trick), func(t *testing.T) {
			// The wire as a CRLF-only stuffer sends it: for "\r\n.\n" it
			// stuffs the dot, the others pass through as they are.
			body1 := "Subject: one\r\n\r\nhello" + trick + forged
			wire1 := body1
			if strings.HasPrefix(trick, "\r\n") {
				wire1 = strings.Replace(body1, "\r\n.", "\r\n..", 1)
			}
			body2 := "Subject: two\r\n\r\nsecond\r\n"
			// Lockstep (no PIPELINING): had the client ended message 1
			// at the trick, it would take the forged "+OK" as the reply
			// to RETR 2 before sending it, and the script would fail.
			s := start(t, plain, dovecotStart+`
				C: RETR 1
				R: `+strconv.Quote("+OK\r\n"+wire1+"\r\n.\r\n")+`
				C: RETR 2
				R: `+strconv.Quote("+OK\r\n"+body2+".\r\n")+`
				C: NOOP
				S: +OK`)
			got, err := retrAll(s.c, []int{1, 2})
			if err != nil {
				s.fatalf("RetrEach: %v", err)
			}
			if len(got) != 2 || got[0] != body1+"\r\n" || got[1] != body2 {
				s.fatalf("bodies %q, want %q and %q", got, body1+"\r\n", body2)
			}
			if err := s.c.Noop(bg); err != nil {
				s.fatalf("NOOP after the bodies: %v", err)
			}
			s.done()
		})
	}
}

func TestBareLFInListingPoisons(t *testing.T) {
	t.Run("UIDL", func(t *testing.T) {
		s := start(t, plain, dovecotStart+`
			C: UIDL
			R: "+OK\r\n1 a\n.\n+OK\r\n2 b\r\n.\r\n"
			EOF`)
		if _, err := s.c.UIDL(bg); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "bare LF") {
			s.fatalf("UIDL = %v, want ErrProtocol naming the bare LF", err)
		}
		if err := s.c.Quit(bg); !errors.Is(err, ErrPoisoned) {
			s.fatalf("Quit = %v, want ErrPoisoned", err)
		}
		s.wait() // the fake may be cut short
	})
	t.Run("LIST", func(t *testing.T) {
		s := start(t, plain, dovecotStart+`
			C: LIST
			R: "+OK\r\n1 10\n.\r\n"
			EOF`)
		if _, err := s.c.List(bg); !errors.Is(err, ErrProtocol) {
			s.fatalf("List = %v, want ErrProtocol", err)
		}
		if err := s.c.Quit(bg); !errors.Is(err, ErrPoisoned) {
			s.fatalf("Quit = %v, want ErrPoisoned", err)
		}
		s.wait()
	})
	t.Run("CAPA", func(t *testing.T) {
		s := startNoCheck(t, plain, `
			S: +OK ready
			C: CAPA
			R: "+OK\r\nTOP\n.\n+OK\r\nUIDL\r\n.\r\n"
			EOF`)
		if !errors.Is(s.err, ErrProtocol) {
			s.fatalf("NewClient = %v, want ErrProtocol", s.err)
		}
		s.wait()
	})
	t.Run("status line", func(t *testing.T) {
		s := start(t, plain, dovecotStart+`
			C: NOOP
			R: "+OK\n"
			EOF`)
		if err := s.c.Noop(bg); !errors.Is(err, ErrProtocol) {
			s.fatalf("Noop = %v, want ErrProtocol", err)
		}
		s.done()
	})
}

// A server whose own greeting ends in bare LF gets LF line endings for
// the whole session, terminators included.
func TestLFServerSession(t *testing.T) {
	s := start(t, plain, `
		R: "+OK old server\n"
		C: CAPA
		R: "+OK\nUIDL\n.\n"
		C: UIDL
		R: "+OK\n1 a\n2 b\r\n.\n"
		C: RETR 1
		R: "+OK\nSubject: x\n\n..dot\n.\n"
		C: NOOP
		S: +OK`)
	if !s.c.Caps().Has("UIDL") {
		s.fatalf("caps %v", s.c.Caps())
	}
	uids, err := s.c.UIDL(bg)
	if err != nil || len(uids) != 2 {
		s.fatalf("UIDL = %v, %v", uids, err)
	}
	r, err := s.c.Retr(bg, 1)
	if err != nil {
		s.fatalf("Retr: %v", err)
	}
	b, err := readAll(r)
	if err != nil || string(b) != "Subject: x\n\n.dot\n" {
		s.fatalf("body %q, %v", b, err)
	}
	if err := s.c.Noop(bg); err != nil {
		s.fatalf("Noop: %v", err)
	}
	s.done()
}

// The line ending seen in the clear does not decide the framing of the
// encrypted session: the first reply over TLS does.
func TestSTLSDecidesLineEndingsAgain(t *testing.T) {
	cert := newTestCert(t, certOpts{hosts: []string{tlsHost}})
	opts := Options{Security: SecuritySTARTTLS, ServerName: tlsHost, CAFile: cert.caFile(t)}
	s := startTLS(t, cert, opts, `
		R: "+OK ready\n"
		C: CAPA
		R: "+OK\nSTLS\n.\n"
		C: STLS
		R: "+OK go\n"
		TLS
		C: CAPA
		S: +OK
		S: USER
		S: .
		C: RETR 1
		R: "+OK\r\nhi\n.\n+OK\r\nforged\r\n.\r\n"
		C: NOOP
		S: +OK`)
	if s.err != nil {
		s.fatalf("NewClient: %v", s.err)
	}
	r, err := s.c.Retr(bg, 1)
	if err != nil {
		s.fatalf("Retr: %v", err)
	}
	b, err := readAll(r)
	if err != nil || string(b) != "hi\n.\n+OK\r\nforged\r\n" {
		s.fatalf("body %q, %v", b, err)
	}
	if err := s.c.Noop(bg); err != nil {
		s.fatalf("Noop: %v", err)
	}
	s.done()
}

func TestRetrEachListedSizeChecks(t *testing.T) {
	short := strings.Repeat("x", 98) + "\r\n" // 100 octets
	for _, tt := range []struct {
		name   string
		status string
		listed int64
		ok     bool
	}{
		{"far shorter than LIST", "+OK", 10000, false},
		{"announced octets disagree", "+OK 101 octets", 100, false},
		{"announced octets agree", "+OK 100 octets", 100, true},
		{"LF counted as CRLF", "+OK", 200, true},
		{"within the slack", "+OK message follows", 2 * (100 + SizeSlack), true},
		{"just past the slack", "+OK", 2*(100+SizeSlack) + 2, false},
		{"unknown size", "+OK 7 octets", -1, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			end := "C: NOOP\nS: +OK"
			if !tt.ok {
				end = "EOF"
			}
			s := start(t, plain, dovecotStart+`
				C: RETR 1
				R: `+strconv.Quote(tt.status+"\r\n"+short+".\r\n")+`
				`+end)
			var got string
			var readErr error
			called := false
			err := s.c.RetrEachListed(bg, []MessageInfo{{ID: 1, Size: tt.listed}}, func(id int, r io.Reader, err error) error {
				called = true
				if err != nil {
					return err
				}
				b, err := io.ReadAll(r)
				got, readErr = string(b), err
				return err
			})
			if tt.ok {
				if err != nil || got != short {
					s.fatalf("RetrEachListed = %v, body %q", err, got)
				}
				if err := s.c.Noop(bg); err != nil {
					s.fatalf("Noop: %v", err)
				}
				s.done()
				return
			}
			if !errors.Is(err, ErrSizeMismatch) {
				s.fatalf("RetrEachListed = %v, want ErrSizeMismatch", err)
			}
			if strings.Contains(tt.status, "octets") && called {
				s.fatalf("fn called for a reply whose octet count disagrees with LIST")
			}
			if called && !errors.Is(readErr, ErrSizeMismatch) {
				s.fatalf("reading the body ended with %v, want ErrSizeMismatch", readErr)
			}
			// Poisoned: QUIT is not sent (the script expects EOF).
			if err := s.c.Quit(bg); !errors.Is(err, ErrPoisoned) {
				s.fatalf("Quit = %v, want ErrPoisoned", err)
			}
			s.wait() // the fake may be cut short
		})
	}
}
