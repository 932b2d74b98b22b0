package fetch_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
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
	began <-chan struct{} // one value per intent transaction begun; nil: no wait

	mu        sync.Mutex
	alone     int // Prepares that no intent transaction ran alongside
	published int
	early     []string // tokens published without a committed intent
}

func (o *orderTarget) Prepare(ctx context.Context, ds []deliver.Delivery) error {
	if o.began == nil {
		return o.Target.Prepare(ctx, ds)
	}
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
	wantPublishedAfterIntents(t, e, ot, msgs)
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
	e.waitIdle()
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

// recorderStore is a state.IntentRecorder over the test's SQLite store
// that counts the transactions recording a batch together with the next
// batch's intents, and fails the failAt-th of them (0: none).
type recorderStore struct {
	state.Store
	ir     state.IntentRecorder
	failAt int

	mu     sync.Mutex
	merged int
}

var errMergedTx = errors.New("transaction failed (injected)")

func (s *recorderStore) MarkDeliveredAddIntents(ctx context.Context, a state.Account, recs []state.Record, in []state.Intent) error {
	s.mu.Lock()
	if len(recs) > 0 && len(in) > 0 {
		s.merged++
		if s.merged == s.failAt {
			s.mu.Unlock()
			return errMergedTx
		}
	}
	s.mu.Unlock()
	return s.ir.MarkDeliveredAddIntents(ctx, a, recs, in)
}

// slowPublish makes Publish take a while, so that the next batch fills
// while one is published.
type slowPublish struct {
	deliver.Target
	d time.Duration
}

func (s slowPublish) Publish(ctx context.Context, ds []deliver.Delivery) error {
	time.Sleep(s.d)
	return s.Target.Publish(ctx, ds)
}

// wantPublishedAfterIntents checks, after a poll that delivered and
// deleted msgs, that every message was published after its intent was
// committed, lands once, left the server, and left no intent open.
func wantPublishedAfterIntents(t *testing.T, e *env, ot *orderTarget, msgs []pop3test.Message) {
	t.Helper()
	if len(ot.early) > 0 || ot.published != len(msgs) {
		t.Errorf("published %d, %d of them before their intent was committed: %v", ot.published, len(ot.early), ot.early)
	}
	e.wantExactlyOnce(msgs)
	e.wantOnServer()
	if in, err := e.store.Intents(t.Context(), e.acct.Identity()); err != nil || len(in) != 0 {
		t.Fatalf("open intents after the poll: %v, %v", in, err)
	}
}

func mergedEnv(t *testing.T, msgs []pop3test.Message, failAt int) (*env, *recorderStore, *orderTarget) {
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	e.opts.BatchSize = 10
	rs := &recorderStore{Store: e.store, ir: e.store, failAt: failAt}
	e.opts.Store = rs
	ot := &orderTarget{store: e.store, id: e.acct.Identity()}
	e.opts.OpenTarget = func(a *configs.Account, d configs.Deliver) (deliver.Target, error) {
		tg, err := fetch.OpenTarget(a, d)
		ot.Target = slowPublish{Target: tg, d: 20 * time.Millisecond}
		return ot, err
	}
	return e, rs, ot
}

// With a store that can, one transaction records a published batch and
// the intents of the batch that arrived meanwhile; every intent is still
// committed before its file is published, and every message is
// delivered once.
func TestOneTransactionRecordsABatchAndTheNextIntents(t *testing.T) {
	msgs := pop3test.SampleMessages(80, 9)
	e, rs, ot := mergedEnv(t, msgs, 0)
	r := e.mustPoll()
	if r.Delivered != len(msgs) || r.Deleted != len(msgs) {
		t.Fatalf("poll: %+v", r)
	}
	if rs.merged == 0 {
		t.Error("no transaction recorded a batch together with the next batch's intents")
	}
	wantPublishedAfterIntents(t, e, ot, msgs)
}

// A failed transaction of a batch's records and the next batch's intents
// records neither: the published batch is not counted (and the poll
// deletes nothing) but
// its intents make the next poll record it without fetching it again; the
// next batch is not published, and is fetched again once.
func TestFailedMergedTransactionLosesAndDuplicatesNothing(t *testing.T) {
	msgs := pop3test.SampleMessages(80, 10)
	e, rs, _ := mergedEnv(t, msgs, 2)
	r := e.poll()
	if !errors.Is(r.Err, errMergedTx) {
		t.Fatalf("poll error = %v, want the injected one", r.Err)
	}
	if rs.merged < 2 {
		t.Fatalf("%d merged transactions, want the failing second", rs.merged)
	}
	// A failed commit stops the poll before any DELE.
	if r.Deleted != 0 || r.Delivered >= len(msgs) {
		t.Fatalf("poll: %+v, want some delivered and nothing deleted", r)
	}
	e.wantOnServer(uids(msgs)...)
	if left, err := os.ReadDir(filepath.Join(e.maildir, "tmp")); err != nil || len(left) != 0 {
		t.Fatalf("tmp/ after the failed commit: %v, %v", left, err)
	}
	e.waitIdle()
	e.opts.Store = e.store
	e.opts.OpenTarget = nil
	e.mustPoll()
	e.wantExactlyOnce(msgs)
	e.wantOnServer()
	if in, err := e.store.Intents(t.Context(), e.acct.Identity()); err != nil || len(in) != 0 {
		t.Fatalf("open intents after the second poll: %v, %v", in, err)
	}
}

// waitIdle waits until the server has noticed that the poll before
// dropped its session (no QUIT after a failed commit), so that the next
// poll does not find the maildrop locked.
func (e *env) waitIdle() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 10*time.Second)
	defer cancel()
	if err := e.srv.WaitIdle(ctx); err != nil {
		e.t.Fatalf("server still busy with the poll before: %v", err)
	}
}

// slowPrepare records when its Prepare ended.
type slowPrepare struct {
	deliver.Target
	d    time.Duration
	mu   *sync.Mutex
	ends *[]time.Time
}

func (s slowPrepare) Prepare(ctx context.Context, ds []deliver.Delivery) error {
	time.Sleep(s.d)
	err := s.Target.Prepare(ctx, ds)
	s.mu.Lock()
	*s.ends = append(*s.ends, time.Now())
	s.mu.Unlock()
	return err
}

// createdStore remembers the intents recorded.
type createdStore struct {
	state.Store
	mu *sync.Mutex
	in *[]state.Intent
}

func (c createdStore) AddIntents(ctx context.Context, a state.Account, in []state.Intent) error {
	c.mu.Lock()
	*c.in = append(*c.in, in...)
	c.mu.Unlock()
	return c.Store.AddIntents(ctx, a, in)
}

// With a target that may commit late beside one whose files take a while
// to flush, a batch's intents are recorded only after those flushes: the
// late commit is waited for from the intents' Created, which must not
// move away from the APPENDs.
func TestLateCommitterIntentsAfterTheFlushes(t *testing.T) {
	msgs := pop3test.SampleMessages(20, 11)
	e := newEnv(t, msgs, pop3test.Config{})
	second := filepath.Join(e.dir, "Late")
	e.acct.Deliver = append(e.acct.Deliver, configs.Deliver{Target: &configs.MaildirTarget{Path: second}})
	var mu sync.Mutex
	var ends []time.Time
	var intents []state.Intent
	e.opts.Store = createdStore{Store: e.store, mu: &mu, in: &intents}
	e.opts.OpenTarget = func(a *configs.Account, d configs.Deliver) (deliver.Target, error) {
		tg, err := fetch.OpenTarget(a, d)
		if err != nil {
			return nil, err
		}
		if d.Target.(*configs.MaildirTarget).Path == second {
			return &lateTarget{Target: tg, settle: time.Minute}, nil
		}
		return slowPrepare{Target: tg, d: 50 * time.Millisecond, mu: &mu, ends: &ends}, nil
	}
	if r := e.mustPoll(); r.Delivered != len(msgs) {
		t.Fatalf("poll: %+v", r)
	}
	if len(ends) == 0 || len(intents) == 0 {
		t.Fatalf("%d Prepares, %d intents", len(ends), len(intents))
	}
	// Intents are recorded once per batch; each one's Created is after
	// the Prepare of its batch ended (the Prepares end in batch order).
	created := map[time.Time]bool{}
	for _, in := range intents {
		created[in.Created] = true
	}
	var cs []time.Time
	for c := range created {
		cs = append(cs, c)
	}
	slices.SortFunc(cs, time.Time.Compare)
	if len(cs) != len(ends) {
		t.Fatalf("%d intent times for %d batches", len(cs), len(ends))
	}
	for i, c := range cs {
		if c.Before(ends[i]) {
			t.Errorf("batch %d: intents created %s before its files were flushed", i, ends[i].Sub(c))
		}
	}
	e.wantExactlyOnce(msgs)
}
