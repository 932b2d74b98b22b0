package state

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// AddIntents implements Store.
func (s *SQLite) AddIntents(ctx context.Context, a Account, in []Intent) error {
	a, in, err := PrepareIntents(a, in, time.Now())
	if err != nil {
		return err
	}
	if len(in) == 0 {
		return nil
	}
	err = s.withAccount(ctx, a, true, func(tx *sql.Tx, id int64) error {
		return addIntentsTx(ctx, tx, id, in)
	})
	if err != nil {
		return fmt.Errorf("adding intents for %s: %w", a, err)
	}
	return nil
}

// addIntentsTx is the body of AddIntents in tx.
func addIntentsTx(ctx context.Context, tx *sql.Tx, id int64, in []Intent) error {
	if len(in) == 0 {
		return nil
	}
	return execRows(ctx, tx, len(in), rowsPerStatement, func(n int) string {
		return `INSERT INTO intent (account_id, uidl, target, token, confirmed, size, created) VALUES ` +
			valueRows(n, 7) + `
			ON CONFLICT (account_id, uidl, target) DO UPDATE SET
				token = excluded.token, confirmed = excluded.confirmed, size = excluded.size,
				created = excluded.created`
	}, func(args []any, i int) []any {
		it := in[i]
		return append(args, id, it.UIDL, it.Target, it.Token, it.Confirmed, it.Size, it.Created.UnixMicro())
	})
}

// Intents implements Store.
func (s *SQLite) Intents(ctx context.Context, a Account) ([]Intent, error) {
	a, err := CanonicalAccount(a)
	if err != nil {
		return nil, fmt.Errorf("listing intents: %w", err)
	}
	if s.isClosed() {
		return nil, fmt.Errorf("listing intents of %s: %w", a, ErrClosed)
	}
	rows, err := s.db.QueryContext(ctx,
		`SELECT i.uidl, i.target, i.token, i.confirmed, i.size, i.created
		FROM intent i JOIN account a ON a.id = i.account_id
		WHERE a.host = ? AND a.port = ? AND a.username = ?
		ORDER BY i.created, i.uidl, i.target`, a.Host, a.Port, a.User)
	if err != nil {
		return nil, fmt.Errorf("listing intents of %s: %w", a, classify(err))
	}
	defer rows.Close()
	var out []Intent
	for rows.Next() {
		var it Intent
		var created int64
		if err := rows.Scan(&it.UIDL, &it.Target, &it.Token, &it.Confirmed, &it.Size, &created); err != nil {
			return nil, fmt.Errorf("listing intents of %s: %w", a, classify(err))
		}
		it.Created = time.UnixMicro(created)
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing intents of %s: %w", a, classify(err))
	}
	return out, nil
}

// DropIntents implements Store.
func (s *SQLite) DropIntents(ctx context.Context, a Account, uidls []string) error {
	a, err := CanonicalAccount(a)
	if err != nil {
		return fmt.Errorf("dropping intents: %w", err)
	}
	if len(uidls) == 0 {
		return nil
	}
	err = s.withAccount(ctx, a, false, func(tx *sql.Tx, id int64) error {
		return deleteIntents(ctx, tx, id, uidls)
	})
	if err != nil {
		return fmt.Errorf("dropping intents of %s: %w", a, err)
	}
	return nil
}

func deleteIntents(ctx context.Context, tx *sql.Tx, id int64, uidls []string) error {
	err := execRows(ctx, tx, len(uidls), rowsPerStatement, func(n int) string {
		return `DELETE FROM intent WHERE account_id = ? AND uidl IN (` + placeholders(n) + `)`
	}, func(args []any, i int) []any {
		if i%rowsPerStatement == 0 {
			args = append(args, id)
		}
		return append(args, uidls[i])
	})
	if err != nil {
		return fmt.Errorf("deleting intents: %w", err)
	}
	return nil
}
