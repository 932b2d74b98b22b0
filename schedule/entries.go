package schedule

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/robfig/cron/v3"

	"popsync/configs"
)

// entry is the schedule of one account.
type entry struct {
	acct     *configs.Account
	order    int
	sched    cron.Schedule
	interval time.Duration
	jitter   time.Duration

	slot      time.Time // the upcoming time of the schedule, without jitter; zero = never
	retryAt   time.Time // backoff: not before this; zero when the last poll succeeded
	notBefore time.Time // LOGIN-DELAY: not before this
	next      time.Time // when the next poll starts; zero = never
	reason    string

	running  bool
	again    bool // PollNow arrived while running: poll again at once
	removed  bool // left the config while running: dropped when its poll ends
	failures int
	reported bool // a login failure of this streak was logged loudly
}

// randomJitter is the default Options.Jitter.
func randomJitter(interval time.Duration) time.Duration {
	limit := min(interval/10, maxJitter)
	if limit <= 0 {
		return 0
	}
	return rand.N(limit)
}

// add schedules a new account.
func (s *Scheduler) add(a *configs.Account, now time.Time) *entry {
	e := &entry{acct: a, order: s.seq}
	s.seq++
	s.setSchedule(e, now)
	if a.RunAtStart {
		e.next, e.reason = now, ReasonStart
	} else {
		e.reschedule()
	}
	s.entries[a.Name] = e
	s.o.Metrics.addAccount(a.Name)
	return e
}

// setSchedule (re)reads e's schedule and places its next slot after now.
func (s *Scheduler) setSchedule(e *entry, now time.Time) {
	sc, err := configs.ParseSchedule(e.acct.Schedule)
	if err != nil {
		// Checked by New and Reload; a schedule that never fires
		// is the safe reading of one that cannot be parsed.
		sc = never{}
	}
	e.sched = sc
	e.slot = sc.Next(now)
	if e.slot.IsZero() {
		s.log.Warn("the account's schedule has no next time: it is polled only at start or when asked",
			"account", e.acct.Name, "schedule", e.acct.Schedule)
	}
	e.interval = 0
	if !e.slot.IsZero() {
		if n := sc.Next(e.slot); !n.IsZero() {
			e.interval = n.Sub(e.slot)
		}
	}
	e.jitter = 0
	if e.interval > 0 {
		e.jitter = max(s.o.Jitter(e.interval), 0)
	}
}

// never is a schedule with no next time.
type never struct{}

func (never) Next(time.Time) time.Time { return time.Time{} }

// reschedule sets e.next from the schedule, the backoff and LOGIN-DELAY.
func (e *entry) reschedule() {
	if e.slot.IsZero() {
		e.next, e.reason = time.Time{}, ReasonNever
		return
	}
	e.next, e.reason = e.slot.Add(e.jitter), ReasonSchedule
	if e.retryAt.After(e.next) {
		e.next, e.reason = e.retryAt, ReasonBackoff
	}
	if e.notBefore.After(e.next) {
		e.next, e.reason = e.notBefore, ReasonLoginDelay
	}
}

// request plans a poll of e as soon as LOGIN-DELAY allows.
func (e *entry) request(now time.Time) {
	e.next, e.reason = now, ReasonRequested
	if e.notBefore.After(now) {
		e.next, e.reason = e.notBefore, ReasonLoginDelay
	}
}

func (s *Scheduler) requestAll(now time.Time) {
	s.log.Info("polling every account now, as requested")
	for _, e := range s.entries {
		switch {
		case e.removed:
		case e.running:
			e.again = true
		default:
			e.request(now)
		}
	}
}

// sortedEntries returns the entries in config order.
func (s *Scheduler) sortedEntries() []*entry {
	list := make([]*entry, 0, len(s.entries))
	for _, e := range s.entries {
		list = append(list, e)
	}
	slices.SortFunc(list, func(a, b *entry) int { return cmp.Compare(a.order, b.order) })
	return list
}

// nextWake returns the earliest future start time of an account that is
// not running. Due accounts waiting for a free slot need no timer: the end
// of a poll wakes the loop.
func (s *Scheduler) nextWake(now time.Time) (time.Time, bool) {
	var at time.Time
	for _, e := range s.entries {
		if e.running || e.removed || !e.next.After(now) {
			continue
		}
		if at.IsZero() || e.next.Before(at) {
			at = e.next
		}
	}
	return at, !at.IsZero()
}
