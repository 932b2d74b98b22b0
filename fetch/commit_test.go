package fetch_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"popsync/configs"
	"popsync/deliver"
	"popsync/fetch"
	"popsync/fetch/pop3/pop3test"
	"popsync/state"
)

// orderTarget checks, at every Publish, that the intent of each delivery
// to publish is committed already; each Prepare waits (up to a deadline)
// for an intent transaction to begin, which it does only when the two run
// at once.
type orderTarget struct {
	deliver.Target
	store state.Store
	id    state.Account
	began <-chan struct{} // one value per intent transaction begun

	mu        sync.Mutex
	alone     int // Prepares that no intent transaction ran alongside
	published int
	early     []string // tokens published without a committed intent
}

func (o *orderTarget) Prepare(ctx context.Context, ds []deliver.Delivery) error {
	select {
	case <-o.began:
	case <-time.After(5 * time.Second):
		o.mu.Lock()
		o.alone++
		o.mu.Unlock()
	}
	return o.Target.Prepare(ctx, ds)
}

func (o *orderTarget) Publish(ctx context.Context, ds []deliver.Delivery) error {
	in, err := o.store.Intents(ctx, o.id)
	if err != nil {
		return err
	}
	open := make(map[string]bool, len(in))
	for _, i := range in {
		open[i.Token] = true
	}
	o.mu.Lock()
	for _, d := range ds {
		if !open[d.Token()] {
			o.early = append(o.early, d.Token())
		}
	}
	o.published += len(ds)
	o.mu.Unlock()
	return o.Target.Publish(ctx, ds)
}

// beganStore tells, on began, when each AddIntents begins.
type beganStore struct {
	state.Store
	began chan<- struct{}
}

func (s *beganStore) AddIntents(ctx context.Context, a state.Account, in []state.Intent) error {
	s.began <- struct{}{}
	return s.Store.AddIntents(ctx, a, in)
}

// The intent transaction of a batch runs while its files are fsynced, and
// still every intent is committed before its file is published.
func TestIntentsRecordedWhileFilesAreFlushed(t *testing.T) {
	msgs := pop3test.SampleMessages(60, 8)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	began := make(chan struct{}, len(msgs)) // at most one batch per message
	ot := &orderTarget{store: e.store, id: e.acct.Identity(), began: began}
	e.opts.Store = &beganStore{Store: e.store, began: began}
	e.opts.OpenTarget = func(a *configs.Account, d configs.Deliver) (deliver.Target, error) {
		tg, err := fetch.OpenTarget(a, d)
		ot.Target = tg
		return ot, err
	}
	r := e.mustPoll()
	if r.Delivered != len(msgs) || r.Deleted != len(msgs) {
		t.Fatalf("poll: %+v", r)
	}
	if ot.alone > 0 {
		t.Errorf("%d Prepares ran without their batch's intent transaction alongside", ot.alone)
	}
	if len(ot.early) > 0 || ot.published != len(msgs) {
		t.Errorf("published %d, %d of them before their intent was committed: %v", ot.published, len(ot.early), ot.early)
	}
	e.wantExactlyOnce(msgs)
	e.wantOnServer()
	if in, err := e.store.Intents(t.Context(), e.acct.Identity()); err != nil || len(in) != 0 {
		t.Fatalf("open intents after the poll: %v, %v", in, err)
	}
}

// A Prepare that fails after the batch's intents were recorded alongside
// it leaves no intent open and no file behind; the next poll delivers
// every message once.
func TestPrepareFailureLeavesNoIntentOpen(t *testing.T) {
	msgs := pop3test.SampleMessages(5, 7)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	var added int
	e.opts.Store = &countIntents{Store: e.store, n: &added}
	e.injectTarget(&failingTarget{writesLeft: -1, failPrepared: true})
	r := e.poll()
	if !errors.Is(r.Err, errDiskFull) || r.Deleted != 0 || r.Delivered != 0 {
		t.Fatalf("poll: %+v, want the disk error and nothing delivered or deleted", r)
	}
	if added == 0 {
		t.Fatal("no intent was recorded: the failure did not happen while intents were being recorded")
	}
	if in, err := e.store.Intents(t.Context(), e.acct.Identity()); err != nil || len(in) != 0 {
		t.Fatalf("open intents after the failed commit: %v, %v", in, err)
	}
	if left, err := os.ReadDir(filepath.Join(e.maildir, "tmp")); err != nil || len(left) != 0 {
		t.Fatalf("tmp/ after the failed commit: %v, %v", left, err)
	}
	e.wantExactlyOnce(nil)
	e.wantOnServer(uids(msgs)...)
	e.opts.OpenTarget = nil
	e.opts.Store = e.store
	if r := e.mustPoll(); r.Delivered != len(msgs) {
		t.Fatalf("second poll: %+v", r)
	}
	e.wantExactlyOnce(msgs)
	e.wantOnServer()
}

// countIntents counts the intents recorded.
type countIntents struct {
	state.Store
	n *int
}

func (c *countIntents) AddIntents(ctx context.Context, a state.Account, in []state.Intent) error {
	*c.n += len(in)
	return c.Store.AddIntents(ctx, a, in)
}
