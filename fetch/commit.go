package fetch

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
)

// committer commits batches in a goroutine of its own while the next
// batch streams from the server: the fsyncs and transactions of batch k
// overlap the RETRs of batch k+1. It commits one batch at a time, in the
// order given, and each commit keeps its steps in order (durable, intents,
// published, recorded), so nothing is recorded before it is durable. The
// messages it returns from finish are the only ones that were recorded,
// and so the only ones that may be DELE'd.
//
// The goroutine is owned by the fetchAll that started it: finish ends it
// and is called before fetchAll returns, on every path.
type committer struct {
	p      *pollRun
	s      sink
	in     chan []staged
	done   chan struct{}
	failed atomic.Bool // a commit failed: stop fetching
	closed bool        // in is closed; used by the fetching goroutine only

	// Written by the goroutine; read once done is closed.
	delivered []serverMsg
	err       error
	publish   bool // the failure was in Publish: intents to resolve
}

func (p *pollRun) startCommitter(ctx context.Context, s sink) *committer {
	cm := &committer{p: p, s: s, in: make(chan []staged), done: make(chan struct{})}
	go cm.run(ctx, cm.in)
	return cm
}

func (cm *committer) run(ctx context.Context, in <-chan []staged) {
	defer close(cm.done)
	defer func() {
		if r := recover(); r != nil {
			cm.fail(fmt.Errorf("internal error (please report): %v", r), false)
		}
	}()
	for batch := range in {
		if cm.err != nil {
			abortStaged(batch)
			continue
		}
		if err := cm.p.commit(ctx, batch, cm.s); err != nil {
			var pe *publishError
			cm.fail(err, errors.As(err, &pe))
			continue
		}
		for _, st := range batch {
			cm.delivered = append(cm.delivered, st.m)
		}
	}
}

func (cm *committer) fail(err error, publish bool) {
	cm.err, cm.publish = err, publish
	cm.failed.Store(true)
}

// submit hands a streamed batch over. It waits while the previous batch
// is being committed, so at most two batches hold open files.
func (cm *committer) submit(batch []staged) {
	if len(batch) == 0 {
		return
	}
	select {
	case cm.in <- batch:
	case <-cm.done:
		abortStaged(batch)
	}
}

// finish waits for every submitted batch and returns the messages
// recorded as delivered and the first commit error. A failed Publish
// leaves intents that are resolved here, now that nothing streams.
func (cm *committer) finish(ctx context.Context) ([]serverMsg, error) {
	if !cm.closed {
		close(cm.in)
		cm.closed = true
	}
	<-cm.done
	if cm.publish {
		cm.publish = false
		// Some may be in place: the intents say which to look for, and
		// resolving them now settles it without a refetch.
		if rerr := cm.p.resolveIntents(context.WithoutCancel(ctx)); rerr != nil {
			cm.p.log.Warn("resolving intents after a failed publish", "error", rerr.Error())
		}
	}
	return cm.delivered, cm.err
}

// publishError marks a commit that failed in Publish.
type publishError struct{ err error }

func (e *publishError) Error() string { return e.err.Error() }
func (e *publishError) Unwrap() error { return e.err }

func abortStaged(batch []staged) {
	for _, st := range batch {
		for _, d := range st.ds {
			if d != nil {
				d.Abort()
			}
		}
	}
}
