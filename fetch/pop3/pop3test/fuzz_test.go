package pop3test

import (
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// FuzzSession feeds arbitrary client bytes to a session: the server must
// neither panic nor hang, and must never commit without a QUIT.
func FuzzSession(f *testing.F) {
	seeds := []string{
		"CAPA\r\nUSER alice\r\nPASS secret pass\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 1\r\nDELE 1\r\nRSET\r\nNOOP\r\nQUIT\r\n",
		"USER alice\r\nPASS secret pass\r\nDELE 1\r\nDELE 2\r\n",
		"AUTH PLAIN AGFsaWNlAHNlY3JldCBwYXNz\r\nRETR 3\r\nQUIT\r\n",
		"AUTH LOGIN\r\nYWxpY2U=\r\n*\r\nAUTH CRAM-MD5\r\nYWxpY2UgMDA=\r\n",
		"AUTH XOAUTH2\r\n\r\nAUTH OAUTHBEARER bixhPWFsaWNlLAFhdXRoPUJlYXJlciB0b2stMTIzAQE=\r\nQUIT\r\n",
		"APOP alice 0123456789abcdef0123456789abcdef\r\nSTLS\r\n\x16\x03\x01\x00\x05hello",
		"RETR 99999999999\r\nTOP 1 -1\r\nLIST 0\r\nuidl 1 2\r\n\n\r\n \r\n",
		"USER alice\nPASS secret pass\nRETR 2\nQUIT\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	cert, _, err := SelfSigned()
	if err != nil {
		f.Fatal(err)
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	f.Fuzz(func(t *testing.T, input []byte) {
		cfg := baseConfig()
		cfg.TLS = tlsCfg
		cfg.Caps.APOP = true
		cfg.IdleTimeout = 200 * time.Millisecond
		srv := NewServer(cfg, threeMessages()...)
		defer srv.Close()
		a, b := net.Pipe()
		served := make(chan struct{})
		go func() {
			srv.ServeConn(a)
			close(served)
		}()
		drained := make(chan struct{})
		go func() {
			_, _ = io.Copy(io.Discard, b) // whatever the server sends
			close(drained)
		}()
		// The server may hang up before it read everything.
		_ = b.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = b.Write(input)
		b.Close()
		<-served
		<-drained
		quit := false
		for _, l := range srv.Transcripts()[0].Lines {
			quit = quit || strings.EqualFold(l, "QUIT")
		}
		if st := srv.Stats(); st.Commits > 0 && !quit {
			t.Fatalf("committed without QUIT: %+v", st)
		}
	})
}
