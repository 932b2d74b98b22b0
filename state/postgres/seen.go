package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"popsync/state"
)

// Seen is an account's records as ReadSeen read them, for ReconcileSeen.
type Seen struct {
	a     state.Account
	id    int64 // the account's row id; 0 when it has no records
	recs  []seenRec
	index map[string]int32 // UIDL -> place in recs
}

type seenRec struct {
	r    state.Record
	gone time.Time // gone_since; zero when listed by the last Reconcile
}

// ReadSeen reads the account's records for a later ReconcileSeen, so that
// a poll can read its seen-set while it waits for the server to log it
// in: one statement, one round trip. ReconcileSeen is only right if
// nothing else writes the account's records in between: the caller holds
// the account's lease over both.
func (s *Store) ReadSeen(ctx context.Context, a state.Account) (*Seen, error) {
	a, err := canonical(a)
	if err != nil {
		return nil, fmt.Errorf("reading seen-set: %w", err)
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	seen := &Seen{a: a, index: map[string]int32{}}
	id, err := s.accountID(ctx, a, false)
	if err != nil {
		return nil, fmt.Errorf("reading seen-set of %s: %w", a, err)
	}
	if id == 0 {
		return seen, nil
	}
	seen.id = id
	rows, err := s.pool.Query(ctx, `SELECT uidl, state, size, first_seen, delivered_at, deleted_at, gone_since, note
		FROM message WHERE account_id = $1`, id)
	if err != nil {
		return nil, fmt.Errorf("reading seen-set of %s: %w", a, s.fail(ctx, err))
	}
	defer rows.Close()
	var (
		uidl                       []byte
		st                         int16
		rec                        state.Record
		delivered, deleted, goneAt pgtype.Timestamptz
	)
	for rows.Next() {
		if err := rows.Scan(&uidl, &st, &rec.Size, &rec.FirstSeen, &delivered, &deleted, &goneAt, &rec.Note); err != nil {
			return nil, fmt.Errorf("reading seen-set of %s: %w", a, s.fail(ctx, err))
		}
		r := rec
		r.UIDL = string(uidl)
		r.State = state.MsgState(st)
		r.DeliveredAt = goTime(delivered)
		r.DeletedAt = goTime(deleted)
		seen.index[r.UIDL] = int32(len(seen.recs))
		seen.recs = append(seen.recs, seenRec{r: r, gone: goTime(goneAt)})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading seen-set of %s: %w", a, s.fail(ctx, err))
	}
	return seen, nil
}

func goTime(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time
}

func pgTime(t time.Time) pgtype.Timestamptz {
	return pgtype.Timestamptz{Time: t, Valid: !t.IsZero()}
}

// ReconcileSeen is Reconcile on records read by ReadSeen, the result
// aligned with uidls (recs[i] is the record of uidls[i], State 0 when
// unknown). It compares in memory; only records whose "gone" mark changes
// are written, and the prune runs only when a record has been gone for
// longer than grace: a poll that finds nothing changed sends nothing.
func (s *Store) ReconcileSeen(ctx context.Context, seen *Seen, uidls []string, now time.Time, grace time.Duration) ([]state.Record, error) {
	a := seen.a
	switch {
	case now.IsZero():
		return nil, fmt.Errorf("reconciling %s: zero time", a)
	case grace < 0:
		return nil, fmt.Errorf("reconciling %s: negative grace period %v", a, grace)
	}
	if err := checkUIDLs(uidls); err != nil {
		return nil, fmt.Errorf("reconciling %s: %w", a, err)
	}
	if s.isClosed() {
		return nil, fmt.Errorf("reconciling %s: %w", a, state.ErrClosed)
	}
	recs := make([]state.Record, len(uidls))
	if seen.id == 0 {
		return recs, nil
	}
	listed := make([]bool, len(seen.recs))
	var gone, back [][]byte
	for i, u := range uidls {
		k, ok := seen.index[u]
		if !ok {
			continue
		}
		sr := &seen.recs[k]
		if !sr.gone.IsZero() && !listed[k] {
			back = append(back, []byte(u))
		}
		listed[k] = true
		recs[i] = sr.r
	}
	// Microseconds, as stored, so memory and database agree on the edge.
	cutoff := now.Add(-grace).Truncate(time.Microsecond)
	prune := false
	for k, l := range listed {
		sr := &seen.recs[k]
		switch {
		case l:
		case sr.gone.IsZero():
			gone = append(gone, []byte(sr.r.UIDL))
		case sr.gone.Before(cutoff):
			prune = true
		}
	}
	if len(gone) == 0 && len(back) == 0 && !prune {
		return recs, nil
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	err := s.write(ctx, seen.id, func(b *pgx.Batch) {
		if len(gone) > 0 {
			b.Queue(`UPDATE message SET gone_since = $2 WHERE account_id = $1 AND uidl = ANY($3::bytea[])`, seen.id, now, gone)
		}
		if len(back) > 0 {
			b.Queue(`UPDATE message SET gone_since = NULL WHERE account_id = $1 AND uidl = ANY($2::bytea[])`, seen.id, back)
		}
		if prune {
			b.Queue(`DELETE FROM message WHERE account_id = $1 AND gone_since < $2`, seen.id, cutoff)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("reconciling %s: %w", a, err)
	}
	return recs, nil
}

// ReconcileList is ReadSeen and ReconcileSeen at once.
func (s *Store) ReconcileList(ctx context.Context, a state.Account, uidls []string, now time.Time, grace time.Duration) ([]state.Record, error) {
	seen, err := s.ReadSeen(ctx, a)
	if err != nil {
		return nil, err
	}
	return s.ReconcileSeen(ctx, seen, uidls, now, grace)
}

// Reconcile implements state.Store with ReconcileList.
func (s *Store) Reconcile(ctx context.Context, a state.Account, uidls []string, now time.Time, grace time.Duration) (map[string]state.Record, error) {
	recs, err := s.ReconcileList(ctx, a, uidls, now, grace)
	if err != nil {
		return nil, err
	}
	known := make(map[string]state.Record)
	for _, r := range recs {
		if r.State != 0 {
			known[r.UIDL] = r
		}
	}
	return known, nil
}

// Known implements state.Store: one read of the given UIDLs' records.
func (s *Store) Known(ctx context.Context, a state.Account, uidls []string) (map[string]state.Record, error) {
	a, err := canonical(a)
	if err != nil {
		return nil, fmt.Errorf("reading seen-set: %w", err)
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	id, err := s.accountID(ctx, a, false)
	if err != nil {
		return nil, fmt.Errorf("reading seen-set of %s: %w", a, err)
	}
	known := make(map[string]state.Record)
	if id == 0 || len(uidls) == 0 {
		return known, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT uidl, state, size, first_seen, delivered_at, deleted_at, note
		FROM message WHERE account_id = $1 AND uidl = ANY($2::bytea[])`, id, byteSlices(uidls))
	if err != nil {
		return nil, fmt.Errorf("reading seen-set of %s: %w", a, s.fail(ctx, err))
	}
	defer rows.Close()
	for rows.Next() {
		var r state.Record
		var uidl []byte
		var st int16
		var delivered, deleted pgtype.Timestamptz
		if err := rows.Scan(&uidl, &st, &r.Size, &r.FirstSeen, &delivered, &deleted, &r.Note); err != nil {
			return nil, fmt.Errorf("reading seen-set of %s: %w", a, s.fail(ctx, err))
		}
		r.UIDL, r.State = string(uidl), state.MsgState(st)
		r.DeliveredAt, r.DeletedAt = goTime(delivered), goTime(deleted)
		known[r.UIDL] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading seen-set of %s: %w", a, s.fail(ctx, err))
	}
	return known, nil
}

func byteSlices(ss []string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

func checkUIDLs(uidls []string) error {
	for i, u := range uidls {
		if u == "" {
			return fmt.Errorf("UIDL #%d is empty", i+1)
		}
	}
	return nil
}
