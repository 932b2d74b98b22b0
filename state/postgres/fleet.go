package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"popsync/state"
)

// heartbeat keeps the daemon row of a registered Store alive.
type heartbeat struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Register makes this Store a live member of the fleet: its daemon row
// is written now and renewed every LeaseTTL/3 until Close, which deletes
// it. The fair share of ClaimDue counts live members. Registering twice
// is an error.
func (s *Store) Register(ctx context.Context) error {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	// Daemons that died without Close leave their row; an hour on, no
	// one needs it.
	if _, err := s.pool.Exec(ctx, `DELETE FROM daemon WHERE expires < now() - interval '1 hour'`); err != nil {
		return fmt.Errorf("registering daemon %s: %w", s.opt.DaemonID, s.fail(ctx, err))
	}
	if err := s.beat(ctx); err != nil {
		return fmt.Errorf("registering daemon %s: %w", s.opt.DaemonID, err)
	}
	hctx, stop := context.WithCancel(context.Background())
	hb := &heartbeat{cancel: stop, done: make(chan struct{})}
	s.mu.Lock()
	if s.closed || s.hb != nil {
		closed := s.closed
		s.mu.Unlock()
		stop()
		if closed {
			return fmt.Errorf("registering daemon %s: %w", s.opt.DaemonID, state.ErrClosed)
		}
		return fmt.Errorf("registering daemon %s: already registered", s.opt.DaemonID)
	}
	s.hb = hb
	s.mu.Unlock()
	go func() {
		defer close(hb.done)
		t := time.NewTicker(s.ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
			}
			bctx, cancel := context.WithTimeout(hctx, s.ttl/3)
			if err := s.beat(bctx); err != nil && hctx.Err() == nil {
				s.log.Warn("daemon heartbeat", "err", err)
			}
			cancel()
		}
	}()
	return nil
}

func (s *Store) beat(ctx context.Context) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO daemon (id, expires) VALUES ($1, now() + $2 * interval '1 microsecond')
		ON CONFLICT (id) DO UPDATE SET heartbeat = now(), expires = excluded.expires`,
		s.opt.DaemonID, s.ttl.Microseconds())
	return s.fail(ctx, err)
}

// stop ends the heartbeat and deletes the daemon row.
func (hb *heartbeat) stop(s *Store) error {
	hb.cancel()
	<-hb.done
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	if _, err := s.pool.Exec(ctx, `DELETE FROM daemon WHERE id = $1`, s.opt.DaemonID); err != nil {
		return fmt.Errorf("unregistering daemon %s: %w", s.opt.DaemonID, classify(err))
	}
	return nil
}

// Schedule makes sure every account of accounts is in the fleet's
// schedule; a new one is due at once. Existing due times are kept. Each
// daemon calls it with its configured accounts at start and on reload.
func (s *Store) Schedule(ctx context.Context, accounts []state.Account) error {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	ids := make([]int64, 0, len(accounts))
	for _, a := range accounts {
		a, err := canonical(a)
		if err != nil {
			return fmt.Errorf("scheduling: %w", err)
		}
		id, err := s.accountID(ctx, a, true)
		if err != nil {
			return fmt.Errorf("scheduling %s: %w", a, err)
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO schedule (account_id, next_due)
		SELECT id, now() FROM unnest($1::bigint[]) AS t (id) ON CONFLICT DO NOTHING`, ids)
	if err != nil {
		return fmt.Errorf("scheduling %d accounts: %w", len(ids), s.fail(ctx, err))
	}
	return nil
}

// Unschedule takes accounts out of the fleet's schedule (removed from the
// config); their records stay. A lease held on one runs out as usual.
func (s *Store) Unschedule(ctx context.Context, accounts []state.Account) error {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var ids []int64
	for _, a := range accounts {
		a, err := canonical(a)
		if err != nil {
			return fmt.Errorf("unscheduling: %w", err)
		}
		id, err := s.accountID(ctx, a, false)
		if err != nil {
			return fmt.Errorf("unscheduling %s: %w", a, err)
		}
		if id != 0 {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM schedule WHERE account_id = ANY($1::bigint[])`, ids); err != nil {
		return fmt.Errorf("unscheduling %d accounts: %w", len(ids), s.fail(ctx, err))
	}
	return nil
}

// SetNextDue sets when the fleet polls account a next. (Lease.Finish does
// it together with the release.)
func (s *Store) SetNextDue(ctx context.Context, a state.Account, next time.Time) error {
	a, err := canonical(a)
	if err != nil {
		return fmt.Errorf("scheduling: %w", err)
	}
	if next.IsZero() {
		return fmt.Errorf("scheduling %s: zero time", a)
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	id, err := s.accountID(ctx, a, true)
	if err != nil {
		return fmt.Errorf("scheduling %s: %w", a, err)
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO schedule (account_id, next_due) VALUES ($1, $2)
		ON CONFLICT (account_id) DO UPDATE SET next_due = excluded.next_due`, id, next); err != nil {
		return fmt.Errorf("scheduling %s: %w", a, s.fail(ctx, err))
	}
	return nil
}

// ClaimDue leases up to limit accounts that are due (next_due has passed,
// by the database clock) and whose lease is free or expired, the most
// overdue first, for this daemon, in one statement. It takes no more
// than its fair share: of the accounts due or being polled, each live
// daemon (one whose heartbeat is current; at least one) should hold
// ceil(that / live daemons) leases, less those it holds already. Rows
// other daemons are
// claiming at the same moment are skipped (FOR UPDATE SKIP LOCKED), not
// waited for; the row locks end with the statement, the leases hold the
// accounts during the polls. Each returned lease is renewed until
// released; the caller finishes each with Finish.
func (s *Store) ClaimDue(ctx context.Context, limit int) ([]*Lease, error) {
	if limit <= 0 {
		return nil, nil
	}
	if s.isClosed() {
		return nil, fmt.Errorf("claiming due accounts: %w", state.ErrClosed)
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	sent := time.Now()
	rows, err := s.pool.Query(ctx, `WITH
		free AS (
			SELECT s.account_id, s.next_due FROM schedule s
			WHERE s.next_due <= now() AND NOT EXISTS (
				SELECT 1 FROM lease l WHERE l.account_id = s.account_id AND l.owner IS NOT NULL AND l.expires_at > now())
		),
		held AS (
			SELECT count(*) AS n, count(*) FILTER (WHERE owner = $2) AS mine
			FROM lease WHERE owner IS NOT NULL AND expires_at > now()
		),
		share AS (
			SELECT greatest(ceil(((SELECT count(*) FROM free) + held.n)::numeric /
				greatest((SELECT count(*) FROM daemon WHERE expires > now()), 1))::bigint - held.mine, 0) AS n
			FROM held
		),
		pick AS (
			SELECT s.account_id FROM schedule s
			WHERE s.account_id IN (SELECT account_id FROM free)
			ORDER BY s.next_due, s.account_id
			LIMIT least($1, (SELECT n FROM share))
			FOR UPDATE OF s SKIP LOCKED
		),
		got AS (
			INSERT INTO lease AS l (account_id, owner, token, acquired_at, expires_at)
			SELECT account_id, $2, 1, now(), now() + $3 * interval '1 microsecond' FROM pick
			ON CONFLICT (account_id) DO UPDATE SET
				owner = excluded.owner, prev_owner = l.owner, token = l.token + 1,
				acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
			WHERE l.owner IS NULL OR l.expires_at <= now()
			RETURNING l.account_id, l.token, l.expires_at, l.prev_owner
		)
		SELECT got.account_id, a.host, a.port, a.username, got.token, got.expires_at, got.prev_owner
		FROM got JOIN account a ON a.id = got.account_id`,
		int64(limit), s.opt.DaemonID, s.ttl.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("claiming due accounts: %w", s.fail(ctx, err))
	}
	defer rows.Close()
	type claimed struct {
		a       state.Account
		id, tok int64
		expires time.Time
		prev    *string
	}
	var got []claimed
	for rows.Next() {
		var c claimed
		if err := rows.Scan(&c.id, &c.a.Host, &c.a.Port, &c.a.User, &c.tok, &c.expires, &c.prev); err != nil {
			return nil, fmt.Errorf("claiming due accounts: %w", s.fail(ctx, err))
		}
		got = append(got, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claiming due accounts: %w", s.fail(ctx, err))
	}
	leases := make([]*Lease, 0, len(got))
	for _, c := range got {
		s.mu.Lock()
		s.ids[c.a] = c.id
		s.mu.Unlock()
		l, err := s.hold(c.a, c.id, c.tok, c.expires, c.prev, sent)
		if err != nil {
			for _, l := range leases {
				l.Release()
			}
			return nil, fmt.Errorf("claiming due accounts: %w", err)
		}
		leases = append(leases, l)
	}
	return leases, nil
}

// LeaseInfo is one account's fleet state, for `popsync status`.
type LeaseInfo struct {
	Account  state.Account
	Owner    string    // daemon holding the lease; empty when free or expired
	Token    int64     // the latest fencing token (0: never leased)
	Expires  time.Time // when the current or latest lease ends
	NextDue  time.Time // zero when not in the schedule
	Takeover bool      // the current or latest lease was taken from an expired owner
}

// Leases returns the fleet state of every account that has a lease or a
// schedule, ordered by identity. Times are the database's.
func (s *Store) Leases(ctx context.Context) ([]LeaseInfo, error) {
	if s.isClosed() {
		return nil, fmt.Errorf("reading leases: %w", state.ErrClosed)
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT a.host, a.port, a.username,
			CASE WHEN l.expires_at > now() THEN coalesce(l.owner, '') ELSE '' END,
			coalesce(l.token, 0), l.expires_at, s.next_due, l.prev_owner IS NOT NULL
		FROM account a LEFT JOIN lease l ON l.account_id = a.id LEFT JOIN schedule s ON s.account_id = a.id
		WHERE l.account_id IS NOT NULL OR s.account_id IS NOT NULL
		ORDER BY a.host COLLATE "C", a.port, a.username COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("reading leases: %w", s.fail(ctx, err))
	}
	defer rows.Close()
	var out []LeaseInfo
	for rows.Next() {
		var li LeaseInfo
		var expires, due pgtype.Timestamptz
		if err := rows.Scan(&li.Account.Host, &li.Account.Port, &li.Account.User, &li.Owner, &li.Token,
			&expires, &due, &li.Takeover); err != nil {
			return nil, fmt.Errorf("reading leases: %w", s.fail(ctx, err))
		}
		li.Expires, li.NextDue = goTime(expires), goTime(due)
		out = append(out, li)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading leases: %w", s.fail(ctx, err))
	}
	return out, nil
}

// LiveDaemons returns the ids of the daemons whose heartbeat is current.
func (s *Store) LiveDaemons(ctx context.Context) ([]string, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT id FROM daemon WHERE expires > now() ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("reading daemons: %w", s.fail(ctx, err))
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("reading daemons: %w", s.fail(ctx, err))
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading daemons: %w", s.fail(ctx, err))
	}
	return ids, nil
}
