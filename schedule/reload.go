package schedule

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"

	"popsync/configs"
)

type reloadReq struct {
	set   Settings
	reply chan error
}

// checkAccounts reports accounts whose schedule cannot be used and names
// given twice.
func checkAccounts(accounts []*configs.Account) error {
	seen := make(map[string]bool, len(accounts))
	var errs []error
	for _, a := range accounts {
		if seen[a.Name] {
			errs = append(errs, fmt.Errorf("account %q: listed twice", a.Name))
		}
		seen[a.Name] = true
		if _, err := configs.ParseSchedule(a.Schedule); err != nil {
			errs = append(errs, fmt.Errorf("account %q: schedule: %w", a.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Reload replaces the accounts and settings. Accounts are matched by name:
// a new one is scheduled (and polled at once if RunAtStart), a removed one
// is no longer scheduled, a changed one takes effect from its next poll
// (a poll in flight finishes with the old config). Backoff and LOGIN-DELAY
// carry over unless host, port or user changed. If a schedule cannot be
// used nothing changes and the error says why. Reload waits until Run has
// applied the change (called before Run, until Run starts); it fails once
// Run has returned.
func (s *Scheduler) Reload(set Settings) error {
	if err := checkAccounts(set.Accounts); err != nil {
		return err
	}
	req := reloadReq{set: set, reply: make(chan error, 1)}
	select {
	case s.reloads <- req:
		return <-req.reply
	case <-s.done:
		return errors.New("reloading: the scheduler has stopped")
	}
}

// apply is Reload on Run's goroutine.
func (s *Scheduler) apply(set Settings, now time.Time) error {
	if err := checkAccounts(set.Accounts); err != nil {
		return err
	}
	keep := make(map[string]bool, len(set.Accounts))
	var added, changed, removed []string
	for i, a := range set.Accounts {
		keep[a.Name] = true
		e := s.entries[a.Name]
		if e == nil {
			e = s.add(a, now)
			e.order = i
			added = append(added, a.Name)
			continue
		}
		e.order = i
		wasRemoved := e.removed
		e.removed = false
		if wasRemoved {
			s.o.Metrics.addAccount(a.Name)
		}
		if reflect.DeepEqual(e.acct, a) {
			continue
		}
		old := e.acct
		e.acct = a
		changed = append(changed, a.Name)
		if old.Identity() != a.Identity() {
			// Another mailbox: the old one's failures say nothing of it.
			e.failures, e.reported = 0, false
			e.retryAt, e.notBefore = time.Time{}, time.Time{}
		}
		if old.Schedule != a.Schedule {
			s.setSchedule(e, now)
		}
		if !e.running && e.reason != ReasonStart && e.reason != ReasonRequested {
			// A running poll plans its successor when it ends, and an
			// asked-for poll stays asked for.
			e.reschedule()
		}
	}
	s.seq = len(set.Accounts)
	for name, e := range s.entries {
		if keep[name] || e.removed {
			continue
		}
		removed = append(removed, name)
		s.o.Metrics.removeAccount(name)
		if e.running {
			e.removed = true // dropped when its poll ends
		} else {
			delete(s.entries, name)
		}
	}
	s.set = set
	slices.Sort(removed)
	s.log.Info("accounts reloaded", "accounts", len(set.Accounts), "added", added, "changed", changed,
		"removed", removed, "max_parallel", s.maxParallel(), "shutdown_grace", set.ShutdownGrace.String())
	return nil
}
