package statetest

import (
	"slices"
	"testing"
	"time"

	"popsync/state"
)

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
