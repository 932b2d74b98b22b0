package schedule

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"popsync/configs"
	"popsync/fetch"
	"popsync/state"
	"popsync/state/postgres"
)

// FleetStore is what a Fleet needs of a store that several daemons share
// (*postgres.Store): registration with a heartbeat, the schedule in the
// database, and claims of due accounts by lease.
type FleetStore interface {
	state.Store
	Register(ctx context.Context) error
	Schedule(ctx context.Context, accounts []state.Account) error
	Unschedule(ctx context.Context, accounts []state.Account) error
	SetNextDue(ctx context.Context, a state.Account, next time.Time) error
	ClaimDue(ctx context.Context, limit int) ([]*postgres.Lease, error)
	LeaseTTL() time.Duration
}

var _ FleetStore = (*postgres.Store)(nil)

// FleetOptions configure a Fleet. Poll and Store are required.
type FleetOptions struct {
	// Poll polls one account with st, a view of the fleet store whose
	// LockAccount hands out the lease the Fleet claimed (see
	// LeasedStore); fetch.Options.PollReport with Store set to st is the
	// one `popsync run` uses.
	Poll   func(ctx context.Context, a *configs.Account, st state.Store) fetch.PollReport
	Store  FleetStore
	Logger *slog.Logger
	// MaxBackoff caps the wait after failures; 0 means DefaultMaxBackoff.
	MaxBackoff time.Duration
	// CancelWait is how long Run waits for polls after cancelling them;
	// 0 means DefaultCancelWait.
	CancelWait time.Duration
	// ClaimEvery is how often the Fleet asks for due accounts while it
	// has room for more polls; 0 means a tenth of the lease TTL, between
	// 100 ms and 1 s. A poll that ends asks at once.
	ClaimEvery time.Duration
	// Metrics, when set, receive per-account figures.
	Metrics *Metrics
}

// Fleet is the daemon loop of a store shared by several daemons: the
// next due time of each account lives in the database, and each daemon
// claims (FleetStore.ClaimDue) at most its share of the due accounts and
// polls them under their leases, so the fleet polls each account once
// per its schedule. While the database cannot be reached it starts
// nothing and tries again; polls whose lease is lost stop committing
// (package fetch drops the connection without QUIT). Create it with
// NewFleet and call Run once; Reload, PollNow, Abort and Running may be
// called from any goroutine.
type Fleet struct {
	o   FleetOptions
	log *slog.Logger

	mu       sync.Mutex
	set      Settings
	byID     map[state.Account]*configs.Account
	failures map[state.Account]int

	reloads chan reloadReq
	trigger chan struct{}
	abort   chan struct{}
	ended   chan fleetDone
	done    chan struct{}

	started atomic.Bool
	running atomic.Bool
}

type fleetDone struct {
	a   *configs.Account
	rep fetch.PollReport
}

// NewFleet checks every account's schedule and returns a Fleet for them.
func NewFleet(o FleetOptions, set Settings) (*Fleet, error) {
	if o.Poll == nil || o.Store == nil {
		return nil, errors.New("fleet scheduler needs a poll function and a store")
	}
	if err := checkAccounts(set.Accounts); err != nil {
		return nil, err
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.CancelWait <= 0 {
		o.CancelWait = DefaultCancelWait
	}
	if o.ClaimEvery <= 0 {
		o.ClaimEvery = min(max(o.Store.LeaseTTL()/10, 100*time.Millisecond), time.Second)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{o: o, log: log, failures: map[state.Account]int{},
		reloads: make(chan reloadReq), trigger: make(chan struct{}, 1), abort: make(chan struct{}, 1),
		ended: make(chan fleetDone), done: make(chan struct{})}
	f.setAccounts(set)
	return f, nil
}

func (f *Fleet) setAccounts(set Settings) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.set = set
	f.byID = make(map[state.Account]*configs.Account, len(set.Accounts))
	for _, a := range set.Accounts {
		f.byID[a.Identity()] = a
	}
}

func (f *Fleet) identities() []state.Account {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]state.Account, 0, len(f.set.Accounts))
	for _, a := range f.set.Accounts {
		ids = append(ids, a.Identity())
	}
	return ids
}

// Running reports whether Run is claiming accounts.
func (f *Fleet) Running() bool { return f.running.Load() }

// PollNow makes every account of this daemon's config due now, for the
// whole fleet (SIGUSR1).
func (f *Fleet) PollNow() {
	select {
	case f.trigger <- struct{}{}:
	default:
	}
}

// Abort stops Run and cancels running polls at once.
func (f *Fleet) Abort() {
	select {
	case f.abort <- struct{}{}:
	default:
	}
}

// Reload replaces the accounts and settings: new accounts join the
// fleet's schedule, removed ones leave it. It waits until Run applied it.
func (f *Fleet) Reload(set Settings) error {
	if err := checkAccounts(set.Accounts); err != nil {
		return err
	}
	req := reloadReq{set: set, reply: make(chan error, 1)}
	select {
	case f.reloads <- req:
		return <-req.reply
	case <-f.done:
		return errors.New("reloading: the scheduler has stopped")
	}
}

// Run registers the daemon, puts its accounts in the fleet's schedule
// and claims and polls due accounts until ctx ends; then it stops
// claiming, lets running polls finish for up to ShutdownGrace, cancels
// them after that, and returns once they returned (the error is non-nil
// only if they did not within CancelWait).
func (f *Fleet) Run(ctx context.Context) error {
	if !f.started.CompareAndSwap(false, true) {
		return errors.New("fleet scheduler: Run called twice")
	}
	defer close(f.done)
	pollCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	st := f.o.Store
	registered, scheduled := false, false
	var unschedule []state.Account
	active := 0
	f.running.Store(true)
	f.log.Info("fleet scheduler started", "accounts", len(f.set.Accounts), "max_parallel", f.maxParallel(),
		"lease_ttl", st.LeaseTTL().String())
	tick := time.NewTicker(f.o.ClaimEvery)
	defer tick.Stop()
	down := "" // the database error last logged, so an outage is logged once
	fail := func(what string, err error) {
		if msg := err.Error(); msg != down {
			f.log.Warn(what+"; retrying, polling nothing meanwhile", "error", msg)
			down = msg
		}
	}
	aborted := false
	for {
		if ctx.Err() != nil || aborted {
			return f.shutdown(pollCtx, cancel, active, aborted)
		}
		// Each step is retried on the next tick until it succeeds:
		// the database may be down now and back later.
		octx, ocancel := context.WithTimeout(ctx, st.LeaseTTL())
		switch {
		case !registered:
			if err := st.Register(octx); err != nil {
				fail("registering in the fleet", err)
			} else {
				registered = true
			}
		case !scheduled:
			if err := st.Schedule(octx, f.identities()); err != nil {
				fail("adding the accounts to the fleet's schedule", err)
			} else {
				scheduled = true
			}
		case len(unschedule) > 0:
			if err := st.Unschedule(octx, unschedule); err != nil {
				fail("taking removed accounts out of the fleet's schedule", err)
			} else {
				unschedule = nil
			}
		}
		if registered && scheduled && active < f.maxParallel() {
			leases, err := st.ClaimDue(octx, f.maxParallel()-active)
			if err != nil {
				fail("claiming due accounts", err)
			} else {
				if down != "" {
					f.log.Info("state database reachable again")
					down = ""
				}
				for _, l := range leases {
					f.mu.Lock()
					a := f.byID[l.Account()]
					f.mu.Unlock()
					if a == nil {
						// Scheduled by a daemon with another config.
						f.log.Debug("claimed an account not in this config; handing it back", "account", l.Account().String())
						l.Release()
						continue
					}
					active++
					f.o.Metrics.setInFlight(active)
					go f.poll(pollCtx, a, l)
				}
			}
		}
		ocancel()
		select {
		case <-ctx.Done():
		case <-tick.C:
		case d := <-f.ended:
			active--
			f.o.Metrics.setInFlight(active)
			f.booked(d)
		case req := <-f.reloads:
			old := f.identities()
			f.setAccounts(req.set)
			unschedule = append(unschedule, removedIdentities(old, f.identities())...)
			scheduled = false
			req.reply <- nil
		case <-f.trigger:
			f.requestAll(ctx)
		case <-f.abort:
			aborted = true
		}
	}
}

func (f *Fleet) maxParallel() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return max(f.set.MaxParallel, 1)
}

func removedIdentities(old, cur []state.Account) []state.Account {
	keep := make(map[state.Account]bool, len(cur))
	for _, a := range cur {
		keep[a] = true
	}
	var out []state.Account
	for _, a := range old {
		if !keep[a] {
			out = append(out, a)
		}
	}
	return out
}

// requestAll makes every account due now.
func (f *Fleet) requestAll(ctx context.Context) {
	now := time.Now()
	for _, id := range f.identities() {
		if err := f.o.Store.SetNextDue(ctx, id, now); err != nil {
			f.log.Warn("asking for a poll now", "account", id.String(), "error", err.Error())
			return
		}
	}
}

// poll runs one poll under l and finishes the lease with the next due
// time, in one transaction with the poll's history.
func (f *Fleet) poll(ctx context.Context, a *configs.Account, l *postgres.Lease) {
	ls := &leasedStore{Store: f.o.Store, id: l.Account(), lease: l}
	// A lost lease cancels the poll: it commits nothing more anyway, and
	// package fetch drops the connection without QUIT.
	pctx, cancel := context.WithCancel(ctx)
	stopLost := make(chan struct{})
	go func() {
		select {
		case <-l.Done():
			if errors.Is(l.Err(), state.ErrLeaseLost) {
				cancel()
			}
		case <-stopLost:
		}
	}()
	rep := f.pollSafely(pctx, a, ls)
	close(stopLost)
	cancel()
	end := time.Now()
	next := f.next(a, rep, end)
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), f.o.Store.LeaseTTL())
	defer fcancel()
	var err error
	if p, ok := ls.recorded(); ok {
		err = l.FinishPoll(fctx, p, next)
		if errors.Is(err, state.ErrLeaseLost) {
			// The poll is history all the same; not fenced.
			if rerr := f.o.Store.RecordPoll(fctx, p); rerr != nil {
				f.log.Warn("recording poll history", "account", a.Name, "error", rerr.Error())
			}
		}
	} else {
		err = l.Finish(fctx, next)
	}
	if err != nil {
		f.log.Warn("finishing the poll in the fleet's schedule; the lease expires by itself", "account", a.Name, "error", err.Error())
	}
	f.ended <- fleetDone{a: a, rep: rep}
}

func (f *Fleet) pollSafely(ctx context.Context, a *configs.Account, st state.Store) (rep fetch.PollReport) {
	defer func() {
		if r := recover(); r != nil {
			rep = fetch.PollReport{Result: fetch.Result{Account: a.Name, Err: fmt.Errorf("internal error (please report): %v", r)}}
		}
	}()
	return f.o.Poll(ctx, a, st)
}

// next is when the fleet polls a next after a poll that ended at end:
// the schedule's next time, later after failures (backoff, LOGIN-DELAY).
func (f *Fleet) next(a *configs.Account, rep fetch.PollReport, end time.Time) time.Time {
	sched, err := configs.ParseSchedule(a.Schedule)
	if err != nil { // checked by NewFleet and Reload
		return end.Add(f.o.MaxBackoff)
	}
	next := sched.Next(end)
	if next.IsZero() {
		next = end.Add(100 * 365 * 24 * time.Hour) // never: far away
	}
	outcome, loginDelay := classify(rep.Err)
	if storeFault(rep.Err) {
		// The database or the lease failed, not the account: the
		// schedule as usual, no backoff.
		outcome = OutcomeBusy
	}
	f.mu.Lock()
	n := f.failures[a.Identity()]
	switch outcome {
	case OutcomeOK:
		n = 0
	case OutcomeError, OutcomeAuth:
		n++
	}
	f.failures[a.Identity()] = n
	f.mu.Unlock()
	switch {
	case outcome == OutcomeAuth:
		next = laterOf(next, end.Add(f.o.MaxBackoff))
	case outcome == OutcomeError:
		interval := sched.Next(next).Sub(next)
		wait := max(interval, minBackoff)
		for i := 1; i < n && wait < f.o.MaxBackoff; i++ {
			wait *= 2
		}
		next = laterOf(next, end.Add(min(wait, f.o.MaxBackoff)))
	}
	if rep.LoginDelay > 0 && !rep.SessionAt.IsZero() && (loginDelay || outcome == OutcomeOK) {
		// RFC 2449 §6.5: the server's minimum time between logins.
		next = laterOf(next, rep.SessionAt.Add(rep.LoginDelay))
	}
	return next
}

// storeFault reports whether a poll failed because of the state store
// (unreachable, restarting) or its lease, not because of the account.
func storeFault(err error) bool {
	return errors.Is(err, state.ErrBusy) || errors.Is(err, state.ErrLeaseLost) ||
		errors.Is(err, state.ErrClosed) || errors.Is(err, context.Canceled)
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// booked records a finished poll in the metrics and the log.
func (f *Fleet) booked(d fleetDone) {
	outcome, _ := classify(d.rep.Err)
	f.mu.Lock()
	n := f.failures[d.a.Identity()]
	f.mu.Unlock()
	f.o.Metrics.pollDone(d.a.Name, d.rep.Result, outcome, n, time.Now())
}

// shutdown waits for running polls: up to the grace, then cancels them
// and waits up to CancelWait more.
func (f *Fleet) shutdown(pollCtx context.Context, cancel context.CancelFunc, active int, abort bool) error {
	f.running.Store(false)
	if active == 0 {
		f.log.Info("fleet scheduler stopped")
		return nil
	}
	f.mu.Lock()
	grace := max(f.set.ShutdownGrace, 0)
	f.mu.Unlock()
	f.log.Info("stopping: letting running polls finish", "polls", active, "grace", grace.String())
	graceTimer := time.NewTimer(grace)
	defer graceTimer.Stop()
	var hard <-chan time.Time
	cancelNow := func(why string) {
		if hard != nil {
			return
		}
		f.log.Warn(why+"; cancelling running polls (what they fetched so far is kept)", "polls", active)
		cancel()
		hard = time.After(f.o.CancelWait)
	}
	if abort {
		cancelNow("asked to stop at once")
	}
	for active > 0 {
		select {
		case d := <-f.ended:
			active--
			f.booked(d)
		case <-graceTimer.C:
			cancelNow("shutdown grace is over")
		case <-f.abort:
			cancelNow("asked to stop at once")
		case req := <-f.reloads:
			req.reply <- errors.New("reloading: the scheduler is stopping")
		case <-hard:
			return fmt.Errorf("stopping: %d poll(s) still running %s after being cancelled", active, f.o.CancelWait)
		}
	}
	f.log.Info("fleet scheduler stopped")
	return nil
}

// leasedStore is the fleet store as one poll sees it: LockAccount hands
// out the lease the Fleet claimed (its Release is the Fleet's, which
// finishes it with the next due time), and RecordPoll is kept for the
// Fleet to write together with that (Lease.FinishPoll).
type leasedStore struct {
	state.Store
	id    state.Account
	lease state.Lease

	mu   sync.Mutex
	poll *state.Poll
}

// LockAccount implements state.Store.
func (s *leasedStore) LockAccount(ctx context.Context, a state.Account) (state.Lease, error) {
	if a.Canonical() != s.id {
		return nil, fmt.Errorf("leasing %s: this poll holds the lease of %s only: %w", a, s.id, state.ErrLocked)
	}
	if err := s.lease.Err(); err != nil {
		return nil, err
	}
	return heldLease{s.lease}, nil
}

// RecordPoll implements state.Store.
func (s *leasedStore) RecordPoll(ctx context.Context, p state.Poll) error {
	if p.Account.Canonical() != s.id {
		return s.Store.RecordPoll(ctx, p)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.poll = &p
	return nil
}

func (s *leasedStore) recorded() (state.Poll, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.poll == nil {
		return state.Poll{}, false
	}
	return *s.poll, true
}

// Unwrap names the fleet store: leasedStore changes nothing about how
// records and intents are written, so a poll may use what the store
// offers for them (state.IntentRecorderOf).
func (s *leasedStore) Unwrap() state.Store { return s.Store }

// heldLease is a lease whose Release is left to its owner.
type heldLease struct{ state.Lease }

func (heldLease) Release() {}
