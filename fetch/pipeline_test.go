package fetch_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"popsync/configs"
	"popsync/deliver"
	"popsync/fetch"
	"popsync/fetch/pop3/pop3test"
)

// sentCommands returns the verbs session n (1-based) sent.
func sentCommands(t *testing.T, srv *pop3test.Server, n int) []string {
	t.Helper()
	ts := srv.Transcripts()
	if len(ts) < n {
		t.Fatalf("%d sessions, want at least %d", len(ts), n)
	}
	var verbs []string
	for _, l := range ts[n-1].Lines {
		v, _, _ := strings.Cut(l, " ")
		verbs = append(verbs, v)
	}
	return verbs
}

// A poll that finds nothing new lists the UIDLs and needs no sizes: no
// LIST, which for a large mailbox is a good part of such a poll.
func TestPollWithNothingNewSendsNoList(t *testing.T) {
	msgs := pop3test.SampleMessages(12, 21)
	e := newEnv(t, msgs, pop3test.Config{})
	if r := e.mustPoll(); r.Delivered != 12 {
		t.Fatalf("first poll: %+v", r)
	}
	if first := sentCommands(t, e.srv, 1); !slices.Contains(first, "LIST") {
		t.Errorf("first poll (new mail) sent no LIST: %v", first)
	}
	if r := e.mustPoll(); r.New != 0 || r.OnServer != 12 {
		t.Fatalf("second poll: %+v", r)
	}
	second := sentCommands(t, e.srv, 2)
	if slices.Contains(second, "LIST") || !slices.Contains(second, "UIDL") || !slices.Contains(second, "STAT") {
		t.Errorf("second poll sent %v, want STAT and UIDL and no LIST", second)
	}
	// New mail arrives: the sizes are needed again, and max_size holds.
	big := pop3test.LargeMessage(300_000, 22)
	big.UID = "big"
	small := pop3test.SampleMessages(1, 23)[0]
	small.UID = "small"
	e.srv.Add(big, small)
	e.acct.MaxSize = 100_000
	if r := e.mustPoll(); r.Delivered != 1 || r.Skipped != 1 {
		t.Fatalf("third poll: %+v", r)
	}
	e.wantExactlyOnce(append(msgs, small))
}

// gateTarget holds the first Publish until a delivery of a later batch
// has begun: it passes only if batch k commits while batch k+1 streams.
type gateTarget struct {
	deliver.Target
	batch    int // messages per batch
	mu       sync.Mutex
	begun    int
	later    chan struct{} // closed when message batch+1 begins
	released bool
	timedOut bool
}

func (g *gateTarget) Begin(ctx context.Context, m deliver.Meta) (deliver.Delivery, error) {
	g.mu.Lock()
	g.begun++
	if g.begun == g.batch+1 {
		close(g.later)
	}
	g.mu.Unlock()
	return g.Target.Begin(ctx, m)
}

func (g *gateTarget) Publish(ctx context.Context, ds []deliver.Delivery) error {
	g.mu.Lock()
	first := !g.released
	g.released = true
	g.mu.Unlock()
	if first {
		select {
		case <-g.later:
		case <-time.After(10 * time.Second):
			g.mu.Lock()
			g.timedOut = true
			g.mu.Unlock()
		}
	}
	return g.Target.Publish(ctx, ds)
}

func TestBatchCommitsWhileNextBatchStreams(t *testing.T) {
	msgs := pop3test.SampleMessages(30, 24)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	g := &gateTarget{batch: 7, later: make(chan struct{})}
	e.opts.OpenTarget = func(a *configs.Account, d configs.Deliver) (deliver.Target, error) {
		t, err := fetch.OpenTarget(a, d)
		g.Target = t
		return g, err
	}
	r := e.mustPoll()
	if g.timedOut {
		t.Fatal("the next batch did not start streaming while the first one committed")
	}
	if r.Delivered != 30 || r.Deleted != 30 {
		t.Fatalf("poll: %+v", r)
	}
	e.wantExactlyOnce(msgs)
	e.wantOnServer()
}

// prepareOnce fails Prepare from the n-th call on.
type prepareOnce struct {
	deliver.Target
	mu    sync.Mutex
	calls int
	n     int
}

func (p *prepareOnce) Prepare(ctx context.Context, ds []deliver.Delivery) error {
	p.mu.Lock()
	p.calls++
	fail := p.calls >= p.n
	p.mu.Unlock()
	if fail {
		return errDiskFull
	}
	return p.Target.Prepare(ctx, ds)
}

// A batch that fails to commit stops the poll soon, deletes nothing, and
// what was committed before stays delivered exactly once; the next poll
// fetches the rest.
func TestFailedCommitStopsFetchingAndDeletesNothing(t *testing.T) {
	// More messages than the pipeline window, in batches of at most 7: a
	// full batch waits for the commit before it, which is what stops the
	// stream soon after a failure.
	msgs := pop3test.SampleMessages(200, 25)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	e.opts.BatchSize = 7
	pt := &prepareOnce{n: 2}
	e.opts.OpenTarget = func(a *configs.Account, d configs.Deliver) (deliver.Target, error) {
		t, err := fetch.OpenTarget(a, d)
		pt.Target = t
		return pt, err
	}
	r := e.poll()
	if !errors.Is(r.Err, errDiskFull) {
		t.Fatalf("poll error = %v, want the injected one", r.Err)
	}
	// Batches are cut where the commits fall: the first one committed,
	// whatever its size, and nothing after it.
	k := r.Delivered
	if r.Deleted != 0 || k < 1 || k >= len(msgs) {
		t.Fatalf("poll: %+v, want the first batch delivered and nothing deleted", r)
	}
	// The second batch failed while the third streamed; nothing after
	// that was asked for beyond the RETRs already in flight.
	if n := e.srv.Stats().Retrs; n >= len(msgs) {
		t.Errorf("%d RETRs after the failure, want the poll to stop early", n)
	}
	e.wantOnServer(uids(msgs)...)
	e.wantExactlyOnce(msgs[:k])
	e.opts.OpenTarget = nil
	if r := e.mustPoll(); r.Delivered != len(msgs)-k {
		t.Fatalf("second poll: %+v, want the %d left", r, len(msgs)-k)
	}
	e.wantExactlyOnce(msgs)
	e.wantOnServer()
}
