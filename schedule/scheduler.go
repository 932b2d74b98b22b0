package schedule

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"popsync/configs"
	"popsync/fetch"
)

// Scheduler defaults and bounds.
const (
	// DefaultMaxBackoff caps the wait after consecutive temporary failures,
	// and is the retry interval after a login failure.
	DefaultMaxBackoff = time.Hour
	// minBackoff is the first wait after a temporary failure when the
	// schedule is more frequent than this.
	minBackoff = time.Minute
	// maxJitter bounds the random delay added to an account's schedule;
	// the delay is also at most a tenth of the schedule's interval.
	maxJitter = 30 * time.Second
	// DefaultCancelWait is how long Run waits for polls to return after
	// it cancelled them at the end of the shutdown grace.
	DefaultCancelWait = 10 * time.Second
)

// Reasons for a planned poll, as PlannedPoll.Reason reports them.
const (
	ReasonStart      = "start"       // run_at_start, or the account was just added
	ReasonSchedule   = "schedule"    // the account's schedule
	ReasonBackoff    = "backoff"     // later than the schedule after failures
	ReasonLoginDelay = "login-delay" // later than the schedule: the server's LOGIN-DELAY
	ReasonRequested  = "requested"   // PollNow (SIGUSR1)
	ReasonNever      = "never"       // the schedule has no next time
)

// PollFunc polls one account once. (*Options).PollReport is the one
// `popsync run` uses; tests inject their own.
type PollFunc func(ctx context.Context, a *configs.Account) fetch.PollReport

// Options configure a Scheduler. Poll is required.
type Options struct {
	Poll   PollFunc
	Logger *slog.Logger
	// MaxBackoff caps the wait after failures; 0 means DefaultMaxBackoff.
	MaxBackoff time.Duration
	// Jitter returns the fixed delay added to an account's schedule, given
	// the schedule's interval. nil means a random delay of up to a tenth
	// of the interval and at most maxJitter.
	Jitter func(interval time.Duration) time.Duration
	// CancelWait is how long Run waits for polls after cancelling them;
	// 0 means DefaultCancelWait.
	CancelWait time.Duration
	// Metrics, when set, receive per-account figures.
	Metrics *Metrics
	// OnPlan, when set, is called from Run's goroutine with the plan each
	// time it changed (for the next-poll file `popsync status` reads). It
	// must return quickly and must not call the Scheduler.
	OnPlan func([]PlannedPoll)
}

// Settings are what a config reload can change.
type Settings struct {
	Accounts      []*configs.Account
	MaxParallel   int           // polls at once across accounts; <= 0 means 1
	ShutdownGrace time.Duration // how long running polls may finish after Run's ctx ends
}

// PlannedPoll is the scheduler's view of one account.
type PlannedPoll struct {
	Account  string    `json:"account"`
	Schedule string    `json:"schedule"`
	Next     time.Time `json:"next_poll,omitzero"` // zero while running or when the schedule never fires
	Reason   string    `json:"reason,omitempty"`   // why Next is when it is: one of the Reason constants
	Running  bool      `json:"running,omitempty"`
	Failures int       `json:"failures,omitempty"` // consecutive failed polls
}

// Scheduler runs the polls of many accounts: each on its schedule, at most
// Settings.MaxParallel at once, never two of one account at the same time,
// stretching the wait after failures. Create it with New and call
// Run once; Reload, PollNow, Abort, Plan and Running may be called from any
// goroutine.
type Scheduler struct {
	o   Options
	log *slog.Logger

	// Owned by Run's goroutine.
	set     Settings
	entries map[string]*entry
	active  int
	seq     int // tie-breaker: accounts in config order

	results chan pollDone
	reloads chan reloadReq
	trigger chan struct{}
	abort   chan struct{}
	done    chan struct{} // closed when Run returns

	started atomic.Bool
	running atomic.Bool

	mu   sync.Mutex
	plan []PlannedPoll
}

type pollDone struct {
	e   *entry
	rep fetch.PollReport
	end time.Time
}

// New checks every account's schedule and returns a Scheduler for
// them. The error lists every account whose schedule cannot be used.
func New(o Options, set Settings) (*Scheduler, error) {
	if o.Poll == nil {
		return nil, errors.New("scheduler needs a poll function")
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
	if o.Jitter == nil {
		o.Jitter = randomJitter
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Scheduler{
		o: o, log: log, set: set,
		entries: make(map[string]*entry),
		results: make(chan pollDone),
		reloads: make(chan reloadReq),
		trigger: make(chan struct{}, 1),
		abort:   make(chan struct{}, 1),
		done:    make(chan struct{}),
	}, nil
}

// Running reports whether Run is scheduling polls: from its start until its
// ctx ends. /healthz answers with it.
func (s *Scheduler) Running() bool { return s.running.Load() }

// Plan returns the scheduler's view of every account, in config order.
func (s *Scheduler) Plan() []PlannedPoll {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.plan)
}

// PollNow asks for a poll of every account as soon as possible (SIGUSR1).
// An account being polled is polled again when that poll ends; backoff is
// overridden, LOGIN-DELAY is not. It does not wait.
func (s *Scheduler) PollNow() {
	select {
	case s.trigger <- struct{}{}:
	default: // one request pending is as good as two
	}
}

// Abort stops Run like the end of its ctx does, but cancels running polls
// at once instead of after the shutdown grace (a second SIGTERM). It does
// not wait.
func (s *Scheduler) Abort() {
	select {
	case s.abort <- struct{}{}:
	default:
	}
}

// Run schedules polls until ctx ends, then stops scheduling, lets running
// polls finish for up to ShutdownGrace, cancels them after that, and
// returns once they all returned. Polls do not run under ctx: their
// context is cancelled only at the end of the grace (or by Abort), so that
// a poll stopped by a signal still finishes its message and QUITs. The
// error is non-nil only if polls did not return within CancelWait after
// being cancelled.
func (s *Scheduler) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("scheduler: Run called twice")
	}
	defer close(s.done)
	pollCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()

	now := time.Now()
	for _, a := range s.set.Accounts {
		s.add(a, now)
	}
	s.running.Store(true)
	s.log.Info("scheduler started", "accounts", len(s.entries), "max_parallel", s.maxParallel())

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	aborted := false
	for {
		if ctx.Err() != nil || aborted {
			// Checked first: a stop that raced with a timer or a
			// finished poll must not start another poll.
			return s.shutdown(pollCtx, cancel, aborted)
		}
		now = time.Now()
		s.startDue(pollCtx, now)
		s.publish()
		var wake <-chan time.Time
		if at, ok := s.nextWake(now); ok {
			timer.Reset(at.Sub(now))
			wake = timer.C
		}
		select {
		case <-ctx.Done():
		case <-wake:
		case d := <-s.results:
			s.finish(pollCtx, d)
		case req := <-s.reloads:
			req.reply <- s.apply(req.set, time.Now())
		case <-s.trigger:
			s.requestAll(time.Now())
		case <-s.abort:
			aborted = true
		}
		timer.Stop()
	}
}

func (s *Scheduler) maxParallel() int { return max(s.set.MaxParallel, 1) }

// startDue starts the polls that are due, earliest first, while fewer than
// MaxParallel run. The others stay due and start as polls end.
func (s *Scheduler) startDue(ctx context.Context, now time.Time) {
	var due []*entry
	for _, e := range s.entries {
		if !e.running && !e.removed && !e.next.IsZero() && !e.next.After(now) {
			due = append(due, e)
		}
	}
	slices.SortFunc(due, func(a, b *entry) int {
		return cmp.Or(a.next.Compare(b.next), cmp.Compare(a.order, b.order))
	})
	for _, e := range due {
		if s.active >= s.maxParallel() {
			break
		}
		s.start(ctx, e)
	}
}

func (s *Scheduler) start(ctx context.Context, e *entry) {
	e.running, e.again = true, false
	s.active++
	s.o.Metrics.setInFlight(s.active)
	a := e.acct
	s.log.Debug("poll starting", "account", a.Name, "reason", e.reason)
	go func() {
		rep := s.pollSafely(ctx, a)
		select {
		case s.results <- pollDone{e: e, rep: rep, end: time.Now()}:
		case <-s.done:
			// Run gave up waiting for this poll (CancelWait); nobody is
			// left to tell.
		}
	}()
}

// pollSafely runs the poll function, turning a panic into a failed poll:
// one account's bug must not stop the daemon.
func (s *Scheduler) pollSafely(ctx context.Context, a *configs.Account) (rep fetch.PollReport) {
	defer func() {
		if r := recover(); r != nil {
			rep = fetch.PollReport{Result: fetch.Result{Account: a.Name, Err: fmt.Errorf("internal error (please report): %v", r)}}
		}
	}()
	return s.o.Poll(ctx, a)
}

// finish books the end of a poll and plans the account's next one.
func (s *Scheduler) finish(pollCtx context.Context, d pollDone) {
	s.active--
	s.o.Metrics.setInFlight(s.active)
	e, rep, end := d.e, d.rep, d.end
	e.running = false
	a := e.acct
	if e.removed {
		if cur := s.entries[a.Name]; cur == e {
			delete(s.entries, a.Name)
		}
		return
	}
	log := s.log.With("account", a.Name)

	outcome, loginDelay := classify(rep.Err)
	if rep.Err != nil && pollCtx.Err() != nil {
		// Stopped by shutdown: whatever the error says, it is not the
		// account's fault.
		outcome = OutcomeCancelled
	}
	if rep.LoginDelay > 0 && !rep.SessionAt.IsZero() {
		// RFC 2449 §6.5: the server's minimum time between logins.
		e.notBefore = rep.SessionAt.Add(rep.LoginDelay)
	}
	// The slot this poll served is used up; a poll that ran past the
	// following slots skips them rather than running back to back.
	if !e.slot.IsZero() && !e.slot.After(end) {
		n := e.sched.Next(e.slot)
		if !n.IsZero() && !n.After(end) {
			n = e.sched.Next(end)
		}
		e.slot = n
	}

	switch outcome {
	case OutcomeOK:
		if e.failures > 0 {
			log.Info("account recovered", "failed_polls", e.failures)
		}
		e.failures, e.reported, e.retryAt = 0, false, time.Time{}
	case OutcomeBusy, OutcomeCancelled:
		// Not the account's failure: the next slot as usual.
	case OutcomeLoginNeeded:
		// Later polls fail locally (the account is marked in the token
		// store) until `popsync login` stored a new token, so the
		// schedule goes on as usual: it is how the login is noticed.
		e.failures++
		if !e.reported {
			e.reported = true
			log.Error("oauth2 login needed: the account is not polled until `popsync login "+a.Name+"` is run; other accounts go on",
				"error", errText(rep.Err))
		} else {
			log.Debug("oauth2 login still needed", "failed_polls", e.failures)
		}
	case OutcomeAuth:
		e.failures++
		e.retryAt = end.Add(s.o.MaxBackoff)
		if !e.reported {
			e.reported = true
			log.Error("login failed: check the account's user, password and TLS settings; retrying only every "+s.o.MaxBackoff.String()+" until it works",
				"error", errText(rep.Err), "retry_at", e.retryAt)
		} else {
			log.Info("login still failing", "failed_polls", e.failures, "retry_at", e.retryAt)
		}
	default:
		e.failures++
		wait := s.backoff(e)
		if loginDelay && rep.LoginDelay > wait {
			wait = rep.LoginDelay
		}
		e.retryAt = end.Add(wait)
		log.Warn("poll failed; retrying later", "error", errText(rep.Err),
			"failed_polls", e.failures, "retry_in", wait.String())
	}
	e.reschedule()
	if e.again {
		e.request(end)
	}
	s.o.Metrics.pollDone(a.Name, rep.Result, outcome, e.failures, end)
	log.Debug("poll finished", "outcome", outcome, "next_poll", e.next, "reason", e.reason)
}

// backoff is the wait after e's latest temporary failure: the schedule's
// interval (at least minBackoff), doubled for each further consecutive
// failure, at most MaxBackoff.
func (s *Scheduler) backoff(e *entry) time.Duration {
	wait := max(e.interval, minBackoff)
	for i := 1; i < e.failures && wait < s.o.MaxBackoff; i++ {
		wait *= 2
	}
	return min(wait, s.o.MaxBackoff)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// publish records the plan and hands it to OnPlan when it changed.
func (s *Scheduler) publish() {
	list := s.sortedEntries()
	plan := make([]PlannedPoll, 0, len(list))
	for _, e := range list {
		if e.removed {
			continue
		}
		p := PlannedPoll{Account: e.acct.Name, Schedule: e.acct.Schedule, Running: e.running, Failures: e.failures}
		if !e.running {
			p.Next, p.Reason = e.next, e.reason
		}
		plan = append(plan, p)
	}
	s.mu.Lock()
	same := slices.Equal(plan, s.plan)
	if !same {
		s.plan = plan
	}
	s.mu.Unlock()
	if same {
		return
	}
	for _, p := range plan {
		if !p.Running && !p.Next.IsZero() {
			s.o.Metrics.setNext(p.Account, p.Next)
		}
	}
	if s.o.OnPlan != nil {
		s.o.OnPlan(slices.Clone(plan))
	}
}

// shutdown waits for running polls: up to the grace, then cancels them
// and waits up to CancelWait more.
func (s *Scheduler) shutdown(pollCtx context.Context, cancel context.CancelFunc, abort bool) error {
	s.running.Store(false)
	defer s.publish()
	if s.active == 0 {
		s.log.Info("scheduler stopped")
		return nil
	}
	grace := max(s.set.ShutdownGrace, 0)
	s.log.Info("stopping: letting running polls finish", "polls", s.active, "grace", grace.String())
	graceTimer := time.NewTimer(grace)
	defer graceTimer.Stop()
	var hard <-chan time.Time
	cancelled := false
	var hardTimer *time.Timer
	defer func() {
		if hardTimer != nil {
			hardTimer.Stop()
		}
	}()
	cancelNow := func(why string) {
		if cancelled {
			return
		}
		cancelled = true
		s.log.Warn(why+"; cancelling running polls (what they fetched so far is kept)", "polls", s.runningNames())
		cancel()
		hardTimer = time.NewTimer(s.o.CancelWait)
		hard = hardTimer.C
	}
	if abort {
		cancelNow("asked to stop at once")
	}
	for s.active > 0 {
		select {
		case d := <-s.results:
			s.finish(pollCtx, d)
		case <-graceTimer.C:
			cancelNow("shutdown grace is over")
		case <-s.abort:
			cancelNow("asked to stop at once")
		case req := <-s.reloads:
			req.reply <- errors.New("reloading: the scheduler is stopping")
		case <-hard:
			return fmt.Errorf("stopping: %d poll(s) still running %s after being cancelled: %s",
				s.active, s.o.CancelWait, strings.Join(s.runningNames(), ", "))
		}
	}
	s.log.Info("scheduler stopped")
	return nil
}

// runningNames lists the accounts being polled, sorted.
func (s *Scheduler) runningNames() []string {
	var names []string
	for _, e := range s.entries {
		if e.running {
			names = append(names, e.acct.Name)
		}
	}
	slices.Sort(names)
	return names
}
