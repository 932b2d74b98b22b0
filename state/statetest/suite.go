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
	"strings"
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

func testReconcileUnknownAccount(t *testing.T, s state.Store) {
	wantKnown(t, reconcile(t, s, acct, t0, "a", "b"))
	wantKnown(t, reconcile(t, s, acct, t0))
}

func testReconcileKnown(t *testing.T, s state.Store) {
	ctx := t.Context()
	a := delivered("a", t0)
	a.FirstSeen = t0.Add(-time.Hour)
	b := state.Record{UIDL: "b", State: state.Quarantined, Size: 7, FirstSeen: t0, DeliveredAt: t0.Add(time.Microsecond), Note: "unparsable"}
	c := state.Record{UIDL: "c", State: state.Skipped, Size: 1 << 40, FirstSeen: t0, Note: "larger than max_size"}
	if err := s.MarkDelivered(ctx, acct, []state.Record{a, b}); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkSkipped(ctx, acct, []state.Record{c}); err != nil {
		t.Fatal(err)
	}
	m := reconcile(t, s, acct, t0.Add(time.Hour), "a", "b", "c", "d")
	wantKnown(t, m, "a", "b", "c")
	checkRecord(t, m["a"], a)
	checkRecord(t, m["b"], b)
	checkRecord(t, m["c"], c)
	// Reconcile only reads and marks; it does not add the new UIDL.
	wantKnown(t, reconcile(t, s, acct, t0.Add(2*time.Hour), "a", "b", "c", "d"), "a", "b", "c")
}

func testKnownWritesNothing(t *testing.T, s state.Store) {
	ctx := t.Context()
	deliver(t, s, acct, t0, "a", "b", "c")
	m, err := state.Known(ctx, s, acct, []string{"a", "c", "d"})
	if err != nil {
		t.Fatal(err)
	}
	wantKnown(t, m, "a", "c")
	if got, err := state.Known(ctx, s, other, []string{"a"}); err != nil || len(got) != 0 {
		t.Fatalf("Known(other) = %v, %v; want nothing", got, err)
	}
	// Known with b absent must not start b's grace period: after a long
	// time, a reconcile that lists b again still finds it.
	if _, err := state.Known(ctx, s, acct, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	wantKnown(t, reconcile(t, s, acct, t0.Add(10*grace), "a", "b", "c"), "a", "b", "c")
}

// testReadSeenAligned: the SeenSet of ReadSeen answers Lookup and
// Reconcile with one record per listed UIDL, in the list's order, the zero
// Record where the UIDL is unknown; Lookup writes nothing, Reconcile marks
// and prunes like the package function.
func testReadSeenAligned(t *testing.T, s state.Store) {
	ctx := t.Context()
	deliver(t, s, acct, t0, "a", "c")
	if err := s.MarkSkipped(ctx, acct, []state.Record{{UIDL: "b", Size: 9, FirstSeen: t0, Note: "too big"}}); err != nil {
		t.Fatal(err)
	}
	deliver(t, s, other, t0, "x")
	seen, err := s.ReadSeen(ctx, state.Account{Host: "POP.Example.NET.", Port: acct.Port, User: acct.User})
	if err != nil {
		t.Fatal(err)
	}
	if seen.Account() != acct {
		t.Errorf("SeenSet.Account() = %v, want the canonical %v", seen.Account(), acct)
	}
	list := []string{"x", "b", "a", "new", "a"}
	check := func(what string, got []state.Record) {
		t.Helper()
		if len(got) != len(list) {
			t.Fatalf("%s: %d records for %d UIDLs", what, len(got), len(list))
		}
		checkRecord(t, got[0], state.Record{})
		checkRecord(t, got[1], state.Record{UIDL: "b", State: state.Skipped, Size: 9, FirstSeen: t0, Note: "too big"})
		checkRecord(t, got[2], delivered("a", t0))
		checkRecord(t, got[3], state.Record{})
		checkRecord(t, got[4], delivered("a", t0))
	}
	check("Lookup", seen.Lookup(list))
	// Lookup marked nothing gone: c survives a reconcile far in the future.
	wantKnown(t, reconcile(t, s, acct, t0.Add(10*grace), "a", "b", "c"), "a", "b", "c")

	seen, err = s.ReadSeen(ctx, acct)
	if err != nil {
		t.Fatal(err)
	}
	got, err := seen.Reconcile(ctx, list, t0.Add(11*grace), grace)
	if err != nil {
		t.Fatal(err)
	}
	check("Reconcile", got)
	// c was marked gone by that Reconcile and is pruned after the grace.
	wantKnown(t, reconcile(t, s, acct, t0.Add(12*grace+time.Second), "a", "b"), "a", "b")
	wantKnown(t, reconcile(t, s, acct, t0.Add(12*grace+2*time.Second), "a", "b", "c"), "a", "b")
	if _, err := seen.Reconcile(ctx, []string{""}, t0, grace); err == nil {
		t.Error("SeenSet.Reconcile with an empty UIDL: no error")
	}
	if _, err := seen.Reconcile(ctx, nil, time.Time{}, grace); err == nil {
		t.Error("SeenSet.Reconcile at the zero time: no error")
	}
}

// testReadSeenUnknownAccount: an account without records has an empty
// set, and reconciling it writes nothing that Status would show.
func testReadSeenUnknownAccount(t *testing.T, s state.Store) {
	ctx := t.Context()
	seen, err := s.ReadSeen(ctx, acct)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range seen.Lookup([]string{"a", "b"}) {
		checkRecord(t, r, state.Record{})
	}
	got, err := seen.Reconcile(ctx, []string{"a"}, t0, grace)
	if err != nil || len(got) != 1 || got[0].State != 0 {
		t.Fatalf("Reconcile of an empty set = %+v, %v", got, err)
	}
	if st, err := s.Status(ctx); err != nil || len(st) != 0 {
		t.Errorf("Status = %+v, %v; want nothing", st, err)
	}
}

func testReconcileGoneAndPrune(t *testing.T, s state.Store) {
	deliver(t, s, acct, t0, "a", "b", "c")
	t1 := t0.Add(time.Hour)
	wantKnown(t, reconcile(t, s, acct, t1, "a"), "a") // b and c gone since t1
	// Still absent: gone since t1, not since now.
	wantKnown(t, reconcile(t, s, acct, t1.Add(grace/2), "a"), "a")
	// Exactly grace later nothing is pruned, and b comes back.
	wantKnown(t, reconcile(t, s, acct, t1.Add(grace), "a", "b"), "a", "b")
	// c has now been gone for longer than grace.
	t2 := t1.Add(grace + time.Microsecond)
	wantKnown(t, reconcile(t, s, acct, t2, "a", "b"), "a", "b")
	wantKnown(t, reconcile(t, s, acct, t2, "a", "b", "c"), "a", "b")
	// b's return cleared its gone mark: gone again since t3, it lives until
	// t3+grace although t1 is long past.
	t3 := t2.Add(time.Hour)
	wantKnown(t, reconcile(t, s, acct, t3, "a"), "a")
	wantKnown(t, reconcile(t, s, acct, t3.Add(grace), "a", "b"), "a", "b")
}

func testReconcileZeroGrace(t *testing.T, s state.Store) {
	ctx := t.Context()
	deliver(t, s, acct, t0, "a", "b")
	m, err := state.Reconcile(ctx, s, acct, []string{"a"}, t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	wantKnown(t, m, "a")
	// Gone since t0, not yet longer than 0 at t0: b survives its first absence.
	if m, err = state.Reconcile(ctx, s, acct, []string{"a", "b"}, t0, 0); err != nil {
		t.Fatal(err)
	}
	wantKnown(t, m, "a", "b")
	if _, err = state.Reconcile(ctx, s, acct, []string{"a"}, t0.Add(time.Second), 0); err != nil {
		t.Fatal(err)
	}
	if m, err = state.Reconcile(ctx, s, acct, []string{"a", "b"}, t0.Add(2*time.Second), 0); err != nil {
		t.Fatal(err)
	}
	wantKnown(t, m, "a", "b")
	if _, err = state.Reconcile(ctx, s, acct, nil, t0.Add(3*time.Second), 0); err != nil {
		t.Fatal(err)
	}
	if m, err = state.Reconcile(ctx, s, acct, nil, t0.Add(4*time.Second), 0); err != nil {
		t.Fatal(err)
	}
	wantKnown(t, m)
	wantKnown(t, reconcile(t, s, acct, t0.Add(5*time.Second), "a", "b"))
}

func testReconcileAccountsIsolated(t *testing.T, s state.Store) {
	deliver(t, s, acct, t0, "x", "mine")
	deliver(t, s, other, t0, "x", "theirs")
	wantKnown(t, reconcile(t, s, acct, t0, "x", "mine", "theirs"), "x", "mine")
	wantKnown(t, reconcile(t, s, acct, t0.Add(time.Hour)))
	wantKnown(t, reconcile(t, s, acct, t0.Add(time.Hour+grace+time.Second)))
	wantKnown(t, reconcile(t, s, acct, t0.Add(2*time.Hour+grace), "x", "mine"))
	wantKnown(t, reconcile(t, s, other, t0.Add(2*time.Hour+grace), "x", "theirs", "mine"), "x", "theirs")
	// Same host and user, other port: another account.
	p := acct
	p.Port = 110
	wantKnown(t, reconcile(t, s, p, t0, "x", "mine"))
}

func testReconcileCanonicalHost(t *testing.T, s state.Store) {
	shouty := acct
	shouty.Host = "POP.Example.NET."
	deliver(t, s, shouty, t0, "a")
	wantKnown(t, reconcile(t, s, acct, t0, "a", "b"), "a")
	// The user name is not folded.
	upper := acct
	upper.User = "ME@example.net"
	wantKnown(t, reconcile(t, s, upper, t0, "a", "b"))
}

func testReconcileManyUIDLs(t *testing.T, s state.Store) {
	const n = 20000
	uidls := make([]string, n)
	for i := range uidls {
		uidls[i] = fmt.Sprintf("%08x-%d", i*2654435761, i)
	}
	for i := 0; i < n; i += 2500 {
		deliver(t, s, acct, t0, uidls[i:i+2500]...)
	}
	list := append(slices.Clone(uidls), "new-1", "new-2", uidls[0], uidls[1]) // duplicates tolerated
	m := reconcile(t, s, acct, t0, list...)
	if len(m) != n {
		t.Fatalf("Reconcile returned %d records, want %d", len(m), n)
	}
	for _, u := range []string{uidls[0], uidls[n/2], uidls[n-1]} {
		checkRecord(t, m[u], delivered(u, t0))
	}
	// Half gone, then back within grace: all still known.
	wantLen := func(m map[string]state.Record, want int) {
		t.Helper()
		if len(m) != want {
			t.Fatalf("Reconcile returned %d records, want %d", len(m), want)
		}
	}
	wantLen(reconcile(t, s, acct, t0.Add(time.Hour), uidls[:n/2]...), n/2)
	wantLen(reconcile(t, s, acct, t0.Add(2*time.Hour), uidls...), n)
	// Half gone for longer than grace: pruned.
	wantLen(reconcile(t, s, acct, t0.Add(3*time.Hour), uidls[n/2:]...), n/2)
	wantLen(reconcile(t, s, acct, t0.Add(4*time.Hour+grace), uidls[n/2:]...), n/2)
	wantLen(reconcile(t, s, acct, t0.Add(5*time.Hour+grace), uidls...), n/2)
}

// RFC 1939 §7 allows only 0x21-0x7E in a UIDL, but servers send what they
// send: the store must give back exactly the bytes it was given.
func testReconcileByteExactUIDLs(t *testing.T, s state.Store) {
	odd := []string{
		"\xff\xfe latin-1 \xe9",
		"ünïcödé",
		"x'); DROP TABLE message; --",
		`"quoted" \ and % and _ and ?`,
		"tab\tand\r\nnewline",
		"plain",
		"PLAIN",
		strings.Repeat("~", 70),
	}
	deliver(t, s, acct, t0, odd...)
	m := reconcile(t, s, acct, t0, append(slices.Clone(odd), "\xff\xfe latin-1 \xc3\xa9", "plain ")...)
	wantKnown(t, m, odd...)
}

func testReconcileInvalid(t *testing.T, s state.Store) {
	ctx := t.Context()
	if _, err := state.Reconcile(ctx, s, acct, []string{"a"}, t0, -time.Second); err == nil {
		t.Error("Reconcile with negative grace: no error")
	}
	if _, err := state.Reconcile(ctx, s, acct, []string{"a", ""}, t0, grace); err == nil {
		t.Error("Reconcile with an empty UIDL: no error")
	}
	if _, err := state.Reconcile(ctx, s, acct, []string{"a"}, time.Time{}, grace); err == nil {
		t.Error("Reconcile at the zero time: no error")
	}
}

func checkIntents(t *testing.T, s state.Store, a state.Account, want ...state.Intent) {
	t.Helper()
	got, err := s.Intents(t.Context(), a)
	if err != nil {
		t.Fatalf("Intents(%s): %v", a, err)
	}
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		g, w := got[i], want[i]
		ok = g.UIDL == w.UIDL && g.Target == w.Target && g.Token == w.Token && g.Confirmed == w.Confirmed && g.Size == w.Size &&
			(w.Created.IsZero() && !g.Created.IsZero() || g.Created.Equal(w.Created))
	}
	if !ok {
		t.Errorf("Intents(%s)\n got %+v\nwant %+v", a, got, want)
	}
}

func testIntents(t *testing.T, s state.Store) {
	ctx := t.Context()
	checkIntents(t, s, acct)
	i1 := state.Intent{UIDL: "u1", Target: "maildir:a", Token: "1740830400.M1P2Q3.host", Size: 10, Created: t0}
	i1b := state.Intent{UIDL: "u1", Target: "maildir:b", Token: "1740830400.M1P2Q4.host", Size: 10, Created: t0}
	i1c := state.Intent{UIDL: "u1", Target: "smtp:c", Confirmed: true, Size: 10, Created: t0}
	i2 := state.Intent{UIDL: "u2", Target: "maildir:a", Token: "1740830401.M1P2Q5.host", Size: 20, Created: t0.Add(time.Second)}
	i0 := state.Intent{UIDL: "u3", Target: state.QuarantineTarget, Token: "1740830399.M1P2Q6.host", Size: 30, Created: t0.Add(-time.Second)}
	if err := s.AddIntents(ctx, acct, []state.Intent{i2, i1c, i1b, i1, i0}); err != nil {
		t.Fatal(err)
	}
	checkIntents(t, s, acct, i0, i1, i1b, i1c, i2)
	checkIntents(t, s, other)

	// Same UIDL and target again (a retry with a new file name): replaced.
	i1.Token = "1740830500.M9P2Q3.host"
	if err := s.AddIntents(ctx, acct, []state.Intent{i1}); err != nil {
		t.Fatal(err)
	}
	checkIntents(t, s, acct, i0, i1, i1b, i1c, i2)

	// Dropping a UIDL drops all its targets; unknown UIDLs are no error.
	if err := s.DropIntents(ctx, acct, []string{"u1", "nope"}); err != nil {
		t.Fatal(err)
	}
	checkIntents(t, s, acct, i0, i2)
	if err := s.DropIntents(ctx, other, []string{"u2"}); err != nil {
		t.Fatal(err)
	}
	checkIntents(t, s, acct, i0, i2)

	// A zero Created is filled in.
	if err := s.AddIntents(ctx, other, []state.Intent{{UIDL: "u9", Target: "t", Token: "tok", Size: 1}}); err != nil {
		t.Fatal(err)
	}
	checkIntents(t, s, other, state.Intent{UIDL: "u9", Target: "t", Token: "tok", Size: 1})

	// Intents are not records.
	wantKnown(t, reconcile(t, s, acct, t0, "u1", "u2", "u3"))
}

func testIntentsClearedByMarkDelivered(t *testing.T, s state.Store) {
	ctx := t.Context()
	var in []state.Intent
	for i, u := range []string{"u1", "u2", "u3"} {
		for target := range 2 {
			in = append(in, state.Intent{UIDL: u, Target: fmt.Sprintf("maildir:%d", target), Token: fmt.Sprintf("tok-%s-%d", u, target), Created: t0.Add(time.Duration(i) * time.Second)})
		}
	}
	if err := s.AddIntents(ctx, acct, in); err != nil {
		t.Fatal(err)
	}
	if err := s.AddIntents(ctx, other, in[:2]); err != nil {
		t.Fatal(err)
	}
	deliver(t, s, acct, t0, "u1", "u3")
	checkIntents(t, s, acct, in[2], in[3])
	checkIntents(t, s, other, in[0], in[1])

	// Quarantine is delivery too.
	if err := s.MarkDelivered(ctx, acct, []state.Record{{UIDL: "u2", State: state.Quarantined, DeliveredAt: t0}}); err != nil {
		t.Fatal(err)
	}
	checkIntents(t, s, acct)
}

func testIntentsInvalid(t *testing.T, s state.Store) {
	ctx := t.Context()
	good := state.Intent{UIDL: "u1", Target: "t", Token: "tok", Created: t0}
	for _, bad := range []state.Intent{
		{UIDL: "", Target: "t", Token: "tok"},
		{UIDL: "u2", Target: "t", Token: ""},
		{UIDL: "u2", Target: "", Token: "tok"},
		{UIDL: "u2", Target: "t", Token: "tok", Confirmed: true},
	} {
		if err := s.AddIntents(ctx, acct, []state.Intent{good, bad}); err == nil {
			t.Errorf("AddIntents(%+v): no error", bad)
		}
	}
	checkIntents(t, s, acct)
}

func testMarkDeliveredUpdates(t *testing.T, s state.Store) {
	ctx := t.Context()
	first := state.Record{UIDL: "a", State: state.Quarantined, Size: 5, FirstSeen: t0, DeliveredAt: t0, Note: "broken"}
	if err := s.MarkDelivered(ctx, acct, []state.Record{first}); err != nil {
		t.Fatal(err)
	}
	second := state.Record{UIDL: "a", State: state.Delivered, Size: 6, FirstSeen: t0.Add(time.Hour), DeliveredAt: t0.Add(2 * time.Hour)}
	if err := s.MarkDelivered(ctx, acct, []state.Record{second}); err != nil {
		t.Fatal(err)
	}
	want := second
	want.FirstSeen = t0 // the earlier first sighting stays
	checkRecord(t, reconcile(t, s, acct, t0.Add(3*time.Hour), "a")["a"], want)

	// Zero times are filled in: DeliveredAt with now, FirstSeen with DeliveredAt.
	before := time.Now().Add(-time.Second)
	if err := s.MarkDelivered(ctx, acct, []state.Record{{UIDL: "b", State: state.Delivered}}); err != nil {
		t.Fatal(err)
	}
	b := reconcile(t, s, acct, t0.Add(3*time.Hour), "b")["b"]
	if b.DeliveredAt.Before(before) || b.DeliveredAt.After(time.Now().Add(time.Second)) {
		t.Errorf("DeliveredAt = %v, want about now", b.DeliveredAt)
	}
	if !b.FirstSeen.Equal(b.DeliveredAt) {
		t.Errorf("FirstSeen = %v, want DeliveredAt %v", b.FirstSeen, b.DeliveredAt)
	}
}

func testMarkDeliveredRejects(t *testing.T, s state.Store) {
	ctx := t.Context()
	for _, bad := range []state.Record{
		{UIDL: "x", State: state.Skipped},
		{UIDL: "x"},
		{UIDL: "", State: state.Delivered},
	} {
		if err := s.MarkDelivered(ctx, acct, []state.Record{delivered("a", t0), bad}); err == nil {
			t.Errorf("MarkDelivered(%+v): no error", bad)
		}
	}
	if err := s.MarkSkipped(ctx, acct, []state.Record{{UIDL: "b"}, {UIDL: "x", State: state.Delivered}}); err == nil {
		t.Error("MarkSkipped with state Delivered: no error")
	}
	wantKnown(t, reconcile(t, s, acct, t0, "a", "b", "x"))
}

func testSkippedThenDelivered(t *testing.T, s state.Store) {
	ctx := t.Context()
	skip := state.Record{UIDL: "big", Size: 300 << 20, FirstSeen: t0, Note: "larger than max_size 50MiB"}
	if err := s.MarkSkipped(ctx, acct, []state.Record{skip}); err != nil {
		t.Fatal(err)
	}
	skip.State = state.Skipped
	checkRecord(t, reconcile(t, s, acct, t0, "big")["big"], skip)

	// Skipped again later (still too big): still Skipped, first sighting kept.
	again := skip
	again.FirstSeen = t0.Add(time.Hour)
	again.Note = "larger than max_size 60MiB"
	if err := s.MarkSkipped(ctx, acct, []state.Record{again}); err != nil {
		t.Fatal(err)
	}
	want := again
	want.FirstSeen = t0
	checkRecord(t, reconcile(t, s, acct, t0, "big")["big"], want)

	// The limit was raised: delivered now.
	d := state.Record{UIDL: "big", State: state.Delivered, Size: 300 << 20, FirstSeen: t0.Add(2 * time.Hour), DeliveredAt: t0.Add(2 * time.Hour)}
	if err := s.MarkDelivered(ctx, acct, []state.Record{d}); err != nil {
		t.Fatal(err)
	}
	d.FirstSeen = t0
	checkRecord(t, reconcile(t, s, acct, t0.Add(3*time.Hour), "big")["big"], d)
}

func testSkippedNeverDowngrades(t *testing.T, s state.Store) {
	ctx := t.Context()
	deliver(t, s, acct, t0, "a")
	q := state.Record{UIDL: "q", State: state.Quarantined, DeliveredAt: t0, FirstSeen: t0, Note: "kept aside"}
	if err := s.MarkDelivered(ctx, acct, []state.Record{q}); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkSkipped(ctx, acct, []state.Record{{UIDL: "a", Note: "too big"}, {UIDL: "q", Note: "too big"}, {UIDL: "n", FirstSeen: t0}}); err != nil {
		t.Fatal(err)
	}
	m := reconcile(t, s, acct, t0, "a", "q", "n")
	checkRecord(t, m["a"], delivered("a", t0))
	checkRecord(t, m["q"], q)
	checkRecord(t, m["n"], state.Record{UIDL: "n", State: state.Skipped, FirstSeen: t0})
}

func testMarkDeleted(t *testing.T, s state.Store) {
	ctx := t.Context()
	deliver(t, s, acct, t0, "a", "b")
	deliver(t, s, other, t0, "a")
	at := t0.Add(time.Hour)
	if err := s.MarkDeleted(ctx, acct, []string{"a", "unknown"}, at); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkDeleted(ctx, state.Account{Host: "nowhere.example", Port: 110, User: "x"}, []string{"a"}, at); err != nil {
		t.Fatalf("MarkDeleted for an account without records: %v", err)
	}
	m := reconcile(t, s, acct, at, "a", "b", "unknown")
	wantKnown(t, m, "a", "b")
	a := delivered("a", t0)
	a.DeletedAt = at
	checkRecord(t, m["a"], a)
	checkRecord(t, m["b"], delivered("b", t0))
	checkRecord(t, reconcile(t, s, other, at, "a")["a"], delivered("a", t0))

	// Marking delivered again (an intent resolved late) keeps DeletedAt.
	deliver(t, s, acct, t0.Add(2*time.Hour), "a")
	a = delivered("a", t0.Add(2*time.Hour))
	a.FirstSeen = t0
	a.DeletedAt = at
	checkRecord(t, reconcile(t, s, acct, at, "a")["a"], a)
}

func checkPolls(t *testing.T, got, want []state.Poll) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		g, w := got[i], want[i]
		ok = g.Name == w.Name && g.Account == w.Account.Canonical() && g.Start.Equal(w.Start) && sameTime(g.End, w.End) &&
			g.OnServer == w.OnServer && g.New == w.New && g.Delivered == w.Delivered && g.Deleted == w.Deleted &&
			g.Skipped == w.Skipped && g.Bytes == w.Bytes && g.Err == w.Err && g.Pending == w.Pending
	}
	if !ok {
		t.Errorf("polls\n got %+v\nwant %+v", got, want)
	}
}

func testPolls(t *testing.T, s state.Store) {
	ctx := t.Context()
	p1 := state.Poll{Name: "home", Account: acct, Start: t0, End: t0.Add(2 * time.Second),
		OnServer: 10, New: 3, Delivered: 3, Deleted: 2, Skipped: 1, Bytes: 12345, Pending: 1}
	p2 := state.Poll{Name: "home", Account: acct, Start: t0.Add(5 * time.Minute), End: t0.Add(5*time.Minute + time.Second),
		OnServer: 8, Err: "logging in: -ERR [AUTH] invalid credentials", Pending: 1}
	for _, p := range []state.Poll{p1, p2} {
		if err := s.RecordPoll(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Polls(ctx, acct, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkPolls(t, got, []state.Poll{p2, p1})
	if got, err = s.Polls(ctx, acct, 1); err != nil {
		t.Fatal(err)
	}
	checkPolls(t, got, []state.Poll{p2})
	if got, err = s.Polls(ctx, other, 0); err != nil {
		t.Fatal(err)
	}
	checkPolls(t, got, nil)

	if err := s.RecordPoll(ctx, state.Poll{Name: "home", Account: acct}); err == nil {
		t.Error("RecordPoll without start time: no error")
	}
	if err := s.RecordPoll(ctx, state.Poll{Account: acct, Start: t0}); err == nil {
		t.Error("RecordPoll without name: no error")
	}
}

func testPollsKeepLast(t *testing.T, s state.Store) {
	ctx := t.Context()
	var all []state.Poll
	for i := range state.KeepPolls + 5 {
		p := state.Poll{Name: "home", Account: acct, Start: t0.Add(time.Duration(i) * time.Minute), New: i}
		if err := s.RecordPoll(ctx, p); err != nil {
			t.Fatal(err)
		}
		all = append(all, p)
	}
	if err := s.RecordPoll(ctx, state.Poll{Name: "work", Account: other, Start: t0}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Polls(ctx, acct, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(all[5:])
	slices.Reverse(want)
	checkPolls(t, got, want)
	if got, err = s.Polls(ctx, other, 0); err != nil || len(got) != 1 {
		t.Errorf("Polls(other) = %d polls, %v; want 1", len(got), err)
	}
}

func checkStatus(t *testing.T, got []state.AccountStatus, want ...state.AccountStatus) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		g, w := got[i], want[i]
		ok = g.Name == w.Name && g.Account == w.Account && sameTime(g.LastPoll, w.LastPoll) && g.LastOK == w.LastOK &&
			sameTime(g.LastSuccess, w.LastSuccess) && g.LastError == w.LastError &&
			sameTime(g.LastErrorAt, w.LastErrorAt) && g.Seen == w.Seen && g.Pending == w.Pending
	}
	if !ok {
		t.Errorf("Status\n got %+v\nwant %+v", got, want)
	}
}

func testStatus(t *testing.T, s state.Store) {
	ctx := t.Context()
	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkStatus(t, st)

	// An account with records but no polls has no status yet.
	deliver(t, s, acct, t0, "a", "b", "c")
	if err := s.MarkSkipped(ctx, acct, []state.Record{{UIDL: "big"}}); err != nil {
		t.Fatal(err)
	}
	if st, err = s.Status(ctx); err != nil {
		t.Fatal(err)
	}
	checkStatus(t, st)

	shouty := acct
	shouty.Host = "Pop.Example.Net"
	t1, t2, t3 := t0.Add(time.Minute), t0.Add(2*time.Minute), t0.Add(3*time.Minute)
	for _, p := range []state.Poll{
		{Name: "home", Account: acct, Start: t0, Pending: 4},
		{Name: "home", Account: shouty, Start: t1, Err: "dialing: connection refused", Pending: 4},
		{Name: "home", Account: acct, Start: t2, Pending: 2},
		{Name: "work", Account: other, Start: t1, Err: "logging in: -ERR [AUTH] no"},
	} {
		if err := s.RecordPoll(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if st, err = s.Status(ctx); err != nil {
		t.Fatal(err)
	}
	home := state.AccountStatus{Name: "home", Account: acct, LastPoll: t2, LastOK: true, LastSuccess: t2,
		LastError: "dialing: connection refused", LastErrorAt: t1, Seen: 4, Pending: 2}
	work := state.AccountStatus{Name: "work", Account: other, LastPoll: t1, LastError: "logging in: -ERR [AUTH] no", LastErrorAt: t1}
	checkStatus(t, st, home, work)

	// Renamed in the config: same identity, the latest name counts.
	if err := s.RecordPoll(ctx, state.Poll{Name: "zz-home", Account: acct, Start: t3, Err: "timeout", Pending: 2}); err != nil {
		t.Fatal(err)
	}
	if st, err = s.Status(ctx); err != nil {
		t.Fatal(err)
	}
	home.Name, home.LastPoll, home.LastOK, home.LastError, home.LastErrorAt = "zz-home", t3, false, "timeout", t3
	checkStatus(t, st, work, home)
}

func testLockAccount(t *testing.T, s state.Store) {
	ctx := t.Context()
	lease, err := s.LockAccount(ctx, acct)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.LockAccount(ctx, acct); !errors.Is(err, state.ErrLocked) {
		t.Fatalf("second LockAccount: err = %v, want ErrLocked", err)
	}
	shouty := acct
	shouty.Host = "POP.EXAMPLE.NET"
	if _, err := s.LockAccount(ctx, shouty); !errors.Is(err, state.ErrLocked) {
		t.Fatalf("LockAccount of the same identity in capitals: err = %v, want ErrLocked", err)
	}
	leaseOther, err := s.LockAccount(ctx, other)
	if err != nil {
		t.Fatalf("LockAccount of another account: %v", err)
	}
	if err := lease.Err(); err != nil {
		t.Fatalf("held lease: Err() = %v", err)
	}
	select {
	case <-lease.Done():
		t.Fatal("held lease: Done is closed")
	default:
	}
	lease.Release()
	lease.Release() // harmless
	select {
	case <-lease.Done():
	default:
		t.Fatal("released lease: Done is not closed")
	}
	if err := lease.Err(); !errors.Is(err, state.ErrLeaseReleased) || errors.Is(err, state.ErrLeaseLost) {
		t.Fatalf("released lease: Err() = %v, want ErrLeaseReleased", err)
	}
	if err := leaseOther.Err(); err != nil {
		t.Fatalf("releasing one lease ended another: %v", err)
	}
	lease2, err := s.LockAccount(ctx, acct)
	if err != nil {
		t.Fatalf("LockAccount after unlock: %v", err)
	}
	lease2.Release()
	leaseOther.Release()
}

func testLockAccountRace(t *testing.T, s state.Store) {
	ctx := t.Context()
	const n = 16
	var (
		wg       sync.WaitGroup
		start    = make(chan struct{})
		results  = make(chan error, n)
		unlockMu sync.Mutex
		leases   []state.Lease
	)
	for range n {
		wg.Go(func() {
			<-start
			lease, err := s.LockAccount(ctx, acct)
			if err == nil {
				unlockMu.Lock()
				leases = append(leases, lease)
				unlockMu.Unlock()
			}
			results <- err
		})
	}
	close(start)
	wg.Wait()
	close(results)
	won := 0
	for err := range results {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, state.ErrLocked):
			t.Errorf("LockAccount: %v", err)
		}
	}
	if won != 1 {
		t.Errorf("%d of %d concurrent LockAccount calls got the lock, want 1", won, n)
	}
	for _, l := range leases {
		l.Release()
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

// testMarkImportedIsAUnion: importing is a union that never downgrades,
// upgrades a Skipped record, keeps the old tool's times and can be
// repeated.
func testMarkImportedIsAUnion(t *testing.T, s state.Store) {
	ctx := t.Context()
	old := t0.Add(-48 * time.Hour)
	if err := s.MarkDelivered(ctx, acct, []state.Record{{UIDL: "d", State: state.Delivered, DeliveredAt: t0}}); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkSkipped(ctx, acct, []state.Record{{UIDL: "s", Note: "too big"}}); err != nil {
		t.Fatal(err)
	}
	recs := []state.Record{{UIDL: "d"}, {UIDL: "s"}, {UIDL: "a", DeliveredAt: old}, {UIDL: "b", State: state.Imported, Note: "by mpop"}}
	added, err := s.MarkImported(ctx, acct, recs)
	if err != nil {
		t.Fatal(err)
	}
	if added != 3 {
		t.Errorf("first import added %d, want 3 (a, b, and s upgraded)", added)
	}
	again, err := s.MarkImported(ctx, acct, recs)
	if err != nil || again != 0 {
		t.Errorf("second import added %d, %v; want 0, nil", again, err)
	}
	m, err := state.Known(ctx, s, acct, []string{"a", "b", "d", "s"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]state.MsgState{"a": state.Imported, "b": state.Imported, "d": state.Delivered, "s": state.Imported}
	for u, st := range want {
		if m[u].State != st {
			t.Errorf("%s: state %v, want %v", u, m[u].State, st)
		}
	}
	if !m["a"].DeliveredAt.Equal(old) || !m["a"].FirstSeen.Equal(old) {
		t.Errorf("a: delivered %v first seen %v, want the old tool's time %v", m["a"].DeliveredAt, m["a"].FirstSeen, old)
	}
	if !m["d"].DeliveredAt.Equal(t0) {
		t.Errorf("d: delivered %v, want %v (untouched)", m["d"].DeliveredAt, t0)
	}
	if m["b"].Note != "by mpop" || m["b"].DeliveredAt.IsZero() {
		t.Errorf("b: %+v", m["b"])
	}
	if state.Imported.String() != "imported" {
		t.Errorf("Imported.String() = %q", state.Imported.String())
	}
}

func testMarkImportedRejects(t *testing.T, s state.Store) {
	for _, r := range []state.Record{{UIDL: ""}, {UIDL: "x", State: state.Delivered}} {
		if _, err := s.MarkImported(t.Context(), acct, []state.Record{r}); err == nil {
			t.Errorf("MarkImported(%+v) succeeded", r)
		}
	}
}
