// Package schedule is popsync's daemon loop: it decides when each account is
// polled, runs polls through a PollFunc, and stops them gracefully. It is
// its own loop over time.Timer rather than a cron.Cron, because the next
// poll of an account depends on how the last one went (backoff,
// LOGIN-DELAY), which cron's fixed schedules cannot express; the cron
// parser still reads the schedules (configs.ParseSchedule). All state lives
// in the one goroutine that runs Run; polls run in goroutines of their own
// and report back on a channel. Time comes from time.Now and time.Timer
// only, so testing/synctest drives it through virtual days.
//
// It also keeps the daemon's per-account metrics (Metrics) and classifies
// how a poll ended (OutcomeOf). It is not responsible for polling (package
// fetch does that, through a PollFunc), for reading the config or for
// signals (cmd/popsync).
package schedule
