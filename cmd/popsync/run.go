package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"popsync/configs"
	"popsync/fetch"
	"popsync/internal/metrics"
	"popsync/internal/osfile"
	"popsync/schedule"
	"popsync/state"
)

// Files the daemon keeps beside the store (configs.State.LocalFile).
const (
	// daemonLockSuffix names the lock that allows one daemon per store:
	// it holds an flock and the holder's pid.
	daemonLockSuffix = ".daemon.lock"
	// planSuffix names the file with the next poll times that `popsync
	// status` shows.
	planSuffix = ".schedule.json"
)

// planPath is the daemon's schedule file of the state st.
func planPath(st configs.State) string { return st.LocalFile(planSuffix) }

// Timeouts of the metrics server and its scrapes.
const (
	metricsReadHeaderTimeout = 5 * time.Second
	metricsReadTimeout       = 10 * time.Second
	metricsWriteTimeout      = 30 * time.Second
	metricsIdleTimeout       = 60 * time.Second
	metricsShutdownTimeout   = 5 * time.Second
	seenQueryTimeout         = 5 * time.Second
)

// cmdRun is `popsync run`: the daemon. It polls every account on its
// schedule until SIGTERM or SIGINT; SIGHUP reloads the config, SIGUSR1
// polls every account now.
func setupRun(f *flags, g *common) runFunc {
	g.register(f)
	return func(ctx context.Context, e *env, args []string) error {
		if len(args) > 0 {
			return usageErrorf("unexpected argument %q", args[0])
		}
		return daemonMain(ctx, e.stderr, g)
	}
}

// errDaemonRunning means another daemon holds the state file's lock.
var errDaemonRunning = errors.New("another popsync daemon is already running")

// daemonRunningError names the daemon that holds the lock; it is
// errDaemonRunning.
type daemonRunningError struct{ msg string }

func (e *daemonRunningError) Error() string        { return e.msg }
func (e *daemonRunningError) Is(target error) bool { return target == errDaemonRunning }

func daemonMain(ctx context.Context, stderr io.Writer, c *common) error {
	// Caught from here on: the default action of SIGHUP and SIGUSR1 is to
	// end the process, which a reload sent during start must not do.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	cfg, err := c.load()
	if err != nil {
		return err
	}
	// One daemon per SQLite file; a fleet store is shared by design.
	if !cfg.State.Fleet() {
		lock, err := lockDaemon(cfg.State)
		if err != nil && !errors.Is(err, errDaemonRunning) {
			err = &stateError{err}
		}
		if err != nil {
			return err
		}
		defer lock.release()
	}
	st, err := openStoreAs(ctx, cfg, fleetOptions(log))
	if err != nil {
		return err
	}
	defer st.Close()

	d := &daemon{log: log, store: st, planPath: planPath(cfg.State), reg: metrics.NewRegistry()}
	d.cfg.Store(cfg)
	poll := &fetch.Options{Store: st, Logger: log, Trace: c.trace != traceOff, TraceAuth: c.trace == traceAuth,
		QuietFailures: true, QuarantineDir: quarantineDir(cfg),
		Configured: func() []*configs.Account { return d.cfg.Load().Accounts }}
	tokens := newTokens(st, log)
	poll.Credential, poll.TargetCredential = tokens.Credential, tokens.TargetCredential
	if c.verbose {
		poll.OnMessage = func(ev fetch.MessageEvent) { logMessage(ctx, log, ev) }
	}
	if st.fleet != nil {
		d.sched, err = schedule.NewFleet(schedule.FleetOptions{
			Poll: func(ctx context.Context, a *configs.Account, leased state.Store) fetch.PollReport {
				po := *poll
				po.Store = leased
				return po.PollReport(ctx, a)
			},
			Store:   st.fleet,
			Logger:  log,
			Metrics: schedule.NewMetrics(d.reg),
		}, settings(cfg))
		d.registerFleetMetrics(st.fleet)
	} else {
		d.sched, err = schedule.New(schedule.Options{
			Poll:    poll.PollReport,
			Logger:  log,
			Metrics: schedule.NewMetrics(d.reg),
			OnPlan:  d.writePlan,
		}, settings(cfg))
	}
	if err != nil {
		return &configError{err}
	}
	d.registerMetrics()
	if cfg.Daemon.Metrics != "" {
		stop, err := d.serveMetrics(cfg.Daemon.Metrics)
		if err != nil {
			return &configError{err}
		}
		defer stop()
	}
	defer os.Remove(d.planPath)

	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	sigDone := make(chan struct{})
	var sigWG sync.WaitGroup
	sigWG.Add(1)
	go func() {
		defer sigWG.Done()
		d.handleSignals(sigs, sigDone, stopRun)
	}()
	defer func() {
		close(sigDone)
		sigWG.Wait()
	}()

	log.Info("popsync daemon started", "pid", os.Getpid(), "config", cfg.Path, "state", cfg.State.Where(),
		"accounts", len(cfg.Accounts), "max_parallel", cfg.Daemon.MaxParallel, "metrics", cfg.Daemon.Metrics)
	if err := d.sched.Run(runCtx); err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	log.Info("popsync daemon stopped")
	return nil
}

// settings are the parts of a config the scheduler takes.
func settings(cfg *configs.Config) schedule.Settings {
	return schedule.Settings{Accounts: cfg.Accounts, MaxParallel: cfg.Daemon.MaxParallel,
		ShutdownGrace: cfg.Daemon.ShutdownGrace.D()}
}

// scheduler is the daemon loop: schedule.Scheduler for an SQLite state,
// schedule.Fleet for a PostgreSQL one.
type scheduler interface {
	Run(ctx context.Context) error
	Reload(set schedule.Settings) error
	PollNow()
	Abort()
	Running() bool
}

// daemon is the wiring of `popsync run` around the scheduler.
type daemon struct {
	log      *slog.Logger
	cfg      atomic.Pointer[configs.Config] // the running config; replaced by a good reload
	store    state.Store
	sched    scheduler
	reg      *metrics.Registry
	reloads  *metrics.Vec
	planPath string
	planErr  string // last error writing the plan file, so it is logged once
}

// handleSignals turns signals into scheduler calls until done is closed.
// The first SIGTERM or SIGINT stops scheduling (stop); a second one cancels
// running polls at once.
func (d *daemon) handleSignals(sigs <-chan os.Signal, done <-chan struct{}, stop context.CancelFunc) {
	stopping := false
	for {
		select {
		case <-done:
			return
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				d.log.Info("SIGHUP: reloading the config")
				d.reload()
			case syscall.SIGUSR1:
				d.log.Info("SIGUSR1: polling every account now")
				d.sched.PollNow()
			default:
				name := sig.String()
				if s, ok := sig.(syscall.Signal); ok {
					name = unix.SignalName(s)
				}
				if stopping {
					d.log.Warn(name + " again: stopping at once")
					d.sched.Abort()
					continue
				}
				stopping = true
				d.log.Info(name+": stopping; running polls may finish", "grace", d.cfg.Load().Daemon.ShutdownGrace.String(),
					"hint", "send it again to stop at once")
				stop()
			}
		}
	}
}

// reload reads the config file again and hands it to the scheduler. A
// config that cannot be used leaves the running one in place.
func (d *daemon) reload() {
	old := d.cfg.Load()
	cfg, err := configs.Load(old.Path)
	if err == nil {
		err = d.sched.Reload(settings(cfg))
	}
	if err != nil {
		d.reloads.Inc("error")
		lines := strings.Split(err.Error(), "\n")
		for _, l := range lines {
			d.log.Error("config problem", "problem", l)
		}
		d.log.Error("reloading the config failed; keeping the running config", "config", old.Path, "problems", len(lines))
		return
	}
	if cfg.State != old.State {
		d.log.Warn("[state] changed: the daemon keeps using the old state until it is restarted",
			"running", old.State.Where(), "new", cfg.State.Where())
		cfg.State = old.State
	}
	if cfg.Daemon.Metrics != old.Daemon.Metrics {
		d.log.Warn("[daemon] metrics changed: takes effect when the daemon is restarted",
			"running", old.Daemon.Metrics, "new", cfg.Daemon.Metrics)
		cfg.Daemon.Metrics = old.Daemon.Metrics
	}
	d.cfg.Store(cfg)
	d.reloads.Inc("ok")
	d.log.Info("config reloaded", "config", cfg.Path, "accounts", len(cfg.Accounts))
}

// registerMetrics adds what the scheduler does not measure itself.
func (d *daemon) registerMetrics() {
	d.reloads = d.reg.Counter("popsync_config_reloads_total", "Config reloads (SIGHUP) by result: ok, or error (the running config was kept).", "result")
	d.reloads.Add(0, "ok")
	d.reloads.Add(0, "error")
	d.reg.GaugeFunc("popsync_scheduler_running", "1 while the scheduler runs, 0 once it is stopping.", nil, func() []metrics.Sample {
		v := 0.0
		if d.sched.Running() {
			v = 1
		}
		return []metrics.Sample{{Value: v}}
	})
	d.reg.GaugeFunc("popsync_seen_messages", "Messages in the account's seen-set (delivered, skipped or quarantined UIDLs still remembered).",
		[]string{"account"}, d.seenSamples)
}

// seenSamples reads the seen-set sizes for a scrape.
func (d *daemon) seenSamples() []metrics.Sample {
	ctx, cancel := context.WithTimeout(context.Background(), seenQueryTimeout)
	defer cancel()
	all, err := d.store.Status(ctx)
	if err != nil {
		d.log.Warn("reading seen-set sizes for /metrics", "error", err.Error())
		return nil
	}
	seen := make(map[state.Account]int, len(all))
	for _, s := range all {
		seen[s.Account.Canonical()] = s.Seen
	}
	cfg := d.cfg.Load()
	out := make([]metrics.Sample, 0, len(cfg.Accounts))
	for _, a := range cfg.Accounts {
		out = append(out, metrics.Sample{Labels: []string{a.Name}, Value: float64(seen[a.Identity()])})
	}
	return out
}

// serveMetrics serves /metrics and /healthz on addr until stop is called.
// It listens before returning, so a bad address fails the start.
func (d *daemon) serveMetrics(addr string) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("serving metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", d.reg)
	mux.HandleFunc("/healthz", d.healthz)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: metricsReadHeaderTimeout,
		ReadTimeout:       metricsReadTimeout,
		WriteTimeout:      metricsWriteTimeout,
		IdleTimeout:       metricsIdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelDebug),
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("metrics server stopped", "error", err.Error())
		}
	}()
	d.log.Info("serving metrics", "addr", ln.Addr().String(), "paths", "/metrics /healthz")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), metricsShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
		<-served
	}, nil
}

// healthz answers 200 while the scheduler runs, 503 otherwise.
func (d *daemon) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !d.sched.Running() {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "not scheduling\n")
		return
	}
	io.WriteString(w, "ok\n")
}

// planFile is the content of the schedule file (planPath).
type planFile struct {
	PID      int                    `json:"pid"`
	Written  time.Time              `json:"written"`
	Accounts []schedule.PlannedPoll `json:"accounts"`
}

// writePlan replaces the plan file. The file is a hint for `status`, not
// state: it is renamed into place so a reader never sees half of it, but
// not fsynced, and a failure to write it is logged once and otherwise
// ignored.
func (d *daemon) writePlan(plan []schedule.PlannedPoll) {
	err := writeFileAtomic(d.planPath, planFile{PID: os.Getpid(), Written: time.Now().UTC(), Accounts: plan})
	switch {
	case err != nil && err.Error() != d.planErr:
		d.log.Warn("writing next poll times for `popsync status`", "error", err.Error())
		d.planErr = err.Error()
	case err == nil:
		d.planErr = ""
	}
}

func writeFileAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// daemonPlan returns the plan of the daemon running on the state st, by
// account name; nil when no daemon runs there.
func daemonPlan(st configs.State) map[string]schedule.PlannedPoll {
	b, err := os.ReadFile(planPath(st))
	if err != nil {
		return nil
	}
	var pf planFile
	if json.Unmarshal(b, &pf) != nil || !osfile.ProcessAlive(pf.PID) {
		return nil // left behind by a daemon that was killed
	}
	out := make(map[string]schedule.PlannedPoll, len(pf.Accounts))
	for _, p := range pf.Accounts {
		out[p.Account] = p
	}
	return out
}

// planned returns the daemon's plan for account, nil without a daemon.
func planned(plan map[string]schedule.PlannedPoll, account string) *schedule.PlannedPoll {
	if p, ok := plan[account]; ok {
		return &p
	}
	return nil
}

// nextPollText is the NEXT POLL column of `popsync status`.
func nextPollText(plan map[string]schedule.PlannedPoll, account string) string {
	p, ok := plan[account]
	switch {
	case plan == nil:
		return "no daemon"
	case !ok:
		return "not scheduled"
	case p.Running:
		return "polling now"
	case p.Next.IsZero():
		return "never"
	}
	s := when(p.Next)
	if p.Reason == schedule.ReasonBackoff || p.Reason == schedule.ReasonLoginDelay {
		s += " (" + p.Reason + ")"
	}
	return s
}

// daemonLock is the held lock of one daemon on one state file.
type daemonLock struct {
	f *os.File
}

// lockDaemon takes the daemon lock in the state folder, or says who holds
// it. The lock is an flock(2): the kernel drops it when the process dies,
// however it dies, so it cannot go stale. The pid in the file is only for
// the message a second daemon prints.
func lockDaemon(st configs.State) (*daemonLock, error) {
	statePath, path := st.Path, st.LocalFile(daemonLockSuffix)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating the state folder: %w", err)
	}
	// The lock is truncated below: it must be no link to another file.
	if err := state.CheckFolder(filepath.Dir(path)); err != nil {
		return nil, err
	}
	f, err := state.OpenLockFile(path, "daemon lock")
	if err != nil {
		return nil, err
	}
	held, err := osfile.TryLock(f)
	if err == nil && !held {
		holder := "another process"
		if pid := osfile.Holder(f); pid != 0 {
			holder = "pid " + strconv.Itoa(pid)
		}
		f.Close()
		return nil, &daemonRunningError{fmt.Sprintf("another popsync daemon (%s) is already running on the state file %s (lock file %s); stop it first, or give this one a config with another [state] path",
			holder, statePath, path)}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	osfile.WriteHolder(f)
	return &daemonLock{f: f}, nil
}

// release drops the lock; the file stays (removing it would let two
// daemons lock two different files of the same name).
func (l *daemonLock) release() {
	_ = osfile.Unlock(l.f)
	l.f.Close()
}
