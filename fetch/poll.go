// Package fetch runs popsync's sync algorithm: one poll of one account,
// in the order "What popsync guarantees" in the README promises, and a batch of
// accounts at once (PollAll). The daemon's scheduler is package schedule.
//
// It talks to the server only through fetch/pop3, to the seen-set only
// through state.Store and to mailboxes only through deliver.Target: it
// never parses protocol bytes or writes mail files itself. What it owns is
// the order of things, because the order is the product's promise:
//
//  1. a message is staged in every target and made durable there, and,
//     at the same time, an intent naming where it will appear is
//     committed to the store; both are done before step 2;
//  2. the targets publish it (Maildir: rename into new/, fsync new/);
//  3. the store records it as delivered, in one transaction per batch;
//  4. only then, if policy says so, it is DELE'd, and QUIT commits that.
//
// A crash between 1 and 3 leaves an open intent that the next poll
// resolves by asking the target whether the message got published.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"popsync/configs"
	"popsync/deliver"
	"popsync/fetch/pop3"
	"popsync/state"
)

// Errors a poll reports besides those of the layers below.
var (
	// ErrAccountBusy means another popsync process is polling the account.
	ErrAccountBusy = errors.New("another popsync is polling this account")
	// ErrOversized means the server sent more bytes than max_size allows
	// although LIST announced a smaller message.
	ErrOversized = errors.New("message larger than max_size")
	// ErrListedSize means the server sent far more bytes for a message
	// than LIST announced (see listedLimit): an endless message, say.
	ErrListedSize = errors.New("message far larger than the server announced")

	// errCommitFailed stops the RETRs of a batch once an earlier batch
	// failed to commit; the commit's own error is what the poll reports.
	errCommitFailed = errors.New("an earlier batch failed to commit")
	// errOverCap is capWriter's refusal of octets past its limit.
	errOverCap = errors.New("over the size limit")
)

// login connects and logs in.
func (p *pollRun) login(ctx context.Context) (*pop3.Client, error) {
	a := p.a
	if a.OAuth2 != nil {
		return p.loginOAuth2(ctx) // oauth2.go: one refresh and retry when refused
	}
	secret, cred, err := p.o.secret(ctx, a)
	if err != nil {
		return nil, err
	}
	c, err := p.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", a.Addr(), err)
	}
	if err := c.Auth(ctx, a.Auth, a.User, secret); err != nil {
		c.Close()
		if refused(err) {
			cred.Invalidate(secret)
		}
		return nil, fmt.Errorf("logging in to %s as %s: %w", a.Addr(), a.User, err)
	}
	return c, nil
}

// refused reports whether a failed login was the server refusing the
// credentials (not a network failure, not a temporary refusal such as
// IN-USE): then the secret is invalidated, so that an OAuth2 token is not
// offered again.
func refused(err error) bool {
	var pe *pop3.Error
	return errors.As(err, &pe) && !pe.Temporary()
}

// prepareLocal is the local work of a poll before it lists the server's
// messages: deliveries an earlier poll left unresolved, stale temporary
// files (neither in a dry run), and the account's seen-set.
func (p *pollRun) prepareLocal(ctx context.Context) (state.SeenSet, error) {
	if !p.o.DryRun {
		if err := p.resolveIntents(ctx); err != nil {
			return nil, fmt.Errorf("resolving deliveries interrupted earlier: %w", err)
		}
		p.removeStale(ctx)
	}
	seen, err := p.o.Store.ReadSeen(ctx, p.id)
	if err != nil {
		return nil, fmt.Errorf("reading seen-set: %w", err)
	}
	return seen, nil
}

// held returns an error wrapping state.ErrLeaseLost once the account's
// lease ended: from then on the poll commits nothing (no record, no DELE,
// no QUIT) and its caller drops the connection without QUIT.
func (p *pollRun) held() error {
	if p.lease == nil {
		return nil
	}
	if err := p.lease.Err(); err != nil {
		return fmt.Errorf("stopping before committing anything more: %w", err)
	}
	return nil
}

// pollRun holds what one poll needs; it lives for one Poll call.
type pollRun struct {
	o       *Options
	a       *configs.Account
	id      state.Account
	lease   state.Lease // the account's; nil for Check, which commits nothing
	log     *slog.Logger
	targets []target
	res     *Result

	partial  map[string]map[string]bool // UIDL → IDs of targets that already accepted it
	deferred []error                    // why messages could not be delivered this time
	rejected []rejection                // refused for good during this poll; added to by reject
	rejectMu sync.Mutex                 // guards rejected while fetchAll runs
	limited  []limited                  // over an IMAP target's APPENDLIMIT during this poll
	waiting  map[string]time.Time       // UIDL → until when its intent waits (resolveIntents)
	qTarget  *target                    // the quarantine Maildir, opened when needed
}

// Poll runs one poll of account a and returns its result; the error, if
// any, is in Result.Err. It records the poll in the store.
func (o *Options) Poll(ctx context.Context, a *configs.Account) (res Result) {
	start := o.now()
	res.Account = a.Name
	p := &pollRun{o: o, a: a, id: a.Identity(), res: &res,
		log: o.logger().With("account", a.Name)}
	defer func() {
		if r := recover(); r != nil {
			res.Err = fmt.Errorf("internal error (please report): %v", r)
		}
		res.Duration = o.now().Sub(start)
		p.finish(ctx, start)
	}()
	res.Err = p.run(ctx)
	return res
}

func (p *pollRun) finish(ctx context.Context, start time.Time) {
	r := p.res
	if n := len(p.waiting); n > 0 {
		r.Waiting = n
		for _, t := range p.waiting {
			if t.After(r.WaitUntil) {
				r.WaitUntil = t
			}
		}
		p.log.Info("messages wait: the delivery target may still be committing an interrupted delivery; a later poll looks again",
			"messages", n, "until", r.WaitUntil.Format(time.RFC3339))
	}
	attrs := []any{"on_server", r.OnServer, "new", r.New, "delivered", r.Delivered,
		"deleted", r.Deleted, "skipped", r.Skipped, "bytes", r.Bytes,
		"seconds", math.Round(r.Duration.Seconds()*1000) / 1000}
	if r.Failed > 0 {
		attrs = append(attrs, "failed", r.Failed)
	}
	if r.Waiting > 0 {
		attrs = append(attrs, "waiting", r.Waiting)
	}
	if p.o.DryRun {
		attrs = append(attrs, "dry_run", true)
	}
	switch {
	case errors.Is(r.Err, ErrAccountBusy):
		p.log.Info("account skipped: another popsync is polling it", "error", r.Err.Error())
	case errors.Is(r.Err, ErrIdentityChanged):
		p.log.Error("account refused: its identity changed", "error", r.Err.Error())
	case r.Err != nil && (p.o.QuietFailures || ctx.Err() != nil):
		p.log.Warn("poll failed", append(attrs, "error", r.Err.Error())...)
	case r.Err != nil:
		p.log.Error("poll failed", append(attrs, "error", r.Err.Error())...)
	default:
		p.log.Info("poll done", attrs...)
	}
	// A refused identity change records nothing: a poll recorded under the
	// new identity would give it state and let the next poll refetch.
	if p.o.DryRun || errors.Is(r.Err, ErrAccountBusy) || errors.Is(r.Err, ErrIdentityChanged) {
		return
	}
	poll := state.Poll{Name: p.a.Name, Account: p.id, Start: start, End: start.Add(r.Duration),
		OnServer: r.OnServer, New: r.New, Delivered: r.Delivered, Deleted: r.Deleted,
		Skipped: r.Skipped, Bytes: r.Bytes, Pending: r.New - r.Delivered - r.Skipped}
	if r.Err != nil {
		poll.Err = r.Err.Error()
	}
	// Recording history must not be skipped because the poll's context
	// was cancelled: a stopped poll is worth a line in `status`.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := p.o.Store.RecordPoll(rctx, poll); err != nil {
		p.log.Warn("recording poll history", "error", err.Error())
	}
}

func (p *pollRun) run(ctx context.Context) error {
	o, a := p.o, p.a
	if err := p.oauth2Ready(ctx); err != nil {
		return err
	}
	lease, err := o.Store.LockAccount(ctx, p.id)
	if err != nil {
		if errors.Is(err, state.ErrLocked) {
			return fmt.Errorf("%w (%s)", ErrAccountBusy, p.id)
		}
		return fmt.Errorf("locking account: %w", err)
	}
	defer lease.Release()
	p.lease = lease
	var configured []*configs.Account
	if o.Configured != nil {
		configured = o.Configured()
	}
	if err := CheckIdentity(ctx, o.Store, a, configured); err != nil {
		return err
	}

	if !o.DryRun {
		// Opening a Maildir target creates it: not in a dry run, which
		// delivers nothing.
		if err := p.openTargets(); err != nil {
			return err
		}
		defer p.closeTargets()
	}

	// Logging in takes the server a while (Dovecot opens the mailbox);
	// the local work before the poll proper is done meanwhile.
	type login struct {
		c   *pop3.Client
		err error
	}
	lctx, stopLogin := context.WithCancel(ctx)
	defer stopLogin()
	logged := make(chan login, 1)
	go func() {
		c, err := p.login(lctx)
		logged <- login{c, err}
	}()
	seen, localErr := p.prepareLocal(ctx)
	if localErr != nil {
		stopLogin()
	}
	l := <-logged
	c := l.c
	if l.err != nil || localErr != nil {
		if c != nil {
			c.Close()
		}
		if localErr != nil {
			return localErr
		}
		return l.err
	}
	quit := false
	defer func() {
		if !quit {
			c.Close()
		}
	}()

	msgs, sized, err := p.listMessages(ctx, c)
	if err != nil {
		return err
	}
	p.res.OnServer = len(msgs)
	keys := make([]string, len(msgs))
	for i, m := range msgs {
		keys[i] = m.key
	}
	now := o.now()
	grace := o.PruneGrace
	if grace == 0 {
		grace = defaultPruneGrace
	}
	// known[i] is the record of msgs[i]; State 0 where there is none.
	var known []state.Record
	if o.DryRun {
		// Reconcile writes (gone marks, pruning); a dry run must not.
		known = seen.Lookup(keys)
	} else {
		known, err = seen.Reconcile(ctx, keys, now, grace)
	}
	if err != nil {
		return fmt.Errorf("reading seen-set: %w", err)
	}

	fetchList, skipped, dele := p.plan(msgs, known, now)
	if !sized && len(fetchList)+len(skipped) > 0 {
		// Something may be fetched: max_size, fetch_limit and the batches
		// need the sizes now.
		if msgs, known, err = p.addSizes(ctx, c, msgs, known); err != nil {
			return err
		}
		fetchList, skipped, dele = p.plan(msgs, known, now)
	}
	p.res.New = len(fetchList) + len(skipped)
	for _, m := range skipped {
		p.log.Warn("message over max_size left on the server",
			"uidl", m.key, "size", m.size, "max_size", int64(a.MaxSize))
		p.onMessage(m, m.size, nil, MessageSkipped, ErrOversized)
	}
	if o.DryRun {
		var bytes int64
		for _, m := range fetchList {
			bytes += m.size
		}
		p.log.Info("dry run: would fetch", "messages", len(fetchList), "bytes", bytes,
			"would_delete", len(dele))
		p.res.Plan = p.planListing(ctx, c, fetchList, skipped, dele)
		c.Quit(ctx)
		quit = true
		return nil
	}
	if len(skipped) > 0 {
		if err := p.held(); err != nil {
			return err
		}
		recs := make([]state.Record, len(skipped))
		for i, m := range skipped {
			recs[i] = state.Record{UIDL: m.key, State: state.Skipped, Size: m.size, FirstSeen: now,
				Note: fmt.Sprintf("size %d over max_size %d", m.size, int64(a.MaxSize))}
		}
		if err := o.Store.MarkSkipped(ctx, p.id, recs); err != nil {
			return fmt.Errorf("recording skipped messages: %w", err)
		}
		p.res.Skipped = len(skipped)
	}

	if len(fetchList) > 0 {
		if err := p.targetsReady(ctx); err != nil {
			return err
		}
	}
	delivered, fetchErr := p.fetchAll(ctx, c, fetchList, sink{targets: p.targets, state: state.Delivered})
	if err := p.recordAppendLimited(ctx); err != nil && fetchErr == nil {
		fetchErr = err
	}
	if !a.Keep {
		dele = append(dele, delivered...)
	}
	if fetchErr != nil {
		// The connection may be poisoned or the disk full: either way no
		// DELE now. What was delivered stays recorded, and the next poll
		// deletes it (keep = false finds it in the seen-set).
		return fetchErr
	}
	qdele, err := p.handleRejected(ctx, c)
	dele = append(dele, qdele...)
	if err != nil {
		return err
	}
	if err := p.deleteAll(ctx, c, dele); err != nil {
		return err
	}
	quit = true
	if n := len(p.deferred); n > 0 {
		// Those messages stay on the server for the next poll, but a poll
		// that could not deliver is not a success (exit status, status,
		// metrics, the daemon's backoff).
		return asTargetError(fmt.Errorf("%d message(s) could not be delivered and stay on the server: %w", n, p.deferred[0]))
	}
	return nil
}

// targetsReady runs the local checks of the targets that have one (an
// MDA's program exists and is executable) before anything is RETRed, so
// that a target that cannot take any message does not cost a download of
// every new message on every poll.
func (p *pollRun) targetsReady(ctx context.Context) error {
	for _, t := range p.targets {
		if m, ok := t.Target.(*deliver.MDA); ok {
			if err := m.Check(ctx); err != nil {
				return asTargetError(fmt.Errorf("delivery target cannot take mail, nothing fetched: %w", err))
			}
		}
	}
	return nil
}

func (p *pollRun) dial(ctx context.Context) (*pop3.Client, error) {
	a := p.a
	opts := pop3.Options{
		ServerName:  a.TLSServerName,
		CAFile:      a.TLSCAFile,
		Fingerprint: a.TLSFingerprint,
		Timeout:     time.Duration(a.Timeout),
		TraceAuth:   p.o.TraceAuth,
	}
	switch a.TLS {
	case "starttls":
		opts.Security = pop3.SecuritySTARTTLS
	case "none":
		opts.Security = pop3.SecurityNone
	default:
		opts.Security = pop3.SecurityImplicit
	}
	if p.o.Trace {
		opts.Logger = p.log
	}
	dial := p.o.Dial
	if dial == nil {
		dial = pop3.Dial
	}
	return dial(ctx, a.Addr(), opts)
}

// deleteAll DELEs msgs and QUITs; the server commits the DELEs only when
// it answers QUIT with +OK (RFC 1939 §6), so that is when they are
// recorded as deleted.
func (p *pollRun) deleteAll(ctx context.Context, c *pop3.Client, msgs []serverMsg) error {
	var ok []string
	if len(msgs) > 0 {
		if err := p.held(); err != nil {
			return err
		}
		ids := make([]int, len(msgs))
		for i, m := range msgs {
			ids[i] = m.id
		}
		perID, err := c.DeleEach(ctx, ids)
		if err != nil {
			return fmt.Errorf("deleting messages: %w", err)
		}
		for i, e := range perID {
			if e != nil {
				p.log.Warn("server refused DELE", "uidl", msgs[i].key, "error", e.Error())
				continue
			}
			ok = append(ok, msgs[i].key)
		}
	}
	// QUIT commits the DELEs: not by a poller that lost the account,
	// whose caller then drops the connection, so the server deletes
	// nothing.
	if err := p.held(); err != nil {
		return err
	}
	if err := c.Quit(ctx); err != nil {
		return fmt.Errorf("closing the session (deletions not committed): %w", err)
	}
	if len(ok) == 0 {
		return nil
	}
	p.res.Deleted = len(ok)
	if err := p.o.Store.MarkDeleted(ctx, p.id, ok, p.o.now()); err != nil {
		// The server has deleted them; only the bookkeeping is missing,
		// and the next reconcile marks them gone anyway.
		p.log.Warn("recording deletions", "error", err.Error())
	}
	return nil
}
