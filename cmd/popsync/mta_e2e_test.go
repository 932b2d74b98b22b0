package main_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"popsync/fetch/pop3/pop3test"
	"popsync/internal/realtest"
)

// TestEndToEndMTA moves 1,000 messages from a real Dovecot POP3 server
// through popsync into a real Postfix (SMTP) and a second Dovecot (LMTP)
// at once, and checks that each arrives in both mailboxes exactly once,
// byte for byte apart from the receivers' own trace fields, with the
// envelope sender taken from the message's Return-Path.
func TestEndToEndMTA(t *testing.T) {
	realtest.Require(t, "postfix", "dovecot")
	src := realtest.StartDovecot(t, realtest.DovecotOptions{})
	lmtp := realtest.StartDovecot(t, realtest.DovecotOptions{LMTP: true})
	mta := realtest.StartPostfix(t, realtest.PostfixOptions{})

	msgs := pop3test.SampleMessages(1000, 77)
	src.Deliver(t, datas(msgs)...)
	dir := t.TempDir()
	host, port, _ := strings.Cut(src.TLSAddr, ":")
	cfg := fmt.Sprintf(`[state]
path = %q

[[account]]
name = "relay"
host = %q
port = %s
tls_ca_file = %q
user = %q
password = %q
keep = false

  [[account.deliver]]
  smtp = %q
  rcpt = [%q]

  [[account.deliver]]
  lmtp = %q
  rcpt = [%q]
`, filepath.Join(dir, "state.db"), host, port, src.CAFile, src.User, src.Password,
		mta.Addr, mta.Rcpt, lmtp.LMTPAddr, lmtp.User)
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runPopsync(t, "fetch", "-c", path)
	if r.code != 0 || !strings.Contains(r.stderr, "delivered=1000") || !strings.Contains(r.stderr, "deleted=1000") {
		t.Fatalf("fetch: exit %d\n%s", r.code, r.stderr)
	}
	if n := src.Count(t); n != 0 {
		t.Fatalf("source still holds %d messages", n)
	}
	checkRelayed(t, "postfix", msgs, mta.WaitMessages(t, len(msgs), 2*time.Minute))
	checkRelayed(t, "dovecot lmtp", msgs, lmtp.Messages(t))

	// Nothing more on a second run.
	r = runPopsync(t, "fetch", "-c", path)
	if r.code != 0 || !strings.Contains(r.stderr, "new=0") {
		t.Fatalf("second fetch: exit %d\n%s", r.code, r.stderr)
	}
}

var returnPath = regexp.MustCompile(`(?mi)\AReturn-Path:[ \t]*(<[^>\r\n]*>)`)

var messageID = regexp.MustCompile(`(?mi)^Message-ID:.*$`)

// traceField matches the header fields a receiver adds on top.
var traceField = regexp.MustCompile(`(?i)^(Return-Path|Delivered-To|Received|X-Original-To):`)

// checkRelayed asserts got holds each of msgs exactly once: the original
// header fields (less a Return-Path, which the receiver replaces with the
// envelope sender) and body byte for byte, below trace fields only, and
// the envelope sender equal to the original Return-Path.
func checkRelayed(t *testing.T, what string, msgs []pop3test.Message, got [][]byte) {
	t.Helper()
	if len(got) != len(msgs) {
		t.Fatalf("%s holds %d messages, want %d", what, len(got), len(msgs))
	}
	type original struct{ text, returnPath string }
	byID := make(map[string]original, len(msgs)) // Message-ID → original less Return-Path
	for _, m := range msgs {
		s := wantLF(m.Data)
		rp := ""
		if sub := returnPath.FindStringSubmatch(s); sub != nil {
			rp = sub[1]
			s = s[strings.IndexByte(s, '\n')+1:]
		}
		byID[messageID.FindString(s)] = original{s, rp}
	}
	seen := make(map[string]bool, len(msgs))
	for i, g := range got {
		s := string(bytes.ReplaceAll(g, []byte("\r\n"), []byte("\n")))
		sub := returnPath.FindStringSubmatch(s)
		if sub == nil {
			t.Fatalf("%s message %d has no Return-Path", what, i)
		}
		envelope := sub[1]
		id := messageID.FindString(s)
		o, ok := byID[id]
		if !ok || !strings.HasSuffix(s, o.text) {
			t.Fatalf("%s message %d is not byte for byte one of the originals:\n%.600s", what, i, s)
		}
		// Above the original: trace fields only.
		for _, line := range strings.SplitAfter(strings.TrimSuffix(s, o.text), "\n") {
			if line != "" && !traceField.MatchString(line) && !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "\t") {
				t.Fatalf("%s message %d: field %q added above the original", what, i, line)
			}
		}
		if seen[id] {
			t.Fatalf("%s holds %s twice", what, id)
		}
		seen[id] = true
		rp := o.returnPath
		if rp != "" && envelope != rp {
			t.Fatalf("%s: envelope sender %s, want the message's Return-Path %s", what, envelope, rp)
		}
	}
}
