// Package statetest is the conformance suite every state.Store backend must
// pass: RunSuite exercises the semantics of each Store method through the
// interface alone.
//
// It is not responsible for what only one backend has: files and their modes,
// corruption, schema versions, locking across processes or across two Stores
// sharing a database. Those belong in the backend's own tests.
package statetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"popsync/state"
)

// RunSuite runs the conformance suite. open must return a new, empty Store
// for each call; the suite closes it at the end of the subtest (Close must
// tolerate being called again by open's own cleanup).
func RunSuite(t *testing.T, open func(t *testing.T) state.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s state.Store)
	}{
		{"ReconcileUnknownAccount", testReconcileUnknownAccount},
		{"ReconcileKnown", testReconcileKnown},
		{"ReconcileGoneAndPrune", testReconcileGoneAndPrune},
		{"ReconcileZeroGrace", testReconcileZeroGrace},
		{"ReconcileAccountsIsolated", testReconcileAccountsIsolated},
		{"ReconcileCanonicalHost", testReconcileCanonicalHost},
		{"ReconcileManyUIDLs", testReconcileManyUIDLs},
		{"ReconcileByteExactUIDLs", testReconcileByteExactUIDLs},
		{"ReconcileInvalid", testReconcileInvalid},
		{"KnownWritesNothing", testKnownWritesNothing},
		{"ReadSeenAligned", testReadSeenAligned},
		{"ReadSeenUnknownAccount", testReadSeenUnknownAccount},
		{"Intents", testIntents},
		{"IntentsClearedByMarkDelivered", testIntentsClearedByMarkDelivered},
		{"IntentsInvalid", testIntentsInvalid},
		{"MarkDeliveredAddIntents", testMarkDeliveredAddIntents},
		{"MarkDeliveredUpdates", testMarkDeliveredUpdates},
		{"MarkDeliveredRejects", testMarkDeliveredRejects},
		{"SkippedThenDelivered", testSkippedThenDelivered},
		{"SkippedNeverDowngrades", testSkippedNeverDowngrades},
		{"MarkDeleted", testMarkDeleted},
		{"MarkImportedIsAUnion", testMarkImportedIsAUnion},
		{"MarkImportedRejects", testMarkImportedRejects},
		{"Polls", testPolls},
		{"PollsKeepLast", testPollsKeepLast},
		{"Status", testStatus},
		{"LockAccount", testLockAccount},
		{"LockAccountRace", testLockAccountRace},
		{"InvalidAccount", testInvalidAccount},
		{"CanceledContext", testCanceledContext},
		{"Closed", testClosed},
		{"ConcurrentAccounts", testConcurrentAccounts},
		{"AdoptAccount", testAdoptAccount},
		{"AdoptAccountRefuses", testAdoptAccountRefuses},
		{"ForgetAccount", testForgetAccount},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

var (
	// t0 has sub-second digits to check that microseconds survive.
	t0    = time.Date(2025, 3, 1, 12, 0, 0, 123456000, time.UTC)
	grace = 48 * time.Hour

	acct  = state.Account{Host: "pop.example.net", Port: 995, User: "me@example.net"}
	other = state.Account{Host: "pop.example.net", Port: 995, User: "you@example.net"}
)

func delivered(uidl string, at time.Time) state.Record {
	return state.Record{UIDL: uidl, State: state.Delivered, Size: int64(len(uidl)) * 100, FirstSeen: at, DeliveredAt: at}
}

func deliver(t *testing.T, s state.Store, a state.Account, at time.Time, uidls ...string) {
	t.Helper()
	recs := make([]state.Record, len(uidls))
	for i, u := range uidls {
		recs[i] = delivered(u, at)
	}
	if err := s.MarkDelivered(t.Context(), a, recs); err != nil {
		t.Fatalf("MarkDelivered(%s, %q): %v", a, uidls, err)
	}
}

func reconcile(t *testing.T, s state.Store, a state.Account, now time.Time, uidls ...string) map[string]state.Record {
	t.Helper()
	m, err := state.Reconcile(t.Context(), s, a, uidls, now, grace)
	if err != nil {
		t.Fatalf("Reconcile(%s, %q, %v): %v", a, uidls, now, err)
	}
	return m
}

// wantKnown fails unless the keys of m are exactly want.
func wantKnown(t *testing.T, m map[string]state.Record, want ...string) {
	t.Helper()
	var got []string
	for k, r := range m {
		got = append(got, k)
		if r.UIDL != k {
			t.Errorf("record under key %q has UIDL %q", k, r.UIDL)
		}
	}
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("known UIDLs = %q, want %q", got, want)
	}
}

func sameTime(a, b time.Time) bool {
	return a.IsZero() && b.IsZero() || a.Equal(b)
}

func checkRecord(t *testing.T, got, want state.Record) {
	t.Helper()
	if got.UIDL != want.UIDL || got.State != want.State || got.Size != want.Size || got.Note != want.Note ||
		!sameTime(got.FirstSeen, want.FirstSeen) || !sameTime(got.DeliveredAt, want.DeliveredAt) ||
		!sameTime(got.DeletedAt, want.DeletedAt) {
		t.Errorf("record\n got %+v\nwant %+v", got, want)
	}
}

func testInvalidAccount(t *testing.T, s state.Store) {
	ctx := t.Context()
	for _, a := range []state.Account{
		{Host: "", Port: 995, User: "u"},
		{Host: "h", Port: 0, User: "u"},
		{Host: "h", Port: 70000, User: "u"},
		{Host: "h", Port: 995, User: ""},
	} {
		calls := map[string]error{}
		_, calls["Reconcile"] = state.Reconcile(ctx, s, a, []string{"x"}, t0, grace)
		_, calls["ReadSeen"] = s.ReadSeen(ctx, a)
		calls["AddIntents"] = s.AddIntents(ctx, a, []state.Intent{{UIDL: "x", Target: "t", Token: "t"}})
		_, calls["Intents"] = s.Intents(ctx, a)
		calls["DropIntents"] = s.DropIntents(ctx, a, []string{"x"})
		calls["MarkDelivered"] = s.MarkDelivered(ctx, a, []state.Record{delivered("x", t0)})
		calls["MarkSkipped"] = s.MarkSkipped(ctx, a, []state.Record{{UIDL: "x"}})
		calls["MarkDeleted"] = s.MarkDeleted(ctx, a, []string{"x"}, t0)
		calls["RecordPoll"] = s.RecordPoll(ctx, state.Poll{Name: "n", Account: a, Start: t0})
		_, calls["Polls"] = s.Polls(ctx, a, 0)
		_, calls["LockAccount"] = s.LockAccount(ctx, a)
		for name, err := range calls {
			if err == nil {
				t.Errorf("%s(%+v): no error", name, a)
			}
		}
	}
	st, err := s.Status(ctx)
	if err != nil || len(st) != 0 {
		t.Errorf("Status after invalid calls = %+v, %v; want nothing", st, err)
	}
}

func testCanceledContext(t *testing.T, s state.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	calls := map[string]error{}
	_, calls["Reconcile"] = state.Reconcile(ctx, s, acct, []string{"x"}, t0, grace)
	_, calls["ReadSeen"] = s.ReadSeen(ctx, acct)
	calls["AddIntents"] = s.AddIntents(ctx, acct, []state.Intent{{UIDL: "x", Target: "t", Token: "t"}})
	_, calls["Intents"] = s.Intents(ctx, acct)
	calls["MarkDelivered"] = s.MarkDelivered(ctx, acct, []state.Record{delivered("x", t0)})
	calls["RecordPoll"] = s.RecordPoll(ctx, state.Poll{Name: "n", Account: acct, Start: t0})
	_, calls["Status"] = s.Status(ctx)
	_, calls["LockAccount"] = s.LockAccount(ctx, acct)
	for name, err := range calls {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context: err = %v, want context.Canceled", name, err)
		}
	}
	wantKnown(t, reconcile(t, s, acct, t0, "x"))
}

func testClosed(t *testing.T, s state.Store) {
	ctx := t.Context()
	deliver(t, s, acct, t0, "a")
	lease, err := s.LockAccount(ctx, acct)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Closing the store under a held lease loses it: a poller that still
	// runs must not commit anything.
	select {
	case <-lease.Done():
	default:
		t.Fatal("lease of a closed store: Done is not closed")
	}
	if err := lease.Err(); !errors.Is(err, state.ErrLeaseLost) {
		t.Fatalf("lease of a closed store: Err() = %v, want ErrLeaseLost", err)
	}
	lease.Release() // after Close: harmless
	if err := lease.Err(); !errors.Is(err, state.ErrLeaseLost) {
		t.Fatalf("Release after the loss changed Err() to %v", err)
	}
	calls := map[string]error{}
	_, calls["Reconcile"] = state.Reconcile(ctx, s, acct, []string{"a"}, t0, grace)
	_, calls["ReadSeen"] = s.ReadSeen(ctx, acct)
	_, calls["Intents"] = s.Intents(ctx, acct)
	calls["MarkDelivered"] = s.MarkDelivered(ctx, acct, []state.Record{delivered("x", t0)})
	_, calls["Status"] = s.Status(ctx)
	_, calls["LockAccount"] = s.LockAccount(ctx, acct)
	for name, err := range calls {
		if !errors.Is(err, state.ErrClosed) {
			t.Errorf("%s after Close: err = %v, want ErrClosed", name, err)
		}
	}
}

// testConcurrentAccounts polls several accounts at once from goroutines, the
// way the scheduler does.
func testConcurrentAccounts(t *testing.T, s state.Store) {
	ctx := t.Context()
	const accounts, rounds, batch = 6, 10, 20
	var wg sync.WaitGroup
	errs := make(chan error, accounts)
	for i := range accounts {
		a := state.Account{Host: "pop.example.net", Port: 995, User: fmt.Sprintf("user%d", i)}
		wg.Go(func() {
			errs <- pollLoop(ctx, s, a, rounds, batch)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != accounts {
		t.Fatalf("Status has %d accounts, want %d", len(st), accounts)
	}
	for _, a := range st {
		if a.Seen != rounds*batch {
			t.Errorf("%s: Seen = %d, want %d", a.Account, a.Seen, rounds*batch)
		}
	}
}

func pollLoop(ctx context.Context, s state.Store, a state.Account, rounds, batch int) error {
	lease, err := s.LockAccount(ctx, a)
	if err != nil {
		return err
	}
	defer lease.Release()
	var onServer []string
	for r := range rounds {
		now := t0.Add(time.Duration(r) * time.Minute)
		var in []state.Intent
		var recs []state.Record
		for i := range batch {
			u := fmt.Sprintf("%s-%d-%d", a.User, r, i)
			onServer = append(onServer, u)
			in = append(in, state.Intent{UIDL: u, Target: "maildir:x", Token: "tok-" + u, Created: now})
			recs = append(recs, delivered(u, now))
		}
		known, err := state.Reconcile(ctx, s, a, onServer, now, grace)
		if err != nil {
			return err
		}
		if want := r * batch; len(known) != want {
			return fmt.Errorf("%s round %d: %d known, want %d", a, r, len(known), want)
		}
		if err := s.AddIntents(ctx, a, in); err != nil {
			return err
		}
		if err := s.MarkDelivered(ctx, a, recs); err != nil {
			return err
		}
		if err := s.RecordPoll(ctx, state.Poll{Name: a.User, Account: a, Start: now, New: batch, Delivered: batch}); err != nil {
			return err
		}
	}
	left, err := s.Intents(ctx, a)
	if err != nil {
		return err
	}
	if len(left) != 0 {
		return fmt.Errorf("%s: %d intents left after delivery", a, len(left))
	}
	return nil
}
