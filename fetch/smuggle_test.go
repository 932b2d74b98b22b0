package fetch_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"popsync/configs"
	"popsync/deliver"
	"popsync/fetch"
	"popsync/fetch/pop3"
	"popsync/fetch/pop3/pop3test"
	"popsync/state"
)

// forgedMessage is what an attacker mails the victim to smuggle a reply
// past a server that stuffs dots only after CRLF: after trick, a status
// line and a message of its own choosing.
func forgedMessage(trick string) []byte {
	return []byte("From: attacker@evil.example\r\nTo: me@example.net\r\nSubject: one\r\n\r\nhello" + trick +
		"+OK\r\nFrom: ceo@victim.example\r\nAuthentication-Results: victim.example; dmarc=pass\r\n" +
		"Subject: wire the money\r\n\r\npay now\r\n" +
		"\r\nend of one\r\n")
}

func smuggleMessages(trick string) []pop3test.Message {
	return []pop3test.Message{
		{UID: "uid-1", Data: forgedMessage(trick)},
		{UID: "uid-2", Data: []byte("From: b@example.org\r\nSubject: two\r\n\r\nsecond\r\n")},
		{UID: "uid-3", Data: []byte("From: c@example.org\r\nSubject: three\r\n\r\nthird\r\n")},
	}
}

var tricks = []string{"\n.\n", "\n.\r\n", "\r\n.\n"}

// uidlTarget wraps the real target and remembers which UIDL each Maildir
// file name (the delivery's token) was begun for.
type uidlTarget struct {
	deliver.Target
	mu      sync.Mutex
	byToken map[string]string
}

func (u *uidlTarget) Begin(ctx context.Context, m deliver.Meta) (deliver.Delivery, error) {
	d, err := u.Target.Begin(ctx, m)
	if err == nil {
		u.mu.Lock()
		u.byToken[d.Token()] = m.UIDL
		u.mu.Unlock()
	}
	return d, err
}

func (e *env) trackUIDLs() *uidlTarget {
	u := &uidlTarget{byToken: map[string]string{}}
	e.opts.OpenTarget = func(a *configs.Account, d configs.Deliver) (deliver.Target, error) {
		t, err := fetch.OpenTarget(a, d)
		if err != nil {
			return nil, err
		}
		u.Target = t
		return u, nil
	}
	return u
}

// wantUnderOwnUIDL asserts that every message of msgs is in new/ exactly
// once, byte for byte, in the file begun for its own UIDL, and that
// nothing else is.
func (e *env) wantUnderOwnUIDL(u *uidlTarget, msgs []pop3test.Message) {
	e.t.Helper()
	byUID := map[string]pop3test.Message{}
	for _, m := range msgs {
		byUID[m.UID] = m
	}
	ents, err := os.ReadDir(filepath.Join(e.maildir, "new"))
	if err != nil {
		e.t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, de := range ents {
		uid, ok := "", false
		u.mu.Lock()
		for tok, id := range u.byToken {
			if strings.HasPrefix(de.Name(), tok) {
				uid, ok = id, true
			}
		}
		u.mu.Unlock()
		if !ok {
			e.t.Fatalf("Maildir file %s was not begun by this poll", de.Name())
		}
		m, known := byUID[uid]
		if !known || seen[uid] {
			e.t.Fatalf("Maildir file %s filed under UIDL %q: unknown or twice", de.Name(), uid)
		}
		seen[uid] = true
		b, err := os.ReadFile(filepath.Join(e.maildir, "new", de.Name()))
		if err != nil {
			e.t.Fatal(err)
		}
		if got := stripReceived(e.t, string(b)); got != want(m) {
			e.t.Fatalf("message under UIDL %s:\n got %q\nwant %q", uid, got, want(m))
		}
	}
	if len(seen) != len(msgs) {
		e.t.Fatalf("Maildir holds %d of the %d messages", len(seen), len(msgs))
	}
}

// wantSeen asserts the seen-set state of each UIDL: delivered or
// absent.
func (e *env) wantSeen(delivered []string, absent []string) {
	e.t.Helper()
	known, err := state.Known(e.t.Context(), e.store, e.acct.Identity(), append(append([]string{}, delivered...), absent...))
	if err != nil {
		e.t.Fatal(err)
	}
	for _, u := range delivered {
		if known[u].State != state.Delivered {
			e.t.Fatalf("UIDL %s recorded as %v, want delivered", u, known[u].State)
		}
	}
	for _, u := range absent {
		if r, ok := known[u]; ok && r.State != 0 {
			e.t.Fatalf("UIDL %s recorded as %v, want nothing", u, r.State)
		}
	}
}

// wantNoQuit asserts that no session sent QUIT or committed, and that no
// DELE reached the server.
func (e *env) wantNoQuit() {
	e.t.Helper()
	for _, tr := range e.srv.Transcripts() {
		if tr.Quit || tr.Committed {
			e.t.Fatalf("session %d: QUIT %v, committed %v; want neither", tr.Session, tr.Quit, tr.Committed)
		}
	}
	if st := e.srv.Stats(); st.Deles != 0 || st.DelesCommitted != 0 {
		e.t.Fatalf("server saw %d DELEs, committed %d", st.Deles, st.DelesCommitted)
	}
}

// TestSmuggledReplyIsNotAMessage serves the smuggling message from a
// server that stuffs only after CRLF: the "." after a bare LF is data, so
// every message arrives whole under its own UIDL and all are deleted.
func TestSmuggledReplyIsNotAMessage(t *testing.T) {
	for _, trick := range tricks {
		t.Run(strconv.Quote(trick), func(t *testing.T) {
			msgs := smuggleMessages(trick)
			e := newEnv(t, msgs, pop3test.Config{CRLFOnlyStuffing: true})
			u := e.trackUIDLs()
			e.acct.Keep = false
			r := e.mustPoll()
			if r.Delivered != 3 || r.Deleted != 3 {
				t.Fatalf("poll: %+v", r)
			}
			e.wantUnderOwnUIDL(u, msgs)
			e.wantSeen(uids(msgs), nil)
			e.wantOnServer()
		})
	}
}

// TestSmuggledReplyInHeadersForDigest puts the trick into the headers of
// a server without UIDL, so that it is read by TOP n 0 for the header
// digest first: the digests, and so the keys, stay the server's messages.
func TestSmuggledReplyInHeadersForDigest(t *testing.T) {
	for _, trick := range tricks {
		t.Run(strconv.Quote(trick), func(t *testing.T) {
			msgs := smuggleMessages(trick)
			msgs[0].Data = []byte("From: attacker@evil.example\r\nX-Trick: a" + trick +
				"+OK\r\nFrom: ceo@victim.example\r\nSubject: forged\r\n\r\nbody\r\n")
			e := newEnv(t, msgs, pop3test.Config{CRLFOnlyStuffing: true, Caps: pop3test.Caps{NoUIDL: true}})
			r := e.mustPoll()
			if r.Delivered != 3 {
				t.Fatalf("poll: %+v", r)
			}
			if e.srv.Stats().Tops != 3 {
				t.Fatalf("%d TOPs, want 3 (the digest path)", e.srv.Stats().Tops)
			}
			e.wantExactlyOnce(msgs)
			// Stable keys: the next poll finds nothing new.
			if r := e.mustPoll(); r.New != 0 {
				t.Fatalf("second poll: %+v", r)
			}
			e.wantExactlyOnce(msgs)
		})
	}
}

// TestSmuggledListingLineFailsPoll hides a terminator and a status line
// behind a bare LF in a UIDL listing and in CAPA: the client refuses the
// line, so the poll fails before anything is fetched, without QUIT.
func TestSmuggledListingLineFailsPoll(t *testing.T) {
	for _, tc := range []struct {
		name string
		msgs func() []pop3test.Message
		cfg  pop3test.Config
	}{
		{"UIDL", func() []pop3test.Message {
			m := smuggleMessages("\r\n")
			// Numeric UIDs read as a LIST if the listing ends early.
			m[0].UID, m[1].UID, m[2].UID = "1111\n.\n+OK", "2222", "3333"
			return m
		}, pop3test.Config{CRLFOnlyStuffing: true}},
		{"CAPA", func() []pop3test.Message { return smuggleMessages("\r\n") },
			pop3test.Config{CRLFOnlyStuffing: true, Caps: pop3test.Caps{Implementation: "x\n.\n+OK"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msgs := tc.msgs()
			e := newEnv(t, msgs, tc.cfg)
			e.acct.Keep = false
			r := e.poll()
			if !errors.Is(r.Err, pop3.ErrProtocol) || !strings.Contains(r.Err.Error(), "bare LF") {
				t.Fatalf("poll error %v, want pop3.ErrProtocol naming the bare LF", r.Err)
			}
			if r.Delivered != 0 || len(e.delivered()) != 0 || e.srv.Stats().Retrs != 0 {
				t.Fatalf("poll: %+v, Maildir %d, RETRs %d", r, len(e.delivered()), e.srv.Stats().Retrs)
			}
			e.wantSeen(nil, uids(msgs))
			e.wantNoQuit()
			e.wantOnServer(uids(msgs)...)
		})
	}
}

// TestSizeDisagreeingWithListFailsPoll: a message far shorter than LIST
// said, or whose "+OK n octets" disagrees with LIST, is not delivered, not
// recorded and not deleted, and the session ends without QUIT, so the
// server deletes nothing, not even what was delivered before it.
func TestSizeDisagreeingWithListFailsPoll(t *testing.T) {
	for _, tc := range []struct {
		name   string
		faults pop3test.Faults
	}{
		{"far shorter than LIST", pop3test.Faults{Sizes: []pop3test.SizeFault{{Msg: 2, Size: 100_000}}}},
		{"RETR octets disagree", pop3test.Faults{RetrSizes: []pop3test.SizeFault{{Msg: 2, Size: 10}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msgs := pop3test.SampleMessages(3, 9)
			e := newEnv(t, msgs, pop3test.Config{})
			e.acct.Keep = false
			e.srv.SetFaults(tc.faults)
			r := e.poll()
			if !errors.Is(r.Err, pop3.ErrSizeMismatch) {
				t.Fatalf("poll error %v, want pop3.ErrSizeMismatch", r.Err)
			}
			for _, m := range e.delivered() {
				if m == want(msgs[1]) || m == want(msgs[2]) {
					t.Fatal("the disputed message, or one after it, was delivered")
				}
			}
			e.wantSeen(nil, uids(msgs[1:]))
			e.wantNoQuit()
			e.wantOnServer(uids(msgs)...)

			// Once the server agrees with itself, everything arrives once.
			e.srv.SetFaults(pop3test.Faults{})
			e.mustPoll()
			e.wantExactlyOnce(msgs)
			e.wantOnServer()
		})
	}
}

// TestLargerThanListDropsSession: a message far larger than LIST said (no
// max_size) is the same doubt about framing as one far shorter: the poll
// fails with ErrListedSize and the session ends without QUIT, so nothing is
// deleted, not even the message delivered before it.
func TestLargerThanListDropsSession(t *testing.T) {
	msgs := []pop3test.Message{pop3test.SampleMessages(1, 10)[0], pop3test.LargeMessage(1<<20+200_000, 11)}
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	e.srv.SetFaults(pop3test.Faults{Sizes: []pop3test.SizeFault{{Msg: 2, Size: 1000}}})
	r := e.poll()
	if !errors.Is(r.Err, fetch.ErrListedSize) {
		t.Fatalf("poll error %v, want fetch.ErrListedSize", r.Err)
	}
	e.wantNoQuit()
	e.wantOnServer(uids(msgs)...)
	e.wantSeen(uids(msgs[:1]), uids(msgs[1:]))
}
