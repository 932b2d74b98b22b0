// Package fetch runs popsync's sync algorithm: one poll of one account,
// following the data path of DESIGN.md, and many accounts at once.
//
// It talks to the server only through fetch/pop3, to the seen-set only
// through state.Store and to mailboxes only through deliver.Target: it
// never parses protocol bytes or writes mail files itself. What it owns is
// the order of things, because the order is the product's promise:
//
//  1. a message is staged in every target and made durable there;
//  2. an intent naming where it will appear is committed to the store;
//  3. the targets publish it (Maildir: rename into new/, fsync new/);
//  4. the store records it as delivered, in one transaction per batch;
//  5. only then, if policy says so, it is DELE'd, and QUIT commits that.
//
// A crash between 2 and 4 leaves an open intent that the next poll
// resolves by asking the target whether the message got published.
package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"popsync/configs"
	"popsync/deliver"
	"popsync/fetch/pop3"
	"popsync/state"
)

// Defaults for Options fields left zero.
const (
	DefaultBatchSize  = 128
	DefaultBatchBytes = 64 << 20
	DefaultPruneGrace = 7 * 24 * time.Hour
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

// listedLimit is the most a message LIST announced as size octets may
// bring: twice that (a server counting LF-only lines still stays below)
// and 1 MiB of slack. More is a hostile or broken server, and stopping it
// keeps an endless message from filling the disk when max_size is unset.
func listedLimit(size int64) int64 {
	return 2*max(size, 0) + 1<<20
}

// Options configure polls. Store is required; the rest has defaults.
type Options struct {
	Store  state.Store
	Logger *slog.Logger
	// Dial connects and greets; nil means pop3.Dial. Tests inject their own.
	Dial func(ctx context.Context, addr string, opts pop3.Options) (*pop3.Client, error)
	// OpenTarget builds one delivery target; nil means OpenTarget.
	OpenTarget func(a *configs.Account, d configs.Deliver) (deliver.Target, error)
	Now        func() time.Time
	Hostname   string // for the Received: header; default os.Hostname
	DryRun     bool   // report what would be fetched and deleted; change nothing
	Trace      bool   // log the POP3 dialogue at pop3.LevelTrace
	TraceAuth  bool   // include credentials in the trace (never by default)
	BatchSize  int    // messages per durability batch
	BatchBytes int64  // bytes per durability batch
	PruneGrace time.Duration
	// Progress, when set, is called after each delivered message.
	Progress func(Progress)
	// QuietFailures logs a failed poll at Warn instead of Error, for a
	// caller (the daemon's scheduler) that reports failure streaks itself.
	QuietFailures bool
	// Tokens hands out the access tokens of accounts with [account.oauth2]
	// (oauth2.go); such accounts fail without it.
	Tokens *Tokens
	// QuarantineDir holds the default quarantine Maildirs, one per account
	// (QuarantineDir/NAME), for messages a target refuses for good and
	// whose deliver entry names no quarantine of its own.
	QuarantineDir string
}

// Progress is a snapshot of a running poll, for a progress display.
type Progress struct {
	Account    string
	Done, Todo int
	Bytes      int64
}

// Result is the outcome of one poll of one account.
type Result struct {
	Account   string
	OnServer  int // messages on the server
	New       int // of those, not in the seen-set
	Delivered int
	Deleted   int
	Skipped   int // newly found over max_size, left on the server
	Rejected  int // refused for good by a target: quarantined or kept
	Failed    int // messages the server refused to hand out this time
	Bytes     int64
	Duration  time.Duration
	Err       error
}

func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// login connects and logs in.
func (p *pollRun) login(ctx context.Context) (*pop3.Client, error) {
	a := p.a
	if a.OAuth2 != nil {
		return p.loginOAuth2(ctx)
	}
	secret, err := a.Secret(ctx)
	if err != nil {
		return nil, err
	}
	c, err := p.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", a.Addr(), err)
	}
	if err := c.Auth(ctx, a.Auth, a.User, secret); err != nil {
		c.Close()
		return nil, fmt.Errorf("logging in to %s as %s: %w", a.Addr(), a.User, err)
	}
	return c, nil
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

// serverMsg is one message as the server lists it, with the key it has in
// the seen-set.
type serverMsg struct {
	id   int
	size int64
	key  string
}

// pollRun holds what one poll needs; it lives for one Poll call.
type pollRun struct {
	o       *Options
	a       *configs.Account
	id      state.Account
	lease   state.Lease // the account's; nil for Check, which commits nothing
	log     *slog.Logger
	targets []deliver.Target
	res     *Result

	partial  map[string]map[int]bool // UIDL → targets that already accepted it
	rejected []rejection             // refused for good during this poll
	qTarget  deliver.Target          // the quarantine Maildir, opened when needed
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
	attrs := []any{"on_server", r.OnServer, "new", r.New, "delivered", r.Delivered,
		"deleted", r.Deleted, "skipped", r.Skipped, "bytes", r.Bytes,
		"seconds", strconv.FormatFloat(r.Duration.Seconds(), 'f', 3, 64)}
	if r.Failed > 0 {
		attrs = append(attrs, "failed", r.Failed)
	}
	if p.o.DryRun {
		attrs = append(attrs, "dry_run", true)
	}
	switch {
	case errors.Is(r.Err, ErrAccountBusy):
		p.log.Info("account skipped: another popsync is polling it", "error", r.Err.Error())
	case r.Err != nil && (p.o.QuietFailures || ctx.Err() != nil):
		p.log.Warn("poll failed", append(attrs, "error", r.Err.Error())...)
	case r.Err != nil:
		p.log.Error("poll failed", append(attrs, "error", r.Err.Error())...)
	default:
		p.log.Info("poll done", attrs...)
	}
	if p.o.DryRun || errors.Is(r.Err, ErrAccountBusy) {
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

	if err := p.openTargets(); err != nil {
		return err
	}
	defer p.closeTargets()

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
		grace = DefaultPruneGrace
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
	}
	if o.DryRun {
		var bytes int64
		for _, m := range fetchList {
			bytes += m.size
		}
		p.log.Info("dry run: would fetch", "messages", len(fetchList), "bytes", bytes,
			"would_delete", len(dele))
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

	delivered, fetchErr := p.fetchAll(ctx, c, fetchList, sink{targets: p.targets, state: state.Delivered})
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

// listMessages returns every message on the server with its seen-set key:
// the UIDL, or a digest of its headers when the server has no UIDL. sized
// reports whether the sizes are known: a UIDL listing that STAT confirms
// (as many messages, no UIDL twice) spares the LIST, which a poll that
// finds nothing new does not need; with 100,000 messages on the server
// the LIST is about a tenth of such a poll. addSizes gets them later.
func (p *pollRun) listMessages(ctx context.Context, c *pop3.Client) (msgs []serverMsg, sized bool, err error) {
	n, _, err := c.Stat(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("counting messages: %w", err)
	}
	if n == 0 {
		return nil, true, nil
	}
	uids, err := c.UIDL(ctx)
	var pe *pop3.Error
	switch {
	case err == nil:
		if msgs := uniqueUIDLs(uids, n); msgs != nil {
			return msgs, false, nil
		}
	case errors.As(err, &pe):
		// RFC 1939 §7: UIDL is optional. Fall back to a digest of the
		// headers, which is stable for as long as the message is there.
		p.log.Info("server has no UIDL; identifying messages by a digest of their headers")
		uids = nil
	default:
		return nil, false, fmt.Errorf("listing unique ids: %w", err)
	}
	list, err := c.List(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("listing messages: %w", err)
	}
	msgs = make([]serverMsg, len(list))
	pos := make(map[int]int, len(list))
	for i, m := range list {
		msgs[i] = serverMsg{id: m.ID, size: m.Size}
		pos[m.ID] = i
	}
	for _, u := range uids {
		if i, ok := pos[u.ID]; ok {
			msgs[i].key = u.UID
		}
	}
	// Messages without a UIDL of their own, and every message whose UIDL
	// the server gave to more than one message, get a header digest: one
	// duplicate must neither hide the other (loss) nor be refetched on
	// every poll (loop).
	count := make(map[string]int, len(msgs))
	for _, m := range msgs {
		count[m.key]++
	}
	var need []int
	for i, m := range msgs {
		if m.key == "" || count[m.key] > 1 {
			need = append(need, i)
		}
	}
	if len(need) > 0 {
		if err := p.digestKeys(ctx, c, msgs, need); err != nil {
			return nil, false, err
		}
	}
	return msgs, true, nil
}

// uniqueUIDLs returns the messages of a UIDL listing without sizes (-1),
// or nil unless it names count messages, each with a UIDL of its own.
func uniqueUIDLs(uids []pop3.UIDEntry, count int) []serverMsg {
	if len(uids) != count {
		return nil
	}
	seen := make(map[string]struct{}, len(uids))
	msgs := make([]serverMsg, len(uids))
	for i, u := range uids {
		if _, dup := seen[u.UID]; dup || u.UID == "" {
			return nil
		}
		seen[u.UID] = struct{}{}
		msgs[i] = serverMsg{id: u.ID, size: -1, key: u.UID}
	}
	return msgs
}

// addSizes fills in the sizes of msgs from a LIST. A message the LIST
// does not name is left out, as if the UIDL listing had not named it, and
// so is its entry of known.
func (p *pollRun) addSizes(ctx context.Context, c *pop3.Client, msgs []serverMsg, known []state.Record) ([]serverMsg, []state.Record, error) {
	list, err := c.List(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("listing messages: %w", err)
	}
	size := make(map[int]int64, len(list))
	for _, m := range list {
		size[m.ID] = m.Size
	}
	k := 0
	for i, m := range msgs {
		if n, ok := size[m.id]; ok {
			m.size = n
			msgs[k], known[k] = m, known[i]
			k++
		}
	}
	return msgs[:k], known[:k], nil
}

func (p *pollRun) digestKeys(ctx context.Context, c *pop3.Client, msgs []serverMsg, need []int) error {
	ids := make([]int, len(need))
	byID := make(map[int]int, len(need))
	for k, i := range need {
		ids[k] = msgs[i].id
		byID[msgs[i].id] = i
	}
	err := c.TopEach(ctx, ids, 0, func(id int, body io.Reader, err error) error {
		if err != nil {
			return fmt.Errorf("reading headers of message %d: %w", id, err)
		}
		i := byID[id]
		h := sha256.New()
		limit := listedLimit(msgs[i].size)
		n, err := io.Copy(h, io.LimitReader(body, limit+1))
		if err != nil {
			return err
		}
		if n > limit {
			return fmt.Errorf("%w: server sent over %d bytes of headers for message %d, LIST said %d", ErrListedSize, limit, id, msgs[i].size)
		}
		prefix := msgs[i].key
		if prefix == "" {
			prefix = "hdr"
		}
		msgs[i].key = prefix + "#" + hex.EncodeToString(h.Sum(nil)[:12])
		return nil
	})
	if err != nil {
		return fmt.Errorf("identifying messages by header digest: %w", err)
	}
	// Messages with identical headers still need distinct keys: number
	// them in server order.
	seen := make(map[string]int, len(need))
	for _, i := range need {
		k := msgs[i].key
		seen[k]++
		if n := seen[k]; n > 1 {
			msgs[i].key = k + "#" + strconv.Itoa(n)
		}
	}
	return nil
}

// plan splits the server's messages into those to fetch, those newly
// found too big, and those to DELE now. Each record state has its rule
// here; a state without one is never fetched again and never deleted.
func (p *pollRun) plan(msgs []serverMsg, known []state.Record, now time.Time) (fetchList, skipped, dele []serverMsg) {
	a := p.a
	max := int64(a.MaxSize)
	for i, m := range msgs {
		r := &known[i]
		fetch := false
		switch r.State {
		case 0:
			fetch = true
		case state.Skipped:
			// max_size was raised since: fetch it now. A rejected
			// message is not retried that way.
			fetch = !strings.HasPrefix(r.Note, rejectedNote) && (max == 0 || m.size <= max)
		case state.Delivered:
			switch {
			case !a.Keep:
				dele = append(dele, m)
			case a.DeleteAfter > 0 && now.Sub(r.DeliveredAt) >= time.Duration(a.DeleteAfter):
				dele = append(dele, m)
			}
		case state.Quarantined:
			if p.deletesRejected() {
				dele = append(dele, m)
			}
		}
		if !fetch {
			continue
		}
		switch {
		case max > 0 && m.size > max:
			skipped = append(skipped, m)
		case a.FetchLimit > 0 && len(fetchList) >= a.FetchLimit:
		default:
			fetchList = append(fetchList, m)
		}
	}
	return fetchList, skipped, dele
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

// handleRejected applies on_reject to the messages a target refused for
// good: never bounced, never silently dropped. "keep" leaves a message on
// the server and records it so it is reported once; "quarantine" (the
// default) fetches it again into the quarantine Maildir; "delete" does
// that and then deletes it from the server. It returns what to DELE.
func (p *pollRun) handleRejected(ctx context.Context, c *pop3.Client) ([]serverMsg, error) {
	if len(p.rejected) == 0 {
		return nil, nil
	}
	p.res.Rejected = len(p.rejected)
	now := p.o.now()
	var kept []state.Record
	var toQ []serverMsg
	notes := make(map[string]string)
	deleteAfter := make(map[string]bool)
	for _, r := range p.rejected {
		p.log.Error("message rejected by its target; not bounced", "uidl", r.m.key,
			"on_reject", orDefault(r.onReject, onRejectQuarantine), "error", r.reason)
		note := rejectedNote + r.reason
		if r.onReject == onRejectKeep {
			kept = append(kept, state.Record{UIDL: r.m.key, State: state.Skipped, Size: r.m.size, FirstSeen: now, Note: note})
			continue
		}
		toQ = append(toQ, r.m)
		notes[r.m.key] = note
		deleteAfter[r.m.key] = r.onReject == onRejectDelete
	}
	if len(kept) > 0 {
		if err := p.held(); err != nil {
			return nil, err
		}
		if err := p.o.Store.MarkSkipped(ctx, p.id, kept); err != nil {
			return nil, fmt.Errorf("recording rejected messages: %w", err)
		}
	}
	if len(toQ) == 0 {
		return nil, nil
	}
	q, err := p.quarantine()
	if err != nil {
		return nil, err
	}
	done, err := p.fetchAll(ctx, c, toQ, sink{targets: []deliver.Target{q}, base: quarantineTarget, state: state.Quarantined, notes: notes})
	var dele []serverMsg
	for _, m := range done {
		p.log.Warn("rejected message quarantined", "uidl", m.key, "quarantine", q.String())
		if deleteAfter[m.key] {
			dele = append(dele, m)
		}
	}
	if err != nil {
		return dele, fmt.Errorf("quarantining rejected messages: %w", err)
	}
	return dele, nil
}

// quarantine opens the account's quarantine Maildir: the first deliver
// entry's quarantine key, else Options.QuarantineDir/NAME.
func (p *pollRun) quarantine() (deliver.Target, error) {
	if p.qTarget != nil {
		return p.qTarget, nil
	}
	path := ""
	for _, d := range p.a.Deliver {
		if d.Quarantine != "" {
			path = d.Quarantine
			break
		}
	}
	if path == "" {
		if p.o.QuarantineDir == "" {
			return nil, errors.New("no quarantine Maildir: set quarantine in the deliver entry")
		}
		path = filepath.Join(p.o.QuarantineDir, p.a.Name)
	}
	t, err := deliver.NewMaildir(path, deliver.MaildirOptions{})
	if err != nil {
		return nil, fmt.Errorf("opening the quarantine: %w", err)
	}
	p.qTarget = t
	return t, nil
}

// deletesRejected reports whether a deliver entry asks for rejected
// messages to be deleted from the server once quarantined.
func (p *pollRun) deletesRejected() bool {
	for _, d := range p.a.Deliver {
		if d.OnReject == onRejectDelete {
			return true
		}
	}
	return false
}

// rejectedNote starts the seen-set note of a message a target refused
// for good; such a record is not retried when max_size changes.
const rejectedNote = "rejected: "

// The values of a deliver entry's on_reject key.
const (
	onRejectKeep       = "keep"
	onRejectQuarantine = "quarantine" // the default
	onRejectDelete     = "delete"
)

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (p *pollRun) openTargets() error {
	open := p.o.OpenTarget
	if open == nil {
		open = OpenTarget
	}
	for _, d := range p.a.Deliver {
		t, err := open(p.a, d)
		if err != nil {
			p.closeTargets()
			return fmt.Errorf("opening delivery target: %w", err)
		}
		p.targets = append(p.targets, t)
	}
	if len(p.targets) == 0 {
		return errors.New("no delivery target configured")
	}
	return nil
}

// removeStale clears what a killed earlier run left half-written. A
// failure here costs disk space only, so it is logged, not fatal.
func (p *pollRun) removeStale(ctx context.Context) {
	for _, t := range p.targets {
		sr, ok := t.(deliver.StaleRemover)
		if !ok {
			continue
		}
		n, err := sr.RemoveStale(ctx)
		if err != nil {
			p.log.Warn("removing files left by an interrupted run", "target", t.String(), "error", err.Error())
		}
		if n > 0 {
			p.log.Info("removed files left by an interrupted run", "target", t.String(), "files", n)
		}
	}
}

func (p *pollRun) closeTargets() {
	for _, t := range append(p.targets, p.qTarget) {
		if t == nil {
			continue
		}
		if err := t.Close(); err != nil {
			p.log.Warn("closing delivery target", "target", t.String(), "error", err.Error())
		}
	}
	p.targets, p.qTarget = nil, nil
}

// OpenTarget builds the delivery target a [[account.deliver]] entry names.
func OpenTarget(a *configs.Account, d configs.Deliver) (deliver.Target, error) {
	var t deliver.Target
	var err error
	switch {
	case d.Maildir != "":
		t, err = deliver.NewMaildir(d.Maildir, deliver.MaildirOptions{})
	case d.SMTP != "" || d.LMTP != "":
		opts := deliver.SMTPOptions{Addr: d.SMTP, TLS: d.SMTPTLS, Helo: d.Helo, Rcpt: d.Rcpt,
			From: d.From, User: d.SMTPUser, Password: d.SMTPPassword.Reveal()}
		if d.LMTP != "" {
			opts.Addr = d.LMTP
			if opts.TLS != deliver.TLSImplicit {
				opts.TLS = deliver.TLSNone // RFC 2033 LMTP: no STARTTLS here
			}
			t, err = deliver.NewLMTP(opts)
		} else {
			t, err = deliver.NewSMTP(opts)
		}
	case len(d.MDA) > 0:
		t, err = deliver.NewMDA(deliver.MDAOptions{Command: d.MDA, From: d.From})
	default:
		return nil, fmt.Errorf("account %q: deliver entry (line %d): no supported target", a.Name, d.Line)
	}
	if err != nil {
		return nil, fmt.Errorf("account %q: deliver entry (line %d): %w", a.Name, d.Line, err)
	}
	return t, nil
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}
