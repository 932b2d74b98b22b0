package state

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// MarkImported records UIDLs that another tool (fetchmail, getmail, mpop)
// delivered before popsync took the account over, as State Imported, in
// one transaction. A record's State must be Imported or zero; a zero
// DeliveredAt (the old tool kept no time) means now, and FirstSeen
// defaults to DeliveredAt.
//
// It is a union: a UIDL the seen-set already holds as Delivered,
// Quarantined or Imported is left as it is, so importing twice changes
// nothing; a Skipped one becomes Imported (the old tool has it). It
// returns how many records it added or upgraded.
func (s *SQLite) MarkImported(ctx context.Context, a Account, recs []Record) (added int, err error) {
	a, err = canonical(a)
	if err != nil {
		return 0, fmt.Errorf("importing seen-state: %w", err)
	}
	for i, r := range recs {
		switch {
		case r.UIDL == "":
			return 0, fmt.Errorf("importing seen-state for %s: record #%d has no UIDL", a, i+1)
		case r.State != 0 && r.State != Imported:
			return 0, fmt.Errorf("importing seen-state for %s: UIDL %q has state %v, want imported", a, r.UIDL, r.State)
		}
	}
	if len(recs) == 0 {
		return 0, nil
	}
	now := time.Now()
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		id, err := accountID(ctx, tx, a, true)
		if err != nil {
			return err
		}
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
			delivered := r.DeliveredAt
			if delivered.IsZero() {
				delivered = now
			}
			first := r.FirstSeen
			if first.IsZero() {
				first = delivered
			}
			res, err := st.ExecContext(ctx, id, r.UIDL, int(Imported), r.Size, first.UnixMicro(),
				delivered.UnixMicro(), r.Note, int(Skipped))
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
