package realtest

import (
	"bytes"
	"errors"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"strings"
	"testing"
	"time"
)

// TestPostfix sends one message with net/smtp and finds it in the
// Maildir, with the envelope sender as Return-Path and the message
// otherwise as sent; an unknown recipient is refused with 550.
func TestPostfix(t *testing.T) {
	p := StartPostfix(t, PostfixOptions{})
	if !strings.HasPrefix(p.Addr, "127.0.0.1:") || p.Rcpt != "me@"+PostfixDomain {
		t.Fatalf("Addr %q, Rcpt %q", p.Addr, p.Rcpt)
	}
	body := "From: a@example.net\r\nSubject: realtest\r\nMessage-ID: <1@realtest>\r\n\r\nhello\r\n.leading dot\r\n"
	if err := smtp.SendMail(p.Addr, nil, "sender@example.net", []string{p.Rcpt}, []byte(body)); err != nil {
		t.Fatalf("sending: %v", err)
	}
	msgs := p.WaitMessages(t, 1, 30*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	got := string(msgs[0])
	if !strings.HasPrefix(got, "Return-Path: <sender@example.net>\n") {
		t.Errorf("no Return-Path on top:\n%s", got)
	}
	want := strings.ReplaceAll(body, "\r\n", "\n")
	if !strings.HasSuffix(got, want) {
		t.Errorf("message changed:\n%s\nwant it to end with:\n%s", got, want)
	}
	for _, added := range []string{"Delivered-To: me@popsync.test\n", "Received: from "} {
		if !strings.Contains(got, added) {
			t.Errorf("no %q trace field:\n%s", added, got)
		}
	}

	err := smtp.SendMail(p.Addr, nil, "sender@example.net", []string{"nobody@" + PostfixDomain}, []byte(body))
	var te *textproto.Error
	if !errors.As(err, &te) || te.Code != 550 {
		t.Errorf("unknown recipient: %v, want 550", err)
	}

	dir := p.Dir
	p.Stop(t)
	p.Stop(t)
	if c, err := net.Dial("tcp", p.Addr); err == nil {
		c.Close()
		t.Error("postfix still listens after Stop")
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("instance directory gone before cleanup: %v", err)
	}
}

// TestPostfixConfig: extra main.cf settings take effect.
func TestPostfixConfig(t *testing.T) {
	p := StartPostfix(t, PostfixOptions{Local: "other", Config: "message_size_limit = 2000"})
	if p.Rcpt != "other@"+PostfixDomain {
		t.Fatalf("Rcpt %q", p.Rcpt)
	}
	c, err := smtp.Dial(p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, size := c.Extension("SIZE"); !ok || size != "2000" {
		t.Errorf("SIZE %q, want 2000", size)
	}
	big := bytes.Repeat([]byte("0123456789\r\n"), 500)
	err = smtp.SendMail(p.Addr, nil, "", []string{p.Rcpt}, big)
	var te *textproto.Error
	if !errors.As(err, &te) || te.Code != 552 {
		t.Errorf("message over the limit: %v, want 552", err)
	}
}
