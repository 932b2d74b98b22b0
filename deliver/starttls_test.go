package deliver_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"popsync/deliver"
)

// scriptedSTARTTLS serves one connection: a greeting, an EHLO reply
// offering STARTTLS (plus extra, sent along with it), the reply to
// STARTTLS (afterTLS), then a TLS handshake and a minimal session if the
// client goes on. It returns the address and a channel that yields
// whether the handshake completed.
func scriptedSTARTTLS(t *testing.T, cert tls.Certificate, extra, afterTLS string) (string, <-chan bool) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	shook := make(chan bool, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			shook <- false
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		br := bufio.NewReader(c)
		line := func(r *bufio.Reader) string { s, _ := r.ReadString('\n'); return s }
		c.Write([]byte("220 mta.test ESMTP\r\n"))
		if !strings.HasPrefix(line(br), "EHLO") {
			shook <- false
			return
		}
		c.Write([]byte("250-mta.test\r\n250 STARTTLS\r\n" + extra))
		if !strings.HasPrefix(line(br), "STARTTLS") {
			shook <- false
			return
		}
		c.Write([]byte(afterTLS))
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
		if err := tc.Handshake(); err != nil {
			shook <- false
			return
		}
		shook <- true
		tr := bufio.NewReader(tc)
		for {
			l := line(tr)
			switch {
			case l == "":
				return
			case strings.HasPrefix(l, "EHLO"):
				tc.Write([]byte("250 mta.test\r\n"))
			case strings.HasPrefix(l, "QUIT"):
				tc.Write([]byte("221 bye\r\n"))
				return
			default:
				tc.Write([]byte("502 no\r\n"))
			}
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	return l.Addr().String(), shook
}

// TestSMTPSTARTTLSInjection: plaintext that the server sends after its 220
// to STARTTLS, or a 220 sent before the command, is refused before any
// TLS session is set up; a well-formed reply, multi-line too, passes.
func TestSMTPSTARTTLSInjection(t *testing.T) {
	cert, pool := selfSigned(t)
	for _, tc := range []struct {
		name, extra, afterTLS string
		refused               bool
	}{
		{"clean", "", "220 go ahead\r\n", false},
		{"multi-line 220", "", "220-go\r\n220 ahead\r\n", false},
		{"bytes after 220", "", "220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n", true},
		{"one byte after 220", "", "220 go ahead\r\nX", true},
		{"220 before the command", "220 go ahead\r\n", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, shook := scriptedSTARTTLS(t, cert, tc.extra, tc.afterTLS)
			tg := newSMTP(t, deliver.SMTPOptions{Addr: addr, TLS: deliver.TLSStartTLS,
				TLSConfig: &tls.Config{RootCAs: pool, ServerName: "mta.test"}, CommandTimeout: 20 * time.Second})
			err := tg.Check(context.Background())
			if !tc.refused {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				if !<-shook {
					t.Error("no TLS handshake")
				}
				return
			}
			if !errors.Is(err, deliver.ErrPlaintextInjection) {
				t.Fatalf("Check: %v; want ErrPlaintextInjection", err)
			}
			var de *deliver.DeliveryError
			if !errors.As(err, &de) || de.Stage != deliver.StageHello {
				t.Errorf("error %v: want a *DeliveryError at stage hello", err)
			}
			if <-shook {
				t.Error("the TLS handshake completed after injected plaintext")
			}
			t.Logf("error: %v", err)
		})
	}
}
