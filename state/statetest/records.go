package statetest

import (
	"testing"
	"time"

	"popsync/state"
)

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
