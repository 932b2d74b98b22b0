package statetest

import (
	"fmt"
	"testing"
	"time"

	"popsync/state"
)

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

// testMarkDeliveredAddIntents: every backend records one batch
// (dropping its intents) and adds the next batch's intents in one
// transaction (state.IntentRecorder), all or nothing.
func testMarkDeliveredAddIntents(t *testing.T, s state.Store) {
	ctx := t.Context()
	ir := state.IntentRecorderOf(s)
	if ir == nil {
		t.Fatal("the store is no state.IntentRecorder")
	}
	a := state.Intent{UIDL: "a", Target: "t", Token: "tok-a", Created: t0}
	if err := s.AddIntents(ctx, acct, []state.Intent{a}); err != nil {
		t.Fatal(err)
	}
	b := state.Intent{UIDL: "b", Target: "t", Token: "tok-b", Size: 7, Created: t0}
	// The same UIDL and target twice: the last one counts.
	stale := state.Intent{UIDL: "b", Target: "t", Token: "tok-old", Created: t0}
	if err := ir.MarkDeliveredAddIntents(ctx, acct, []state.Record{delivered("a", t0)}, []state.Intent{stale, b}); err != nil {
		t.Fatal(err)
	}
	checkIntents(t, s, acct, b)
	wantKnown(t, reconcile(t, s, acct, t0, "a", "b"), "a")

	// Only records, or only intents.
	if err := ir.MarkDeliveredAddIntents(ctx, acct, []state.Record{delivered("b", t0)}, nil); err != nil {
		t.Fatal(err)
	}
	checkIntents(t, s, acct)
	c := state.Intent{UIDL: "c", Target: "t", Token: "tok-c", Created: t0}
	if err := ir.MarkDeliveredAddIntents(ctx, acct, nil, []state.Intent{c}); err != nil {
		t.Fatal(err)
	}
	checkIntents(t, s, acct, c)

	// An intent that fails its checks: nothing of the call is written.
	bad := []state.Intent{{UIDL: "d", Target: "t", Token: "tok-d"}, {UIDL: "", Target: "t", Token: "x"}}
	if err := ir.MarkDeliveredAddIntents(ctx, acct, []state.Record{delivered("c", t0)}, bad); err == nil {
		t.Fatal("an intent without a UIDL was accepted")
	}
	checkIntents(t, s, acct, c)
	wantKnown(t, reconcile(t, s, acct, t0, "a", "b", "c"), "a", "b")
}
