package main_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"popsync/fetch/pop3/pop3test"
	"popsync/internal/realtest"
)

// TestKillNineSMTP is the kill -9 loop for reinjection into a real
// Postfix over several connections at once: Dovecot is the POP3 server,
// with smtpCrashMessages messages, refilled whenever all were delivered,
// and `popsync fetch` is killed with SIGKILL at a moment drawn uniformly
// over the expected length of the run, with keep = false and keep =
// true. A last uninterrupted run must complete the job; then every
// message must have reached Postfix's Maildir, byte for byte, and with
// keep = false the server must be empty.
//
// SMTP is at least once across a crash (README, "What popsync
// guarantees"): a message the MTA answered 250 for whose record a kill
// cut off is sent again. Duplicates are counted and reported, not
// failed; a lost message, or a stored one that is none of the originals,
// fails the test.
//
// The default is a few kills per mode; POPSYNC_SMTP_CRASH_RUNS sets the
// number (the bar is 300).
func TestKillNineSMTP(t *testing.T) {
	realtest.Require(t, "postfix", "dovecot")
	kills := 5
	if n, err := strconv.Atoi(os.Getenv("POPSYNC_SMTP_CRASH_RUNS")); err == nil && n > 0 {
		kills = n
	}
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) {
			smtpCrashRuns(t, kills, keep)
		})
	}
}

// smtpCrashMessages is the size of the mailbox, and of each refill.
const smtpCrashMessages = 300

// smtpCrashConnections is the connections key of the test's smtp entry.
const smtpCrashConnections = 4

func smtpCrashRuns(t *testing.T, kills int, keep bool) {
	src := realtest.StartDovecot(t, realtest.DovecotOptions{})
	mta := realtest.StartPostfix(t, realtest.PostfixOptions{Extra: []string{"probe"}})
	dir := t.TempDir()
	cfg := writeSMTPConfig(t, dir, src, mta.Addr, mta.Rcpt, keep)

	want := make(map[string][]byte) // Message-ID → the message as the server has it
	batch := 0
	refill := func() {
		batch++
		more := pop3test.SampleMessages(smtpCrashMessages, int64(7000+batch))
		for _, m := range more {
			id := headerMessageID(m.Data)
			if id == "" || want[id] != nil {
				t.Fatalf("sample message without a unique Message-ID: %q", id)
			}
			want[id] = m.Data
		}
		src.Deliver(t, datas(more)...)
	}
	refill()

	// An uninterrupted poll of the full mailbox (to another mailbox of
	// the same Postfix), and one that finds nothing, set the range the
	// kills are spread over.
	probeDir := t.TempDir()
	probe := writeSMTPConfig(t, probeDir, src, mta.Addr, "probe@"+realtest.PostfixDomain, true)
	k := newKiller(t, cfg, probe, smtpCrashMessages, 5)
	t.Logf("keep=%v: full poll of %d into Postfix %v, idle poll %v; seed %d", keep, smtpCrashMessages, k.full, k.idle, k.seed)

	remaining := smtpCrashMessages
	for k.killed < kills {
		if remaining == 0 {
			refill()
			remaining = smtpCrashMessages
		}
		// How much is left is only known to the seen-set; a guess in
		// proportion to the time the run had is enough to spread the
		// next kill.
		before := len(k.killAt)
		killed, err := k.run(remaining)
		switch {
		case !killed && err != nil:
			t.Fatalf("run %d ended with %v", k.done+k.killed, err)
		case !killed:
			remaining = 0
		default:
			remaining = max(1, remaining-int(float64(remaining)*k.killAt[before]))
		}
	}
	if r := runPopsync(t, "fetch", "-c", cfg); r.code != 0 {
		t.Fatalf("final run: exit %d\n%s", r.code, r.stderr)
	}
	if n := src.Count(t); keep && n != len(want) || !keep && n != 0 {
		t.Errorf("keep = %v, but the server holds %d of %d after the final run", keep, n, len(want))
	}
	// The originals less a Return-Path (Postfix writes its own from the
	// envelope), by their Message-ID line.
	orig := make(map[string]string, len(want))
	for _, m := range want {
		s := wantLF(m)
		if returnPath.MatchString(s) {
			s = s[strings.IndexByte(s, '\n')+1:]
		}
		orig[messageID.FindString(s)] = s
	}
	// Postfix delivers from its queue after its 250: wait until every
	// message arrived (WaitMessages fails the test if one never does).
	var count map[string]int
	strays := 0
	for {
		got := mta.Messages(t)
		count, strays = make(map[string]int), 0
		for _, g := range got {
			s := strings.ReplaceAll(string(g), "\r\n", "\n")
			id := messageID.FindString(s)
			if o, ok := orig[id]; !ok || !strings.HasSuffix(s, o) {
				strays++
				continue
			}
			count[id]++
		}
		if len(count) == len(orig) {
			break
		}
		mta.WaitMessages(t, len(got)+1, 3*time.Minute)
	}
	lost, dup := 0, 0
	for id := range orig {
		switch n := count[id]; {
		case n == 0:
			lost++
		case n > 1:
			dup += n - 1
		}
	}
	early, late := k.spread()
	t.Logf("keep=%v: %d kills (%d in the first half of the span, %d in the second), %d runs completed before their kill, %d messages: lost %d, delivered again after a kill %d, not one of the originals %d",
		keep, k.killed, early, late, k.done, len(want), lost, dup, strays)
	if lost > 0 || strays > 0 {
		t.Fatalf("keep=%v: lost %d, %d stored messages are none of the originals", keep, lost, strays)
	}
}

// writeSMTPConfig writes a config that fetches src's mailbox into the
// Postfix at addr for rcpt, over smtpCrashConnections sessions.
func writeSMTPConfig(t *testing.T, dir string, src *realtest.Dovecot, addr, rcpt string, keep bool) string {
	t.Helper()
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
keep = %v

  [[account.deliver]]
  smtp = %q
  rcpt = [%q]
  connections = %d
`, filepath.Join(dir, "state.db"), host, port, src.CAFile, src.User, src.Password, keep, addr, rcpt, smtpCrashConnections)
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
