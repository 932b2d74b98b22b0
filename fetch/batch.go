package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"popsync/configs"
	"popsync/deliver"
	"popsync/fetch/pop3"
	"popsync/state"
)

// sink is a set of targets one pass of RETRs delivers into: the account's
// targets, or the quarantine Maildir.
type sink struct {
	targets []target
	state   state.MsgState    // what a committed message is recorded as
	notes   map[string]string // UIDL → note to record with it
}

// staged is a message streamed into every target of a sink, not yet
// durable. ds[i] is nil where target i already has the message.
type staged struct {
	m    serverMsg
	ds   []deliver.Delivery
	size int64
	note string
	// refused: a target refused it for good at Publish; it is not
	// delivered, on_reject takes it (see dropRefused).
	refused bool
}

// fetchAll RETRs msgs, pipelined, into the sink, committing durably as
// it goes. It returns the messages delivered and recorded, which are the
// only ones that may be DELE'd, also when it returns an error.
//
// Commits are grouped: the committer makes one batch durable while the
// next streams in, and a batch is whatever was fully received while the
// previous commit ran (at least 32 messages or 4 MiB unless the stream
// ends first). The stream never waits for a flush unless a batch reaches
// its bounds (BatchSize messages or BatchBytes bytes): then it waits for
// the commit in progress. So batches stay small when flushes
// are fast, grow by themselves when they are slow, and at most two
// batches hold staged files (one committing, one filling).
func (p *pollRun) fetchAll(ctx context.Context, c *pop3.Client, msgs []serverMsg, s sink) ([]serverMsg, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	batchN := p.o.BatchSize
	if batchN <= 0 {
		batchN = DefaultBatchSize
	}
	batchBytes := p.o.BatchBytes
	if batchBytes <= 0 {
		batchBytes = defaultBatchBytes
	}
	g := &grouper{maxN: batchN, maxBytes: batchBytes}
	cm := p.startCommitter(ctx, s, g)
	g.cm = cm
	defer cm.finish(ctx)
	fetchErr := p.fetchStream(ctx, c, msgs, s, g)
	// Messages fully received before an error are still committed: a
	// dropped connection costs only the message in flight.
	g.flush()
	delivered, commitErr := cm.finish(ctx)
	if errors.Is(fetchErr, errCommitFailed) {
		fetchErr = nil
	}
	switch {
	case commitErr != nil && fetchErr != nil:
		return delivered, errors.Join(fetchErr, commitErr)
	case commitErr != nil:
		return delivered, commitErr
	case fetchErr != nil:
		return delivered, fmt.Errorf("fetching messages: %w", fetchErr)
	}
	return delivered, nil
}

// grouper collects staged messages into the next batch and hands it to
// the committer as soon as the committer is idle, or waits for it once the
// batch is full. Its methods but take are used by the fetching goroutine
// only; the committer calls take, when it has published a batch, for
// whatever has arrived meanwhile.
type grouper struct {
	cm       *committer
	maxN     int
	maxBytes int64
	streamed int // messages staged so far, in every batch

	mu    sync.Mutex // guards batch and bytes; never held while blocking
	batch []staged
	bytes int64
}

// add appends a staged message and hands the batch over if it can.
func (g *grouper) add(st staged) {
	g.streamed++
	g.mu.Lock()
	g.batch = append(g.batch, st)
	g.bytes += st.size
	if len(g.batch) >= g.maxN || g.bytes >= g.maxBytes {
		b := g.cut()
		g.mu.Unlock()
		g.cm.submit(b)
		return
	}
	if g.ripe() && g.cm.trySubmit(g.batch) {
		g.cut()
	}
	g.mu.Unlock()
}

// ripe reports whether the batch is worth a commit of its own. A batch
// smaller than minBatch waits for more, so that a fast disk does not pay a
// commit (a transaction, a directory fsync) for every message or two; the
// wait is only the time to receive that much. The caller holds mu.
func (g *grouper) ripe() bool {
	return len(g.batch) >= minBatchN || g.bytes >= minBatchBytes
}

// A batch is handed to an idle committer once it holds minBatchN
// messages or minBatchBytes bytes; the end of the stream flushes less.
const (
	minBatchN     = 32
	minBatchBytes = 4 << 20
)

// flush hands the batch over, waiting for the commit in progress.
func (g *grouper) flush() {
	g.mu.Lock()
	b := g.cut()
	g.mu.Unlock()
	if len(b) > 0 {
		g.cm.submit(b)
	}
}

// take is the committer's: it returns the batch being filled if it is
// ripe, and leaves it alone (nil) if not.
func (g *grouper) take() []staged {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.ripe() {
		return nil
	}
	return g.cut()
}

// cut returns the batch and starts a new one. The caller holds mu.
func (g *grouper) cut() []staged {
	b := g.batch
	g.batch = make([]staged, 0, cap(b))
	g.bytes = 0
	return b
}

// fetchStream streams msgs into the sink, one pipelined RETR pass, and
// gives every staged message to g. It returns the error that ended the
// RETRs early, if any. It stops early, too, once the committer failed.
//
// A message's deliveries are closed (for SMTP: the final dot, then the
// wait for the server's reply) by a closer goroutine when the sink can
// take more than one message at a time (see inFlightBound), so that the
// next body streams while the server makes the last one durable; each
// message is then settled on this goroutine, in stream order, once its
// closes returned. Every message in flight is settled before fetchStream
// returns, on every path.
func (p *pollRun) fetchStream(ctx context.Context, c *pop3.Client, msgs []serverMsg, s sink, g *grouper) error {
	byID := make(map[int]serverMsg, len(msgs))
	list := make([]pop3.MessageInfo, len(msgs))
	for i, m := range msgs {
		list[i] = pop3.MessageInfo{ID: m.id, Size: m.size}
		byID[m.id] = m
	}
	header := p.receivedHeader()
	cm := g.cm
	q := &inFlight{p: p, ctx: ctx, s: s, g: g, max: inFlightBound(s), todo: len(msgs)}
	// With the LIST sizes, the client refuses a message far shorter than
	// announced, or one whose "+OK n octets" disagrees: the framing is in
	// doubt, so the client is poisoned and the poll ends without QUIT.
	fetchErr := c.RetrEachListed(ctx, list, func(id int, body io.Reader, err error) error {
		if err := q.settleReady(); err != nil {
			return err
		}
		if cm.failed.Load() {
			return errCommitFailed
		}
		if err := p.held(); err != nil {
			return err
		}
		m := byID[id]
		if err != nil {
			// RFC 1939 §5: -ERR to RETR, e.g. the message vanished under
			// another session. Left for the next poll.
			p.res.Failed++
			p.log.Warn("server refused RETR", "uidl", m.key, "error", err.Error())
			p.onMessage(m, m.size, nil, MessageRefused, err)
			return nil
		}
		r, err := p.receive(ctx, m, header, body, s)
		if err != nil {
			return err
		}
		return q.add(r)
	})
	// What was received is settled (and so committed, if delivered) even
	// when the RETRs stopped early.
	if err := q.drain(); err != nil && fetchErr == nil {
		fetchErr = err
	}
	if errors.Is(fetchErr, pop3.ErrSizeMismatch) {
		p.res.Failed++
		p.log.Warn("message size disagrees with LIST; dropping the session without QUIT, nothing is deleted",
			"error", fetchErr.Error())
	}
	return fetchErr
}

// inFlightBound is how many received messages may wait for their
// deliveries' Close at once: the most connections any target of the sink
// keeps (a target with more deliveries in progress than sessions would
// only make Begin wait), 1 when none says. With 1, every message is
// closed and settled before the next body is read.
func inFlightBound(s sink) int {
	n := 1
	for _, t := range s.targets {
		if c, ok := t.Target.(interface{ Connections() int }); ok && c.Connections() > n {
			n = c.Connections()
		}
	}
	return n
}

// received is one message whose body was read into the sink's
// deliveries: the part of stream that must run while the body arrives.
// Its closes may run on a closer goroutine; everything else about it is
// done by the fetching goroutine.
type received struct {
	st   staged
	f    *fanout
	n    int64         // bytes of the body read
	done chan struct{} // closed when closeAll returned; nil if it ran inline
}

// closeAll ends every delivery that took the whole body and records each
// outcome in f.errs. A panic in a Close becomes that delivery's error (not
// a judgement on the message, so settle stops the poll), as the poll's
// own recover would make it on the fetching goroutine.
func (r *received) closeAll() {
	for i, d := range r.st.ds {
		if d != nil && r.f.errs[i] == nil {
			r.f.errs[i] = closeOne(d)
		}
	}
}

func closeOne(d deliver.Delivery) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("internal error closing a delivery (please report): %v", v)
		}
	}()
	return d.Close()
}

// inFlight is the queue of received messages whose closes run on closer
// goroutines, oldest first. It is used by the fetching goroutine only; the
// closer goroutines it starts touch nothing but their own message's
// deliveries and fanout, and drain waits for all of them.
type inFlight struct {
	p     *pollRun
	ctx   context.Context
	s     sink
	g     *grouper
	max   int
	todo  int // messages of the pass, for Progress
	queue []*received
	err   error // the first settle error: no more messages are taken
}

// add settles r at once when one message at a time is the bound (as
// without the queue); else it starts r's closes on a goroutine, and, with
// max messages waiting, settles the oldest first.
func (q *inFlight) add(r *received) error {
	if q.max <= 1 {
		r.closeAll()
		return q.settle(r)
	}
	if r.f.live > 0 {
		r.done = make(chan struct{})
		go func() {
			defer close(r.done)
			r.closeAll()
		}()
	}
	q.queue = append(q.queue, r)
	for len(q.queue) >= q.max {
		if err := q.settleHead(); err != nil {
			return err
		}
	}
	return q.settleReady()
}

// settleHead waits for the oldest message's closes and settles it.
func (q *inFlight) settleHead() error {
	r := q.queue[0]
	q.queue[0] = nil
	q.queue = q.queue[1:]
	if r.done != nil {
		<-r.done
	}
	return q.settle(r)
}

// settleReady settles, in order, the oldest messages whose closes have
// returned, and stops at the first one still waiting for its server.
func (q *inFlight) settleReady() error {
	for len(q.queue) > 0 {
		if d := q.queue[0].done; d != nil {
			select {
			case <-d:
			default:
				return q.err
			}
		}
		if err := q.settleHead(); err != nil {
			return err
		}
	}
	return q.err
}

// drain waits for and settles every message still in flight and returns
// the first settle error.
func (q *inFlight) drain() error {
	for len(q.queue) > 0 {
		q.settleHead()
	}
	return q.err
}

// settle sorts out r's outcome and hands a delivered message to the
// grouper. Once a settle failed, the later ones are still settled (a
// message the MTA took is committed if the committer can), and the first
// error is kept.
func (q *inFlight) settle(r *received) error {
	st, ok, err := q.p.settle(q.ctx, r, q.s)
	if err != nil {
		if q.err == nil {
			q.err = err
		}
		return q.err
	}
	if ok {
		q.g.add(st)
		if p := q.p; p.o.Progress != nil {
			p.o.Progress(Progress{Account: p.a.Name, Done: q.g.streamed, Todo: q.todo, Bytes: p.res.Bytes})
		}
	}
	return q.err
}

// fanout writes to every delivery still accepting bytes. A delivery whose
// Write fails is dropped with its error; the others go on, so one MTA
// hanging up does not cost the Maildir its copy. It fails only when no
// delivery is left.
type fanout struct {
	ds   []deliver.Delivery
	errs []error
	live int
}

func (f *fanout) Write(b []byte) (int, error) {
	var last error
	for i, d := range f.ds {
		if d == nil || f.errs[i] != nil {
			continue
		}
		if _, err := d.Write(b); err != nil {
			f.errs[i] = err
			f.live--
			last = err
		}
	}
	if f.live == 0 {
		return 0, last
	}
	return len(b), nil
}

// receive copies one message body into a new delivery at every target of
// the sink that does not have it yet; its deliveries are left for
// closeAll and settle. err is set only when the body could not be read
// (the network, a server that sends too much): then every delivery is
// aborted and the poll stops.
func (p *pollRun) receive(ctx context.Context, m serverMsg, header []byte, body io.Reader, s sink) (*received, error) {
	st := staged{m: m, ds: make([]deliver.Delivery, len(s.targets)), note: s.notes[m.key]}
	f := &fanout{ds: st.ds, errs: make([]error, len(s.targets))}
	r := &received{st: st, f: f}
	for i, t := range s.targets {
		if p.partial[m.key][t.id] {
			continue // accepted in an earlier poll
		}
		d, err := t.Begin(ctx, deliver.Meta{Account: p.a.Name, UIDL: m.key, Size: m.size})
		if err != nil {
			f.errs[i] = fmt.Errorf("starting delivery: %w", err)
			continue
		}
		st.ds[i] = d
		f.live++
	}
	// LIST said it fits; a server that sends more is not believed, and
	// one that sends far more than LIST said (an endless message) is
	// stopped even without max_size.
	max := int64(p.a.MaxSize)
	limit := listedLimit(m.size)
	if max > 0 && max < limit {
		limit = max
	}
	tooBig := func() error {
		if limit == max {
			return fmt.Errorf("%w: server sent over %d bytes for %s, LIST said %d", ErrOversized, max, m.key, m.size)
		}
		return fmt.Errorf("%w: server sent over %d bytes for %s, LIST said %d", ErrListedSize, limit, m.key, m.size)
	}
	if f.live > 0 {
		var w io.Writer = f
		if len(header) > 0 {
			w.Write(header)
		}
		var cerr error
		r.n, cerr = io.Copy(&capWriter{w: w, left: limit}, body)
		if errors.Is(cerr, errOverCap) {
			cerr = tooBig()
		}
		if cerr != nil && f.live > 0 {
			// The copy failed on the reading side: the server.
			abortDeliveries(st.ds)
			return nil, fmt.Errorf("fetching message %s: %w", m.key, cerr)
		}
	}
	if f.live == 0 {
		// No target takes the message (refused at the start or midway):
		// read past it here, within the same limit, rather than leave the
		// client a rest of unknown length to discard (it closes the
		// connection past pop3.MaxDrain).
		rest, err := io.Copy(io.Discard, io.LimitReader(body, limit+1-r.n))
		if err == nil && r.n+rest > limit {
			err = tooBig()
		}
		if err != nil {
			abortDeliveries(st.ds)
			return nil, fmt.Errorf("fetching message %s: %w", m.key, err)
		}
	}
	return r, nil
}

func abortDeliveries(ds []deliver.Delivery) {
	for _, d := range ds {
		if d != nil {
			d.Abort()
		}
	}
}

// settle sorts out, per target, the outcome of a received message whose
// deliveries were closed. ok is false when a target refused the message
// (then it is recorded for the retry or the quarantine, and the poll goes
// on); err is set only for failures that must stop the poll: a target
// that takes nothing now or cannot store anything (a disk), or the lost
// lease.
func (p *pollRun) settle(ctx context.Context, r *received, s sink) (st staged, ok bool, err error) {
	st, f, m, n := r.st, r.f, r.st.m, r.n
	abort := func() { abortDeliveries(st.ds) }
	// Sort the outcome out per target.
	var temp, perm []error
	permIdx := -1
	for i, e := range f.errs {
		if e == nil {
			continue
		}
		// Targets name themselves in their errors ("maildir X: ...").
		var de *deliver.DeliveryError
		switch {
		case !errors.As(e, &de):
			// Not a judgement on this message but a broken target (a
			// Maildir on a full disk): stop before more is fetched.
			abort()
			return st, false, asTargetError(fmt.Errorf("writing message %s: %w", m.key, e))
		case de.Temporary:
			temp = append(temp, e)
		default:
			perm = append(perm, e)
			if permIdx < 0 {
				permIdx = i
			}
		}
	}
	if len(temp) == 0 && len(perm) == 0 {
		st.size = n
		p.res.Bytes += n
		return st, true, nil
	}
	// Refused somewhere: nothing is published; confirming targets that
	// took it are remembered so the retry skips them.
	var confirmed []state.Intent
	for i, d := range st.ds {
		if t := s.targets[i]; d != nil && f.errs[i] == nil && deliver.IsConfirming(t.Target) {
			confirmed = append(confirmed, state.Intent{UIDL: m.key, Target: t.id, Confirmed: true, Size: n, Created: p.o.now()})
			p.markPartial(m.key, t.id)
		}
	}
	abort()
	if len(confirmed) > 0 {
		if err := p.held(); err != nil {
			return st, false, err
		}
		if err := p.o.Store.AddIntents(context.WithoutCancel(ctx), p.id, confirmed); err != nil {
			return st, false, fmt.Errorf("recording partial delivery of %s: %w", m.key, err)
		}
	}
	if note, ok := overAppendLimit(temp); ok && len(perm) == 0 {
		// Like max_size: left on the server, reported once, not
		// retried at every poll (RFC 7889).
		p.log.Warn("message over the IMAP server's APPENDLIMIT left on the server",
			"uidl", m.key, "size", m.size, "limit", note)
		p.limited = append(p.limited, limited{m: m, note: appendLimitNote + note})
		p.onMessage(m, n, s.targets, MessageSkipped, errors.Join(temp...))
		return st, false, nil
	}
	if len(temp) > 0 {
		p.res.Failed++
		joined := errors.Join(append(temp, perm...)...)
		if down := targetDown(temp); down != nil {
			// The target takes no message now (refused connection, no
			// such program): feeding it the rest of the mailbox would only
			// RETR and discard it. The poll stops; the daemon backs off.
			p.onMessage(m, n, s.targets, MessageDeferred, joined)
			return st, false, asTargetError(fmt.Errorf("delivering message %s: %w", m.key, down))
		}
		p.deferred = append(p.deferred, joined)
		p.log.Warn("delivery failed for now; the message stays on the server for the next poll",
			"uidl", m.key, "error", joined.Error())
		p.onMessage(m, n, s.targets, MessageDeferred, joined)
		return st, false, nil
	}
	onReject := s.targets[permIdx].onReject
	if onReject == "" {
		onReject = configs.DefaultOnReject
	}
	p.reject(rejection{m: m, onReject: onReject, reason: errors.Join(perm...).Error()})
	p.onMessage(m, n, s.targets, MessageRejected, errors.Join(perm...))
	return st, false, nil
}

// targetDown returns the first of errs that is about the target rather
// than the message (deliver.DeliveryError.TargetDown), or nil.
func targetDown(errs []error) error {
	for _, e := range errs {
		var de *deliver.DeliveryError
		if errors.As(e, &de) && de.TargetDown() {
			return e
		}
	}
	return nil
}

// capWriter passes at most left more octets to w and refuses, with
// errOverCap, a write that would go past them. A limit on the writing
// side lets io.Copy use the POP3 body's WriteTo, which writes straight
// from the read buffer; an io.LimitReader on the reading side hides it and
// costs a 32 KiB copy buffer per message.
type capWriter struct {
	w    io.Writer
	left int64
}

func (c *capWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		return 0, errOverCap
	}
	n, err := c.w.Write(p)
	c.left -= int64(n)
	return n, err
}

// receivedHeader is the one trace header popsync adds (RFC 5321 §4.4
// style), CRLF-terminated like the server's bytes; the target converts
// line endings.
func (p *pollRun) receivedHeader() []byte {
	if !p.a.AddReceived {
		return nil
	}
	host := p.o.Hostname
	if host == "" {
		host = hostname()
	}
	proto := "POP3"
	if p.a.TLS != "none" {
		proto = "POP3S"
	}
	return fmt.Appendf(nil, "Received: from %s\r\n\tby %s (popsync) with %s\r\n\tfor <%s>; %s\r\n",
		p.a.Host, host, proto, p.a.User, p.o.now().Format(time.RFC1123Z))
}
