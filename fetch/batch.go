package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"popsync/deliver"
	"popsync/fetch/pop3"
	"popsync/state"
)

// staged is a message streamed into every target, not yet durable.
type staged struct {
	m    serverMsg
	ds   []deliver.Delivery // one per target, same order as pollRun.targets
	size int64
}

// fetchAll RETRs msgs, pipelined, into the targets, committing every
// batch durably. It returns the messages delivered and recorded, which
// are the only ones that may be DELE'd.
func (p *pollRun) fetchAll(ctx context.Context, c *pop3.Client, msgs []serverMsg) ([]serverMsg, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	batchN := p.o.BatchSize
	if batchN <= 0 {
		batchN = DefaultBatchSize
	}
	batchBytes := p.o.BatchBytes
	if batchBytes <= 0 {
		batchBytes = DefaultBatchBytes
	}
	var delivered []serverMsg
	for start := 0; start < len(msgs); {
		// A batch ends at batchN messages or once batchBytes are expected,
		// so that a few huge messages do not hold many open files.
		end, bytes := start, int64(0)
		for end < len(msgs) && end-start < batchN && (end == start || bytes+msgs[end].size <= batchBytes) {
			bytes += msgs[end].size
			end++
		}
		done, err := p.fetchBatch(ctx, c, msgs[start:end], len(msgs), len(delivered))
		delivered = append(delivered, done...)
		if err != nil {
			return delivered, err
		}
		start = end
	}
	return delivered, nil
}

// fetchBatch streams one batch and commits it. Messages fully received
// before an error are still committed: a dropped connection costs only
// the message in flight.
func (p *pollRun) fetchBatch(ctx context.Context, c *pop3.Client, msgs []serverMsg, todo, doneBefore int) ([]serverMsg, error) {
	byID := make(map[int]serverMsg, len(msgs))
	ids := make([]int, len(msgs))
	for i, m := range msgs {
		ids[i] = m.id
		byID[m.id] = m
	}
	batch := make([]staged, 0, len(msgs))
	header := p.receivedHeader()
	fetchErr := c.RetrEach(ctx, ids, func(id int, body io.Reader, err error) error {
		m := byID[id]
		if err != nil {
			// RFC 1939 §5: -ERR to RETR, e.g. the message vanished under
			// another session. Left for the next poll.
			p.res.Failed++
			p.log.Warn("server refused RETR", "uidl", m.key, "error", err.Error())
			return nil
		}
		s, err := p.stream(ctx, m, header, body)
		if err != nil {
			return err
		}
		batch = append(batch, s)
		if p.o.Progress != nil {
			p.o.Progress(Progress{Account: p.a.Name, Done: doneBefore + len(batch), Todo: todo, Bytes: p.res.Bytes})
		}
		return nil
	})
	if err := p.commit(ctx, batch); err != nil {
		if fetchErr != nil {
			err = errors.Join(fetchErr, err)
		}
		return nil, err
	}
	done := make([]serverMsg, len(batch))
	for i, s := range batch {
		done[i] = s.m
	}
	if fetchErr != nil {
		return done, fmt.Errorf("fetching messages: %w", fetchErr)
	}
	return done, nil
}

// stream copies one message body into a new delivery at every target.
func (p *pollRun) stream(ctx context.Context, m serverMsg, header []byte, body io.Reader) (staged, error) {
	s := staged{m: m, ds: make([]deliver.Delivery, 0, len(p.targets))}
	abort := func() {
		for _, d := range s.ds {
			d.Abort()
		}
	}
	for _, t := range p.targets {
		d, err := t.Begin(ctx, deliver.Meta{Account: p.a.Name, UIDL: m.key, Size: m.size})
		if err != nil {
			abort()
			return s, fmt.Errorf("starting delivery to %s: %w", t, err)
		}
		s.ds = append(s.ds, d)
	}
	var w io.Writer = s.ds[0]
	if len(s.ds) > 1 {
		ws := make([]io.Writer, len(s.ds))
		for i, d := range s.ds {
			ws[i] = d
		}
		w = io.MultiWriter(ws...)
	}
	if len(header) > 0 {
		if _, err := w.Write(header); err != nil {
			abort()
			return s, fmt.Errorf("writing message %s: %w", m.key, err)
		}
	}
	var r io.Reader = body
	max := int64(p.a.MaxSize)
	if max > 0 {
		// LIST said it fits; a server that sends more is not believed.
		r = io.LimitReader(body, max+1)
	}
	n, err := io.Copy(w, r)
	if err == nil && max > 0 && n > max {
		err = fmt.Errorf("%w: server sent over %d bytes for %s, LIST said %d", ErrOversized, max, m.key, m.size)
	}
	if err != nil {
		abort()
		return s, fmt.Errorf("fetching message %s: %w", m.key, err)
	}
	for i, d := range s.ds {
		if err := d.Close(); err != nil {
			abort()
			return s, fmt.Errorf("writing message %s to %s: %w", m.key, p.targets[i], err)
		}
	}
	s.size = n
	p.res.Bytes += n
	return s, nil
}

// commit makes a batch durable in every target and records it: prepare,
// intents, publish, mark delivered. Each step is one call for the whole
// batch: one fsync of the Maildir folder and two transactions serve many
// messages.
func (p *pollRun) commit(ctx context.Context, batch []staged) error {
	if len(batch) == 0 {
		return nil
	}
	// Once the batch is staged the commit runs to its end even if the
	// poll is being cancelled: the bytes are here, and stopping halfway
	// would only leave work for the next start.
	ctx = context.WithoutCancel(ctx)
	abortAll := func() {
		for _, s := range batch {
			for _, d := range s.ds {
				d.Abort()
			}
		}
	}
	cols := make([][]deliver.Delivery, len(p.targets))
	for ti := range p.targets {
		cols[ti] = make([]deliver.Delivery, len(batch))
		for i, s := range batch {
			cols[ti][i] = s.ds[ti]
		}
	}
	for ti, t := range p.targets {
		if err := t.Prepare(ctx, cols[ti]); err != nil {
			abortAll()
			return fmt.Errorf("making messages durable in %s: %w", t, err)
		}
	}
	now := p.o.now()
	var intents []state.Intent
	for _, s := range batch {
		for ti, d := range s.ds {
			if tok := d.Token(); tok != "" {
				intents = append(intents, state.Intent{UIDL: s.m.key, Target: ti, Token: tok, Size: s.size, Created: now})
			}
		}
	}
	if len(intents) > 0 {
		if err := p.o.Store.AddIntents(ctx, p.id, intents); err != nil {
			abortAll()
			return fmt.Errorf("recording delivery intents: %w", err)
		}
	}
	for ti, t := range p.targets {
		if err := t.Publish(ctx, cols[ti]); err != nil {
			// Some may be in place: the intents say which to look for,
			// and resolving them now settles it without a refetch.
			if rerr := p.resolveIntents(ctx); rerr != nil {
				p.log.Warn("resolving intents after a failed publish", "error", rerr.Error())
			}
			return fmt.Errorf("delivering to %s: %w", t, err)
		}
	}
	recs := make([]state.Record, len(batch))
	for i, s := range batch {
		recs[i] = state.Record{UIDL: s.m.key, State: state.Delivered, Size: s.size, FirstSeen: now, DeliveredAt: now}
	}
	if err := p.o.Store.MarkDelivered(ctx, p.id, recs); err != nil {
		// Published but not recorded: the open intents make the next poll
		// record them instead of fetching them again.
		return fmt.Errorf("recording delivered messages: %w", err)
	}
	p.res.Delivered += len(batch)
	return nil
}

// resolveIntents settles deliveries a crash interrupted: an intent whose
// file every target published is recorded as delivered; any other is
// dropped, its leftovers removed, and the message fetched again.
func (p *pollRun) resolveIntents(ctx context.Context) error {
	intents, err := p.o.Store.Intents(ctx, p.id)
	if err != nil || len(intents) == 0 {
		return err
	}
	tokens := make(map[int][]string)
	for _, in := range intents {
		tokens[in.Target] = append(tokens[in.Target], in.Token)
	}
	found := make(map[int]map[string]bool, len(tokens))
	for ti, toks := range tokens {
		if ti < 0 || ti >= len(p.targets) {
			continue // the target left the config: treat as not delivered
		}
		f, err := p.targets[ti].Delivered(ctx, toks)
		if err != nil {
			return fmt.Errorf("looking for interrupted deliveries in %s: %w", p.targets[ti], err)
		}
		found[ti] = f
	}
	type verdict struct {
		all, any bool
		size     int64
		at       time.Time
	}
	byUIDL := make(map[string]*verdict)
	var order []string
	for _, in := range intents {
		v := byUIDL[in.UIDL]
		if v == nil {
			v = &verdict{all: true, size: in.Size, at: in.Created}
			byUIDL[in.UIDL] = v
			order = append(order, in.UIDL)
		}
		if found[in.Target][in.Token] {
			v.any = true
		} else {
			v.all = false
		}
	}
	var recs []state.Record
	var drop []string
	for _, u := range order {
		v := byUIDL[u]
		if v.all {
			recs = append(recs, state.Record{UIDL: u, State: state.Delivered, Size: v.size, FirstSeen: v.at, DeliveredAt: v.at})
			continue
		}
		if v.any {
			p.log.Warn("interrupted delivery reached only some targets; fetching it again for all", "uidl", u)
		}
		drop = append(drop, u)
	}
	for ti, toks := range tokens {
		if ti < 0 || ti >= len(p.targets) {
			continue
		}
		var left []string
		for _, tok := range toks {
			if !found[ti][tok] {
				left = append(left, tok)
			}
		}
		if len(left) > 0 {
			if err := p.targets[ti].Cleanup(ctx, left); err != nil {
				p.log.Warn("removing leftovers of interrupted deliveries", "target", p.targets[ti].String(), "error", err.Error())
			}
		}
	}
	if len(recs) > 0 {
		if err := p.o.Store.MarkDelivered(ctx, p.id, recs); err != nil {
			return err
		}
		p.log.Info("recorded deliveries completed before an interruption", "messages", len(recs))
	}
	if len(drop) > 0 {
		if err := p.o.Store.DropIntents(ctx, p.id, drop); err != nil {
			return err
		}
	}
	return nil
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
