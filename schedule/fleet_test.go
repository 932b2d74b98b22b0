package schedule_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"popsync/configs"
	"popsync/fetch"
	"popsync/internal/realtest"
	"popsync/schedule"
	"popsync/state"
	"popsync/state/postgres"
)

// fleetDB opens n fleet stores on one new database of a private
// PostgreSQL.
func fleetDB(t *testing.T, n int, ttl time.Duration) []*postgres.Store {
	stores, _ := fleetDBServer(t, n, ttl)
	return stores
}

func fleetDBServer(t *testing.T, n int, ttl time.Duration) ([]*postgres.Store, *realtest.Postgres) {
	t.Helper()
	pg := realtest.StartPostgres(t, realtest.PostgresOptions{})
	if err := pg.CreateDatabase("fleet"); err != nil {
		t.Fatal(err)
	}
	var out []*postgres.Store
	for i := range n {
		st, err := postgres.Open(t.Context(), pg.ConnString("fleet"),
			postgres.Options{DaemonID: fmt.Sprintf("d%d", i), LeaseTTL: ttl, RequireLease: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		out = append(out, st)
	}
	return out, pg
}

// TestFleetPollsEachAccountOnce: two Fleets on one database poll each
// of 40 accounts exactly once per schedule slot between them, both
// polling at once, each poll under a held lease that the poll's store
// hands out, and writes of the poll are fenced with it.
func TestFleetPollsEachAccountOnce(t *testing.T) {
	stores := fleetDB(t, 2, 3*time.Second)
	var accounts []*configs.Account
	for i := range 40 {
		accounts = append(accounts, &configs.Account{Name: fmt.Sprintf("a%02d", i), Host: "pop.example.net", Port: 995,
			User: fmt.Sprintf("u%02d", i), Schedule: "@every 1h"})
	}
	var mu sync.Mutex
	polls := map[string]int{}
	byFleet := [2]int{}
	all := make(chan struct{})
	// The first polls wait until both members have MaxParallel polls in
	// flight: both have then started and claimed their share, however
	// late the second one's Run was scheduled.
	const maxParallel = 4
	inFlight, together := 0, make(chan struct{})
	var errs []error
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wg sync.WaitGroup
	for i, st := range stores {
		f, err := schedule.NewFleet(schedule.FleetOptions{
			Store: st,
			Poll: func(ctx context.Context, a *configs.Account, leased state.Store) fetch.PollReport {
				lease, err := leased.LockAccount(ctx, a.Identity())
				if err == nil && state.IntentRecorderOf(leased) == nil {
					err = errors.New("the poll's store hides the fleet store's combined transaction")
				}
				if err == nil {
					defer lease.Release()
					err = leased.MarkDelivered(ctx, a.Identity(), []state.Record{{UIDL: "m1", State: state.Delivered}})
				}
				if err == nil {
					// Another account's lease is not this poll's.
					if _, lerr := leased.LockAccount(ctx, state.Account{Host: "x", Port: 1, User: "y"}); !errors.Is(lerr, state.ErrLocked) {
						err = fmt.Errorf("LockAccount of another account: %v", lerr)
					}
				}
				mu.Lock()
				if inFlight++; inFlight == 2*maxParallel {
					close(together)
				}
				mu.Unlock()
				select {
				case <-together:
				case <-time.After(30 * time.Second):
					err = errors.New("the other fleet member never had its polls in flight")
				}
				time.Sleep(20 * time.Millisecond)
				if err == nil {
					// Kept for the Fleet's FinishPoll, as fetch records it.
					now := time.Now()
					err = leased.RecordPoll(ctx, state.Poll{Name: a.Name, Account: a.Identity(), Start: now.Add(-20 * time.Millisecond), End: now})
				}
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				}
				polls[a.Name]++
				byFleet[i]++
				if len(polls) == len(accounts) {
					select {
					case <-all:
					default:
						close(all)
					}
				}
				return fetch.PollReport{Result: fetch.Result{Account: a.Name}}
			},
		}, schedule.Settings{Accounts: accounts, MaxParallel: maxParallel})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.Run(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	select {
	case <-all:
	case <-time.After(60 * time.Second):
		t.Fatal("not every account was polled within 60 s")
	}
	// Nothing is due for an hour: no account is polled again.
	time.Sleep(time.Second)
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for _, err := range errs {
		t.Error(err)
	}
	for _, a := range accounts {
		if polls[a.Name] != 1 {
			t.Errorf("%s polled %d times, want once", a.Name, polls[a.Name])
		}
	}
	if byFleet[0] < maxParallel || byFleet[1] < maxParallel {
		t.Errorf("polls per fleet member %v, want at least %d each", byFleet, maxParallel)
	}
	// The polls are recorded, and the next due time is an hour on.
	ls, err := stores[0].Leases(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, li := range ls {
		if li.Owner != "" || time.Until(li.NextDue) < 50*time.Minute {
			t.Errorf("%s: owner %q, next due %v; want free and an hour on", li.Account, li.Owner, li.NextDue)
		}
	}
	st, err := stores[1].Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != len(accounts) {
		t.Errorf("%d accounts with recorded polls, want %d", len(st), len(accounts))
	}
}

// TestFleetSurvivesDatabaseOutage: while PostgreSQL is stopped the Fleet
// keeps running and starts no poll; once it is back, polls resume by
// themselves.
func TestFleetSurvivesDatabaseOutage(t *testing.T) {
	stores, pg := fleetDBServer(t, 1, 2*time.Second)
	accounts := []*configs.Account{{Name: "a", Host: "pop.example.net", Port: 995, User: "u", Schedule: "@every 1s"}}
	var mu sync.Mutex
	var starts []time.Time
	f, err := schedule.NewFleet(schedule.FleetOptions{
		Store: stores[0],
		Poll: func(ctx context.Context, a *configs.Account, leased state.Store) fetch.PollReport {
			mu.Lock()
			starts = append(starts, time.Now())
			mu.Unlock()
			return fetch.PollReport{Result: fetch.Result{Account: a.Name}}
		},
	}, schedule.Settings{Accounts: accounts, MaxParallel: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	ran := make(chan error, 1)
	go func() { ran <- f.Run(ctx) }()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(starts)
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("the first poll", func() bool { return count() >= 1 })
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	time.Sleep(3 * time.Second)
	mu.Lock()
	for _, s := range starts {
		if s.After(down.Add(500 * time.Millisecond)) {
			t.Errorf("a poll started at %v, %v after the database went down", s, s.Sub(down))
		}
	}
	mu.Unlock()
	if !f.Running() {
		t.Fatal("the Fleet stopped running while the database was down")
	}
	n := count()
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor("a poll after the database came back", func() bool { return count() > n })
	cancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
}
