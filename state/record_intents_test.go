package state_test

import (
	"testing"

	"popsync/state"
)

// MarkDeliveredAddIntents records one batch (dropping its intents) and
// adds the next batch's intents in one transaction, and is all or nothing.
func TestMarkDeliveredAddIntents(t *testing.T) {
	s := openTest(t)
	ctx := t.Context()
	a := state.Account{Host: "pop.example.net", Port: 995, User: "me"}
	if state.IntentRecorderOf(s) == nil {
		t.Fatal("the SQLite store is no IntentRecorder")
	}
	if err := s.AddIntents(ctx, a, []state.Intent{{UIDL: "a", Target: "t", Token: "tok-a"}}); err != nil {
		t.Fatal(err)
	}
	next := []state.Intent{{UIDL: "b", Target: "t", Token: "tok-b"}}
	if err := s.MarkDeliveredAddIntents(ctx, a, []state.Record{{UIDL: "a", State: state.Delivered, Size: 3}}, next); err != nil {
		t.Fatal(err)
	}
	in, err := s.Intents(ctx, a)
	if err != nil || len(in) != 1 || in[0].UIDL != "b" || in[0].Token != "tok-b" {
		t.Fatalf("intents = %+v, %v; want only b's", in, err)
	}
	seen, err := s.ReadSeen(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if r := seen.Lookup([]string{"a", "b"}); r[0].State != state.Delivered || r[1].State == state.Delivered {
		t.Fatalf("records = %+v, want a delivered, b not", r)
	}

	// An intent that fails its checks: nothing of the call is written.
	bad := []state.Intent{{UIDL: "c", Target: "t", Token: "tok-c"}, {UIDL: "", Target: "t", Token: "x"}}
	if err := s.MarkDeliveredAddIntents(ctx, a, []state.Record{{UIDL: "b", State: state.Delivered}}, bad); err == nil {
		t.Fatal("an intent without a UIDL was accepted")
	}
	if in, err := s.Intents(ctx, a); err != nil || len(in) != 1 || in[0].UIDL != "b" {
		t.Fatalf("after the failed call, intents = %+v, %v; want b's still", in, err)
	}
	seen, err = s.ReadSeen(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if r := seen.Lookup([]string{"b"}); r[0].State == state.Delivered {
		t.Fatal("the failed call recorded b")
	}
}

// storeWrapper adds a method and says what it wraps.
type storeWrapper struct{ state.Store }

func (w storeWrapper) Unwrap() state.Store { return w.Store }

// opaque wraps a store without Unwrap: it may change anything.
type opaque struct{ state.Store }

func TestIntentRecorderOfLooksThroughUnwrap(t *testing.T) {
	s := openTest(t)
	if state.IntentRecorderOf(storeWrapper{storeWrapper{s}}) == nil {
		t.Error("not found through two wrappers with Unwrap")
	}
	if state.IntentRecorderOf(opaque{s}) != nil {
		t.Error("found through a wrapper without Unwrap")
	}
}
