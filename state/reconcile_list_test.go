package state_test

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"popsync/state"
)

// TestReconcileListAligned: ReconcileList returns each record at the
// place of its UIDL in the list (also a UIDL listed twice), zero records
// for unknown UIDLs, and writes what Reconcile writes.
func TestReconcileListAligned(t *testing.T) {
	s := openTest(t)
	ctx := t.Context()
	recs := []state.Record{
		{UIDL: "a", State: state.Delivered, Size: 10, FirstSeen: t0, DeliveredAt: t0.Add(time.Second)},
		{UIDL: "b", State: state.Delivered, Size: 20, FirstSeen: t0, DeliveredAt: t0, DeletedAt: t0.Add(time.Hour)},
		{UIDL: "gone-soon", State: state.Delivered, Size: 30, FirstSeen: t0, DeliveredAt: t0},
		{UIDL: "q", State: state.Quarantined, Size: 40, FirstSeen: t0, DeliveredAt: t0, Note: "rejected:\nline two, spaces  and\ttabs"},
	}
	if err := s.MarkDelivered(ctx, acct, recs); err != nil {
		t.Fatal(err)
	}
	skipped := state.Record{UIDL: "big one", State: state.Skipped, Size: 1 << 30, FirstSeen: t0, Note: "size 1073741824 over max_size 1000"}
	if err := s.MarkSkipped(ctx, acct, []state.Record{skipped}); err != nil {
		t.Fatal(err)
	}
	list := []string{"new1", "b", "a", "big one", "b", "q", "new2"}
	got, err := state.ReconcileList(ctx, s, acct, list, t0.Add(time.Minute), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	want := []state.Record{{}, recs[1], recs[0], skipped, recs[1], recs[3], {}}
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if !sameRecord(got[i], want[i]) {
			t.Errorf("record %d (%q) = %+v, want %+v", i, list[i], got[i], want[i])
		}
	}
	// "gone-soon" was absent: marked gone now, pruned after the grace.
	if _, err := state.ReconcileList(ctx, s, acct, list, t0.Add(2*time.Hour), time.Hour); err != nil {
		t.Fatal(err)
	}
	m, err := state.Reconcile(ctx, s, acct, []string{"gone-soon", "a"}, t0.Add(2*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m["gone-soon"]; ok || len(m) != 1 {
		t.Errorf("after the grace: %v, want only a", m)
	}
}

func sameRecord(a, b state.Record) bool {
	return a.UIDL == b.UIDL && a.State == b.State && a.Size == b.Size && a.Note == b.Note &&
		a.FirstSeen.Equal(b.FirstSeen) && a.DeliveredAt.Equal(b.DeliveredAt) && a.DeletedAt.Equal(b.DeletedAt)
}

// TestReconcileListManyChunks: thousands of records read in several
// statements, with UIDLs that sort across chunk boundaries, give the same
// answer as the records written.
func TestReconcileListManyChunks(t *testing.T) {
	s := openTest(t)
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 10000
	var recs []state.Record
	var list []string
	for i := range n {
		u := fmt.Sprintf("%x-%d", rng.Uint64(), i)
		if i%7 == 0 {
			u = strings.Repeat("z", 1+i%40) + u // long and odd ones
		}
		r := state.Record{UIDL: u, State: state.Delivered, Size: int64(i), FirstSeen: t0, DeliveredAt: t0.Add(time.Duration(i) * time.Microsecond)}
		recs = append(recs, r)
		if i%10 != 0 {
			list = append(list, u) // every tenth one is gone from the server
		}
	}
	for i := 0; i < n; i += 2500 {
		if err := s.MarkDelivered(ctx, acct, recs[i:i+2500]); err != nil {
			t.Fatal(err)
		}
	}
	rng.Shuffle(len(list), func(i, j int) { list[i], list[j] = list[j], list[i] })
	got, err := state.ReconcileList(ctx, s, acct, list, t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	byUIDL := make(map[string]state.Record, n)
	for _, r := range recs {
		byUIDL[r.UIDL] = r
	}
	for i, u := range list {
		if !sameRecord(got[i], byUIDL[u]) {
			t.Fatalf("record %d (%q) = %+v, want %+v", i, u, got[i], byUIDL[u])
		}
	}
}

func openTest(t *testing.T) *state.SQLite {
	t.Helper()
	s, err := state.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkReconcileList100k is BenchmarkReconcile100k/Known for
// ReconcileList, which skips the map.
func BenchmarkReconcileList100k(b *testing.B) {
	const n = 100000
	s := benchStore(b, "FULL")
	uidls := benchUIDLs("k", n)
	benchDeliver(b, s, uidls)
	now := t0
	cpu := startCPU()
	for b.Loop() {
		now = now.Add(time.Minute)
		recs, err := state.ReconcileList(b.Context(), s, acct, uidls, now, 30*24*time.Hour)
		if err != nil || len(recs) != n || recs[n-1].State != state.Delivered {
			b.Fatalf("ReconcileList: %d records, %v", len(recs), err)
		}
	}
	cpu.report(b)
}

// TestBatchWritesAcrossStatements: the write methods cut large batches
// into multi-row statements; a batch larger than one statement, with a
// UIDL given twice, behaves as if the rows were written one by one.
func TestBatchWritesAcrossStatements(t *testing.T) {
	s := openTest(t)
	ctx := t.Context()
	const n = 150 // more than two statements' worth
	var in []state.Intent
	var recs []state.Record
	var all []string
	for i := range n {
		u := fmt.Sprintf("u%03d", i)
		all = append(all, u)
		in = append(in, state.Intent{UIDL: u, Target: "maildir:x", Token: "tok-" + u, Size: int64(i), Created: t0})
		recs = append(recs, state.Record{UIDL: u, State: state.Delivered, Size: int64(i), FirstSeen: t0, DeliveredAt: t0})
	}
	// The same UIDL and target again: the later intent replaces it.
	in = append(in, state.Intent{UIDL: "u007", Target: "maildir:x", Token: "tok-again", Size: 7, Created: t0})
	if err := s.AddIntents(ctx, acct, in); err != nil {
		t.Fatal(err)
	}
	got, err := s.Intents(ctx, acct)
	if err != nil || len(got) != n {
		t.Fatalf("Intents: %d, %v; want %d", len(got), err, n)
	}
	for _, it := range got {
		if it.UIDL == "u007" && it.Token != "tok-again" {
			t.Errorf("u007 intent token %q, want the later one", it.Token)
		}
	}
	// A UIDL twice in one MarkDelivered: the later record wins, and every
	// intent of the batch is gone.
	recs = append(recs, state.Record{UIDL: "u010", State: state.Quarantined, Size: 10, FirstSeen: t0, DeliveredAt: t0.Add(time.Hour), Note: "second"})
	if err := s.MarkDelivered(ctx, acct, recs); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Intents(ctx, acct); err != nil || len(got) != 0 {
		t.Fatalf("intents left after MarkDelivered: %v, %v", got, err)
	}
	if err := s.MarkDeleted(ctx, acct, all[5:], t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	m, err := state.Reconcile(ctx, s, acct, all, t0.Add(3*time.Hour), time.Hour)
	if err != nil || len(m) != n {
		t.Fatalf("Reconcile: %d records, %v", len(m), err)
	}
	if r := m["u010"]; r.State != state.Quarantined || r.Note != "second" || !r.DeliveredAt.Equal(t0.Add(time.Hour)) {
		t.Errorf("u010 = %+v, want the later record", r)
	}
	for i, u := range all {
		deleted := !m[u].DeletedAt.IsZero()
		if deleted != (i >= 5) || (deleted && !m[u].DeletedAt.Equal(t0.Add(2*time.Hour))) {
			t.Fatalf("%s deleted at %v", u, m[u].DeletedAt)
		}
	}
	if err := s.AddIntents(ctx, acct, in[:n]); err != nil {
		t.Fatal(err)
	}
	if err := s.DropIntents(ctx, acct, all); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Intents(ctx, acct); err != nil || len(got) != 0 {
		t.Fatalf("intents left after DropIntents: %v, %v", got, err)
	}
}

// BenchmarkReconcileSeen100k measures the two halves of ReconcileList
// apart: ReadSeen, which a poll overlaps with the server's login, and
// SeenSet.Reconcile, which waits for the server's list.
func BenchmarkReconcileSeen100k(b *testing.B) {
	const n = 100000
	s := benchStore(b, "FULL")
	uidls := benchUIDLs("k", n)
	benchDeliver(b, s, uidls)
	b.Run("ReadSeen", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.ReadSeen(b.Context(), acct); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Reconcile", func(b *testing.B) {
		now := t0
		for b.Loop() {
			b.StopTimer()
			seen, err := s.ReadSeen(b.Context(), acct)
			if err != nil {
				b.Fatal(err)
			}
			now = now.Add(time.Minute)
			b.StartTimer()
			recs, err := seen.Reconcile(b.Context(), uidls, now, 30*24*time.Hour)
			if err != nil || len(recs) != n || recs[n-1].State != state.Delivered {
				b.Fatalf("Reconcile: %d records, %v", len(recs), err)
			}
		}
	})
}
