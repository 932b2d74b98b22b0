package statetest

import (
	"errors"
	"testing"
	"time"

	"popsync/state"
)

// testAdoptAccount: the new identity takes over the seen-set, the
// intents and the poll history; the old one is left with nothing.
func testAdoptAccount(t *testing.T, s state.Store) {
	ctx := t.Context()
	moved := acct
	moved.Host, moved.Port = "Mail.Example.Net.", 110
	deliver(t, s, acct, t0, "a", "b")
	in := state.Intent{UIDL: "c", Target: "maildir:x", Token: "1.M1P1.host", Size: 5, Created: t0}
	if err := s.AddIntents(ctx, acct, []state.Intent{in}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordPoll(ctx, state.Poll{Name: "home", Account: acct, Start: t0, Delivered: 2}); err != nil {
		t.Fatal(err)
	}
	// An unrelated account stays as it is.
	deliver(t, s, other, t0, "z")

	if err := s.AdoptAccount(ctx, acct, moved); err != nil {
		t.Fatalf("AdoptAccount: %v", err)
	}
	wantKnown(t, reconcile(t, s, moved, t0.Add(time.Hour), "a", "b", "c"), "a", "b")
	checkIntents(t, s, moved, in)
	polls, err := s.Polls(ctx, moved, 0)
	if err != nil || len(polls) != 1 || polls[0].Delivered != 2 {
		t.Errorf("Polls of the new identity = %+v, %v; want the one poll of the old", polls, err)
	}
	wantKnown(t, reconcile(t, s, acct, t0.Add(time.Hour), "a", "b"))
	checkIntents(t, s, acct)
	if polls, _ := s.Polls(ctx, acct, 0); len(polls) != 0 {
		t.Errorf("the old identity kept %d polls", len(polls))
	}
	wantKnown(t, reconcile(t, s, other, t0.Add(time.Hour), "z"), "z")

	// Nothing left to adopt from the old identity.
	if err := s.AdoptAccount(ctx, acct, moved); !errors.Is(err, state.ErrNoAccount) {
		t.Errorf("adopting from an identity without state: %v, want ErrNoAccount", err)
	}
}

// testAdoptAccountRefuses: never onto an identity with state of its own,
// never onto itself, never from or to an invalid identity.
func testAdoptAccountRefuses(t *testing.T, s state.Store) {
	ctx := t.Context()
	deliver(t, s, acct, t0, "a")
	deliver(t, s, other, t0, "z")
	if err := s.AdoptAccount(ctx, acct, other); !errors.Is(err, state.ErrAccountInUse) {
		t.Errorf("adopting onto an identity with records: %v, want ErrAccountInUse", err)
	}
	wantKnown(t, reconcile(t, s, acct, t0, "a", "z"), "a")
	wantKnown(t, reconcile(t, s, other, t0, "a", "z"), "z")

	shouty := acct
	shouty.Host = "POP.EXAMPLE.NET."
	if err := s.AdoptAccount(ctx, acct, shouty); err == nil {
		t.Error("adopting onto the same canonical identity succeeded")
	}
	for _, bad := range []state.Account{{Host: "", Port: 995, User: "u"}, {Host: "h", Port: 0, User: "u"}, {Host: "h", Port: 995}} {
		if err := s.AdoptAccount(ctx, acct, bad); err == nil {
			t.Errorf("adopting onto invalid %+v succeeded", bad)
		}
		if err := s.AdoptAccount(ctx, bad, acct); err == nil {
			t.Errorf("adopting from invalid %+v succeeded", bad)
		}
	}
	wantKnown(t, reconcile(t, s, acct, t0, "a"), "a")
}

// testForgetAccount: everything of one identity goes, nothing else.
func testForgetAccount(t *testing.T, s state.Store) {
	ctx := t.Context()
	deliver(t, s, acct, t0, "a")
	if err := s.AddIntents(ctx, acct, []state.Intent{{UIDL: "b", Target: "maildir:x", Token: "1.M1P1.host"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordPoll(ctx, state.Poll{Name: "home", Account: acct, Start: t0}); err != nil {
		t.Fatal(err)
	}
	deliver(t, s, other, t0, "z")
	if err := s.RecordPoll(ctx, state.Poll{Name: "work", Account: other, Start: t0}); err != nil {
		t.Fatal(err)
	}
	if err := s.ForgetAccount(ctx, acct); err != nil {
		t.Fatalf("ForgetAccount: %v", err)
	}
	wantKnown(t, reconcile(t, s, acct, t0, "a"))
	checkIntents(t, s, acct)
	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0].Account != other {
		t.Errorf("Status after forgetting %s = %+v, want only %s", acct, st, other)
	}
	if err := s.ForgetAccount(ctx, acct); !errors.Is(err, state.ErrNoAccount) {
		t.Errorf("forgetting twice: %v, want ErrNoAccount", err)
	}
	wantKnown(t, reconcile(t, s, other, t0, "z"), "z")
}
