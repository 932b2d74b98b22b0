package state

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// MarkImported implements Store.
func (s *SQLite) MarkImported(ctx context.Context, a Account, recs []Record) (added int, err error) {
	a, recs, err = PrepareImported(a, recs, time.Now())
	if err != nil {
		return 0, err
	}
	if len(recs) == 0 {
		return 0, nil
	}
	err = s.withAccount(ctx, a, true, func(tx *sql.Tx, id int64) error {
		// The WHERE of the upsert leaves every record but a Skipped one
		// as it is.
		st, err := tx.PrepareContext(ctx,
			`INSERT INTO message (account_id, uidl, state, size, first_seen, delivered_at, note)
			VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (account_id, uidl) DO UPDATE SET
				state = excluded.state,
				first_seen = min(message.first_seen, excluded.first_seen),
				delivered_at = excluded.delivered_at,
				gone_since = NULL,
				note = excluded.note
			WHERE message.state = ?`)
		if err != nil {
			return fmt.Errorf("recording imported UIDLs: %w", err)
		}
		defer st.Close()
		added = 0
		for _, r := range recs {
			res, err := st.ExecContext(ctx, id, r.UIDL, int(r.State), r.Size, r.FirstSeen.UnixMicro(),
				r.DeliveredAt.UnixMicro(), r.Note, int(Skipped))
			if err != nil {
				return fmt.Errorf("recording imported UIDL %q: %w", r.UIDL, err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return fmt.Errorf("recording imported UIDL %q: %w", r.UIDL, err)
			}
			added += int(n)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("importing seen-state for %s: %w", a, err)
	}
	return added, nil
}
