package fetch_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"popsync/fetch"
	"popsync/fetch/pop3/pop3test"
	"popsync/state"
)

// losingStore hands out leases the test can end as lost, as a shared
// store does when it cannot renew a lease in time.
type losingStore struct {
	state.Store
	mu    sync.Mutex
	lease *state.LeaseState
	// afterMark, when set, runs after each MarkDelivered that succeeded.
	afterMark func()
}

func (s *losingStore) LockAccount(ctx context.Context, a state.Account) (state.Lease, error) {
	inner, err := s.Store.LockAccount(ctx, a)
	if err != nil {
		return nil, err
	}
	l := state.NewLeaseState(inner.Release)
	s.mu.Lock()
	s.lease = l
	s.mu.Unlock()
	return l, nil
}

func (s *losingStore) lose() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lease.End(fmt.Errorf("renewal missed: %w", state.ErrLeaseLost))
}

func (s *losingStore) MarkDelivered(ctx context.Context, a state.Account, recs []state.Record) error {
	err := s.Store.MarkDelivered(ctx, a, recs)
	if err == nil && s.afterMark != nil {
		s.afterMark()
	}
	return err
}

// wantNoQuit fails unless the poll's session (the latest) ended without
// the client sending QUIT.
func wantNoQuit(t *testing.T, srv *pop3test.Server) {
	t.Helper()
	ts := srv.Transcripts()
	if len(ts) == 0 {
		t.Fatal("no session")
	}
	if slices.Contains(ts[len(ts)-1].Lines, "QUIT") {
		t.Fatal("the poll sent QUIT after it lost the account's lease")
	}
}

// TestLeaseLostWhileFetchingRecordsNothing: a lease lost during the RETRs
// stops the poll: nothing streamed after the loss is published or
// recorded (a batch committed before it may be), nothing is deleted, and
// the connection is dropped without QUIT; the next poll delivers
// everything once.
func TestLeaseLostWhileFetchingRecordsNothing(t *testing.T) {
	msgs := pop3test.SampleMessages(10, 21)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	e.opts.BatchSize = 100
	ls := &losingStore{Store: e.store}
	e.opts.Store = ls
	e.opts.Progress = func(p fetch.Progress) {
		if p.Done == 3 {
			ls.lose()
		}
	}
	r := e.poll()
	if !errors.Is(r.Err, state.ErrLeaseLost) {
		t.Fatalf("poll after the lease was lost: err = %v, want ErrLeaseLost", r.Err)
	}
	// Commits overlap the stream: the messages before the third may have
	// been committed while the lease was still held, none after it.
	if r.Delivered > 3 || r.Deleted != 0 {
		t.Fatalf("poll without a lease delivered %d, deleted %d", r.Delivered, r.Deleted)
	}
	wantNoQuit(t, e.srv)
	if st := e.srv.Stats(); st.Deles != 0 || st.Commits != 0 {
		t.Fatalf("server saw %d DELEs and %d commits", st.Deles, st.Commits)
	}
	if got := e.delivered(); len(got) > 3 {
		t.Fatalf("%d messages published, want at most the 3 streamed before the lease was lost", len(got))
	}
	known, err := state.Known(t.Context(), e.store, e.acct.Identity(), uids(msgs))
	if err != nil || len(known) != r.Delivered {
		t.Fatalf("seen-set after the lost lease: %v, %v; want the %d delivered", known, err, r.Delivered)
	}
	e.wantOnServer(uids(msgs)...)

	e.opts.Progress = nil
	before := r.Delivered
	r = e.mustPoll()
	if before+r.Delivered > len(msgs) || r.Deleted != len(msgs) {
		t.Fatalf("poll with a lease: %+v", r)
	}
	e.wantExactlyOnce(msgs)
	e.wantOnServer()
}

// TestLeaseLostBeforeDeleDeletesNothing: with the deliveries recorded and
// the lease then lost, the poll neither DELEs nor QUITs; the next holder
// deletes what was delivered and fetches nothing twice.
func TestLeaseLostBeforeDeleDeletesNothing(t *testing.T) {
	msgs := pop3test.SampleMessages(8, 22)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	e.opts.BatchSize = 100
	ls := &losingStore{Store: e.store}
	ls.afterMark = ls.lose
	e.opts.Store = ls
	r := e.poll()
	if !errors.Is(r.Err, state.ErrLeaseLost) {
		t.Fatalf("poll after the lease was lost: err = %v, want ErrLeaseLost", r.Err)
	}
	wantNoQuit(t, e.srv)
	if st := e.srv.Stats(); st.Deles != 0 || st.Commits != 0 {
		t.Fatalf("server saw %d DELEs and %d commits", st.Deles, st.Commits)
	}
	// The first batch, whatever its size, was recorded; nothing later.
	k := r.Delivered
	if k < 1 {
		t.Fatalf("poll: %+v, want the first batch recorded", r)
	}
	e.wantExactlyOnce(msgs[:k])
	e.wantOnServer(uids(msgs)...)

	ls.afterMark = nil
	retrs := e.srv.Stats().Retrs
	r = e.mustPoll()
	if r.Delivered != len(msgs)-k || r.Deleted != len(msgs) {
		t.Fatalf("poll with a lease: %+v, want %d delivered and all deleted", r, len(msgs)-k)
	}
	if got := e.srv.Stats().Retrs - retrs; got != len(msgs)-k {
		t.Fatalf("the next poll sent %d RETRs, want %d: it fetched again what was recorded before the lease was lost", got, len(msgs)-k)
	}
	e.wantExactlyOnce(msgs)
	e.wantOnServer()
}
