package deliver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"popsync/deliver"
	"popsync/deliver/delivertest"
	"popsync/internal/realtest"
)

// realMessage is message i of a real-server test: popsync's Received
// field, then (for most) a Return-Path with the envelope sender to use,
// then a body with dot lines and 8-bit text. sender is the expected
// envelope sender; "" is the null sender.
func realMessage(i int, from string) (msg []byte, sender string) {
	base := delivertest.Message(i, 300+(i*797)%9000)
	rcv, rest, _ := bytes.Cut(base, []byte("\r\n"))
	var rp string
	switch i % 4 {
	case 0:
		sender = fmt.Sprintf("bounce-%d@example.net", i)
		rp = "Return-Path: <" + sender + ">\r\n"
	case 1:
		rp = "Return-Path: <>\r\n"
	case 2:
		sender = from // no Return-Path
	case 3:
		sender = fmt.Sprintf("folded-%d@example.net", i)
		rp = "Return-Path:\r\n <" + sender + ">\r\n"
	}
	var b bytes.Buffer
	b.Write(rcv)
	b.WriteString("\r\n")
	b.WriteString(rp)
	b.Write(rest)
	fmt.Fprintf(&b, ".\r\n..two dots\r\nnon-ASCII: Grüße %d\r\n", i)
	return b.Bytes(), sender
}

// stripTrace removes the trace fields a receiving MTA put on top: at most
// one each of names, in any order, stopping at the first other field. It
// returns them by lower-case name.
func stripTrace(stored []byte, names ...string) (map[string]string, []byte) {
	want := map[string]bool{}
	for _, n := range names {
		want[strings.ToLower(n)] = true
	}
	got := map[string]string{}
	for {
		name, _, ok := bytes.Cut(stored, []byte(":"))
		key := strings.ToLower(string(name))
		if !ok || !want[key] || got[key] != "" || bytes.ContainsAny(name, " \t\n") {
			return got, stored
		}
		// The field and its continuation lines.
		end := 0
		for {
			i := bytes.IndexByte(stored[end:], '\n')
			if i < 0 {
				return got, stored
			}
			end += i + 1
			if end >= len(stored) || stored[end] != ' ' && stored[end] != '\t' {
				break
			}
		}
		got[key] = strings.TrimSpace(string(stored[len(name)+1 : end]))
		stored = stored[end:]
	}
}

// dropField removes the first field called name (with its continuation
// lines) from msg, which has LF line endings.
func dropField(msg []byte, name string) []byte {
	prefix := []byte("\n" + name + ":")
	i := bytes.Index(msg, prefix)
	if i < 0 {
		return msg
	}
	end := i + 1
	for {
		j := bytes.IndexByte(msg[end:], '\n')
		end += j + 1
		if j < 0 || end >= len(msg) || msg[end] != ' ' && msg[end] != '\t' {
			break
		}
	}
	return append(bytes.Clone(msg[:i+1]), msg[end:]...)
}

var messageID = regexp.MustCompile(`(?m)^Message-ID: <(\d+)@example\.net>`)

// checkDelivered compares what the real server stored (LF line endings,
// trace fields on top) with what was sent, by Message-ID: every message
// once, byte for byte apart from the trace fields, with the right
// envelope sender in Return-Path.
func checkDelivered(t *testing.T, stored [][]byte, sent map[int][]byte, senders map[int]string, dropsReturnPath bool, trace ...string) {
	t.Helper()
	if len(stored) != len(sent) {
		t.Errorf("%d messages stored, %d sent", len(stored), len(sent))
	}
	seen := map[int]bool{}
	for _, s := range stored {
		fields, rest := stripTrace(s, trace...)
		m := messageID.FindSubmatch(rest)
		if m == nil {
			t.Errorf("stored message without a known Message-ID:\n%.300s", s)
			continue
		}
		var i int
		fmt.Sscan(string(m[1]), &i)
		if seen[i] {
			t.Errorf("message %d stored twice", i)
		}
		seen[i] = true
		want := bytes.ReplaceAll(sent[i], []byte("\r\n"), []byte("\n"))
		if dropsReturnPath {
			want = dropField(want, "Return-Path")
		}
		if !bytes.Equal(rest, want) {
			t.Errorf("message %d differs apart from %v:\n got %.400q\nwant %.400q", i, trace, rest, want)
		}
		if rp := fields["return-path"]; rp != "<"+senders[i]+">" {
			t.Errorf("message %d: Return-Path %s, want <%s>", i, rp, senders[i])
		}
	}
}

// TestSMTPPostfix sends 200 messages through one SMTP target into a real
// Postfix, which delivers them to a Maildir.
func TestSMTPPostfix(t *testing.T) {
	p := realtest.StartPostfix(t, realtest.PostfixOptions{})
	const from = "fallback@example.test"
	tg := newSMTP(t, deliver.SMTPOptions{Addr: p.Addr, Rcpt: []string{p.Rcpt}, From: from})
	if err := tg.Check(context.Background()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	const n = 200
	sent, senders := map[int][]byte{}, map[int]string{}
	for i := range n {
		msg, sender := realMessage(i, from)
		sent[i], senders[i] = msg, sender
		if err := send(tg, msg, deliver.Meta{Account: "real", UIDL: fmt.Sprint(i), Size: int64(len(msg))}); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	stored := p.WaitMessages(t, n, 2*time.Minute)
	// Postfix's cleanup drops the Return-Path fields a message brings
	// (its default message_drop_headers, as RFC 5321 §4.4 allows) and
	// writes its own from MAIL FROM, which is what shows the envelope
	// sender was kept.
	checkDelivered(t, stored, sent, senders, true, "Return-Path", "X-Original-To", "Delivered-To", "Received")

	log := p.Log(t)
	// One session for all: Postfix logs each connection once (the
	// "disconnect from" lines do not match the space before "connect").
	if c := strings.Count(log, " connect from "); c != 2 {
		t.Errorf("%d SMTP connections for %d messages and a Check, want 2", c, n)
	}

	// An unknown recipient is refused at RCPT: permanent, nothing sent.
	bad := newSMTP(t, deliver.SMTPOptions{Addr: p.Addr, Rcpt: []string{"nobody@" + realtest.PostfixDomain}})
	err := send(bad, msg("", "x\r\n"), deliver.Meta{})
	var de *deliver.DeliveryError
	if !errors.As(err, &de) || de.Temporary || de.Stage != deliver.StageRcpt || de.Code != 550 {
		t.Errorf("unknown recipient: %v, want a permanent 550 at RCPT", err)
	}
}

// TestLMTPDovecot delivers 50 messages over LMTP into a real Dovecot and
// reads them back from its mailbox.
func TestLMTPDovecot(t *testing.T) {
	d := realtest.StartDovecot(t, realtest.DovecotOptions{LMTP: true})
	const from = "fallback@example.test"
	tg := newLMTP(t, deliver.SMTPOptions{Addr: d.LMTPAddr, Rcpt: []string{d.User}, From: from})
	if err := tg.Check(context.Background()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	const n = 50
	sent, senders := map[int][]byte{}, map[int]string{}
	for i := range n {
		msg, sender := realMessage(i, from)
		sent[i], senders[i] = msg, sender
		if err := send(tg, msg, deliver.Meta{Account: "real", UIDL: fmt.Sprint(i)}); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	checkDelivered(t, d.Messages(t), sent, senders, false, "Return-Path", "Delivered-To", "Received")

	// A recipient Dovecot does not know: refused for that recipient,
	// permanently, and nobody gets the message.
	before := d.Count(t)
	two := newLMTP(t, deliver.SMTPOptions{Addr: d.LMTPAddr, Rcpt: []string{d.User, "nobody@example.test"}})
	err := send(two, msg("", "x\r\n"), deliver.Meta{})
	var de *deliver.DeliveryError
	if !errors.As(err, &de) || de.Temporary || len(de.Rcpts) != 2 || de.Rcpts[0].Code != 250 || de.Rcpts[1].Code/100 != 5 {
		t.Fatalf("unknown recipient: %v (%+v), want a permanent per-recipient refusal", err, de)
	}
	if !strings.Contains(err.Error(), "<nobody@example.test> 550") {
		t.Errorf("error %q does not name the refused recipient", err)
	}
	if got := d.Count(t); got != before {
		t.Errorf("%d messages stored after a refused recipient, want %d", got, before)
	}
}
