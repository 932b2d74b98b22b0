package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"popsync/state"
)

// MarkImported implements state.Store: one fenced upsert that adds the
// new UIDLs and upgrades Skipped records, and leaves every other record
// as it is. A UIDL named twice counts once, with its first record (as
// applying the slice row by row would).
func (s *Store) MarkImported(ctx context.Context, a state.Account, recs []state.Record) (added int, err error) {
	a, recs, err = state.PrepareImported(a, recs, time.Now())
	if err != nil {
		return 0, err
	}
	// The first record of a UIDL named twice counts.
	seen := make(map[string]bool, len(recs))
	var once []state.Record
	for _, r := range recs {
		if !seen[r.UIDL] {
			seen[r.UIDL] = true
			once = append(once, r)
		}
	}
	err = s.writeRecords(ctx, a, once, "importing seen-state", func(b *pgx.Batch, id int64, c recordColumns) {
		b.Queue(`INSERT INTO message AS m (account_id, uidl, state, size, first_seen, delivered_at, note)
			SELECT $1::bigint, u, $7, sz, f, d, n
			FROM unnest($2::bytea[], $3::bigint[], $4::timestamptz[], $5::timestamptz[], $6::text[]) AS t (u, sz, f, d, n)
			ON CONFLICT (account_id, uidl) DO UPDATE SET
				state = excluded.state,
				first_seen = least(m.first_seen, excluded.first_seen),
				delivered_at = excluded.delivered_at,
				gone_since = NULL,
				note = excluded.note
			WHERE m.state = $8`,
			id, c.uidls, c.sizes, c.first, c.delivered, c.notes, int16(state.Imported), int16(state.Skipped)).
			Exec(func(ct pgconn.CommandTag) error {
				added = int(ct.RowsAffected())
				return nil
			})
	})
	if err != nil {
		return 0, err
	}
	return added, nil
}
