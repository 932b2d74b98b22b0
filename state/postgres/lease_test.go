package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jackc/pgx/v5"

	"popsync/state"
)

// keepLease is timing logic on the local clock: testing/synctest drives it
// through virtual minutes with a renew function instead of the database.

func TestKeepLeaseRenews(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		var calls []time.Duration
		start := time.Now()
		done := make(chan error, 1)
		go func() {
			done <- keepLease(ctx, 60*time.Second, start, func(context.Context) (bool, error) {
				calls = append(calls, time.Since(start))
				return true, nil
			})
		}()
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("keepLease: %v", err)
		}
		// Every 20 s: 30 renewals in 10 minutes.
		if len(calls) != 30 || calls[0] != 20*time.Second || calls[29] != 600*time.Second {
			t.Errorf("renewals at %v, want every 20s", calls)
		}
	})
}

func TestKeepLeaseGivesUpBeforeExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var calls []time.Duration
		err := keepLease(t.Context(), 60*time.Second, start, func(context.Context) (bool, error) {
			calls = append(calls, time.Since(start))
			return false, errors.New("connection refused")
		})
		if !errors.Is(err, state.ErrLeaseLost) {
			t.Fatalf("keepLease = %v, want ErrLeaseLost", err)
		}
		// Given up a quarter of the TTL before the earliest expiry.
		if got := time.Since(start); got != 45*time.Second {
			t.Errorf("gave up after %v, want 45s", got)
		}
		// First at 20 s, then every 5 s until the deadline.
		want := []time.Duration{20 * time.Second, 25 * time.Second, 30 * time.Second, 35 * time.Second, 40 * time.Second}
		if !slices.Equal(calls, want) {
			t.Errorf("renewal attempts at %v, want %v", calls, want)
		}
	})
}

func TestKeepLeaseRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		start := time.Now()
		n := 0
		done := make(chan error, 1)
		go func() {
			done <- keepLease(ctx, 60*time.Second, start, func(context.Context) (bool, error) {
				n++
				if n == 2 || n == 3 {
					return false, errors.New("server restarting")
				}
				return true, nil
			})
		}()
		// Renewed at 20 s; failures at 40 and 45 s; renewed at 50 s, so
		// the next deadline is 50+45 s: still held at 90 s.
		time.Sleep(90 * time.Second)
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("keepLease after recovering: %v", err)
		}
	})
}

func TestKeepLeaseLostOrHung(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		err := keepLease(t.Context(), 30*time.Second, start, func(context.Context) (bool, error) { return false, nil })
		if !errors.Is(err, state.ErrLeaseLost) || time.Since(start) != 10*time.Second {
			t.Errorf("lease not held: %v after %v, want ErrLeaseLost at the first renewal (10s)", err, time.Since(start))
		}

		// A renewal that hangs is cut off at the deadline.
		start = time.Now()
		err = keepLease(t.Context(), 30*time.Second, start, func(ctx context.Context) (bool, error) {
			<-ctx.Done()
			return false, ctx.Err()
		})
		if !errors.Is(err, state.ErrLeaseLost) || time.Since(start) != 22500*time.Millisecond {
			t.Errorf("hung renewal: %v after %v, want ErrLeaseLost at 22.5s", err, time.Since(start))
		}
	})
}

// exec runs one statement on the database at url outside any Store, to
// play the clock or a dead daemon.
func exec(t testing.TB, url, sql string, args ...any) {
	t.Helper()
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// expireLeases ends every lease now by the database clock, as if their
// owners had been paused for longer than the TTL.
func expireLeases(t testing.TB, url string) {
	t.Helper()
	exec(t, url, `UPDATE lease SET expires_at = now() - interval '1 millisecond' WHERE owner IS NOT NULL`)
}

var acctA = state.Account{Host: "pop.example.net", Port: 995, User: "a"}

func TestLeaseExclusive(t *testing.T) {
	ctx := t.Context()
	url := newDB(t)
	d1 := open(t, url, Options{DaemonID: "d1"})
	d2 := open(t, url, Options{DaemonID: "d2"})
	l1, err := d1.Acquire(ctx, acctA)
	if err != nil {
		t.Fatal(err)
	}
	if l1.Token() != 1 || l1.Err() != nil {
		t.Errorf("first lease: token %d, err %v", l1.Token(), l1.Err())
	}
	_, err = d2.Acquire(ctx, acctA)
	if !errors.Is(err, state.ErrLocked) {
		t.Fatalf("second daemon: %v, want ErrLocked", err)
	}
	if want := "held by daemon d1"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	l1.Release()
	select {
	case <-l1.Done():
	default:
		t.Error("Done not closed after Release")
	}
	if !errors.Is(l1.Err(), state.ErrLeaseReleased) {
		t.Errorf("Err after Release = %v", l1.Err())
	}
	l2, err := d2.Acquire(ctx, acctA)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	if l2.Token() != 2 {
		t.Errorf("token after release and acquire = %d, want 2", l2.Token())
	}
	if st := d2.Stats(); st.Takeovers != 0 || st.LeasesHeld != 1 {
		t.Errorf("Stats = %+v; a released lease is no takeover", st)
	}
}

// TestLeaseRenewal: a lease outlives its TTL while its holder runs.
func TestLeaseRenewal(t *testing.T) {
	ctx := t.Context()
	url := newDB(t)
	ttl := time.Second
	d1 := open(t, url, Options{DaemonID: "d1", LeaseTTL: ttl})
	d2 := open(t, url, Options{DaemonID: "d2", LeaseTTL: ttl})
	l, err := d1.Acquire(ctx, acctA)
	if err != nil {
		t.Fatal(err)
	}
	first := l.Expires()
	end := time.Now().Add(4 * ttl)
	for time.Now().Before(end) {
		if _, err := d2.Acquire(ctx, acctA); !errors.Is(err, state.ErrLocked) {
			t.Fatalf("other daemon during renewal: %v, want ErrLocked", err)
		}
		select {
		case <-l.Done():
			t.Fatalf("lease ended while renewed: %v", l.Err())
		case <-time.After(ttl / 4):
		}
	}
	if !l.Expires().After(first.Add(2 * ttl)) {
		t.Errorf("expiry %v not moved forward from %v", l.Expires(), first)
	}
	if err := d1.MarkDelivered(ctx, acctA, []state.Record{{UIDL: "u", State: state.Delivered}}); err != nil {
		t.Errorf("write under a renewed lease: %v", err)
	}
}

// TestFencing: a daemon whose lease expired (it was paused) and was
// taken over cannot commit anything for the account; the new holder can.
func TestFencing(t *testing.T) {
	ctx := t.Context()
	url := newDB(t)
	d1 := open(t, url, Options{DaemonID: "d1"})
	d2 := open(t, url, Options{DaemonID: "d2"})
	l1, err := d1.Acquire(ctx, acctA)
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.AddIntents(ctx, acctA, []state.Intent{{UIDL: "u0", Target: "maildir:m", Token: "tok0"}}); err != nil {
		t.Fatalf("write under the lease: %v", err)
	}
	expireLeases(t, url)
	l2, err := d2.Acquire(ctx, acctA)
	if err != nil {
		t.Fatalf("takeover: %v", err)
	}
	if l2.Token() != l1.Token()+1 {
		t.Errorf("token after takeover %d, want %d", l2.Token(), l1.Token()+1)
	}
	if d2.Stats().Takeovers != 1 {
		t.Errorf("Takeovers = %d, want 1", d2.Stats().Takeovers)
	}
	// d1 still believes it holds the lease (its next renewal is 20 s
	// away): the database refuses its writes.
	if l1.Err() != nil {
		t.Fatalf("d1 knows of the loss already: %v", l1.Err())
	}
	err = d1.MarkDelivered(ctx, acctA, []state.Record{{UIDL: "u1", State: state.Delivered}})
	if !errors.Is(err, state.ErrLeaseLost) {
		t.Fatalf("MarkDelivered by the old holder: %v, want ErrLeaseLost", err)
	}
	select {
	case <-l1.Done():
	default:
		t.Fatal("old lease's Done not closed after a refused write")
	}
	for name, err := range map[string]error{
		"AddIntents":  d1.AddIntents(ctx, acctA, []state.Intent{{UIDL: "u1", Target: "maildir:m", Token: "t"}}),
		"MarkDeleted": d1.MarkDeleted(ctx, acctA, []string{"u0"}, time.Time{}),
		"DropIntents": d1.DropIntents(ctx, acctA, []string{"u0"}),
		"MarkSkipped": d1.MarkSkipped(ctx, acctA, []state.Record{{UIDL: "big"}}),
	} {
		if !errors.Is(err, state.ErrLeaseLost) {
			t.Errorf("%s by the old holder: %v, want ErrLeaseLost", name, err)
		}
	}
	if got := d1.Stats(); got.Refused != 5 || got.Lost != 1 {
		t.Errorf("old holder's Stats = %+v, want 5 refused, 1 lost", got)
	}
	m, err := state.Known(ctx, d2, acctA, []string{"u1", "big"})
	if err != nil || len(m) != 0 {
		t.Errorf("refused writes left records: %v, %v", m, err)
	}
	in, err := d2.Intents(ctx, acctA)
	if err != nil || len(in) != 1 || in[0].UIDL != "u0" {
		t.Errorf("intents after refused writes = %+v, %v; want u0 only", in, err)
	}
	// The new holder resolves the account's open intent as its own.
	if err := d2.MarkDelivered(ctx, acctA, []state.Record{{UIDL: "u0", State: state.Delivered}}); err != nil {
		t.Fatalf("new holder: %v", err)
	}
	// Releasing the lost lease does not touch the new holder's.
	l1.Release()
	if l2.Err() != nil {
		t.Fatal(l2.Err())
	}
	if _, err := d1.Acquire(ctx, acctA); !errors.Is(err, state.ErrLocked) {
		t.Errorf("old holder re-acquiring: %v, want ErrLocked", err)
	}
}

// TestFenceOrdersTakeover: a fenced transaction that passed the check
// keeps a takeover waiting until it ends, even when the lease expires
// meanwhile; the new holder then sees what it committed.
func TestFenceOrdersTakeover(t *testing.T) {
	ctx := t.Context()
	url := newDB(t)
	ttl := 500 * time.Millisecond
	d1 := open(t, url, Options{DaemonID: "d1", LeaseTTL: ttl})
	d2 := open(t, url, Options{DaemonID: "d2", LeaseTTL: ttl})
	l1, err := d1.Acquire(ctx, acctA)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT popsync_fence($1, 'd1', $2)`, l1.id, l1.Token()); err != nil {
		t.Fatalf("fence: %v", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO message (account_id, uidl, state, size, first_seen) VALUES ($1, 'late', 1, 0, now())`, l1.id); err != nil {
		t.Fatal(err)
	}
	// The open transaction blocks d1's renewals too: the lease expires.
	expired := time.Now().Add(ttl)
	for time.Now().Before(expired.Add(ttl)) {
		time.Sleep(ttl / 4)
	}
	got := make(chan error, 1)
	var l2 *Lease
	go func() {
		var err error
		l2, err = d2.Acquire(ctx, acctA)
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("takeover did not wait for the fenced transaction: %v", err)
	case <-time.After(2 * ttl):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("takeover after the commit: %v", err)
	}
	if l2.Token() != l1.Token()+1 {
		t.Errorf("token %d, want %d", l2.Token(), l1.Token()+1)
	}
	m, err := state.Known(ctx, d2, acctA, []string{"late"})
	if err != nil || len(m) != 1 {
		t.Errorf("new holder does not see the fenced commit: %v, %v", m, err)
	}
	select {
	case <-l1.Done():
	case <-time.After(10 * ttl):
		t.Error("old lease not lost")
	}
}

// TestLeaseLostWhenServerDown: a holder that cannot reach the database
// gives the lease up before it can expire.
func TestLeaseLostWhenServerDown(t *testing.T) {
	if testing.Short() {
		t.Skip("stops the shared cluster")
	}
	ctx := t.Context()
	p := pg(t)
	url := newDB(t)
	// Long enough that the margin (TTL/4) covers a goroutine waiting
	// for a core on a loaded machine.
	ttl := 8 * time.Second
	d1 := open(t, url, Options{DaemonID: "d1", LeaseTTL: ttl})
	sent := time.Now()
	l, err := d1.Acquire(ctx, acctA)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Start(); err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-l.Done():
	case <-time.After(3 * ttl):
		t.Fatal("lease not given up with the server down")
	}
	// The database and this test share a clock: the lease ended here
	// before it could expire there (renewals may have succeeded while the
	// server was shutting down).
	if gaveUp := time.Now(); !gaveUp.Before(l.Expires()) {
		t.Errorf("given up at %v, not before the lease's expiry %v: %v", gaveUp, l.Expires(), l.Err())
	}
	if since := time.Since(sent); since < ttl*3/4 {
		t.Errorf("given up %v after acquiring, before the deadline of %v", since, ttl*3/4)
	}
	if !errors.Is(l.Err(), state.ErrLeaseLost) {
		t.Errorf("Err = %v, want ErrLeaseLost", l.Err())
	}
	if err := d1.MarkDelivered(ctx, acctA, []state.Record{{UIDL: "u", State: state.Delivered}}); !errors.Is(err, state.ErrLeaseLost) {
		t.Errorf("write after the loss: %v, want ErrLeaseLost", err)
	}
	l.Release()
}

func TestRequireLease(t *testing.T) {
	ctx := t.Context()
	url := newDB(t)
	d := open(t, url, Options{DaemonID: "d1", RequireLease: true})
	rec := []state.Record{{UIDL: "u", State: state.Delivered}}
	if err := d.MarkDelivered(ctx, acctA, rec); !errors.Is(err, state.ErrLeaseLost) {
		t.Fatalf("write without a lease: %v, want ErrLeaseLost", err)
	}
	l, err := d.Acquire(ctx, acctA)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.MarkDelivered(ctx, acctA, rec); err != nil {
		t.Fatalf("write with the lease: %v", err)
	}
	l.Release()
	if err := d.AddIntents(ctx, acctA, []state.Intent{{UIDL: "v", Target: "maildir:m", Token: "t"}}); !errors.Is(err, state.ErrLeaseLost) {
		t.Fatalf("write after Release: %v, want ErrLeaseLost", err)
	}
	// A poll's outcome is recorded whatever became of the lease.
	if err := d.RecordPoll(ctx, state.Poll{Name: "a", Account: acctA, Start: time.Now()}); err != nil {
		t.Errorf("RecordPoll without a lease: %v", err)
	}
}

func accounts(n int) []state.Account {
	out := make([]state.Account, n)
	for i := range out {
		out[i] = state.Account{Host: "pop.example.net", Port: 995, User: fmt.Sprintf("user%03d", i)}
	}
	return out
}

// TestClaimDueFairShare: three daemons share 30 due accounts ten each,
// concurrently without overlap; finished accounts are not due again until
// their time; a dead daemon's accounts are taken over.
func TestClaimDueFairShare(t *testing.T) {
	ctx := t.Context()
	url := newDB(t)
	var ds []*Store
	for i := range 3 {
		d := open(t, url, Options{DaemonID: fmt.Sprintf("d%d", i+1)})
		if err := d.Register(ctx); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	if live, err := ds[0].LiveDaemons(ctx); err != nil || len(live) != 3 {
		t.Fatalf("LiveDaemons = %v, %v", live, err)
	}
	all := accounts(30)
	if err := ds[0].Schedule(ctx, all); err != nil {
		t.Fatal(err)
	}
	if err := ds[1].Schedule(ctx, all); err != nil { // idempotent
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		byD    = map[string][]*Lease{}
		wg     sync.WaitGroup
		claimE = make(chan error, 3)
	)
	for _, d := range ds {
		wg.Go(func() {
			ls, err := d.ClaimDue(ctx, 100)
			claimE <- err
			mu.Lock()
			byD[d.DaemonID()] = ls
			mu.Unlock()
		})
	}
	wg.Wait()
	close(claimE)
	for err := range claimE {
		if err != nil {
			t.Fatal(err)
		}
	}
	seen := map[state.Account]bool{}
	total := 0
	for id, ls := range byD {
		total += len(ls)
		for _, l := range ls {
			if seen[l.Account()] {
				t.Errorf("%s claimed twice", l.Account())
			}
			seen[l.Account()] = true
		}
		t.Logf("%s claimed %d", id, len(ls))
	}
	// Concurrent claims count each other's leases only once committed,
	// so a share may be a little off; together they take everything
	// within three rounds.
	for round := 0; total < 30 && round < 3; round++ {
		for _, d := range ds {
			ls, err := d.ClaimDue(ctx, 100)
			if err != nil {
				t.Fatal(err)
			}
			byD[d.DaemonID()] = append(byD[d.DaemonID()], ls...)
			total += len(ls)
		}
	}
	if total != 30 {
		t.Fatalf("claimed %d of 30", total)
	}
	for id, ls := range byD {
		if len(ls) < 8 || len(ls) > 12 {
			t.Errorf("%s holds %d leases, want about 10", id, len(ls))
		}
	}
	// Nothing is left to claim while the polls run.
	if ls, err := ds[0].ClaimDue(ctx, 100); err != nil || len(ls) != 0 {
		t.Fatalf("claim while all are held: %d, %v", len(ls), err)
	}

	// d1 and d2 finish theirs: due again in an hour.
	later := time.Now().Add(time.Hour)
	for _, id := range []string{"d1", "d2"} {
		for _, l := range byD[id] {
			if err := l.Finish(ctx, later); err != nil {
				t.Fatalf("Finish: %v", err)
			}
		}
	}
	if ls, err := ds[1].ClaimDue(ctx, 100); err != nil || len(ls) != 0 {
		t.Fatalf("claim after finishing: %d, %v; want none due", len(ls), err)
	}

	// d3 dies: its heartbeat and leases expire. The others take over its
	// accounts, with new tokens.
	d3 := byD["d3"]
	exec(t, url, `UPDATE daemon SET expires = now() WHERE id = 'd3'`)
	exec(t, url, `UPDATE lease SET expires_at = now() WHERE owner = 'd3'`)
	var taken []*Lease
	for _, d := range ds[:2] {
		ls, err := d.ClaimDue(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		taken = append(taken, ls...)
	}
	if len(taken) != len(d3) {
		t.Fatalf("took over %d of d3's %d accounts", len(taken), len(d3))
	}
	if tk := ds[0].Stats().Takeovers + ds[1].Stats().Takeovers; tk != uint64(len(d3)) {
		t.Errorf("Takeovers = %d, want %d", tk, len(d3))
	}
	old := map[state.Account]int64{}
	for _, l := range d3 {
		old[l.Account()] = l.Token()
	}
	for _, l := range taken {
		if l.Token() != old[l.Account()]+1 {
			t.Errorf("%s: token %d after takeover, want %d", l.Account(), l.Token(), old[l.Account()]+1)
		}
	}
	// d3 comes back from its pause: its Finish is fenced.
	if err := d3[0].Finish(ctx, later); !errors.Is(err, state.ErrLeaseLost) {
		t.Errorf("Finish by the paused daemon: %v, want ErrLeaseLost", err)
	}

	infos, err := ds[0].Leases(ctx)
	if err != nil || len(infos) != 30 {
		t.Fatalf("Leases = %d, %v", len(infos), err)
	}
	owners := map[string]int{}
	for _, li := range infos {
		owners[li.Owner]++
		if li.NextDue.IsZero() || li.Token == 0 {
			t.Errorf("lease info %+v", li)
		}
	}
	if owners[""] != 20 || owners["d3"] != 0 || owners["d1"]+owners["d2"] != len(d3) {
		t.Errorf("owners %v", owners)
	}
}

// TestFinish: Finish sets the next due time and frees the account at
// once.
func TestFinish(t *testing.T) {
	ctx := t.Context()
	url := newDB(t)
	d1 := open(t, url, Options{DaemonID: "d1"})
	d2 := open(t, url, Options{DaemonID: "d2"})
	if err := d1.Schedule(ctx, []state.Account{acctA}); err != nil {
		t.Fatal(err)
	}
	ls, err := d1.ClaimDue(ctx, 1)
	if err != nil || len(ls) != 1 {
		t.Fatalf("ClaimDue = %d, %v", len(ls), err)
	}
	next := time.Now().Add(-time.Second) // due again at once
	poll := state.Poll{Name: "a", Account: acctA, Start: time.Now(), OnServer: 3}
	if err := ls[0].FinishPoll(ctx, poll, next); err != nil {
		t.Fatal(err)
	}
	if ps, err := d1.Polls(ctx, acctA, 0); err != nil || len(ps) != 1 || ps[0].OnServer != 3 {
		t.Errorf("Polls after FinishPoll = %+v, %v", ps, err)
	}
	if !errors.Is(ls[0].Err(), state.ErrLeaseReleased) {
		t.Errorf("Err after Finish = %v", ls[0].Err())
	}
	// Out of the schedule, not claimed; back in, due as it was.
	if err := d2.Unschedule(ctx, []state.Account{acctA, accounts(1)[0]}); err != nil {
		t.Fatal(err)
	}
	if ls, err := d2.ClaimDue(ctx, 5); err != nil || len(ls) != 0 {
		t.Fatalf("claim after Unschedule = %d, %v", len(ls), err)
	}
	if err := d2.SetNextDue(ctx, acctA, next); err != nil {
		t.Fatal(err)
	}
	ls2, err := d2.ClaimDue(ctx, 5)
	if err != nil || len(ls2) != 1 || ls2[0].Token() != 2 {
		t.Fatalf("claim after Finish = %v, %v", ls2, err)
	}
	infos, err := d2.Leases(ctx)
	if err != nil || len(infos) != 1 || !infos[0].NextDue.Round(time.Millisecond).Equal(next.Round(time.Millisecond)) || infos[0].Owner != "d2" {
		t.Errorf("Leases = %+v, %v", infos, err)
	}

	// A lost lease records neither the poll nor the next due time.
	expireLeases(t, url)
	l3, err := d1.Acquire(ctx, acctA)
	if err != nil {
		t.Fatal(err)
	}
	if err := ls2[0].FinishPoll(ctx, poll, time.Now().Add(time.Hour)); !errors.Is(err, state.ErrLeaseLost) {
		t.Fatalf("FinishPoll of a lost lease: %v, want ErrLeaseLost", err)
	}
	if ps, err := d1.Polls(ctx, acctA, 0); err != nil || len(ps) != 1 {
		t.Errorf("Polls after a refused FinishPoll = %d, %v; want 1", len(ps), err)
	}
	if infos, err := d2.Leases(ctx); err != nil || !infos[0].NextDue.Round(time.Millisecond).Equal(next.Round(time.Millisecond)) {
		t.Errorf("next due after a refused FinishPoll = %+v, %v", infos, err)
	}
	l3.Release()
}

// TestCloseHandsBack: Close releases the Store's leases and ends its
// registration, so the fleet need not wait for the TTL.
func TestCloseHandsBack(t *testing.T) {
	ctx := t.Context()
	url := newDB(t)
	d1, err := Open(ctx, url, Options{DaemonID: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	d2 := open(t, url, Options{DaemonID: "d2"})
	if err := d1.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d1.Register(ctx); err == nil {
		t.Error("second Register: no error")
	}
	l, err := d1.Acquire(ctx, acctA)
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	if l.Err() == nil {
		t.Error("lease still held after Close")
	}
	if _, err := d2.Acquire(ctx, acctA); err != nil {
		t.Errorf("Acquire after the holder closed: %v", err)
	}
	if live, err := d2.LiveDaemons(ctx); err != nil || len(live) != 0 {
		t.Errorf("LiveDaemons after Close = %v, %v", live, err)
	}
	if _, err := d1.ClaimDue(ctx, 1); !errors.Is(err, state.ErrClosed) {
		t.Errorf("ClaimDue after Close: %v", err)
	}
}

// TestClaimDueSpreadsToNewDaemon: a daemon that joins gets its share of
// the due accounts while the first one still holds its own.
func TestClaimDueSpreadsToNewDaemon(t *testing.T) {
	ctx := t.Context()
	url := newDB(t)
	d1 := open(t, url, Options{DaemonID: "d1"})
	if err := d1.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d1.Schedule(ctx, accounts(30)); err != nil {
		t.Fatal(err)
	}
	ls, err := d1.ClaimDue(ctx, 100)
	if err != nil || len(ls) != 30 {
		t.Fatalf("a lone daemon claimed %d, %v; want all 30", len(ls), err)
	}
	// Half are done and due again; d1 still polls the other half.
	for _, l := range ls[:15] {
		if err := l.Finish(ctx, time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	d2 := open(t, url, Options{DaemonID: "d2"})
	if err := d2.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if more, err := d1.ClaimDue(ctx, 100); err != nil || len(more) != 0 {
		t.Fatalf("d1, holding its share, claimed %d more, %v", len(more), err)
	}
	got, err := d2.ClaimDue(ctx, 100)
	if err != nil || len(got) != 15 {
		t.Fatalf("the new daemon claimed %d, %v; want 15", len(got), err)
	}
}

// TestClaimDueExclusive: daemons claiming and finishing the same
// accounts as fast as they can never hold one account at the same time.
func TestClaimDueExclusive(t *testing.T) {
	ctx := t.Context()
	url := newDB(t)
	var (
		mu     sync.Mutex
		holder = map[state.Account]string{}
		polls  = map[string]int{}
		wg     sync.WaitGroup
	)
	end := time.Now().Add(3 * time.Second)
	for i := range 3 {
		d := open(t, url, Options{DaemonID: fmt.Sprintf("d%d", i+1)})
		if err := d.Register(ctx); err != nil {
			t.Fatal(err)
		}
		if err := d.Schedule(ctx, accounts(12)); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for time.Now().Before(end) {
				ls, err := d.ClaimDue(ctx, 4)
				if err != nil {
					t.Error(err)
					return
				}
				for _, l := range ls {
					mu.Lock()
					if h, ok := holder[l.Account()]; ok {
						t.Errorf("%s claimed %s, which %s holds", d.DaemonID(), l.Account(), h)
					}
					holder[l.Account()] = d.DaemonID()
					polls[d.DaemonID()]++
					mu.Unlock()
				}
				for _, l := range ls {
					// Out of the map first: once Finish has committed,
					// another daemon may claim the account.
					mu.Lock()
					delete(holder, l.Account())
					mu.Unlock()
					if err := l.Finish(ctx, time.Now().Add(-time.Second)); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	t.Logf("polls per daemon: %v", polls)
	for id, n := range polls {
		if n == 0 {
			t.Errorf("%s polled nothing", id)
		}
	}
}
