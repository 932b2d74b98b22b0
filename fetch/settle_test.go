package fetch_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"popsync/configs"
	"popsync/deliver"
	"popsync/fetch"
	"popsync/fetch/pop3/pop3test"
	"popsync/state"
)

// lateTarget is a staging target whose server commits late, as an IMAP
// server does with an APPEND whose literal it received from a run that
// was killed: the message is published (here: a file in the Maildir's
// new/) but Delivered does not report it until commit is called.
type lateTarget struct {
	deliver.Target
	settle time.Duration

	mu      sync.Mutex
	pending map[string]bool // tokens not committed yet
}

func (l *lateTarget) LateCommit() time.Duration { return l.settle }

func (l *lateTarget) Delivered(ctx context.Context, tokens []string) (map[string]bool, error) {
	found, err := l.Target.Delivered(ctx, tokens)
	l.mu.Lock()
	defer l.mu.Unlock()
	for tok := range found {
		if l.pending[tok] {
			found[tok] = false
		}
	}
	return found, err
}

// commit makes the server store what it received for tok.
func (l *lateTarget) commit(tok string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.pending, tok)
}

// settleEnv is an account with keep = false, a lateTarget over its
// Maildir, a fake clock, and an open intent for the first message as a
// killed run leaves it: recorded at t0, the message maybe on its way.
type settleEnv struct {
	*env
	lt  *lateTarget
	now time.Time
	tok string
}

const settleTime = 30 * time.Second

func newSettleEnv(t *testing.T, published bool) *settleEnv {
	t.Helper()
	msgs := pop3test.SampleMessages(5, 71)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	s := &settleEnv{env: e, now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), tok: "1772366400.M1P2Q3.client.test"}
	s.lt = &lateTarget{settle: settleTime, pending: map[string]bool{s.tok: true}}
	e.opts.Now = func() time.Time { return s.now }
	e.opts.OpenTarget = func(a *configs.Account, d configs.Deliver) (deliver.Target, error) {
		tg, err := fetch.OpenTarget(a, d)
		if err != nil {
			return nil, err
		}
		s.lt.Target = tg
		return s.lt, nil
	}
	md, err := deliver.NewMaildir(e.maildir, deliver.MaildirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	md.Close()
	if published {
		body := "Received: from x\n\tby y (popsync) with POP3\n\tfor <z>; now\n" + want(msgs[0])
		if err := os.WriteFile(filepath.Join(e.maildir, "new", s.tok), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.store.AddIntents(t.Context(), e.acct.Identity(), []state.Intent{
		{UIDL: msgs[0].UID, Target: e.acct.Deliver[0].ID(), Token: s.tok, Size: int64(len(msgs[0].Data)), Created: s.now},
	}); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *settleEnv) intents() int {
	s.t.Helper()
	in, err := s.store.Intents(s.t.Context(), s.acct.Identity())
	if err != nil {
		s.t.Fatal(err)
	}
	return len(in)
}

// waitingPoll polls while the intent is young and not found: the other
// four messages are fetched and deleted, the first is neither, and the
// poll succeeds with one message waiting until t0 + settleTime.
func (s *settleEnv) waitingPoll(t0 time.Time, retrs, deles int) {
	s.t.Helper()
	r := s.mustPoll()
	if r.Waiting != 1 || !r.WaitUntil.Equal(t0.Add(settleTime)) {
		s.t.Fatalf("poll: waiting %d until %v; want 1 until %v", r.Waiting, r.WaitUntil, t0.Add(settleTime))
	}
	st := s.srv.Stats()
	if st.Retrs != retrs || st.DelesCommitted != deles {
		s.t.Fatalf("after a waiting poll: %d RETRs, %d deleted; want %d, %d (the waiting message neither)", st.Retrs, st.DelesCommitted, retrs, deles)
	}
	if n := s.intents(); n != 1 {
		s.t.Fatalf("%d open intents, want the waiting one", n)
	}
}

// TestIMAPIntentWaitsForLateCommit: a message whose delivery a killed
// run left to a server that commits late is neither fetched nor deleted
// while the server may still store it. Once the server has stored it, a
// later poll records it and deletes it, without a second copy.
func TestIMAPIntentWaitsForLateCommit(t *testing.T) {
	s := newSettleEnv(t, true)
	t0 := s.now
	s.now = t0.Add(time.Second)
	s.waitingPoll(t0, 4, 4)
	s.now = t0.Add(10 * time.Second)
	s.waitingPoll(t0, 4, 4) // still young: still waiting, nothing more fetched

	s.lt.commit(s.tok)
	s.now = t0.Add(settleTime + time.Second)
	r := s.mustPoll()
	if r.Waiting != 0 || r.Delivered != 0 || r.Deleted != 1 {
		t.Fatalf("poll after the late commit: %+v; want the message recorded and deleted, not delivered again", r)
	}
	if st := s.srv.Stats(); st.Retrs != 4 || st.DelesCommitted != 5 {
		t.Fatalf("%d RETRs, %d deleted; want 4 (the late message not fetched again), 5", st.Retrs, st.DelesCommitted)
	}
	if n := s.intents(); n != 0 {
		t.Fatalf("%d open intents, want none", n)
	}
	s.wantExactlyOnce(s.msgs)
}

// TestIMAPIntentRefetchedAfterSettle: a message whose APPEND never
// reached the server waits out the settle time, then is fetched again,
// once, and deleted.
func TestIMAPIntentRefetchedAfterSettle(t *testing.T) {
	s := newSettleEnv(t, false)
	t0 := s.now
	s.now = t0.Add(time.Second)
	s.waitingPoll(t0, 4, 4)

	s.now = t0.Add(settleTime)
	r := s.mustPoll()
	if r.Waiting != 0 || r.Delivered != 1 || r.Deleted != 1 {
		t.Fatalf("poll after the settle time: %+v; want the message fetched again and deleted", r)
	}
	s.lt.commit(s.tok) // nothing arrives late: the token is gone for good
	r = s.mustPoll()
	if r.Waiting != 0 || r.Delivered != 0 || r.OnServer != 0 {
		t.Fatalf("last poll: %+v; want an empty server and nothing to do", r)
	}
	if st := s.srv.Stats(); st.Retrs != 5 || st.DelesCommitted != 5 {
		t.Fatalf("%d RETRs, %d deleted; want 5 (the waiting one fetched once), 5", st.Retrs, st.DelesCommitted)
	}
	if n := s.intents(); n != 0 {
		t.Fatalf("%d open intents, want none", n)
	}
	s.wantExactlyOnce(s.msgs)
}

// TestMaildirIntentNotWaited: a target without a late-commit window (a
// Maildir) answers for good; its intent not found is dropped and the
// message fetched again in the same poll, as before.
func TestMaildirIntentNotWaited(t *testing.T) {
	msgs := pop3test.SampleMessages(3, 72)
	e := newEnv(t, msgs, pop3test.Config{})
	if err := e.store.AddIntents(t.Context(), e.acct.Identity(), []state.Intent{
		{UIDL: msgs[0].UID, Target: e.acct.Deliver[0].ID(), Token: "1772366400.M9P9Q9.client.test", Size: 1, Created: time.Now()},
	}); err != nil {
		t.Fatal(err)
	}
	r := e.mustPoll()
	if r.Waiting != 0 || r.Delivered != 3 || e.srv.Stats().Retrs != 3 {
		t.Fatalf("poll: %+v, %d RETRs; want all 3 fetched, none waiting", r, e.srv.Stats().Retrs)
	}
	e.wantExactlyOnce(msgs)
}
