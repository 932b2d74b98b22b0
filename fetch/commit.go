package fetch

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"popsync/deliver"
	"popsync/state"
)

// committer commits batches in a goroutine of its own while the next
// batch streams from the server: the fsyncs and transactions of batch k
// overlap the RETRs of batch k+1. Each batch goes through its steps in
// order: durable and intents, at once (stage); then published
// (publish); then recorded (record). So nothing is published before its
// intent is durable and nothing is recorded before it is published.
//
// Batch k is recorded while batch k+1 is staged. When k is published,
// k+1 is whatever has arrived by then (grouper.take); with a store that
// can (state.IntentRecorder), one transaction records k and k+1's
// intents, while k+1's files are flushed. Otherwise, or when too little
// has arrived, k's record runs on a goroutine of its own while the
// committer waits for k+1 and stages it. Either way k+1 is published
// only after k is recorded, so batches are published and recorded in
// the order given, and a failure to record k publishes nothing more. The
// messages finish returns are the only ones that were recorded, and so
// the only ones that may be DELE'd.
//
// The goroutine is owned by the fetchAll that started it: finish ends it
// and is called before fetchAll returns, on every path. The goroutines
// it starts for a transaction are owned by it and waited for before it
// returns.
type committer struct {
	p      *pollRun
	s      sink
	g      *grouper
	in     chan []staged
	done   chan struct{}
	failed atomic.Bool // a commit failed: stop fetching
	closed bool        // in is closed; used by the fetching goroutine only

	// Written by the goroutine; read once done is closed.
	delivered []serverMsg
	err       error
	resolve   bool // the failure left intents open: resolve them in finish
}

func (p *pollRun) startCommitter(ctx context.Context, s sink, g *grouper) *committer {
	cm := &committer{p: p, s: s, g: g, in: make(chan []staged), done: make(chan struct{})}
	go cm.run(ctx, cm.in)
	return cm
}

func (cm *committer) run(ctx context.Context, in <-chan []staged) {
	defer close(cm.done)
	var rec *recording // a batch whose record is in flight
	defer func() {
		if r := recover(); r != nil {
			cm.fail(fmt.Errorf("internal error (please report): %v", r), false)
		}
		// Also after a panic: the record goroutine ends before done.
		if rec != nil {
			cm.collect(rec)
		}
	}()
	merge := state.IntentRecorderOf(cm.p.o.Store)
	var next *commitJob // staged, to publish next
	for {
		if next == nil {
			var batch []staged
			var ok bool
			if rec == nil {
				batch, ok = <-in
			} else {
				// Idle while a batch is recorded: the stream hands the
				// next one over now (trySubmit), to be staged meanwhile.
				select {
				case batch, ok = <-in:
				case err := <-rec.done:
					r := rec
					rec = nil
					cm.recorded(r.job, err)
					continue
				}
			}
			if !ok {
				return
			}
			if cm.err != nil {
				abortStaged(batch)
				continue
			}
			job, _, err := cm.p.stage(ctx, batch, cm.s, nil)
			if rec != nil {
				// The batch before is recorded (or failed) before this
				// one is published.
				r := rec
				rec = nil
				cm.collect(r)
			}
			if err != nil {
				var oe *openIntentsError
				cm.fail(err, errors.As(err, &oe))
				continue
			}
			if cm.err != nil {
				// Recording the batch before this one failed: this one
				// is not published. Its intents are open; finish
				// resolves them.
				job.abort()
				cm.resolve = true
				continue
			}
			next = job
		}
		job := next
		next = nil
		if err := cm.p.publish(ctx, job); err != nil {
			var oe *openIntentsError
			cm.fail(err, errors.As(err, &oe))
			continue
		}
		if len(job.batch) == 0 {
			cm.count(job)
			continue
		}
		if merge != nil {
			if batch := cm.takeArrived(in); batch != nil {
				// One transaction records job and the intents of the
				// batch that arrived while job was committed, while that
				// batch's files are flushed.
				staged, recorded, err := cm.p.stage(ctx, batch, cm.s, &prevJob{job, merge})
				if recorded {
					cm.p.counted(job)
					cm.count(job)
				}
				if err != nil {
					var oe *openIntentsError
					cm.fail(err, errors.As(err, &oe))
					continue
				}
				next = staged
				continue
			}
		}
		rec = cm.p.record(ctx, job)
	}
}

// takeArrived returns what has arrived for the next batch: one the stream
// is handing over (a full batch, or the last), or the one being filled if
// it is ripe; nil if neither.
func (cm *committer) takeArrived(in <-chan []staged) []staged {
	select {
	case b := <-in:
		// nil once in is closed: the stream ended and everything was
		// taken.
		return b
	default:
	}
	return cm.g.take()
}

// collect waits for the record of r's batch and counts its messages, or
// fails. A batch published but not recorded leaves its intents open for
// the next poll, which records the messages instead of fetching them
// again.
func (cm *committer) collect(r *recording) {
	cm.recorded(r.job, <-r.done)
}

// recorded counts the messages of a batch whose record ended with err
// nil, or fails.
func (cm *committer) recorded(job *commitJob, err error) {
	if err != nil {
		cm.fail(err, false)
		return
	}
	cm.p.counted(job)
	cm.count(job)
}

// count adds the messages of a recorded batch to those finish returns.
func (cm *committer) count(job *commitJob) {
	for _, st := range job.all {
		if !st.refused {
			cm.delivered = append(cm.delivered, st.m)
		}
	}
}

// fail keeps the first error; a later one can only add intents to
// resolve.
func (cm *committer) fail(err error, resolve bool) {
	if cm.err == nil {
		cm.err = err
	}
	cm.resolve = cm.resolve || resolve
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
// is being staged or published, so at most two batches hold open files
// (a batch being recorded is published: its files are closed).
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

func abortStaged(batch []staged) {
	for _, st := range batch {
		for _, d := range st.ds {
			if d != nil {
				d.Abort()
			}
		}
	}
}

// commitJob is one batch on its way through stage, publish and record.
type commitJob struct {
	all   []staged // the batch as handed over; refused ones are marked in it
	batch []staged // what goes on after Publish dropped refused messages
	s     sink
	cols  [][]deliver.Delivery // per target, its deliveries of batch
	now   time.Time
}

// abort discards every delivery of the batch that is not published.
func (j *commitJob) abort() { abortStaged(j.batch) }

// records are the seen-set rows of a published batch.
func (j *commitJob) records() []state.Record {
	recs := make([]state.Record, len(j.batch))
	for i, st := range j.batch {
		recs[i] = state.Record{UIDL: st.m.key, State: j.s.state, Size: st.size, FirstSeen: j.now, DeliveredAt: j.now, Note: st.note}
	}
	return recs
}

// stage makes a batch durable in every target of the sink and, at the
// same time, records its intents: a token is fixed when its delivery
// begins, so the intent transaction need not wait for the files, and the
// flushes of both are waited for at once. Both are done before stage
// returns, and so before anything is published. Each step is one call for
// the whole batch.
//
// With prev (a published batch, and the state.IntentRecorder the Store
// is), the same transaction records prev as delivered; recorded says whether
// it did. If it failed, the batch is aborted and nothing of it or of
// prev is recorded.
//
// The flushes a batch waits for one after another are then those of
// Prepare (for a Maildir, ⌈files/64⌉; the transaction's flush among
// them), and the directory fsync of Publish. With a target whose server
// may commit a message late (lateCommitter: IMAP), the transaction runs
// after Prepare instead, so that the intents' Created, from which the
// late commit is waited for, stays just before the APPENDs.
func (p *pollRun) stage(ctx context.Context, batch []staged, s sink, prev *prevJob) (job *commitJob, recorded bool, err error) {
	// Once the batch is staged the commit runs to its end even if the
	// poll is being cancelled: the bytes are here, and stopping halfway
	// would only leave work for the next start.
	ctx = context.WithoutCancel(ctx)
	job = &commitJob{all: batch, batch: batch, s: s, cols: make([][]deliver.Delivery, len(s.targets))}
	for _, st := range batch {
		for ti, d := range st.ds {
			if d != nil {
				job.cols[ti] = append(job.cols[ti], d)
			}
		}
	}
	// Nothing is published or recorded without the account's lease.
	if err := p.held(); err != nil {
		job.abort()
		return nil, false, err
	}
	prepare := func() error {
		for ti, t := range s.targets {
			if len(job.cols[ti]) == 0 {
				continue
			}
			if err := t.Prepare(ctx, job.cols[ti]); err != nil {
				return asTargetError(fmt.Errorf("making messages durable: %w", err))
			}
		}
		return nil
	}
	// A target whose server may commit a message after its client is
	// gone (IMAP) is waited for from its intent's Created: that must
	// stay just before the APPENDs, so with such a target the other
	// targets' files are flushed first, as before the overlap.
	late := lateCommits(s)
	var prepErr error
	if late {
		prepErr = prepare()
	}
	job.now = p.o.now()
	var intents []state.Intent
	for _, st := range batch {
		for ti, d := range st.ds {
			if d == nil || prepErr != nil {
				continue
			}
			if tok := d.Token(); tok != "" {
				intents = append(intents, state.Intent{UIDL: st.m.key, Target: s.targets[ti].id, Token: tok, Size: st.size, Created: job.now})
			}
		}
	}
	done := p.transactAsync(ctx, prev, intents)
	if !late {
		prepErr = prepare()
	}
	txErr := <-done
	recorded = prev != nil && txErr == nil
	switch {
	case txErr != nil:
		// Nothing of the transaction is committed: neither prev's
		// records (published, its intents open: the next poll records
		// them) nor this batch's intents.
		job.abort()
		return nil, false, errors.Join(txErr, prepErr)
	case prepErr != nil:
		job.abort()
		if len(intents) > 0 {
			// The intents are recorded for files that are now gone: the
			// committer resolves them (none is found, all are dropped)
			// once nothing streams any more.
			return nil, recorded, &openIntentsError{prepErr}
		}
		return nil, recorded, prepErr
	}
	return job, recorded, nil
}

// prevJob is a published batch whose records join the next stage's
// transaction, and the store that takes both at once.
type prevJob struct {
	job *commitJob
	via state.IntentRecorder
}

// lateCommits reports whether a target of s may have a message committed
// by its server after the client is gone (lateCommitter).
func lateCommits(s sink) bool {
	for _, t := range s.targets {
		if lc, ok := t.Target.(lateCommitter); ok && lc.LateCommit() > 0 {
			return true
		}
	}
	return false
}

// transactAsync runs the transaction of a stage while the caller goes on:
// intents, and prev's records with them if prev is set. Its outcome
// arrives on the channel returned: once, on every path, so the caller
// that receives it owns the goroutine.
func (p *pollRun) transactAsync(ctx context.Context, prev *prevJob, intents []state.Intent) <-chan error {
	out := make(chan error, 1)
	if prev == nil && len(intents) == 0 {
		out <- nil
		return out
	}
	go func() {
		defer func() {
			if v := recover(); v != nil {
				out <- fmt.Errorf("internal error (please report): %v", v)
			}
		}()
		if prev == nil {
			if err := p.o.Store.AddIntents(ctx, p.id, intents); err != nil {
				out <- fmt.Errorf("recording delivery intents: %w", err)
				return
			}
			out <- nil
			return
		}
		err := prev.via.MarkDeliveredAddIntents(ctx, p.id, prev.job.records(), intents)
		switch {
		case err == nil:
		case len(intents) == 0:
			err = fmt.Errorf("recording delivered messages: %w", err)
		default:
			err = fmt.Errorf("recording delivered messages and the next batch's intents: %w", err)
		}
		out <- err
	}()
	return out
}

// publish moves a staged batch into place in every target. Messages a
// target refused (an IMAP NO) leave job.batch and are marked refused.
func (p *pollRun) publish(ctx context.Context, job *commitJob) error {
	ctx = context.WithoutCancel(ctx)
	// The lease may have ended while the files were flushed.
	if err := p.held(); err != nil {
		job.abort()
		return err
	}
	for ti, t := range job.s.targets {
		if len(job.cols[ti]) == 0 {
			continue
		}
		if err := t.Publish(ctx, job.cols[ti]); err != nil {
			refused, ok := publishRejected(job.cols[ti], err)
			if !ok {
				// Some may be in place: the committer resolves the
				// intents once nothing streams any more.
				return &openIntentsError{asTargetError(fmt.Errorf("delivering: %w", err))}
			}
			// The server judged some messages (an IMAP NO): on_reject
			// takes them, the rest of the batch goes on.
			var err error
			if job.batch, job.cols, err = p.dropRefused(ctx, job.batch, job.cols, job.s, ti, refused); err != nil {
				return err
			}
		}
		p.logAppendUIDs(job.batch, ti)
	}
	return nil
}

// recording is the record of one published batch, in flight.
type recording struct {
	job  *commitJob
	done chan error // one value: the record's outcome
}

// record records a published batch in the seen-set on a goroutine of its
// own; its outcome arrives on the recording's done. The goroutine touches
// the store only: counting the batch is collect's, on the committer.
func (p *pollRun) record(ctx context.Context, job *commitJob) *recording {
	ctx = context.WithoutCancel(ctx)
	r := &recording{job: job, done: make(chan error, 1)}
	recs := job.records()
	go func() {
		defer func() {
			if v := recover(); v != nil {
				r.done <- fmt.Errorf("internal error (please report): %v", v)
			}
		}()
		// Published, not recorded: the open intents let whoever holds
		// the lease next record them.
		if err := p.held(); err != nil {
			r.done <- err
			return
		}
		if err := p.o.Store.MarkDelivered(ctx, p.id, recs); err != nil {
			// Published but not recorded: the open intents make the
			// next poll record them instead of fetching them again.
			r.done <- fmt.Errorf("recording delivered messages: %w", err)
			return
		}
		r.done <- nil
	}()
	return r
}

// counted reports the messages of a recorded batch as delivered.
func (p *pollRun) counted(job *commitJob) {
	if job.s.state != state.Delivered {
		return
	}
	p.res.Delivered += len(job.batch)
	for _, st := range job.batch {
		p.onMessage(st.m, st.size, job.s.targets, MessageDelivered, nil)
	}
}
