package deliver_test

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"popsync/deliver"
	"popsync/internal/realtest"
)

// holdFirst makes a connection of the fake wait, before it answers its
// first APPEND, until release is closed (by what another connection
// does), so that the batch goes out over the connections the test wants.
// The held connection's target side takes at most the messages up to its
// next one over 4096 bytes, whose synchronizing literal waits for the
// continuation (mixed has one in every three).
func holdFirst(t *testing.T, release <-chan struct{}) {
	select {
	case <-release:
	case <-time.After(30 * time.Second):
		t.Error("connection 1 waited 30s for another connection")
	}
}

// holdFirstUntilAnother makes connection 1 hold its first APPEND until
// another connection has stored a message: a batch larger than one
// window (imapWindow) then has to spread.
func holdFirstUntilAnother(t *testing.T, f *fakeIMAP) {
	release := make(chan struct{})
	var once sync.Once
	f.connHook = func(conn, nth int, size int64) fakeAppend {
		if conn == 1 && nth == 0 {
			holdFirst(t, release)
		}
		return fakeAppend{}
	}
	f.afterStore = func(conn, nth int) {
		if conn != 1 {
			once.Do(func() { close(release) })
		}
	}
}

// storedOnce checks that every message of msgs is stored exactly once in
// box, with its own token on top, and returns the tokens stored.
func storedOnce(t *testing.T, f *fakeIMAP, box string, ds []deliver.Delivery, msgs [][]byte) map[string]bool {
	t.Helper()
	count := map[string]int{}
	for _, m := range f.messages(box) {
		tok, rest, ok := bytes.Cut(m, []byte("\r\n"))
		if !ok {
			t.Fatalf("stored message without a line: %q", clip(m))
		}
		name := strings.TrimPrefix(string(tok), deliver.IMAPTokenHeader+": ")
		count[name]++
		for i, d := range ds {
			if d.Token() == name && !bytes.Equal(rest, msgs[i]) {
				t.Errorf("message %d stored with other bytes", i)
			}
		}
	}
	out := map[string]bool{}
	for tok, n := range count {
		if n != 1 {
			t.Errorf("token %s stored %d times", tok, n)
		}
		out[tok] = true
	}
	return out
}

// mixed is n messages of varied sizes, the first one over 4096 bytes.
func mixed(n int) [][]byte {
	sizes := []int{9000, 200, 30000, 5000, 50, 4200, 12000, 800}
	var msgs [][]byte
	for i := range n {
		m := sized(sizes[i%len(sizes)])
		msgs = append(msgs, append([]byte(fmt.Sprintf("Message-Id: <%d@test>\r\n", i)), m...))
	}
	return msgs
}

// TestIMAPConnectionsSpread: a batch goes out over several connections,
// each logged in once and kept for the next batch; every message lands
// once with its APPENDUID; Close logs out of every connection.
func TestIMAPConnectionsSpread(t *testing.T) {
	f := newFakeIMAP(t, "IMAP4rev1 LITERAL+ UIDPLUS AUTH=PLAIN", "INBOX")
	holdFirstUntilAnother(t, f)
	tg, _ := fakeTarget(t, f, "INBOX", func(o *deliver.IMAPOptions) { o.Connections = 4; o.Timeout = 30 * time.Second })
	msgs := mixed(40)
	ds := stageAll(t, tg, msgs...)
	if err := tg.Publish(t.Context(), ds); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if got := storedOnce(t, f, "INBOX", ds, msgs); len(got) != len(msgs) {
		t.Errorf("%d messages stored, want %d", len(got), len(msgs))
	}
	per := f.storedPer()
	if len(per) < 2 {
		t.Errorf("stored per connection %v: the batch did not spread", per)
	}
	uids := map[uint32]bool{}
	for i, d := range ds {
		uid, ok := d.(*deliver.IMAPDelivery).UID()
		if !ok || uid.UIDValidity != 100 || uids[uid.UID] {
			t.Errorf("message %d: APPENDUID %v %v (repeated or missing)", i, uid, ok)
		}
		uids[uid.UID] = true
		if got := f.messages("INBOX")[uid.UID-1]; !bytes.HasSuffix(got, msgs[i]) {
			t.Errorf("message %d: its APPENDUID %d names another message", i, uid.UID)
		}
	}
	// (A connection that finds the batch gone when it is logged in is
	// not dialed by the next.)
	conns, _, _, logins := f.stats()
	if conns < len(per) || conns > 4 || logins != conns {
		t.Errorf("%d connections, %d logins; want one login each, at most 4", conns, logins)
	}

	// The next batch reuses the connections.
	f.connHook = nil
	more := mixed(10)
	ds2 := stageAll(t, tg, more...)
	if err := tg.Publish(t.Context(), ds2); err != nil {
		t.Fatalf("second Publish: %v", err)
	}
	if again, _, _, logins := f.stats(); again > 4 || logins != again {
		t.Errorf("after the second batch: %d connections, %d logins; want one login each, at most 4", again, logins)
	}
	if n := len(f.messages("INBOX")); n != 50 {
		t.Errorf("%d messages stored, want 50", n)
	}
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	logouts := f.logouts
	f.mu.Unlock()
	if conns, _, _, _ := f.stats(); logouts != conns {
		t.Errorf("%d LOGOUTs at Close for %d connections", logouts, conns)
	}
}

// TestIMAPConnectionsFaults: a fault on connection 2 (a drop in the
// middle of a literal, a NO for its message, a server that stops
// answering) touches only the message it had; the other connections
// take the rest of the batch, Published lists exactly what was stored,
// the target stays up, and the next batch goes through.
func TestIMAPConnectionsFaults(t *testing.T) {
	cases := []struct {
		name      string
		act       fakeAppend
		permanent bool // the message was judged: it may be published again
	}{
		{"drop mid-literal", fakeAppend{DropAfter: 3000}, false},
		{"NO for one message", fakeAppend{Reply: "NO [CANNOT] refused by policy"}, true},
		{"no tagged reply", fakeAppend{Silent: true}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeIMAP(t, "IMAP4rev1 LITERAL+ UIDPLUS AUTH=PLAIN", "INBOX")
			release := make(chan struct{})
			f.connHook = func(conn, nth int, size int64) fakeAppend {
				switch {
				case conn == 2 && nth == 0:
					close(release)
					return tc.act
				case nth == 0:
					holdFirst(t, release)
				}
				return fakeAppend{}
			}
			tg, _ := fakeTarget(t, f, "INBOX", func(o *deliver.IMAPOptions) { o.Connections = 3 })
			msgs := mixed(24)
			ds := stageAll(t, tg, msgs...)
			err := tg.Publish(t.Context(), ds)
			var pe *deliver.PublishError
			if !errors.As(err, &pe) {
				t.Fatalf("Publish: %v, want a *PublishError", err)
			}
			stored := storedOnce(t, f, "INBOX", ds, msgs)
			var published, lost []int
			for i, d := range ds {
				if stored[d.Token()] {
					published = append(published, i)
				} else {
					lost = append(lost, i)
				}
			}
			if !slices.Equal(pe.Published, published) {
				t.Errorf("Published %v, stored %v", pe.Published, published)
			}
			// A NO judges one message; a drop or a silence leaves every
			// APPEND in flight on that connection of unknown fate.
			if len(lost) == 0 || tc.permanent && len(lost) != 1 {
				t.Fatalf("messages not stored: %v", lost)
			}
			for _, i := range lost {
				de := deliveryErr(ds[i])
				if de == nil || de.Temporary == tc.permanent || de.TargetDown() || !tc.permanent && !strings.Contains(de.Error(), "unknown fate") {
					t.Errorf("message %d: %v; want permanent %v, not target down", i, de, tc.permanent)
				}
				again := tg.Publish(t.Context(), ds[i:i+1])
				if tc.permanent {
					if errors.Is(again, deliver.ErrState) {
						t.Errorf("Publish again of the refused message: %v", again)
					}
				} else if !errors.Is(again, deliver.ErrState) {
					t.Errorf("Publish again of the message of unknown fate: %v, want ErrState", again)
				}
			}
			abortAll(ds)
			ds2 := stageAll(t, tg, mixed(6)...)
			if err := tg.Publish(t.Context(), ds2); err != nil {
				t.Fatalf("Publish after the fault: %v", err)
			}
		})
	}
}

// TestIMAPConnectionsLimited: a server that refuses connections beyond
// its limit leaves the batch to the connections it allowed; the target
// stays up, warns once, and dials no more extra connections.
func TestIMAPConnectionsLimited(t *testing.T) {
	f := newFakeIMAP(t, "IMAP4rev1 LITERAL+ UIDPLUS AUTH=PLAIN", "INBOX")
	f.maxConns = 2
	tg, log := fakeTarget(t, f, "INBOX", func(o *deliver.IMAPOptions) { o.Connections = 4 })
	// The first connection holds its first APPEND until another one has
	// stored a message, and the one extra connection the server allows
	// logs in only once the target was refused another: so the batch,
	// more than one connection's window (32), is still there for the
	// extra connections to ask for, however the goroutines run.
	holdFirstUntilAnother(t, f)
	f.loginHook = func(conn int) {
		for deadline := time.Now().Add(30 * time.Second); conn != 1 && !warned(log.String(), "refused one more connection"); {
			if time.Now().After(deadline) {
				t.Error("no connection was refused within 30 s")
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	const n = 40
	msgs := mixed(n)
	ds := stageAll(t, tg, msgs...)
	if err := tg.Publish(t.Context(), ds); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if got := storedOnce(t, f, "INBOX", ds, msgs); len(got) != n {
		t.Errorf("%d stored, want %d", len(got), n)
	}
	if !warned(log.String(), "refused one more connection") || !strings.Contains(log.String(), "too many connections") {
		t.Errorf("no warning with the server's text:\n%s", log)
	}
	conns, _, _, _ := f.stats()
	ds2 := stageAll(t, tg, mixed(8)...)
	if err := tg.Publish(t.Context(), ds2); err != nil {
		t.Fatalf("second Publish: %v", err)
	}
	if again, _, _, _ := f.stats(); again != conns {
		t.Errorf("the second batch dialed %d more connections", again-conns)
	}
	if n := strings.Count(log.String(), "refused one more connection"); n != 1 {
		t.Errorf("warned %d times, want once", n)
	}
}

// TestIMAPConnectionsTryCreate: a missing mailbox is created once, though
// several connections got NO [TRYCREATE], and the whole batch lands once.
func TestIMAPConnectionsTryCreate(t *testing.T) {
	f := newFakeIMAP(t, "IMAP4rev1 LITERAL+ UIDPLUS AUTH=PLAIN")
	tg, _ := fakeTarget(t, f, "New", func(o *deliver.IMAPOptions) { o.Connections = 4 })
	msgs := mixed(30)
	ds := stageAll(t, tg, msgs...)
	if err := tg.Publish(t.Context(), ds); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if got := storedOnce(t, f, "New", ds, msgs); len(got) != 30 {
		t.Errorf("%d stored, want 30", len(got))
	}
	if _, _, creates, _ := f.stats(); creates != 1 {
		t.Errorf("%d CREATEs, want 1", creates)
	}
}

// TestIMAPConnectionsInterrupted: a batch interrupted on one connection
// while the others went on is stored out of order; after a crash,
// Delivered finds every message of it that the server holds by reading
// the newest messages alone (a search index that has not caught up finds
// nothing), as long as the batch is no longer than that window.
func TestIMAPConnectionsInterrupted(t *testing.T) {
	f := newFakeIMAP(t, "IMAP4rev1 LITERAL+ UIDPLUS AUTH=PLAIN", "INBOX")
	f.searchBlind = true
	earlier, _ := fakeTarget(t, f, "INBOX", nil)
	if err := earlier.Publish(t.Context(), stageAll(t, earlier, mixed(50)...)); err != nil {
		t.Fatal(err)
	}
	earlier.Close()

	// Connection 2 (the new target's first, dialed by Begin) takes the
	// batch's first message and holds it until connection 4 has stored
	// one; connection 3 logs in only once it has it. Connection 3's first
	// APPEND drops in the middle of its literal, and only then do 4 and 5
	// log in: were they in first, their windows would hold the whole
	// batch and leave 3 nothing to drop.
	first, dropped, stored4 := make(chan struct{}), make(chan struct{}), make(chan struct{})
	f.loginHook = func(conn int) {
		switch {
		case conn == 3:
			holdFirst(t, first)
		case conn > 3:
			holdFirst(t, dropped)
		}
	}
	f.connHook = func(conn, nth int, size int64) fakeAppend {
		if nth > 0 {
			return fakeAppend{}
		}
		switch conn {
		case 2:
			close(first)
			holdFirst(t, stored4)
		case 3:
			close(dropped)
			return fakeAppend{DropAfter: 3000}
		default:
			holdFirst(t, dropped)
		}
		return fakeAppend{}
	}
	f.afterStore = func(conn, nth int) {
		if conn == 4 && nth == 0 {
			close(stored4)
		}
	}
	tg, _ := fakeTarget(t, f, "INBOX", func(o *deliver.IMAPOptions) { o.Connections = 4; o.Timeout = 30 * time.Second })
	const n = 60
	ds := stageAll(t, tg, mixed(n)...)
	err := tg.Publish(t.Context(), ds)
	var pe *deliver.PublishError
	if !errors.As(err, &pe) {
		t.Fatalf("Publish: %v, want a *PublishError", err)
	}
	all := f.messages("INBOX")[50:]
	if len(all) == 0 || bytes.Contains(all[0], []byte(ds[0].Token())) || !bytes.Contains(bytes.Join(all, nil), []byte(ds[0].Token())) {
		t.Fatal("the batch's first message is not stored after another one of the batch")
	}
	var tokens []string
	for _, d := range ds {
		tokens = append(tokens, d.Token())
	}
	// After the crash: a new target, the batch's tokens, and a window
	// just as long as the batch.
	after, _ := fakeTarget(t, f, "INBOX", nil)
	restore := deliver.SetIMAPRecentScan(n)
	found, err := after.Delivered(t.Context(), tokens)
	restore()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range all {
		if tok := tokenInLine.Find(m); !found[string(tok)] {
			t.Errorf("stored message %s not found", tok)
		}
	}
	hits := 0
	for _, tok := range tokens {
		if found[tok] {
			hits++
		}
	}
	// (The messages of unknown fate, the dropped one among them, are
	// not on this server.)
	if hits != len(all) || hits != len(pe.Published) || hits == n {
		t.Errorf("found %d, stored %d, published %d of %d", hits, len(all), len(pe.Published), n)
	}
	abortAll(ds)
}

// TestIMAPConnectionsDovecot: batches spread over several connections
// to a real Dovecot land exactly once, byte for byte, each message under
// the APPENDUID its delivery reports; after the batches Delivered, reading
// only as many of the newest messages as the last batch holds, finds
// every message of that batch, in whatever order the connections stored
// them.
func TestIMAPConnectionsDovecot(t *testing.T) {
	d := realtest.StartDovecot(t, realtest.DovecotOptions{IMAP: true})
	if err := d.IMAPClient(t).Create("Multi", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	opts := imapOptions(d, "Multi", filepath.Join(t.TempDir(), "spool"))
	opts.Connections = 4
	var wire wireRecorder
	opts.Dial = wire.dial
	tg := newIMAP(t, opts)
	const batches, per = 3, 120
	sent := map[string][]byte{}
	uids := map[string]uint32{}
	var last []string
	for b := range batches {
		msgs := mixed(per)
		for i := range msgs {
			msgs[i] = append([]byte(fmt.Sprintf("X-Batch: %d\r\n", b)), msgs[i]...)
		}
		last = last[:0]
		for i, dd := range publishAll(t, tg, msgs...) {
			sent[dd.Token()] = msgs[i]
			uid, ok := dd.(*deliver.IMAPDelivery).UID()
			if !ok {
				t.Fatalf("batch %d message %d: no APPENDUID", b, i)
			}
			uids[dd.Token()] = uid.UID
			last = append(last, dd.Token())
		}
	}
	wire.mu.Lock()
	dials := wire.dials
	wire.mu.Unlock()
	if dials < 2 || dials > 4 {
		t.Errorf("%d connections for %d batches, want 2 to 4", dials, batches)
	}
	stored, _ := d.IMAPMessages(t, "Multi")
	if len(stored) != batches*per {
		t.Errorf("%d messages stored, want %d", len(stored), batches*per)
	}
	seen := map[string]bool{}
	for _, m := range stored {
		tok, rest := splitToken(t, m.Body)
		want, ok := sent[tok]
		switch {
		case !ok:
			t.Errorf("UID %d: unknown token %s", m.UID, tok)
		case seen[tok]:
			t.Errorf("UID %d: token %s stored twice", m.UID, tok)
		case !bytes.Equal(rest, want):
			t.Errorf("UID %d differs from what was sent", m.UID)
		case uids[tok] != m.UID:
			t.Errorf("token %s: APPENDUID %d, stored as UID %d", tok, uids[tok], m.UID)
		}
		seen[tok] = true
	}
	var order []uint32
	for _, tok := range last {
		order = append(order, uids[tok])
	}
	t.Logf("%d connections; the last batch stored in its own order: %v", dials, slices.IsSorted(order))

	after := newIMAP(t, imapOptions(d, "Multi", filepath.Join(t.TempDir(), "spool2")))
	restore := deliver.SetIMAPRecentScan(per)
	found, err := after.Delivered(t.Context(), last)
	restore()
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range last {
		if !found[tok] {
			t.Errorf("token %s of the last batch not found", tok)
		}
	}
}
