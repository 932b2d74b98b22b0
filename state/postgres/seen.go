package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"popsync/state"
)

// Seen is the state.SeenSet of ReadSeen: an account's records in memory.
type Seen struct {
	s     *Store
	a     state.Account
	id    int64 // the account's row id; 0 when it has no records
	recs  []seenRec
	index map[string]int32 // UIDL -> place in recs
}

type seenRec struct {
	r    state.Record
	gone time.Time // gone_since; zero when listed by the last Reconcile
}

var _ state.SeenSet = (*Seen)(nil)

// ReadSeen implements state.Store: one statement, one round trip. The
// set's Reconcile is only right if nothing else writes the account's
// records in between: the caller holds the account's lease over both.
func (s *Store) ReadSeen(ctx context.Context, a state.Account) (state.SeenSet, error) {
	return s.readSeen(ctx, a)
}

func (s *Store) readSeen(ctx context.Context, a state.Account) (*Seen, error) {
	a, err := canonical(a)
	if err != nil {
		return nil, fmt.Errorf("reading seen-set: %w", err)
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("reading seen-set of %s: %w", a, err)
	}
	seen := &Seen{s: s, a: a, index: map[string]int32{}}
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

// Account implements state.SeenSet.
func (seen *Seen) Account() state.Account { return seen.a }

// Lookup implements state.SeenSet, from memory.
func (seen *Seen) Lookup(uidls []string) []state.Record {
	recs := make([]state.Record, len(uidls))
	for i, u := range uidls {
		if k, ok := seen.index[u]; ok {
			recs[i] = seen.recs[k].r
		}
	}
	return recs
}

// Reconcile implements state.SeenSet. It compares in memory; only records
// whose "gone" mark changes are written, and the prune runs only when a
// record has been gone for longer than grace: a poll that finds nothing
// changed sends nothing.
func (seen *Seen) Reconcile(ctx context.Context, uidls []string, now time.Time, grace time.Duration) ([]state.Record, error) {
	s, a := seen.s, seen.a
	if err := state.CheckReconcile(a, uidls, now, grace); err != nil {
		return nil, err
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

func byteSlices(ss []string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}
