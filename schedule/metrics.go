package schedule

import (
	"time"

	"popsync/fetch"
	"popsync/internal/metrics"
)

// pollDurationBuckets are the bounds of popsync_poll_duration_seconds:
// from an empty mailbox on a LAN to a large first sync.
var pollDurationBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800}

// Metrics are the per-account figures the scheduler exports. Create them
// with NewMetrics and hand them to Options.Metrics.
type Metrics struct {
	messages    *metrics.Vec
	bytes       *metrics.Vec
	deleted     *metrics.Vec
	polls       *metrics.Vec
	duration    *metrics.HistogramVec
	lastSuccess *metrics.Vec
	failures    *metrics.Vec
	nextPoll    *metrics.Vec
	inFlight    *metrics.Vec
	loginNeeded *metrics.Vec
}

// NewMetrics registers popsync's scheduler metrics in r. The seen-set size
// (popsync_seen_messages) needs the store and is registered by the caller
// with r.GaugeFunc.
func NewMetrics(r *metrics.Registry) *Metrics {
	return &Metrics{
		messages: r.Counter("popsync_messages_fetched_total",
			"Messages delivered to every target and recorded.", "account"),
		bytes: r.Counter("popsync_bytes_fetched_total",
			"Bytes of delivered messages as received from the server.", "account"),
		deleted: r.Counter("popsync_messages_deleted_total",
			"Messages deleted from the server (DELE committed by QUIT).", "account"),
		polls: r.Counter("popsync_polls_total",
			"Polls by outcome: ok, error (temporary, retried with backoff), auth (login refused, retried slowly), busy (another popsync held the account), cancelled (shutdown), login_needed (the OAuth 2.0 grant is gone: run popsync login).",
			"account", "outcome"),
		duration: r.Histogram("popsync_poll_duration_seconds",
			"Duration of polls, whatever their outcome.", pollDurationBuckets, "account"),
		lastSuccess: r.Gauge("popsync_last_success_timestamp_seconds",
			"Unix time the last successful poll ended; 0 before the first one.", "account"),
		failures: r.Gauge("popsync_consecutive_failures",
			"Failed polls since the last successful one.", "account"),
		nextPoll: r.Gauge("popsync_next_poll_timestamp_seconds",
			"Unix time of the next scheduled poll.", "account"),
		inFlight: r.Gauge("popsync_polls_in_flight",
			"Polls running now."),
		loginNeeded: r.Gauge("popsync_login_needed",
			"1 while the account's OAuth 2.0 grant is gone and `popsync login NAME` is needed, else 0.", "account"),
	}
}

// addAccount exports zero values for a new account, so that rates and
// alerts see it before its first poll.
func (m *Metrics) addAccount(name string) {
	if m == nil {
		return
	}
	m.messages.Add(0, name)
	m.bytes.Add(0, name)
	m.deleted.Add(0, name)
	for _, o := range []string{OutcomeOK, OutcomeError, OutcomeAuth, OutcomeBusy, OutcomeCancelled, OutcomeLoginNeeded} {
		m.polls.Add(0, name, o)
	}
	m.duration.Touch(name)
	m.lastSuccess.Add(0, name)
	m.failures.Set(0, name)
	m.loginNeeded.Set(0, name)
}

// removeAccount drops the series of an account that left the config.
func (m *Metrics) removeAccount(name string) {
	if m == nil {
		return
	}
	for _, v := range []*metrics.Vec{m.messages, m.bytes, m.deleted, m.polls, m.lastSuccess, m.failures, m.nextPoll, m.loginNeeded} {
		v.DeleteMatching("account", name)
	}
	m.duration.DeleteMatching("account", name)
}

func (m *Metrics) pollDone(name string, r fetch.Result, outcome string, failures int, end time.Time) {
	if m == nil {
		return
	}
	m.messages.Add(float64(r.Delivered), name)
	m.bytes.Add(float64(r.Bytes), name)
	m.deleted.Add(float64(r.Deleted), name)
	m.polls.Inc(name, outcome)
	m.duration.Observe(r.Duration.Seconds(), name)
	if outcome == OutcomeOK {
		m.lastSuccess.Set(unixSeconds(end), name)
	}
	m.failures.Set(float64(failures), name)
	switch outcome {
	case OutcomeLoginNeeded:
		m.loginNeeded.Set(1, name)
	case OutcomeOK:
		m.loginNeeded.Set(0, name)
	}
}

func (m *Metrics) setNext(name string, at time.Time) {
	if m == nil {
		return
	}
	m.nextPoll.Set(unixSeconds(at), name)
}

func (m *Metrics) setInFlight(n int) {
	if m == nil {
		return
	}
	m.inFlight.Set(float64(n))
}

func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}
