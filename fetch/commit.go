package fetch

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"popsync/deliver"
	"popsync/state"
)

// committer commits batches in a goroutine of its own while the next
// batch streams from the server: the fsyncs and transactions of batch k
// overlap the RETRs of batch k+1. It commits one batch at a time, in the
// order given, and each commit keeps its steps in order (durable and
// intents, at once; then published; then recorded), so nothing is
// published before its intent is durable and nothing is recorded before
// it is published. The messages it returns from finish are the only ones
// that were recorded, and so the only ones that may be DELE'd.
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
	resolve   bool // the failure left intents open: resolve them in finish
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
			var oe *openIntentsError
			cm.fail(err, errors.As(err, &oe))
			continue
		}
		for _, st := range batch {
			if !st.refused {
				cm.delivered = append(cm.delivered, st.m)
			}
		}
	}
}

func (cm *committer) fail(err error, resolve bool) {
	cm.err, cm.resolve = err, resolve
	cm.failed.Store(true)
}

// trySubmit hands a streamed batch over if the committer is idle, and
// reports whether it did. A committer that stopped takes the batch too
// (and aborts it).
func (cm *committer) trySubmit(batch []staged) bool {
	select {
	case cm.in <- batch:
		return true
	case <-cm.done:
		abortStaged(batch)
		return true
	default:
		return false
	}
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
// recorded as delivered and the first commit error. A commit that failed
// after recording its intents (in Publish, or in a Prepare that ran
// alongside) leaves them open; they are resolved here, now that nothing
// streams.
func (cm *committer) finish(ctx context.Context) ([]serverMsg, error) {
	if !cm.closed {
		close(cm.in)
		cm.closed = true
	}
	<-cm.done
	if cm.resolve {
		cm.resolve = false
		// Some may be in place: the intents say which to look for, and
		// resolving them now settles it without a refetch.
		if rerr := cm.p.resolveIntents(context.WithoutCancel(ctx)); rerr != nil {
			cm.p.log.Warn("resolving intents after a failed commit", "error", rerr.Error())
		}
	}
	return cm.delivered, cm.err
}

// openIntentsError marks a commit that failed after its intents were
// recorded (in Publish, or in Prepare while the intents were being
// recorded): they are open, and some of the batch may be in place.
type openIntentsError struct{ err error }

func (e *openIntentsError) Error() string { return e.err.Error() }
func (e *openIntentsError) Unwrap() error { return e.err }

// addIntentsAsync records intents in a transaction of its own while the
// caller goes on, and returns where its outcome arrives: once, on every
// path, so the caller that receives it owns the goroutine.
func (p *pollRun) addIntentsAsync(ctx context.Context, intents []state.Intent) <-chan error {
	out := make(chan error, 1)
	if len(intents) == 0 {
		out <- nil
		return out
	}
	go func() {
		defer func() {
			if v := recover(); v != nil {
				out <- fmt.Errorf("internal error (please report): %v", v)
			}
		}()
		out <- p.o.Store.AddIntents(ctx, p.id, intents)
	}()
	return out
}

func abortStaged(batch []staged) {
	for _, st := range batch {
		for _, d := range st.ds {
			if d != nil {
				d.Abort()
			}
		}
	}
}

// commit makes a batch durable in every target of the sink and records
// it: prepare and intents at once, then publish, then mark delivered.
// Each step is one call for the whole batch: one fsync of the Maildir
// folder and two transactions serve many messages. The flushes it waits
// for one after another are those of Prepare (for a Maildir, ⌈files/64⌉,
// with the intent transaction's flush among them), the directory fsync
// of Publish and the transaction of MarkDelivered.
func (p *pollRun) commit(ctx context.Context, batch []staged, s sink) error {
	if len(batch) == 0 {
		return nil
	}
	// Once the batch is staged the commit runs to its end even if the
	// poll is being cancelled: the bytes are here, and stopping halfway
	// would only leave work for the next start.
	ctx = context.WithoutCancel(ctx)
	abortAll := func() {
		for _, st := range batch {
			for _, d := range st.ds {
				if d != nil {
					d.Abort()
				}
			}
		}
	}
	cols := make([][]deliver.Delivery, len(s.targets))
	for _, st := range batch {
		for ti, d := range st.ds {
			if d != nil {
				cols[ti] = append(cols[ti], d)
			}
		}
	}
	// A token is fixed when its delivery begins, so the intents can be
	// recorded while the targets make the files durable: the intent
	// transaction's flush and the files' fsyncs are waited for at once,
	// and both are done before anything is published.
	now := p.o.now()
	var intents []state.Intent
	for _, st := range batch {
		for ti, d := range st.ds {
			if d == nil {
				continue
			}
			if tok := d.Token(); tok != "" {
				intents = append(intents, state.Intent{UIDL: st.m.key, Target: s.targets[ti].id, Token: tok, Size: st.size, Created: now})
			}
		}
	}
	// Nothing is published or recorded without the account's lease.
	if err := p.held(); err != nil {
		abortAll()
		return err
	}
	recorded := p.addIntentsAsync(ctx, intents)
	var prepErr error
	for ti, t := range s.targets {
		if len(cols[ti]) == 0 {
			continue
		}
		if err := t.Prepare(ctx, cols[ti]); err != nil {
			prepErr = asTargetError(fmt.Errorf("making messages durable: %w", err))
			break
		}
	}
	intentErr := <-recorded
	if intentErr != nil {
		intentErr = fmt.Errorf("recording delivery intents: %w", intentErr)
	}
	switch {
	case prepErr != nil && intentErr != nil:
		abortAll()
		return errors.Join(prepErr, intentErr)
	case intentErr != nil:
		abortAll()
		return intentErr
	case prepErr != nil:
		abortAll()
		if len(intents) > 0 {
			// The intents are recorded for files that are now gone: the
			// committer resolves them (none is found, all are dropped)
			// once nothing streams any more.
			return &openIntentsError{prepErr}
		}
		return prepErr
	}
	// The lease may have ended while the files were flushed.
	if err := p.held(); err != nil {
		abortAll()
		return err
	}
	for ti, t := range s.targets {
		if len(cols[ti]) == 0 {
			continue
		}
		if err := t.Publish(ctx, cols[ti]); err != nil {
			refused, ok := publishRejected(cols[ti], err)
			if !ok {
				// Some may be in place: the committer resolves the
				// intents once nothing streams any more.
				return &openIntentsError{asTargetError(fmt.Errorf("delivering: %w", err))}
			}
			// The server judged some messages (an IMAP NO): on_reject
			// takes them, the rest of the batch goes on.
			if batch, cols, err = p.dropRefused(ctx, batch, cols, s, ti, refused); err != nil {
				return err
			}
		}
		p.logAppendUIDs(batch, ti)
	}
	if len(batch) == 0 {
		return nil
	}
	recs := make([]state.Record, len(batch))
	for i, st := range batch {
		recs[i] = state.Record{UIDL: st.m.key, State: s.state, Size: st.size, FirstSeen: now, DeliveredAt: now, Note: st.note}
	}
	// Published, not recorded: the open intents let whoever holds the
	// lease next record them.
	if err := p.held(); err != nil {
		return err
	}
	if err := p.o.Store.MarkDelivered(ctx, p.id, recs); err != nil {
		// Published but not recorded: the open intents make the next poll
		// record them instead of fetching them again.
		return fmt.Errorf("recording delivered messages: %w", err)
	}
	if s.state == state.Delivered {
		p.res.Delivered += len(batch)
		for _, st := range batch {
			p.onMessage(st.m, st.size, s.targets, MessageDelivered, nil)
		}
	}
	return nil
}
