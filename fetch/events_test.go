package fetch_test

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"popsync/fetch"
	"popsync/fetch/pop3/pop3test"
	"popsync/internal/credential"
)

// TestOnMessageReportsEveryMessage checks the per-message hook behind
// `popsync fetch -v`: one event per delivered message with its UIDL,
// size and target, one for a message over max_size, and none on a poll
// with nothing new.
func TestOnMessageReportsEveryMessage(t *testing.T) {
	msgs := pop3test.SampleMessages(12, 3)
	big := pop3test.LargeMessage(300<<10, 1)
	big.UID = "big-one"
	msgs = append(msgs, big)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.MaxSize = 200 << 10
	var mu sync.Mutex
	var evs []fetch.MessageEvent
	e.opts.OnMessage = func(ev fetch.MessageEvent) {
		mu.Lock()
		defer mu.Unlock()
		evs = append(evs, ev)
	}
	r := e.mustPoll()
	if r.Delivered != 12 || len(evs) != 13 {
		t.Fatalf("delivered %d, %d events; want 12 and 13: %+v", r.Delivered, len(evs), evs)
	}
	var delivered []string
	for _, ev := range evs {
		switch ev.Result {
		case fetch.MessageDelivered:
			delivered = append(delivered, ev.UIDL)
			if ev.Size <= 0 || !strings.HasPrefix(ev.Target, "maildir ") || ev.Err != nil || ev.Account != "test" {
				t.Errorf("delivered event %+v", ev)
			}
		case fetch.MessageSkipped:
			if ev.UIDL != "big-one" || !errors.Is(ev.Err, fetch.ErrOversized) {
				t.Errorf("skipped event %+v", ev)
			}
		default:
			t.Errorf("unexpected event %+v", ev)
		}
	}
	slices.Sort(delivered)
	want := uids(msgs[:12])
	slices.Sort(want)
	if !slices.Equal(delivered, want) {
		t.Fatalf("delivered events for %v, want %v", delivered, want)
	}
	evs = nil
	e.mustPoll()
	if len(evs) != 0 {
		t.Fatalf("a poll with nothing new reported %+v", evs)
	}
}

// TestTargetFailureIsErrDelivery checks that a poll stopped by its
// delivery target is told apart from one stopped by the server.
func TestTargetFailureIsErrDelivery(t *testing.T) {
	e := newEnv(t, pop3test.SampleMessages(5, 4), pop3test.Config{})
	e.injectTarget(&failingTarget{writesLeft: 2})
	r := e.poll()
	if !errors.Is(r.Err, fetch.ErrDelivery) || !errors.Is(r.Err, errDiskFull) {
		t.Fatalf("poll error %v: want ErrDelivery wrapping the disk error", r.Err)
	}
	e2 := newEnv(t, pop3test.SampleMessages(5, 4), pop3test.Config{})
	e2.acct.Password = credential.Literal("wrong")
	if r := e2.poll(); r.Err == nil || errors.Is(r.Err, fetch.ErrDelivery) {
		t.Fatalf("login failure %v counted as a delivery failure", r.Err)
	}
}
