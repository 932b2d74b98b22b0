package main_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"popsync/fetch/pop3/pop3test"
	"popsync/internal/realtest"
)

// imapMailbox is the mailbox of the Dovecot user that the IMAP target
// appends to; the user's INBOX is the POP3 side.
const imapMailbox = "Popsync"

// imapSettings are the keys writeIMAPConfig leaves at their defaults
// when zero: the IMAP target's connections and the account's timeout
// (which bounds how long a message waits for a late commit).
type imapSettings struct {
	connections int
	timeout     time.Duration
}

// writeIMAPConfig writes a config with one account: Dovecot's POP3 INBOX
// into mailbox over IMAP, and into maildir too unless it is "".
func writeIMAPConfig(t *testing.T, dir string, d *realtest.Dovecot, keep bool, mailbox, maildir string, set ...imapSettings) string {
	t.Helper()
	var cs imapSettings
	if len(set) > 0 {
		cs = set[0]
	}
	timeout := ""
	if cs.timeout > 0 {
		timeout = fmt.Sprintf("timeout = %q\n", cs.timeout.String())
	}
	host, port, _ := net.SplitHostPort(d.TLSAddr)
	ihost, iport, _ := net.SplitHostPort(d.IMAPTLSAddr)
	var b strings.Builder
	fmt.Fprintf(&b, `[state]
path = %q

[[account]]
name = "main"
host = %q
port = %s
tls_ca_file = %q
user = %q
password = %q
keep = %v
%s
  [[account.deliver]]
  imap = "%s:%s"
  tls_ca_file = %q
  user = %q
  password = %q
  mailbox = %q
`, filepath.Join(dir, "state.db"), host, port, d.CAFile, d.User, d.Password, keep, timeout,
		ihost, iport, d.CAFile, d.User, d.Password, mailbox)
	if cs.connections > 0 {
		fmt.Fprintf(&b, "  connections = %d\n", cs.connections)
	}
	if maildir != "" {
		fmt.Fprintf(&b, "\n  [[account.deliver]]\n  maildir = %q\n", maildir)
	}
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// imapCorpus is every kind of sample message (dot lines, a long line, no
// final line ending, 8-bit text, MIME parts, a large attachment) and
// messages with bare LF and lone CRs, as a server may hold them.
func imapCorpus() [][]byte {
	msgs := datas(pop3test.SampleMessages(21, 17))
	msgs = append(msgs, pop3test.LargeMessage(3<<20, 5).Data)
	return append(msgs,
		[]byte("From: Alice <alice@example.org>\nSubject: LF line endings\nDate: Mon, 6 Jan 2025 09:00:00 +0000\n\nStored with LF.\n.\n..two dots\n.\n"),
		[]byte("From: Bob <bob@example.org>\nSubject: LF, no final newline\n\nfirst line\n.last line, no newline"),
		[]byte("From: Carol <carol@example.org>\r\nSubject: mixed endings\r\n\nCRLF header, LF body\nline\r\nend\n"),
		[]byte("From: Dan <dan@example.org>\r\nSubject: a lone CR\r\n\r\nbefore\rafter\r\nCR CR LF\r\r\nend\r\n"),
	)
}

// TestFetchIntoIMAPByteExact runs the built binary over the corpus with
// two targets, Dovecot IMAP and a Maildir: every message read back with
// UID FETCH BODY.PEEK[] is, after its X-Popsync-Id field, what the
// Maildir holds with LF turned into CRLF: the same Received field, the
// same bytes. Dovecot stores with CRLF (mail_save_crlf) so that it hands
// back exactly what it was given.
func TestFetchIntoIMAPByteExact(t *testing.T) {
	d := realtest.StartDovecot(t, realtest.DovecotOptions{IMAP: true, Config: "mail_save_crlf = yes"})
	corpus := imapCorpus()
	d.Deliver(t, corpus...)
	dir := t.TempDir()
	maildir := filepath.Join(dir, "Maildir")
	cfg := writeIMAPConfig(t, dir, d, true, imapMailbox, maildir)
	if r := runPopsync(t, "fetch", "-c", cfg); r.code != 0 {
		t.Fatalf("popsync fetch: exit %d\n%s", r.code, r.stderr)
	}
	// The Maildir files with their Received field, as CRLF.
	files := map[string]bool{}
	for _, sub := range []string{"new", "cur"} {
		ents, _ := os.ReadDir(filepath.Join(maildir, sub))
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(maildir, sub, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			files[strings.ReplaceAll(string(b), "\n", "\r\n")] = true
		}
	}
	if len(files) != len(corpus) {
		t.Fatalf("Maildir holds %d distinct messages, want %d", len(files), len(corpus))
	}
	stored, _ := d.IMAPMessages(t, imapMailbox)
	if len(stored) != len(corpus) {
		t.Fatalf("IMAP mailbox holds %d messages, want %d", len(stored), len(corpus))
	}
	for _, m := range stored {
		tok, rest, ok := bytes.Cut(m.Body, []byte("\r\n"))
		if !ok || !bytes.HasPrefix(tok, []byte("X-Popsync-Id: ")) {
			t.Fatalf("UID %d does not start with its token field: %.80q", m.UID, m.Body)
		}
		if !files[string(rest)] {
			t.Errorf("UID %d differs from every Maildir copy: %.300q", m.UID, rest)
		}
		delete(files, string(rest))
	}
}

// TestKillNineIMAP is the kill -9 loop of the Maildir target for the IMAP
// one: Dovecot is both the POP3 server (the user's INBOX) and the IMAP
// server (its mailbox Popsync), with 1,000 messages, refilled whenever
// all were delivered. `popsync fetch` is killed with SIGKILL at a moment
// drawn uniformly over the expected length of the run, with keep = false
// and keep = true. After every kill and at the end the IMAP mailbox is
// read (by Message-ID): none of the messages may be there twice, and with
// keep = false none may be gone from the server without being there. A
// last uninterrupted run must complete the job, byte for byte.
//
// It runs with one connection and with four: with several, a killed run
// leaves more APPENDs whose literal Dovecot received and stores only
// after the next run looked for them; such a message must wait (see
// fetch's resolveIntents), not be appended again. The account's timeout,
// which is how long the IMAP target lets a message wait for a late
// commit, is short here, so that messages do not wait for long; the
// final run waits that long first, as a later poll would.
//
// The default is a few kills per mode, which keeps the test to about a
// minute; POPSYNC_IMAP_CRASH_RUNS sets the number (the bar is
// 300). -run 'KillNineIMAP/connections=4' picks one connection count.
func TestKillNineIMAP(t *testing.T) {
	kills := 5
	if n, err := strconv.Atoi(os.Getenv("POPSYNC_IMAP_CRASH_RUNS")); err == nil && n > 0 {
		kills = n
	}
	for _, conns := range []int{1, 4} {
		t.Run(fmt.Sprintf("connections=%d", conns), func(t *testing.T) {
			for _, keep := range []bool{false, true} {
				t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) {
					imapCrashRuns(t, kills, keep, imapSettings{connections: conns, timeout: imapCrashTimeout})
				})
			}
		})
	}
}

// imapCrashTimeout is the account's timeout in the kill loop, and so how
// long a message may wait for Dovecot to commit a killed run's APPEND.
// It is also the bound of every wait for either server, so it must not
// be so short that a loaded machine trips it.
const imapCrashTimeout = 10 * time.Second

// imapCrashMessages is the size of the mailbox, and of each refill.
const imapCrashMessages = 1000

func imapCrashRuns(t *testing.T, kills int, keep bool, set imapSettings) {
	d := realtest.StartDovecot(t, realtest.DovecotOptions{IMAP: true, Config: "mail_max_userip_connections = 100000"})
	dir := t.TempDir()
	cfg := writeIMAPConfig(t, dir, d, keep, imapMailbox, "", set)

	want := make(map[string][]byte) // Message-ID → the message as the server has it
	batch := 0
	refill := func() {
		batch++
		more := datas(pop3test.SampleMessages(imapCrashMessages, int64(5000+batch)))
		for _, m := range more {
			id := headerMessageID(m)
			if id == "" || want[id] != nil {
				t.Fatalf("sample message without a unique Message-ID: %q", id)
			}
			want[id] = m
		}
		d.Deliver(t, more...)
	}
	refill()

	// An uninterrupted poll of the full mailbox into another mailbox, and
	// one that finds nothing, set the range the kills are spread over.
	probeDir := t.TempDir()
	probe := writeIMAPConfig(t, probeDir, d, true, "Probe", "", set)
	k := newKiller(t, cfg, probe, imapCrashMessages, 3)
	t.Logf("keep=%v: full poll of %d into IMAP %v, idle poll %v; seed %d", keep, imapCrashMessages, k.full, k.idle, k.seed)

	lost := make(map[string]bool)
	dup := make(map[string]bool)
	delivered := 0
	for k.killed < kills {
		if delivered == len(want) {
			refill()
		}
		k.run(len(want) - delivered)

		have := imapMessageIDs(t, d, imapMailbox)
		delivered = 0
		for id, n := range have {
			if want[id] == nil {
				t.Fatalf("after kill %d: the mailbox holds a message that is none of the originals (%q)", k.killed, id)
			}
			if n > 1 {
				dup[id] = true
			}
			delivered++
		}
		if !keep {
			// The server's INBOX as Dovecot's IMAP side sees it: a
			// consistent view, while the session of a killed client
			// may still be renaming files in the Maildir.
			onServer := imapMessageIDs(t, d, "INBOX")
			for id := range want {
				if onServer[id] == 0 && have[id] == 0 {
					lost[id] = true
				}
			}
		}
		if k.killed%50 == 0 && k.killed > 0 {
			t.Logf("connections=%d keep=%v: after %d kills: lost %d, duplicated %d so far", set.connections, keep, k.killed, len(lost), len(dup))
		}
	}
	// A message the last killed run may have left to a late commit
	// waits up to the timeout from its intent: the final run comes after
	// that, so it resolves every one.
	time.Sleep(set.timeout + time.Second)
	if r := runPopsync(t, "fetch", "-c", cfg); r.code != 0 {
		t.Fatalf("final run: exit %d\n%s", r.code, r.stderr)
	}
	stored, _ := d.IMAPMessages(t, imapMailbox)
	count := make(map[string]int)
	for _, m := range stored {
		_, rest, _ := bytes.Cut(m.Body, []byte("\r\n")) // the token field
		lf := strings.ReplaceAll(string(rest), "\r\n", "\n")
		for range 3 { // popsync's Received field
			lf = lf[strings.IndexByte(lf, '\n')+1:]
		}
		id := headerMessageID([]byte(lf))
		if orig := want[id]; orig == nil || wantLF(orig) != lf {
			t.Errorf("UID %d (%q) is not byte for byte one of the originals", m.UID, id)
		}
		count[id]++
	}
	for id := range want {
		switch count[id] {
		case 0:
			lost[id] = true
		case 1:
		default:
			dup[id] = true
		}
	}
	onServer := 0
	for _, n := range imapMessageIDs(t, d, "INBOX") {
		onServer += n
	}
	if keep && onServer != len(want) {
		t.Errorf("keep = true, but the server holds %d of %d", onServer, len(want))
	}
	if !keep && onServer != 0 {
		t.Errorf("keep = false, but the server still holds %d after the final run", onServer)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "spool")); len(ents) > 0 {
		for _, e := range ents {
			if left, _ := os.ReadDir(filepath.Join(dir, "spool", e.Name())); len(left) > 0 {
				t.Errorf("spool %s holds %d files after the final run", e.Name(), len(left))
			}
		}
	}
	early, late := k.spread()
	t.Logf("connections=%d keep=%v: %d kills (%d in the first half of the span, %d in the second), %d runs completed before their kill, %d messages: lost %d, duplicated %d",
		set.connections, keep, k.killed, early, late, k.done, len(want), len(lost), len(dup))
	if len(lost) > 0 || len(dup) > 0 {
		t.Fatalf("connections=%d keep=%v: lost %d, duplicated %d", set.connections, keep, len(lost), len(dup))
	}
}

// headerMessageID returns the Message-ID of a message, "" if it has none.
func headerMessageID(msg []byte) string {
	for _, line := range strings.Split(string(msg), "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Message-ID") {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// imapMessageIDs counts the messages of mailbox by Message-ID, over a
// connection of its own that is logged out before it returns (a test
// that calls it hundreds of times must not keep hundreds of sessions).
func imapMessageIDs(t *testing.T, d *realtest.Dovecot, mailbox string) map[string]int {
	t.Helper()
	c, err := imapclient.DialTLS(d.IMAPTLSAddr, &imapclient.Options{TLSConfig: d.TLSConfig(),
		Dialer: &net.Dialer{Timeout: 30 * time.Second}})
	if err != nil {
		t.Fatalf("connecting to dovecot imap: %v", err)
	}
	defer c.Close()
	if err := c.Login(d.User, d.Password).Wait(); err != nil {
		t.Fatalf("logging in to dovecot imap: %v", err)
	}
	out := make(map[string]int)
	sel, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		// Not created yet: the first run was killed before its first
		// APPEND. (Dovecot 2.3 gives no NONEXISTENT code.)
		if list, lerr := c.List("", mailbox, nil).Collect(); lerr == nil && len(list) == 0 {
			c.Logout().Wait()
			return out
		}
		t.Fatalf("examining %s: %v", mailbox, err)
	}
	if sel.NumMessages > 0 {
		section := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Message-ID"}, Peek: true}
		all := imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}}
		msgs, err := c.Fetch(all, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{section}}).Collect()
		if err != nil {
			t.Fatalf("fetching Message-IDs from %s: %v", mailbox, err)
		}
		for _, m := range msgs {
			out[headerMessageID(m.FindBodySection(section))]++
		}
	}
	c.Logout().Wait()
	return out
}
