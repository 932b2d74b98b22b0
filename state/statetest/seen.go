package statetest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"popsync/state"
)

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
