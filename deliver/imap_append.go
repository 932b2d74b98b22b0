package deliver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// Publish appends the prepared deliveries ds, spread over the target's
// connections and pipelined on each (see IMAP). When some fail, the error
// is a *PublishError listing those that were appended, and each
// delivery's Err says what happened to it. A delivery the server refused
// may be published again; one whose APPEND got no tagged reply (a drop, a
// timeout) is not reported as published although the server may have
// stored it, and cannot be published again (ErrState): the caller
// resolves it through Delivered, with the token it recorded. ctx is
// checked before the first APPEND; its end later drops the connections.
func (t *IMAP) Publish(ctx context.Context, ds []Delivery) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: publishing: %w", t.name, err)
	}
	ids, err := t.own(ds, "publishing")
	if err != nil {
		return err
	}
	for _, d := range ids {
		if d.state != statePrepared {
			return fmt.Errorf("%s: publishing %s: %s: %w", t.name, d.token, d.state, ErrState)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	t.sessMu.Lock()
	defer t.sessMu.Unlock()
	errs := t.appendBatch(ctx, ids)
	var retry []int
	for i, err := range errs {
		var ie *imap.Error
		if errors.As(err, &ie) && ie.Code == imap.ResponseCodeTryCreate {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 && t.opts.Create {
		if cerr := t.create(ctx); cerr != nil {
			for _, i := range retry {
				errs[i] = fmt.Errorf("creating mailbox %q after TRYCREATE: %w", t.opts.Mailbox, cerr)
			}
		} else {
			again := make([]*IMAPDelivery, len(retry))
			for k, i := range retry {
				again[k] = ids[i]
			}
			for k, err := range t.appendBatch(ctx, again) {
				errs[retry[k]] = err
			}
		}
	}
	var published []int
	var fails []error
	for i, d := range ids {
		if errs[i] == nil {
			d.published()
			published = append(published, i)
			continue
		}
		var de *DeliveryError
		if !errors.As(errs[i], &de) {
			// (A *DeliveryError already is one from setting up the
			// session, which keeps its stage.)
			de = t.failure(StageAppend, ctxErr(ctx, errs[i]))
		}
		de = &DeliveryError{Target: de.Target, Stage: de.Stage, Temporary: de.Temporary, Text: de.Text, Err: de.Err}
		what := "message"
		if d.sent && !errors.As(errs[i], new(*imap.Error)) {
			// The APPEND went out and no verdict came back: the
			// server may have stored the message. Publishing it again
			// could store it twice; only Delivered can tell.
			d.state = stateBroken
			what = "message of unknown fate"
		}
		de.Err = fmt.Errorf("%s %s (uidl %s, %d bytes): %w", what, d.token, d.meta.UIDL, d.size, de.Err)
		d.err = de
		fails = append(fails, de)
	}
	if len(fails) > 0 {
		return &PublishError{Published: published, Err: errors.Join(fails...)}
	}
	return nil
}

// create makes the mailbox after NO [TRYCREATE], over the first
// connection; one that exists already (a race with another client) is
// fine.
func (t *IMAP) create(ctx context.Context) error {
	s, err := t.session(ctx, 0)
	if err != nil {
		return err
	}
	s.conn.begin()
	stop := context.AfterFunc(ctx, func() { s.conn.Conn.Close() })
	err = s.c.Create(t.opts.Mailbox, nil).Wait()
	stop()
	s.conn.end()
	var ie *imap.Error
	if errors.As(err, &ie) && ie.Code == imap.ResponseCodeAlreadyExists {
		err = nil
	}
	if err != nil {
		if !errors.As(err, &ie) {
			t.dropSession(0)
		}
		return err
	}
	t.log.Info("created mailbox", "mailbox", t.opts.Mailbox)
	return t.learnLimit(s)
}

// copyBufPool holds the buffers that copy spool files into APPEND literals.
var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// appendQueue hands the deliveries of a batch to the connections, one at
// a time, in order.
type appendQueue struct {
	ds  []*IMAPDelivery
	per int // messages per MULTIAPPEND command

	mu     sync.Mutex
	next   int
	halted error // set: hand out no more; the rest get this error
}

// take returns the index of the next delivery to send, or false when
// none is left or the queue was halted.
func (q *appendQueue) take() (int, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.halted != nil || q.next == len(q.ds) {
		return 0, false
	}
	q.next++
	return q.next - 1, true
}

// takeRun returns the indices of the next deliveries to send in one
// command: up to n of them and, past the first, up to size bytes.
func (q *appendQueue) takeRun(n int, size int64) ([]int, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.halted != nil || q.next == len(q.ds) {
		return nil, false
	}
	run := []int{q.next}
	total := q.ds[q.next].size
	for q.next++; q.next < len(q.ds) && len(run) < n && total+q.ds[q.next].size <= size; q.next++ {
		run = append(run, q.next)
		total += q.ds[q.next].size
	}
	return run, true
}

// empty reports whether nothing more will be handed out.
func (q *appendQueue) empty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.halted != nil || q.next == len(q.ds)
}

// halt stops handing out deliveries: those not taken yet get err.
func (q *appendQueue) halt(err error) {
	q.mu.Lock()
	if q.halted == nil {
		q.halted = err
	}
	q.mu.Unlock()
}

// appendBatch appends ds over up to Connections connections at once, one
// goroutine each, and returns one error per delivery: nil for a tagged
// OK. Each connection takes the next delivery when it has room in its
// window, so a slow connection (or one syncing a large message) holds up
// no other. A connection that breaks takes no more; the others go on with
// the rest. The first NO [TRYCREATE] halts the batch: the deliveries not
// sent yet get the same error, to go again once the mailbox exists.
func (t *IMAP) appendBatch(ctx context.Context, ds []*IMAPDelivery) []error {
	errs := make([]error, len(ds))
	for _, d := range ds {
		d.sent = false
	}
	width := min(len(t.sess), len(ds))
	// A MULTIAPPEND command per connection spreads a small batch over
	// them all; a large one goes in commands of imapMultiMax.
	q := &appendQueue{ds: ds, per: min(imapMultiMax, (len(ds)+width-1)/width)}
	stops := make([]error, width)
	var wg sync.WaitGroup
	for i := range width {
		wg.Go(func() { stops[i] = t.appendOver(ctx, i, q, errs) })
	}
	wg.Wait()
	if q.next == len(ds) && q.halted == nil {
		return errs
	}
	// Deliveries nobody took: halted by TRYCREATE, or every connection
	// broke or could not be set up.
	why := q.halted
	if why == nil {
		t.mu.Lock()
		why = t.down
		t.mu.Unlock()
	}
	if why == nil {
		why = stops[0]
		for _, err := range stops {
			if err != nil && !errors.Is(err, errNoMoreConns) {
				why = err
				break
			}
		}
		why = fmt.Errorf("not sent: every connection broke on an earlier message: %w", why)
	}
	for i := q.next; i < len(ds); i++ {
		errs[i] = why
	}
	return errs
}

// appendOver sends deliveries of q over the connection of slot i until q
// is empty or the connection breaks, reconnecting when the connection was
// lost to a refused synchronizing literal (go-imap closes the connection
// then, though the refusal was a clean answer). It returns why it stopped
// before q was empty: a session that could not be set up or a broken
// connection; nil otherwise.
func (t *IMAP) appendOver(ctx context.Context, i int, q *appendQueue, errs []error) error {
	for !q.empty() {
		s, err := t.session(ctx, i)
		if err != nil {
			return err
		}
		if mailbox, ok := t.canMultiAppend(s); ok {
			return t.multiAppendOn(ctx, s, i, q, errs, mailbox, q.per)
		}
		refused, err := t.appendOn(ctx, s, i, q, errs)
		if !refused {
			return err
		}
	}
	return nil
}

// appendOn sends one APPEND per delivery it takes from q, without waiting
// for the replies to those before (RFC 3501 §5.5 allows any commands in
// flight that do not depend on each other), up to imapWindow of them, and
// collects the replies into errs. It stops when q is empty or the
// connection is lost; then refused tells whether that was because the
// server refused a synchronizing literal (RFC 3501 §7.5), which leaves the
// rest worth sending on a new connection, and err says what broke.
func (t *IMAP) appendOn(ctx context.Context, s *imapSession, slot int, q *appendQueue, errs []error) (refused bool, broke error) {
	type inFlight struct {
		i   int
		cmd *imapclient.AppendCommand
	}
	var flight []inFlight
	s.conn.begin()
	defer s.conn.end()
	stop := context.AfterFunc(ctx, func() { s.conn.Conn.Close() })
	defer stop()
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	collect := func(f inFlight) {
		data, err := f.cmd.Wait()
		if errs[f.i] == nil {
			errs[f.i] = err
		}
		if errs[f.i] == nil {
			if data.UIDValidity != 0 && data.UID != 0 {
				q.ds[f.i].uid = IMAPUID{UIDValidity: data.UIDValidity, UID: uint32(data.UID)}
			}
			return
		}
		var ie *imap.Error
		switch {
		case !errors.As(errs[f.i], &ie):
			if broke == nil {
				broke = errs[f.i]
			}
		case ie.Code == imap.ResponseCodeTryCreate:
			q.halt(errs[f.i])
		}
	}
	for broke == nil {
		if len(flight) == imapWindow {
			collect(flight[0])
			flight = flight[1:]
			continue
		}
		k, ok := q.take()
		if !ok {
			break
		}
		d := q.ds[k]
		f, err := d.open()
		if err != nil {
			errs[k] = err
			continue
		}
		cmd := s.c.Append(t.opts.Mailbox, d.size, &imap.AppendOptions{Flags: t.flags, Time: d.date})
		d.sent = true
		n, cerr := io.CopyBuffer(cmd, onlyReader{f}, *bp)
		f.Close()
		if cerr == nil && n != d.size {
			cerr = fmt.Errorf("spool file %s holds %d bytes, not %d", d.path, n, d.size)
		}
		closeErr := cmd.Close()
		flight = append(flight, inFlight{k, cmd})
		if cerr == nil && closeErr == nil {
			continue
		}
		// Either way the connection is gone: go-imap drops it after a
		// refused literal, and a literal not sent whole leaves the
		// server waiting for octets.
		refused = errors.As(cerr, new(*imap.Error))
		if !refused {
			errs[k] = errors.Join(cerr, closeErr)
			s.conn.Conn.Close()
		}
		broke = fmt.Errorf("connection %d: APPEND: %w", slot+1, errors.Join(cerr, closeErr))
	}
	for _, f := range flight {
		collect(f)
	}
	if broke != nil {
		t.dropSession(slot)
	}
	return refused, broke
}

// onlyReader hides a file's WriterTo, so that the copy uses the pooled
// buffer.
type onlyReader struct{ io.Reader }
