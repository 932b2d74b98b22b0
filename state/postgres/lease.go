package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"popsync/state"
)

// releaseTimeout bounds the statement that hands a lease back; when it
// fails the lease simply expires.
const releaseTimeout = 10 * time.Second

// A Lease is this daemon's right to poll one account, until it is
// released or lost: the state.Lease of this store. While held it is renewed in the background every
// TTL/3; the writes of the Store for its account are fenced with its
// token.
//
// Done is closed when the lease ends: lost (expired, taken over, not
// renewable in time, or its Store closed; Err then wraps
// state.ErrLeaseLost) or released (Err is state.ErrLeaseReleased). It
// keeps its own bookkeeping rather than state.LeaseState's because its
// end may come from its renewal goroutine and Finish ends it with a
// write of its own. A poll checks Done before DELE and before QUIT: after a
// loss it must drop the connection instead, so the server deletes
// nothing.
type Lease struct {
	s       *Store
	account state.Account
	id      int64 // account row id
	token   int64

	stopKeep context.CancelFunc
	kept     chan struct{} // closed when the renewal goroutine has ended
	done     chan struct{}
	once     sync.Once // Release

	mu      sync.Mutex
	err     error
	expires time.Time // database clock, as of the last renewal
}

// Account returns the leased account (canonical).
func (l *Lease) Account() state.Account { return l.account }

// Token returns the fencing token: it grows with every acquisition of the
// account's lease, by any daemon.
func (l *Lease) Token() int64 { return l.token }

// Expires returns when the lease runs out unless renewed, by the
// database's clock, as of the last renewal.
func (l *Lease) Expires() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.expires
}

// Done is closed when the lease is lost or released.
func (l *Lease) Done() <-chan struct{} { return l.done }

// Err is nil while the lease is held; then why it ended: an error
// wrapping state.ErrLeaseLost, or state.ErrLeaseReleased.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// end records why the lease ended, once, and closes Done.
func (l *Lease) end(err error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return false
	}
	l.err = err
	close(l.done)
	return true
}

// lose ends the lease as lost and stops its renewal.
func (l *Lease) lose(err error) {
	if !errors.Is(err, state.ErrLeaseLost) {
		err = fmt.Errorf("%w: %w", state.ErrLeaseLost, err)
	}
	if l.end(err) {
		l.s.lost.Add(1)
		l.s.log.Warn("account lease lost", "account", l.account.String(), "token", l.token, "err", err)
	}
	l.stopKeep()
}

// Release ends the lease and hands it back, so another daemon can take
// the account at once instead of after the TTL. It may be called more
// than once, and after a loss.
func (l *Lease) Release() { l.handBack(state.ErrLeaseReleased) }

// handBack ends the lease with why, if it has not ended yet, and gives
// the row back when it was still held.
func (l *Lease) handBack(why error) {
	l.once.Do(func() {
		l.stopKeep()
		<-l.kept
		held := l.end(why)
		l.forget()
		if !held {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
		defer cancel()
		if _, err := l.s.pool.Exec(ctx, `UPDATE lease SET owner = NULL, expires_at = now()
			WHERE account_id = $1 AND owner = $2 AND token = $3`, l.id, l.s.opt.DaemonID, l.token); err != nil {
			l.s.log.Warn("releasing account lease; it expires by itself", "account", l.account.String(), "err", err)
		}
	})
}

// Finish ends a poll: in one fenced transaction it sets when the fleet
// polls the account next (next, absolute) and releases the lease. When
// the lease was lost nothing is written and the error wraps
// state.ErrLeaseLost. The lease has ended in any case.
func (l *Lease) Finish(ctx context.Context, next time.Time) error {
	return l.finish(ctx, next, nil)
}

// FinishPoll is RecordPoll(p) and Finish(next) in one transaction (one
// round trip, one commit), the end of a poll in the fleet. When the lease
// was lost nothing is written, the poll neither: record it with
// RecordPoll then, if wanted.
func (l *Lease) FinishPoll(ctx context.Context, p state.Poll, next time.Time) error {
	p, err := state.PreparePoll(p)
	if err == nil && p.Account != l.account {
		err = fmt.Errorf("the poll is of %s", p.Account)
	}
	if err != nil {
		l.Release()
		return fmt.Errorf("finishing the poll of %s: %w", l.account, err)
	}
	return l.finish(ctx, next, &p)
}

func (l *Lease) finish(ctx context.Context, next time.Time, p *state.Poll) error {
	if next.IsZero() {
		l.Release()
		return fmt.Errorf("finishing the poll of %s: zero next due time", l.account)
	}
	var err error
	l.once.Do(func() {
		l.stopKeep()
		<-l.kept
		if err = l.Err(); err != nil {
			l.forget()
			return
		}
		ctx, cancel := l.s.opContext(ctx)
		defer cancel()
		// The schedule row first, then the lease row: the order ClaimDue
		// locks them in (a claim that raced this lease's acquisition
		// holds the schedule row and waits for the lease row). The fence
		// is not first, but in the same transaction: when it fails
		// nothing commits.
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO schedule (account_id, next_due) VALUES ($1, $2)
			ON CONFLICT (account_id) DO UPDATE SET next_due = excluded.next_due`, l.id, next)
		b.Queue(`SELECT popsync_fence($1, $2, $3)`, l.id, l.s.opt.DaemonID, l.token)
		if p != nil {
			queuePoll(b, l.id, *p)
		}
		b.Queue(`UPDATE lease SET owner = NULL, expires_at = now()
			WHERE account_id = $1 AND owner = $2 AND token = $3`, l.id, l.s.opt.DaemonID, l.token)
		err = l.s.fail(ctx, l.s.pool.SendBatch(ctx, b).Close())
		switch {
		case errors.Is(err, state.ErrLeaseLost):
			l.s.refused.Add(1)
			l.lose(err)
		case err != nil:
			// The lease expires by itself.
			l.end(state.ErrLeaseReleased)
		default:
			l.end(state.ErrLeaseReleased)
		}
		l.forget()
	})
	if err != nil {
		return fmt.Errorf("finishing the poll of %s: %w", l.account, err)
	}
	return nil
}

// forget removes the lease from the Store's held leases, unless a newer
// lease of the same account replaced it there.
func (l *Lease) forget() {
	l.s.mu.Lock()
	if l.s.leases[l.id] == l {
		delete(l.s.leases, l.id)
	}
	l.s.mu.Unlock()
}

// Acquire takes the lease of account a for this daemon if it is free or
// expired (a takeover), with a new fencing token, and starts renewing it.
// It fails at once, with an error wrapping state.ErrLocked, when another
// owner (or this Store) holds it.
func (s *Store) Acquire(ctx context.Context, a state.Account) (*Lease, error) {
	a, err := canonical(a)
	if err != nil {
		return nil, fmt.Errorf("leasing account: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("leasing %s: %w", a, err)
	}
	if s.isClosed() {
		return nil, fmt.Errorf("leasing %s: %w", a, state.ErrClosed)
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	id, err := s.accountID(ctx, a, true)
	if err != nil {
		return nil, fmt.Errorf("leasing %s: %w", a, err)
	}
	sent := time.Now()
	var token int64
	var expires time.Time
	var prev *string
	err = s.pool.QueryRow(ctx, `INSERT INTO lease AS l (account_id, owner, token, acquired_at, expires_at)
		VALUES ($1, $2, 1, now(), now() + $3 * interval '1 microsecond')
		ON CONFLICT (account_id) DO UPDATE SET
			owner = excluded.owner, prev_owner = l.owner, token = l.token + 1,
			acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
		WHERE l.owner IS NULL OR l.expires_at <= now()
		RETURNING l.token, l.expires_at, l.prev_owner`, id, s.opt.DaemonID, s.ttl.Microseconds()).Scan(&token, &expires, &prev)
	if errors.Is(err, pgx.ErrNoRows) {
		var owner string
		var until time.Time
		if err := s.pool.QueryRow(ctx, `SELECT coalesce(owner, ''), expires_at FROM lease WHERE account_id = $1`, id).Scan(&owner, &until); err == nil {
			return nil, fmt.Errorf("leasing %s: held by daemon %s until %s: %w", a, owner, until.UTC().Format(time.RFC3339), state.ErrLocked)
		}
		return nil, fmt.Errorf("leasing %s: held by another daemon: %w", a, state.ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("leasing %s: %w", a, s.fail(ctx, err))
	}
	l, err := s.hold(a, id, token, expires, prev, sent)
	if err != nil {
		return nil, fmt.Errorf("leasing %s: %w", a, err)
	}
	return l, nil
}

// hold makes the Lease of a lease row just acquired and starts renewing
// it. sent is the local time the acquiring statement was sent: the
// database set the expiry after that, so it expires no earlier than sent
// plus the TTL.
func (s *Store) hold(a state.Account, id, token int64, expires time.Time, prev *string, sent time.Time) (*Lease, error) {
	kctx, stop := context.WithCancel(context.Background())
	l := &Lease{s: s, account: a, id: id, token: token, expires: expires,
		stopKeep: stop, kept: make(chan struct{}), done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		stop()
		close(l.kept)
		l.Release() // hands the row back
		return nil, state.ErrClosed
	}
	s.leases[id] = l
	s.mu.Unlock()
	if prev != nil {
		s.takeovers.Add(1)
		s.log.Info("account lease taken over", "account", a.String(), "from", *prev, "token", token)
	}
	go func() {
		defer close(l.kept)
		if err := keepLease(kctx, s.ttl, sent, l.renew); err != nil {
			l.lose(err)
		}
	}()
	return l, nil
}

// renew moves the expiry forward if the lease is still held with its
// token; false when it is not.
func (l *Lease) renew(ctx context.Context) (bool, error) {
	var expires time.Time
	err := l.s.pool.QueryRow(ctx, `UPDATE lease SET expires_at = now() + $4 * interval '1 microsecond'
		WHERE account_id = $1 AND owner = $2 AND token = $3 AND expires_at > now()
		RETURNING expires_at`, l.id, l.s.opt.DaemonID, l.token, l.s.ttl.Microseconds()).Scan(&expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, classify(err)
	}
	l.mu.Lock()
	l.expires = expires
	l.mu.Unlock()
	return true, nil
}

// keepLease renews a lease of the given TTL, acquired by a statement sent
// at sent (local monotonic time), until ctx ends (it returns nil) or the
// lease is lost (it returns why).
//
// It renews every ttl/3 after the last successful renewal was sent, and
// every ttl/12 after a failure. The lease is certain to last until the
// last successful renewal was sent plus ttl (the database set the expiry
// after it received the statement); a quarter of the TTL before that
// local deadline it gives up, so the poll stops before another daemon can
// take the account, with a margin for clock rates and a slow last step.
func keepLease(ctx context.Context, ttl time.Duration, sent time.Time, renew func(context.Context) (bool, error)) error {
	every, retry, margin := ttl/3, ttl/12, ttl/4
	confirmed := sent
	var lastErr error
	for {
		deadline := confirmed.Add(ttl - margin)
		next := confirmed.Add(every)
		if lastErr != nil {
			next = time.Now().Add(retry)
		}
		if next.After(deadline) {
			next = deadline
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		now := time.Now()
		if !now.Before(deadline) {
			return fmt.Errorf("%w: not renewed for %v, given up before it can expire (last error: %v)",
				state.ErrLeaseLost, now.Sub(confirmed).Round(time.Millisecond), lastErr)
		}
		rctx, cancel := context.WithDeadline(ctx, deadline)
		held, err := renew(rctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			lastErr = err
		case !held:
			return fmt.Errorf("%w: it expired or another daemon took it over", state.ErrLeaseLost)
		default:
			confirmed, lastErr = now, nil
		}
	}
}

// LockAccount implements state.Store with a lease (Acquire). Unlike the SQLite store's lock, a lease of a process that
// died stays held until it expires (Options.LeaseTTL).
func (s *Store) LockAccount(ctx context.Context, a state.Account) (state.Lease, error) {
	l, err := s.Acquire(ctx, a)
	if err != nil {
		return nil, err
	}
	return l, nil
}
