package fetch_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"popsync/configs"
	"popsync/deliver"
	"popsync/fetch"
	"popsync/fetch/pop3/pop3test"
	"popsync/state"
)

// TestIntentOfSchemaOneIsResolved: an intent left by a crash under schema
// 1, which named its target by the index of the deliver entry (now
// state.LegacyTarget), still names that entry: a message whose file is
// in new/ is recorded, not fetched again.
func TestIntentOfSchemaOneIsResolved(t *testing.T) {
	msgs := pop3test.SampleMessages(4, 41)
	e := newEnv(t, msgs, pop3test.Config{})
	md, err := deliver.NewMaildir(e.maildir, deliver.MaildirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	md.Close()
	const name = "1740830400.M1P2Q3.client.test"
	body := "Received: from x\n\tby y (popsync) with POP3\n\tfor <z>; now\n" + want(msgs[0])
	if err := os.WriteFile(filepath.Join(e.maildir, "new", name), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.store.AddIntents(t.Context(), e.acct.Identity(), []state.Intent{
		{UIDL: msgs[0].UID, Target: state.LegacyTarget(0), Token: name, Size: 1, Created: time.Now()},
	}); err != nil {
		t.Fatal(err)
	}
	r := e.mustPoll()
	if r.Delivered != 3 || e.srv.Stats().Retrs != 3 {
		t.Fatalf("poll: %+v, %d RETRs; want the 3 messages without an intent", r, e.srv.Stats().Retrs)
	}
	e.wantExactlyOnce(msgs)
	if in, err := e.store.Intents(t.Context(), e.acct.Identity()); err != nil || len(in) != 0 {
		t.Fatalf("intents left: %v, %v", in, err)
	}
}

// takeoverStore hands out leases that do not exclude one another, as a
// fleet's store does once the lease of a paused daemon expired: a second
// poll can take the account over while the first still runs. lose ends
// the lease of the n-th LockAccount (from 0) as lost, as the paused
// daemon finds it when it wakes up.
type takeoverStore struct {
	state.Store
	mu     sync.Mutex
	leases []*state.LeaseState
}

func (s *takeoverStore) LockAccount(ctx context.Context, a state.Account) (state.Lease, error) {
	l := state.NewLeaseState(nil)
	s.mu.Lock()
	s.leases = append(s.leases, l)
	s.mu.Unlock()
	return l, nil
}

func (s *takeoverStore) lose(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leases[n].End(fmt.Errorf("taken over by another poll: %w", state.ErrLeaseLost))
}

// hookedTarget wraps a Maildir target and runs hooks around Publish and
// Delivered, to force an interleaving of two polls.
type hookedTarget struct {
	deliver.Target
	beforePublish  func()
	afterPublish   func(error)
	afterDelivered func()
}

func (h *hookedTarget) Publish(ctx context.Context, ds []deliver.Delivery) error {
	if h.beforePublish != nil {
		h.beforePublish()
	}
	err := h.Target.Publish(ctx, ds)
	if h.afterPublish != nil {
		h.afterPublish(err)
	}
	return err
}

func (h *hookedTarget) Delivered(ctx context.Context, tokens []string) (map[string]bool, error) {
	found, err := h.Target.Delivered(ctx, tokens)
	if h.afterDelivered != nil {
		h.afterDelivered()
	}
	return found, err
}

// Claim passes the Maildir's own through: the hooks must not hide it.
func (h *hookedTarget) Claim(ctx context.Context, tokens []string) (map[string]bool, error) {
	return h.Target.(interface {
		Claim(context.Context, []string) (map[string]bool, error)
	}).Claim(ctx, tokens)
}

func hooked(h *hookedTarget) func(*configs.Account, configs.Deliver) (deliver.Target, error) {
	return func(a *configs.Account, d configs.Deliver) (deliver.Target, error) {
		t, err := fetch.OpenTarget(a, d)
		if err != nil {
			return nil, err
		}
		h.Target = t
		return h, nil
	}
}

// TestTakeoverOfPausedPublisher: poll A is paused after its last lease
// check and before its Maildir rename (a daemon stopped past its lease);
// poll B takes the account over, on its own target over the same
// Maildir, and resolves A's open intents while A is paused. Whenever A
// goes on, every message ends in the Maildir exactly once: A's rename
// fails once B claimed its staged file, and that failed publish records
// nothing, DELEs nothing and sends no QUIT; a file A renamed before B
// looked is recorded by B and not fetched again.
func TestTakeoverOfPausedPublisher(t *testing.T) {
	for _, tc := range []struct {
		name string
		// published: A renames its files before the pause (it is paused
		// before its record instead).
		published bool
		// duringResolve: A goes on between B's Delivered and the rest of
		// B's resolving (with no claim, the window for a duplicate);
		// else after B's whole poll.
		duringResolve bool
	}{
		{name: "wakes after the takeover"},
		{name: "wakes during the resolve", duringResolve: true},
		{name: "published before the takeover", published: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msgs := pop3test.SampleMessages(5, 61)
			e := newEnv(t, msgs, pop3test.Config{NoLock: true})
			e.acct.Keep = false
			ts := &takeoverStore{Store: e.store}
			paused, resume, woke := make(chan struct{}), make(chan struct{}), make(chan struct{})
			var pubErr error
			ha := &hookedTarget{}
			pause := func() {
				close(paused)
				<-resume
			}
			if tc.published {
				ha.afterPublish = func(err error) { pubErr = err; pause() }
			} else {
				ha.beforePublish = pause
				ha.afterPublish = func(err error) { pubErr = err; close(woke) }
			}
			optsA := &fetch.Options{Store: ts, Hostname: "client.test", BatchSize: 100, OpenTarget: hooked(ha)}
			resA := make(chan fetch.Result, 1)
			go func() { resA <- optsA.Poll(context.WithoutCancel(t.Context()), e.acct) }()
			select {
			case <-paused:
			case r := <-resA:
				t.Fatalf("poll A ended without reaching Publish: %+v", r)
			}
			intents, err := e.store.Intents(t.Context(), e.acct.Identity())
			if err != nil || len(intents) != len(msgs) {
				t.Fatalf("open intents of the paused poll: %d, %v; want %d", len(intents), err, len(msgs))
			}
			// B takes over; A's lease is gone, though A looks only when
			// it wakes up.
			ts.lose(0)
			hb := &hookedTarget{}
			wake := func() {
				close(resume)
				if !tc.published {
					<-woke
				}
			}
			if tc.duringResolve {
				hb.afterDelivered = wake
			}
			optsB := &fetch.Options{Store: ts, Hostname: "client.test", BatchSize: 100, OpenTarget: hooked(hb)}
			retrs := e.srv.Stats().Retrs
			rb := optsB.Poll(t.Context(), e.acct)
			if rb.Err != nil {
				t.Fatalf("poll B: %v", rb.Err)
			}
			if !tc.duringResolve {
				wake()
			}
			ra := <-resA

			if ra.Err == nil || ra.Delivered != 0 || ra.Deleted != 0 {
				t.Errorf("poll A after the takeover: %+v; want a failure that recorded and deleted nothing", ra)
			}
			if tc.published {
				if pubErr != nil || !errors.Is(ra.Err, state.ErrLeaseLost) {
					t.Errorf("poll A: publish %v, poll %v; want it published, then stopped by the lost lease", pubErr, ra.Err)
				}
			} else if !errors.Is(pubErr, fs.ErrNotExist) || !errors.Is(ra.Err, fs.ErrNotExist) {
				t.Errorf("poll A: publish %v, poll %v; want the rename to fail on the claimed file", pubErr, ra.Err)
			}
			sa := e.srv.Transcripts()[0]
			for _, l := range sa.Lines {
				if strings.HasPrefix(l, "DELE") || l == "QUIT" {
					t.Errorf("poll A's session sent %q after it lost the account", l)
				}
			}
			wantRetrs := len(msgs)
			if tc.published {
				wantRetrs = 0
			}
			if got := e.srv.Stats().Retrs - retrs; got != wantRetrs || rb.Deleted != len(msgs) {
				t.Errorf("poll B: %d RETRs, %+v; want %d RETRs and every message deleted", got, rb, wantRetrs)
			}
			e.wantExactlyOnce(msgs)
			e.wantOnServer()
			known, err := state.Known(t.Context(), e.store, e.acct.Identity(), uids(msgs))
			if err != nil || len(known) != len(msgs) {
				t.Errorf("seen-set: %d records, %v; want %d", len(known), err, len(msgs))
			}
			if in, err := e.store.Intents(t.Context(), e.acct.Identity()); err != nil || len(in) != 0 {
				t.Errorf("intents left: %v, %v", in, err)
			}
		})
	}
}
