package schedule_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"popsync/configs"
	"popsync/fetch"
	"popsync/fetch/pop3"
	"popsync/fetch/pop3/pop3test"
	"popsync/internal/credential"
	"popsync/internal/metrics"
	"popsync/schedule"
	"popsync/state"
)

// Scheduler tests run in a synctest bubble: the clock starts at
// 2000-01-01 00:00:00 UTC and jumps ahead whenever every goroutine waits,
// so a virtual day of polls takes milliseconds. Polls are a fake that
// records when it ran, "takes" a scripted virtual time and returns a
// scripted report.

// schedT0 is the start of synctest's virtual clock.
var schedT0 = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

type schedCall struct {
	account    string
	acct       *configs.Account
	start, end time.Time
	cancelled  bool // the poll's context was done when it returned
}

// schedStep is what one poll of an account does.
type schedStep struct {
	dur     time.Duration // virtual time the poll takes (ends early if cancelled)
	ignore  bool          // keep running for dur even if cancelled
	release chan struct{} // if set, the poll also waits for this to close
	rep     fetch.PollReport
	panic   bool
}

// schedFake is the injected poll function.
type schedFake struct {
	mu        sync.Mutex
	script    func(account string, n int) schedStep
	running   map[string]bool
	active    int
	maxActive int
	overlaps  []string
	calls     []schedCall
	n         map[string]int
}

func newSchedFake(script func(account string, n int) schedStep) *schedFake {
	if script == nil {
		script = func(string, int) schedStep { return schedStep{} }
	}
	return &schedFake{script: script, running: make(map[string]bool), n: make(map[string]int)}
}

func (f *schedFake) poll(ctx context.Context, a *configs.Account) fetch.PollReport {
	start := time.Now()
	f.mu.Lock()
	if f.running[a.Name] {
		f.overlaps = append(f.overlaps, fmt.Sprintf("%s at %v", a.Name, start.Sub(schedT0)))
	}
	f.running[a.Name] = true
	f.active++
	f.maxActive = max(f.maxActive, f.active)
	n := f.n[a.Name]
	f.n[a.Name]++
	f.mu.Unlock()

	st := f.script(a.Name, n)
	rep := st.rep
	rep.Account = a.Name
	if rep.SessionAt.IsZero() && rep.LoginDelay > 0 {
		rep.SessionAt = start
	}
	done := ctx.Done()
	if st.ignore {
		done = nil
	}
	if st.dur > 0 {
		t := time.NewTimer(st.dur)
		select {
		case <-t.C:
		case <-done:
			t.Stop()
		}
	}
	if st.release != nil {
		select {
		case <-st.release:
		case <-done:
		}
	}
	cancelled := ctx.Err() != nil
	if cancelled && rep.Err == nil && !st.ignore {
		rep.Err = fmt.Errorf("fetching: %w", ctx.Err())
	}
	end := time.Now()
	rep.Duration = end.Sub(start)
	f.mu.Lock()
	f.running[a.Name] = false
	f.active--
	f.calls = append(f.calls, schedCall{account: a.Name, acct: a, start: start, end: end, cancelled: cancelled})
	f.mu.Unlock()
	if st.panic {
		panic("fake poll panics")
	}
	return rep
}

// starts returns the start times of account's polls as offsets from T0.
func (f *schedFake) starts(account string) []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Duration
	for _, c := range f.calls {
		if c.account == account {
			out = append(out, c.start.Sub(schedT0))
		}
	}
	slices.Sort(out)
	return out
}

func (f *schedFake) callsOf(account string) []schedCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []schedCall
	for _, c := range f.calls {
		if c.account == account {
			out = append(out, c)
		}
	}
	return out
}

func (f *schedFake) activeNow() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.active
}

func schedAccount(name, schedule string, runAtStart bool) *configs.Account {
	return &configs.Account{Name: name, Host: name + ".example.net", Port: 995, User: "me",
		Schedule: schedule, RunAtStart: runAtStart}
}

func schedNoJitter(time.Duration) time.Duration { return 0 }

// schedRun is a running scheduler inside a bubble.
type schedRun struct {
	s      *schedule.Scheduler
	cancel context.CancelFunc
	errc   chan error
}

func startSched(t *testing.T, o schedule.Options, set schedule.Settings) *schedRun {
	t.Helper()
	s, err := schedule.New(o, set)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &schedRun{s: s, cancel: cancel, errc: make(chan error, 1)}
	go func() { r.errc <- s.Run(ctx) }()
	synctest.Wait()
	return r
}

// stop ends Run as SIGTERM does and returns its error.
func (r *schedRun) stop() error {
	r.cancel()
	return <-r.errc
}

// sleepUntil advances the virtual clock to T0+d and lets every goroutine
// settle.
func schedSleepUntil(d time.Duration) {
	time.Sleep(time.Until(schedT0.Add(d)))
	synctest.Wait()
}

func schedMins(ms ...float64) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m * float64(time.Minute))
	}
	return out
}

// schedLogs records log records for assertions.
type schedLogs struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *schedLogs) Enabled(context.Context, slog.Level) bool { return true }
func (h *schedLogs) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *schedLogs) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *schedLogs) WithGroup(string) slog.Handler      { return h }

func (h *schedLogs) count(level slog.Level, prefix string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.recs {
		if r.Level == level && strings.HasPrefix(r.Message, prefix) {
			n++
		}
	}
	return n
}

func TestSchedulerVirtualDay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		accounts := []*configs.Account{
			schedAccount("a", "@every 5m", true),
			schedAccount("b", "@every 5m", true),
			schedAccount("c", "CRON_TZ=UTC */15 * * * *", true),
			schedAccount("d", "CRON_TZ=UTC 0 * * * *", false),
			schedAccount("e", "@every 7m", true),
			schedAccount("f", "CRON_TZ=UTC 30 6 * * *", false),
		}
		// Polls take 1 to 40 virtual seconds, varying with the account
		// and the round.
		fake := newSchedFake(func(account string, n int) schedStep {
			return schedStep{dur: time.Duration(1+(n*7919+len(account)*31+int(account[0]))%40) * time.Second}
		})
		reg := metrics.NewRegistry()
		m := schedule.NewMetrics(reg)
		r := startSched(t, schedule.Options{Poll: fake.poll, Metrics: m},
			schedule.Settings{Accounts: accounts, MaxParallel: 2, ShutdownGrace: time.Minute})
		schedSleepUntil(24 * time.Hour)
		if err := r.stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}

		if n := len(fake.overlaps); n > 0 {
			t.Errorf("polls of one account overlapped %d times, first: %v", n, fake.overlaps[:min(n, 5)])
		}
		if fake.maxActive != 2 {
			t.Errorf("at most %d polls ran at once, want exactly max_parallel 2", fake.maxActive)
		}
		for name, want := range map[string]int{
			"a": 1 + 287, // at start, then every 5 minutes
			"b": 1 + 287,
			"c": 1 + 95,  // at start, then at :00 :15 :30 :45
			"d": 23,      // at 01:00 .. 23:00; run_at_start off
			"e": 1 + 205, // at start, then every 7 minutes
			"f": 1,       // 06:30
		} {
			n := 0
			for _, s := range fake.starts(name) {
				if s < 24*time.Hour {
					n++
				}
			}
			if n != want {
				t.Errorf("account %s: %d polls in the day, want %d", name, n, want)
			}
		}
		// Every scheduled poll starts at or after its slot, late by at
		// most the jitter (30s) and the wait for a free slot.
		for _, c := range []struct {
			name  string
			every time.Duration
			first time.Duration
		}{{"a", 5 * time.Minute, 0}, {"c", 15 * time.Minute, 0}, {"d", time.Hour, time.Hour}, {"f", 24 * time.Hour, 6*time.Hour + 30*time.Minute}} {
			for i, s := range fake.starts(c.name) {
				if c.first == 0 && i == 0 {
					continue // the start poll
				}
				late := (s - c.first) % c.every
				if late > 2*time.Minute {
					t.Errorf("account %s: poll at %v is %v after its slot", c.name, s, late)
				}
			}
		}
		var b strings.Builder
		reg.WriteTo(&b)
		if !strings.Contains(b.String(), `popsync_polls_total{account="d",outcome="ok"} 23`) {
			t.Errorf("metrics do not count d's 23 polls:\n%s", schedGrep(b.String(), `account="d"`))
		}
	})
}

func schedGrep(s, sub string) string {
	var out []string
	for l := range strings.Lines(s) {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

func TestSchedulerJitterBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var accounts []*configs.Account
		bound := map[string]time.Duration{}
		every := map[string]time.Duration{}
		for i := range 20 {
			a := schedAccount(fmt.Sprintf("ten%d", i), "@every 10m", false)
			accounts = append(accounts, a)
			bound[a.Name], every[a.Name] = 30*time.Second, 10*time.Minute // min(10% of 10m, 30s)
			b := schedAccount(fmt.Sprintf("one%d", i), "@every 1m", false)
			accounts = append(accounts, b)
			bound[b.Name], every[b.Name] = 6*time.Second, time.Minute // 10% of 1m
		}
		fake := newSchedFake(nil)
		r := startSched(t, schedule.Options{Poll: fake.poll}, schedule.Settings{Accounts: accounts, MaxParallel: 100})
		schedSleepUntil(time.Hour)
		r.stop()

		offsets := map[string]map[time.Duration]bool{"ten": {}, "one": {}}
		for _, a := range accounts {
			starts := fake.starts(a.Name)
			if len(starts) < 5 {
				t.Fatalf("account %s: only %d polls", a.Name, len(starts))
			}
			first := starts[0] % every[a.Name]
			if first < 0 || first >= bound[a.Name] {
				t.Errorf("account %s: jitter %v outside [0, %v)", a.Name, first, bound[a.Name])
			}
			for _, s := range starts {
				if s%every[a.Name] != first {
					t.Errorf("account %s: poll at %v does not keep the account's jitter %v", a.Name, s, first)
					break
				}
			}
			offsets[a.Name[:3]][first] = true
		}
		for group, seen := range offsets {
			if len(seen) < 2 {
				t.Errorf("20 accounts %q share one jitter %v: not spread", group, seen)
			}
		}
	})
}

func schedTempErr(code string) error {
	return fmt.Errorf("logging in to pop.example.net:995 as me: %w", &pop3.Error{Command: "PASS", Code: code, Text: "try later"})
}

func TestSchedulerBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fails := map[int]error{
			0: schedTempErr("IN-USE"), 1: schedTempErr("SYS/TEMP"), 2: errors.New("connecting: connection refused"),
			3: schedTempErr("IN-USE"), 4: schedTempErr("IN-USE"), 5: schedTempErr("IN-USE"),
			7: schedTempErr("SYS/TEMP"),
		}
		fake := newSchedFake(func(_ string, n int) schedStep {
			return schedStep{rep: fetch.PollReport{Result: fetch.Result{Err: fails[n]}}}
		})
		reg := metrics.NewRegistry()
		logs := &schedLogs{}
		r := startSched(t, schedule.Options{Poll: fake.poll, Jitter: schedNoJitter, Metrics: schedule.NewMetrics(reg), Logger: slog.New(logs)},
			schedule.Settings{Accounts: []*configs.Account{schedAccount("x", "@every 5m", true)}, MaxParallel: 1})

		schedSleepUntil(150 * time.Minute)
		if p := r.s.Plan(); len(p) != 1 || p[0].Failures != 6 || p[0].Reason != schedule.ReasonBackoff || !p[0].Next.Equal(schedT0.Add(195*time.Minute)) {
			t.Errorf("plan after 6 failures: %+v", p)
		}
		var b strings.Builder
		reg.WriteTo(&b)
		if !strings.Contains(b.String(), `popsync_consecutive_failures{account="x"} 6`+"\n") {
			t.Errorf("metrics:\n%s", schedGrep(b.String(), "failures"))
		}
		schedSleepUntil(216 * time.Minute)
		r.stop()

		// Failures at 0, 5, 15, 35, 75 and 135 minutes: the waits double
		// from the interval (5m) and stop at the cap (1h). Success at 195
		// resets them; one failure at 200 waits one interval.
		want := schedMins(0, 5, 15, 35, 75, 135, 195, 200, 205, 210, 215)
		if got := fake.starts("x"); !slices.Equal(got, want) {
			t.Errorf("polls at %v\nwant      %v", got, want)
		}
		if n := logs.count(slog.LevelWarn, "poll failed; retrying later"); n != 7 {
			t.Errorf("%d warnings for 7 failures", n)
		}
		if n := logs.count(slog.LevelInfo, "account recovered"); n != 2 {
			t.Errorf("%d recovery messages, want 2", n)
		}
	})
}

func TestSchedulerBackoffShortSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A schedule more frequent than a minute backs off from a minute.
		fake := newSchedFake(func(_ string, n int) schedStep {
			return schedStep{rep: fetch.PollReport{Result: fetch.Result{Err: errors.New("connection reset")}}}
		})
		r := startSched(t, schedule.Options{Poll: fake.poll, Jitter: schedNoJitter, MaxBackoff: 10 * time.Minute},
			schedule.Settings{Accounts: []*configs.Account{schedAccount("x", "@every 10s", true)}, MaxParallel: 1})
		schedSleepUntil(40 * time.Minute)
		r.stop()
		want := schedMins(0, 1, 3, 7, 15, 25, 35)
		if got := fake.starts("x"); !slices.Equal(got, want) {
			t.Errorf("polls at %v\nwant      %v", got, want)
		}
	})
}

func TestSchedulerAuthFailureRetriedSlowlyReportedOncePerStreak(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		authErr := fmt.Errorf("logging in: %w", &pop3.Error{Command: "PASS", Code: "AUTH", Text: "invalid credentials"})
		fails := map[int]error{0: authErr, 1: authErr, 2: authErr, 3: authErr, 5: authErr}
		fake := newSchedFake(func(_ string, n int) schedStep {
			return schedStep{rep: fetch.PollReport{Result: fetch.Result{Err: fails[n]}}}
		})
		logs := &schedLogs{}
		r := startSched(t, schedule.Options{Poll: fake.poll, Jitter: schedNoJitter, Logger: slog.New(logs)},
			schedule.Settings{Accounts: []*configs.Account{schedAccount("x", "@every 5m", true)}, MaxParallel: 1})
		schedSleepUntil(312 * time.Minute)
		r.stop()
		// Four refused logins an hour apart, success at 240 minutes; a new
		// refusal at 245 waits an hour again.
		want := schedMins(0, 60, 120, 180, 240, 245, 305, 310)
		if got := fake.starts("x"); !slices.Equal(got, want) {
			t.Errorf("polls at %v\nwant      %v", got, want)
		}
		if n := logs.count(slog.LevelError, "login failed"); n != 2 {
			t.Errorf("%d loud login-failure reports, want one per streak (2)", n)
		}
	})
}

func TestSchedulerLoginDelay(t *testing.T) {
	t.Run("capability", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			// The server announces LOGIN-DELAY 720 (12 minutes): polls
			// every 5 minutes would log in too often.
			fake := newSchedFake(func(string, int) schedStep {
				return schedStep{dur: 3 * time.Second, rep: fetch.PollReport{LoginDelay: 12 * time.Minute}}
			})
			r := startSched(t, schedule.Options{Poll: fake.poll, Jitter: schedNoJitter},
				schedule.Settings{Accounts: []*configs.Account{schedAccount("x", "@every 5m", true)}, MaxParallel: 1})
			schedSleepUntil(13 * time.Minute)
			if p := r.s.Plan(); p[0].Reason != schedule.ReasonLoginDelay || !p[0].Next.Equal(schedT0.Add(24*time.Minute)) {
				t.Errorf("plan: %+v", p)
			}
			schedSleepUntil(50 * time.Minute)
			r.stop()
			if got, want := fake.starts("x"), schedMins(0, 12, 24, 36, 48); !slices.Equal(got, want) {
				t.Errorf("polls at %v\nwant      %v", got, want)
			}
		})
	})
	t.Run("error", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ld := schedTempErr("LOGIN-DELAY")
			steps := map[int]schedStep{
				// [LOGIN-DELAY] with the capability saying 20 minutes.
				1: {rep: fetch.PollReport{Result: fetch.Result{Err: ld}, LoginDelay: 20 * time.Minute}},
				// [LOGIN-DELAY] without a value: the usual backoff (10m).
				2: {rep: fetch.PollReport{Result: fetch.Result{Err: ld}}},
			}
			fake := newSchedFake(func(_ string, n int) schedStep { return steps[n] })
			r := startSched(t, schedule.Options{Poll: fake.poll, Jitter: schedNoJitter},
				schedule.Settings{Accounts: []*configs.Account{schedAccount("x", "@every 5m", true)}, MaxParallel: 1})
			schedSleepUntil(42 * time.Minute)
			r.stop()
			if got, want := fake.starts("x"), schedMins(0, 5, 25, 35, 40); !slices.Equal(got, want) {
				t.Errorf("polls at %v\nwant      %v", got, want)
			}
		})
	})
}

func TestSchedulerMaxParallel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := map[string]chan struct{}{}
		var accounts []*configs.Account
		for _, n := range []string{"a", "b", "c", "d", "e"} {
			accounts = append(accounts, schedAccount(n, "@every 1h", true))
			release[n] = make(chan struct{})
		}
		round2 := make(chan struct{})
		fake := newSchedFake(func(account string, n int) schedStep {
			if n == 0 {
				return schedStep{release: release[account]}
			}
			return schedStep{release: round2}
		})
		r := startSched(t, schedule.Options{Poll: fake.poll, Jitter: schedNoJitter}, schedule.Settings{Accounts: accounts, MaxParallel: 2})
		running := func() []string {
			var out []string
			for _, p := range r.s.Plan() {
				if p.Running {
					out = append(out, p.Account)
				}
			}
			return out
		}
		if got := running(); !slices.Equal(got, []string{"a", "b"}) || fake.activeNow() != 2 {
			t.Fatalf("running %v (%d polls), want a and b", got, fake.activeNow())
		}
		schedSleepUntil(10 * time.Minute)
		close(release["b"])
		synctest.Wait()
		if got := running(); !slices.Equal(got, []string{"a", "c"}) {
			t.Errorf("after b: running %v, want a c", got)
		}
		for _, n := range []string{"a", "c", "d", "e"} {
			close(release[n])
			synctest.Wait()
		}
		if fake.maxActive != 2 {
			t.Errorf("max %d polls at once", fake.maxActive)
		}
		for _, n := range []string{"a", "b", "c", "d", "e"} {
			if got := fake.starts(n); len(got) != 1 {
				t.Errorf("account %s polled at %v, want once", n, got)
			}
		}
		// Changing max_parallel by reload takes effect.
		if err := r.s.Reload(schedule.Settings{Accounts: accounts, MaxParallel: 5}); err != nil {
			t.Fatal(err)
		}
		schedSleepUntil(61 * time.Minute)
		if n := fake.activeNow(); n != 5 {
			t.Errorf("after raising max_parallel to 5: %d polls at once", n)
		}
		close(round2)
		r.stop()
	})
}

func TestSchedulerPollNow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		authErr := &pop3.Error{Command: "AUTH", Code: "AUTH"}
		fake := newSchedFake(func(account string, n int) schedStep {
			switch {
			case account == "hourly":
				return schedStep{dur: time.Minute}
			case account == "denied" && n == 0:
				return schedStep{rep: fetch.PollReport{Result: fetch.Result{Err: authErr}}}
			case account == "delayed":
				return schedStep{rep: fetch.PollReport{LoginDelay: 30 * time.Minute}}
			}
			return schedStep{}
		})
		accounts := []*configs.Account{
			schedAccount("hourly", "CRON_TZ=UTC 0 * * * *", false),
			schedAccount("denied", "@every 5m", true),
			schedAccount("delayed", "@every 5m", true),
		}
		r := startSched(t, schedule.Options{Poll: fake.poll, Jitter: schedNoJitter}, schedule.Settings{Accounts: accounts, MaxParallel: 5})
		schedSleepUntil(10 * time.Minute)
		r.s.PollNow()
		synctest.Wait()
		schedSleepUntil(10*time.Minute + 30*time.Second)
		r.s.PollNow() // hourly is still running: it polls again when done
		synctest.Wait()
		schedSleepUntil(62 * time.Minute)
		r.stop()
		// hourly: asked at 10m (takes a minute), asked again while running
		// so again at 11m, then its schedule at 60m.
		if got, want := fake.starts("hourly"), schedMins(0+10, 11, 60); !slices.Equal(got, want) {
			t.Errorf("hourly: polls at %v, want %v", got, want)
		}
		// denied: login refused at 0 (retry in an hour); the request at 10m
		// overrides that backoff; it works, so the schedule resumes.
		if got := fake.starts("denied"); len(got) < 4 || !slices.Equal(got[:4], schedMins(0, 10, 10.5, 15)) {
			t.Errorf("denied: polls at %v, want 0, 10m, 10m30s, 15m, ...", got)
		}
		// delayed: the server's LOGIN-DELAY (30m) is honoured even when asked.
		if got, want := fake.starts("delayed"), schedMins(0, 30, 60); !slices.Equal(got, want) {
			t.Errorf("delayed: polls at %v, want %v", got, want)
		}
	})
}

func TestSchedulerReload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hold := map[string]chan struct{}{"a": make(chan struct{}), "b": make(chan struct{})}
		fake := newSchedFake(func(account string, n int) schedStep {
			if n == 1 && hold[account] != nil {
				return schedStep{release: hold[account]} // the poll at 5m runs until released
			}
			return schedStep{}
		})
		a := schedAccount("a", "@every 5m", true)
		b := schedAccount("b", "@every 5m", true)
		logs := &schedLogs{}
		r := startSched(t, schedule.Options{Poll: fake.poll, Jitter: schedNoJitter, Logger: slog.New(logs)},
			schedule.Settings{Accounts: []*configs.Account{a, b}, MaxParallel: 4})
		schedSleepUntil(6 * time.Minute) // a and b are both stuck in their 5m poll

		a2 := schedAccount("a", "@every 1m", true)
		a2.Keep = true
		c := schedAccount("c", "@every 5m", true)
		d := schedAccount("d", "@every 10m", false)
		bad := schedAccount("bad", "@every 1ms", true)
		if err := r.s.Reload(schedule.Settings{Accounts: []*configs.Account{a2, c, d, bad}, MaxParallel: 4}); err == nil || !strings.Contains(err.Error(), `"bad"`) {
			t.Errorf("reload with a bad schedule: %v", err)
		}
		if err := r.s.Reload(schedule.Settings{Accounts: []*configs.Account{a2, c, d}, MaxParallel: 4}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		for _, p := range r.s.Plan() {
			if p.Account == "b" {
				t.Errorf("removed account b still planned: %+v", p)
			}
		}
		schedSleepUntil(7 * time.Minute)
		close(hold["a"])
		close(hold["b"])
		synctest.Wait()
		schedSleepUntil(21 * time.Minute)

		// b is dropped, re-added later: polled at once (run_at_start).
		if err := r.s.Reload(schedule.Settings{Accounts: []*configs.Account{a2, b, c, d}, MaxParallel: 4}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		schedSleepUntil(22*time.Minute + 30*time.Second)
		r.stop()

		if got, want := fake.starts("a"), schedMins(0, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22); !slices.Equal(got, want) {
			t.Errorf("a: polls at %v\nwant  %v", got, want)
		}
		for _, call := range fake.callsOf("a") {
			if wantAcct := map[bool]*configs.Account{true: a, false: a2}[call.start.Before(schedT0.Add(6*time.Minute))]; call.acct != wantAcct {
				t.Errorf("a: poll at %v ran with the wrong config", call.start.Sub(schedT0))
			}
			if call.cancelled {
				t.Errorf("a: poll at %v was cancelled by the reload", call.start.Sub(schedT0))
			}
		}
		if got, want := fake.starts("b"), schedMins(0, 5, 21); !slices.Equal(got, want) {
			t.Errorf("b: polls at %v, want %v (removed at 6m while running, re-added at 21m)", got, want)
		}
		if got, want := fake.starts("c"), schedMins(6, 11, 16, 21); !slices.Equal(got, want) {
			t.Errorf("c: polls at %v, want %v", got, want)
		}
		if got, want := fake.starts("d"), schedMins(16); !slices.Equal(got, want) {
			t.Errorf("d: polls at %v, want %v", got, want)
		}
		if len(fake.overlaps) > 0 {
			t.Errorf("overlaps: %v", fake.overlaps)
		}
		if n := logs.count(slog.LevelInfo, "accounts reloaded"); n != 2 {
			t.Errorf("%d reload messages, want 2", n)
		}
	})
}

func TestSchedulerShutdown(t *testing.T) {
	account := []*configs.Account{schedAccount("x", "@every 1m", false)}
	t.Run("polls finish within the grace", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fake := newSchedFake(func(string, int) schedStep { return schedStep{dur: 20 * time.Second} })
			r := startSched(t, schedule.Options{Poll: fake.poll, Jitter: schedNoJitter},
				schedule.Settings{Accounts: account, MaxParallel: 1, ShutdownGrace: 30 * time.Second})
			schedSleepUntil(time.Minute + 10*time.Second)
			if !r.s.Running() {
				t.Error("Running() = false while scheduling")
			}
			r.cancel()
			synctest.Wait()
			if r.s.Running() {
				t.Error("Running() = true after the stop signal")
			}
			if err := <-r.errc; err != nil {
				t.Fatal(err)
			}
			if stopped := time.Since(schedT0); stopped != time.Minute+20*time.Second {
				t.Errorf("Run returned at %v, want when the poll ended (1m20s)", stopped)
			}
			calls := fake.callsOf("x")
			if len(calls) != 1 || calls[0].cancelled {
				t.Errorf("calls %+v: want one poll that was not cancelled", calls)
			}
		})
	})
	t.Run("cancelled after the grace", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fake := newSchedFake(func(string, int) schedStep { return schedStep{dur: 10 * time.Minute} })
			reg := metrics.NewRegistry()
			r := startSched(t, schedule.Options{Poll: fake.poll, Jitter: schedNoJitter, Metrics: schedule.NewMetrics(reg)},
				schedule.Settings{Accounts: account, MaxParallel: 1, ShutdownGrace: 30 * time.Second})
			schedSleepUntil(time.Minute + 10*time.Second)
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
			calls := fake.callsOf("x")
			if len(calls) != 1 || !calls[0].cancelled || !calls[0].end.Equal(schedT0.Add(time.Minute+40*time.Second)) {
				t.Errorf("calls %+v: want one poll cancelled at 1m40s", calls)
			}
			if stopped := time.Since(schedT0); stopped != time.Minute+40*time.Second {
				t.Errorf("Run returned at %v, want 1m40s", stopped)
			}
			var b strings.Builder
			reg.WriteTo(&b)
			if !strings.Contains(b.String(), `popsync_polls_total{account="x",outcome="cancelled"} 1`) ||
				!strings.Contains(b.String(), `popsync_consecutive_failures{account="x"} 0`) {
				t.Errorf("a cancelled poll is not booked as cancelled:\n%s", schedGrep(b.String(), "popsync_polls_total"))
			}
		})
	})
	t.Run("abort", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fake := newSchedFake(func(string, int) schedStep { return schedStep{dur: 10 * time.Minute} })
			r := startSched(t, schedule.Options{Poll: fake.poll, Jitter: schedNoJitter},
				schedule.Settings{Accounts: account, MaxParallel: 1, ShutdownGrace: 30 * time.Second})
			schedSleepUntil(time.Minute + 10*time.Second)
			r.cancel()
			schedSleepUntil(time.Minute + 15*time.Second)
			r.s.Abort()
			if err := <-r.errc; err != nil {
				t.Fatal(err)
			}
			if calls := fake.callsOf("x"); len(calls) != 1 || !calls[0].end.Equal(schedT0.Add(time.Minute+15*time.Second)) {
				t.Errorf("calls %+v: want one poll cancelled at 1m15s", calls)
			}
		})
	})
	t.Run("abort alone", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fake := newSchedFake(func(string, int) schedStep { return schedStep{dur: 10 * time.Minute} })
			r := startSched(t, schedule.Options{Poll: fake.poll, Jitter: schedNoJitter},
				schedule.Settings{Accounts: account, MaxParallel: 1, ShutdownGrace: 30 * time.Second})
			schedSleepUntil(time.Minute + 15*time.Second)
			r.s.Abort()
			if err := <-r.errc; err != nil {
				t.Fatal(err)
			}
			if calls := fake.callsOf("x"); len(calls) != 1 || !calls[0].cancelled || !calls[0].end.Equal(schedT0.Add(time.Minute+15*time.Second)) {
				t.Errorf("calls %+v: want one poll cancelled at 1m15s", calls)
			}
			r.cancel()
		})
	})
	t.Run("poll ignores cancellation", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			stuck := make(chan struct{})
			defer close(stuck) // lets the poll end before the bubble does
			fake := newSchedFake(func(string, int) schedStep { return schedStep{release: stuck, ignore: true} })
			r := startSched(t, schedule.Options{Poll: fake.poll, Jitter: schedNoJitter, CancelWait: 5 * time.Second},
				schedule.Settings{Accounts: account, MaxParallel: 1, ShutdownGrace: 30 * time.Second})
			schedSleepUntil(time.Minute + 10*time.Second)
			err := r.stop()
			if err == nil || !strings.Contains(err.Error(), "x") {
				t.Errorf("Run = %v, want an error naming the stuck account", err)
			}
			if stopped := time.Since(schedT0); stopped != time.Minute+45*time.Second {
				t.Errorf("Run returned at %v, want 1m45s (grace 30s + 5s)", stopped)
			}
			if err := r.s.Reload(schedule.Settings{Accounts: account}); err == nil {
				t.Error("Reload after Run returned succeeded")
			}
		})
	})
	t.Run("no new polls while stopping", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			accounts := []*configs.Account{schedAccount("slow", "@every 1m", false), schedAccount("other", "@every 1m", false)}
			fake := newSchedFake(func(account string, _ int) schedStep {
				if account == "slow" {
					return schedStep{dur: 10 * time.Minute}
				}
				return schedStep{}
			})
			r := startSched(t, schedule.Options{Poll: fake.poll, Jitter: schedNoJitter},
				schedule.Settings{Accounts: accounts, MaxParallel: 2, ShutdownGrace: 5 * time.Minute})
			schedSleepUntil(time.Minute + 10*time.Second)
			r.stop()
			if got := fake.starts("other"); !slices.Equal(got, schedMins(1)) {
				t.Errorf("other polled at %v during shutdown", got)
			}
		})
	})
}

func TestSchedulerStoppedBeforeStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := newSchedFake(nil)
		s, err := schedule.New(schedule.Options{Poll: fake.poll},
			schedule.Settings{Accounts: []*configs.Account{schedAccount("x", "@every 1m", true)}, MaxParallel: 1})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := s.Run(ctx); err != nil {
			t.Fatal(err)
		}
		if got := fake.starts("x"); len(got) != 0 {
			t.Errorf("polled at %v after the stop", got)
		}
		if err := s.Run(context.Background()); err == nil {
			t.Error("a second Run succeeded")
		}
	})
}

func TestSchedulerScheduleWithoutNextTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := newSchedFake(nil)
		r := startSched(t, schedule.Options{Poll: fake.poll},
			schedule.Settings{Accounts: []*configs.Account{schedAccount("feb30", "CRON_TZ=UTC 0 0 30 2 *", true)}, MaxParallel: 1})
		schedSleepUntil(48 * time.Hour)
		if p := r.s.Plan(); len(p) != 1 || p[0].Reason != schedule.ReasonNever || !p[0].Next.IsZero() {
			t.Errorf("plan: %+v", p)
		}
		r.s.PollNow()
		synctest.Wait()
		r.stop()
		if got := fake.starts("feb30"); !slices.Equal(got, []time.Duration{0, 48 * time.Hour}) {
			t.Errorf("polled at %v, want at start and when asked", got)
		}
	})
}

func TestSchedulerContainsPanics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := newSchedFake(func(account string, n int) schedStep { return schedStep{panic: account == "bad"} })
		r := startSched(t, schedule.Options{Poll: fake.poll, Jitter: schedNoJitter},
			schedule.Settings{Accounts: []*configs.Account{schedAccount("bad", "@every 5m", true), schedAccount("good", "@every 5m", true)}, MaxParallel: 2})
		schedSleepUntil(11 * time.Minute)
		r.stop()
		if got := fake.starts("good"); !slices.Equal(got, schedMins(0, 5, 10)) {
			t.Errorf("good: %v", got)
		}
		if got := fake.starts("bad"); !slices.Equal(got, schedMins(0, 5)) { // backs off like any failure
			t.Errorf("bad: %v", got)
		}
	})
}

func TestNewRejectsBadSchedules(t *testing.T) {
	_, err := schedule.New(schedule.Options{Poll: func(context.Context, *configs.Account) fetch.PollReport { return fetch.PollReport{} }},
		schedule.Settings{Accounts: []*configs.Account{schedAccount("a", "61 * * * *", true), schedAccount("b", "@every 5m", true), schedAccount("a", "@every 1m", true)}})
	if err == nil || !strings.Contains(err.Error(), `account "a": schedule`) || !strings.Contains(err.Error(), `account "a": listed twice`) {
		t.Errorf("New = %v", err)
	}
	if _, err := schedule.New(schedule.Options{}, schedule.Settings{}); err == nil {
		t.Error("New without a poll function succeeded")
	}
}

func TestOutcomeOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, schedule.OutcomeOK},
		{fmt.Errorf("%w (me@host)", fetch.ErrAccountBusy), schedule.OutcomeBusy},
		{schedTempErr("IN-USE"), schedule.OutcomeError},
		{schedTempErr("LOGIN-DELAY"), schedule.OutcomeError},
		{schedTempErr("SYS/TEMP"), schedule.OutcomeError},
		{schedTempErr("AUTH"), schedule.OutcomeAuth},
		{schedTempErr("SYS/PERM"), schedule.OutcomeAuth},
		{fmt.Errorf("logging in: %w", &pop3.Error{Command: "PASS", Text: "wrong"}), schedule.OutcomeAuth},
		{fmt.Errorf("logging in: %w", &pop3.Error{Command: "APOP"}), schedule.OutcomeAuth},
		{fmt.Errorf("listing: %w", &pop3.Error{Command: "UIDL"}), schedule.OutcomeError},
		{fmt.Errorf("running password_command: %w", configs.ErrSecretUnavailable), schedule.OutcomeAuth},
		{fmt.Errorf("account %q: %w", "a", &credential.TemporaryError{Err: fmt.Errorf("%w: password_command: no answer within 10s", configs.ErrSecretUnavailable)}), schedule.OutcomeError},
		{fmt.Errorf("connecting: %w", pop3.ErrCertificate), schedule.OutcomeAuth},
		{fmt.Errorf("connecting: %w", pop3.ErrNoMechanism), schedule.OutcomeAuth},
		{errors.New("dial tcp: connection refused"), schedule.OutcomeError},
	} {
		if got := schedule.OutcomeOf(tc.err); got != tc.want {
			t.Errorf("OutcomeOf(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestPollReportAgainstFakeServer runs the real poll against the fake
// POP3 server: the report carries the LOGIN-DELAY capability, and login
// refusals come back in the form the scheduler classifies.
func TestPollReportAgainstFakeServer(t *testing.T) {
	msgs := pop3test.SampleMessages(3, 1)
	srv := pop3test.NewServer(pop3test.Config{User: "me", Password: "pw", Caps: pop3test.Caps{LoginDelay: 900}}, msgs...)
	t.Cleanup(func() { srv.Close() })
	addr, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	var port int
	host, p, _ := strings.Cut(addr, ":")
	fmt.Sscan(p, &port)
	dir := t.TempDir()
	st, err := state.OpenSQLite(t.Context(), filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	acct := &configs.Account{Name: "fake", Host: host, Port: port, TLS: configs.TLSNone, User: "me",
		Password: credential.Literal("pw"), Auth: configs.AuthUser, Keep: true, Timeout: configs.Duration(10 * time.Second),
		Deliver: []configs.Deliver{{Target: &configs.MaildirTarget{Path: filepath.Join(dir, "Maildir")}}}}
	o := &fetch.Options{Store: st}

	before := time.Now()
	rep := o.PollReport(t.Context(), acct)
	if rep.Err != nil || rep.Delivered != 3 {
		t.Fatalf("poll: delivered %d, %v", rep.Delivered, rep.Err)
	}
	if rep.LoginDelay != 15*time.Minute || rep.SessionAt.Before(before) {
		t.Errorf("LoginDelay %v, SessionAt %v (poll began %v)", rep.LoginDelay, rep.SessionAt, before)
	}
	if o.Dial != nil {
		t.Error("PollReport changed the caller's Options")
	}

	for code, want := range map[string]string{"AUTH": schedule.OutcomeAuth, "IN-USE": schedule.OutcomeError, "LOGIN-DELAY": schedule.OutcomeError} {
		srv.SetFaults(pop3test.Faults{Login: pop3test.LoginFault{Code: code, Text: "no"}})
		rep := o.PollReport(t.Context(), acct)
		if got := schedule.OutcomeOf(rep.Err); got != want {
			t.Errorf("login refused with [%s]: outcome %q (%v), want %q", code, got, rep.Err, want)
		}
	}
	srv.SetFaults(pop3test.Faults{})
	acct.Password = credential.Literal("wrong")
	if rep := o.PollReport(t.Context(), acct); schedule.OutcomeOf(rep.Err) != schedule.OutcomeAuth {
		t.Errorf("wrong password: outcome %q (%v)", schedule.OutcomeOf(rep.Err), rep.Err)
	}
	unreachable := *acct
	unreachable.Port = 1
	if rep := o.PollReport(t.Context(), &unreachable); rep.Err == nil || !rep.SessionAt.IsZero() || schedule.OutcomeOf(rep.Err) != schedule.OutcomeError {
		t.Errorf("unreachable server: %v, SessionAt %v", rep.Err, rep.SessionAt)
	}
}
