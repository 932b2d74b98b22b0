package state

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

var _ IntentRecorder = (*SQLite)(nil)

// MarkDelivered implements Store.
func (s *SQLite) MarkDelivered(ctx context.Context, a Account, recs []Record) error {
	return s.MarkDeliveredAddIntents(ctx, a, recs, nil)
}

// MarkDeliveredAddIntents implements IntentRecorder: MarkDelivered of
// recs, then AddIntents of in, in one transaction.
func (s *SQLite) MarkDeliveredAddIntents(ctx context.Context, a Account, recs []Record, in []Intent) error {
	now := time.Now()
	a, recs, err := PrepareDelivered(a, recs, now)
	if err != nil {
		return err
	}
	a, in, err = PrepareIntents(a, in, now)
	if err != nil {
		return err
	}
	if len(recs) == 0 && len(in) == 0 {
		return nil
	}
	err = s.withAccount(ctx, a, true, func(tx *sql.Tx, id int64) error {
		if err := markDeliveredTx(ctx, tx, id, recs); err != nil {
			return err
		}
		return addIntentsTx(ctx, tx, id, in)
	})
	switch {
	case err == nil:
		return nil
	case len(in) == 0:
		return fmt.Errorf("marking delivered for %s: %w", a, err)
	case len(recs) == 0:
		return fmt.Errorf("adding intents for %s: %w", a, err)
	}
	return fmt.Errorf("marking delivered and adding intents for %s: %w", a, err)
}

// markDeliveredTx is the body of MarkDelivered in tx.
func markDeliveredTx(ctx context.Context, tx *sql.Tx, id int64, recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	err := execRows(ctx, tx, len(recs), rowsPerStatement, func(n int) string {
		return `INSERT INTO message (account_id, uidl, state, size, first_seen, delivered_at, deleted_at, note)
			VALUES ` + valueRows(n, 8) + `
			ON CONFLICT (account_id, uidl) DO UPDATE SET
				state = excluded.state,
				size = excluded.size,
				first_seen = min(message.first_seen, excluded.first_seen),
				delivered_at = excluded.delivered_at,
				deleted_at = coalesce(excluded.deleted_at, message.deleted_at),
				gone_since = NULL,
				note = excluded.note`
	}, func(args []any, i int) []any {
		r := recs[i]
		return append(args, id, r.UIDL, int(r.State), r.Size, r.FirstSeen.UnixMicro(),
			r.DeliveredAt.UnixMicro(), dbTime(r.DeletedAt), r.Note)
	})
	if err != nil {
		return fmt.Errorf("recording deliveries: %w", err)
	}
	uidls := make([]string, len(recs))
	for i, r := range recs {
		uidls[i] = r.UIDL
	}
	return deleteIntents(ctx, tx, id, uidls)
}

// MarkSkipped implements Store.
func (s *SQLite) MarkSkipped(ctx context.Context, a Account, recs []Record) error {
	a, recs, err := PrepareSkipped(a, recs, time.Now())
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	err = s.withAccount(ctx, a, true, func(tx *sql.Tx, id int64) error {
		// The WHERE of the upsert keeps delivered and quarantined records
		// as they are.
		st, err := tx.PrepareContext(ctx,
			`INSERT INTO message (account_id, uidl, state, size, first_seen, note)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (account_id, uidl) DO UPDATE SET
				size = excluded.size,
				first_seen = min(message.first_seen, excluded.first_seen),
				gone_since = NULL,
				note = excluded.note
			WHERE message.state = excluded.state`)
		if err != nil {
			return fmt.Errorf("recording skip: %w", err)
		}
		defer st.Close()
		for _, r := range recs {
			if _, err := st.ExecContext(ctx, id, r.UIDL, int(r.State), r.Size, r.FirstSeen.UnixMicro(), r.Note); err != nil {
				return fmt.Errorf("recording skip of UIDL %q: %w", r.UIDL, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("marking skipped for %s: %w", a, err)
	}
	return nil
}

// MarkDeleted implements Store.
func (s *SQLite) MarkDeleted(ctx context.Context, a Account, uidls []string, at time.Time) error {
	a, at, err := PrepareDeleted(a, at, time.Now())
	if err != nil {
		return err
	}
	if len(uidls) == 0 {
		return nil
	}
	err = s.withAccount(ctx, a, false, func(tx *sql.Tx, id int64) error {
		return execRows(ctx, tx, len(uidls), rowsPerStatement, func(n int) string {
			return `UPDATE message SET deleted_at = ? WHERE account_id = ? AND uidl IN (` + placeholders(n) + `)`
		}, func(args []any, i int) []any {
			if i%rowsPerStatement == 0 {
				args = append(args, at.UnixMicro(), id)
			}
			return append(args, uidls[i])
		})
	})
	if err != nil {
		return fmt.Errorf("marking deleted for %s: %w", a, err)
	}
	return nil
}
