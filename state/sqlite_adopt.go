package state

import (
	"context"
	"database/sql"
	"fmt"
)

// AdoptAccount implements Store. The account row keeps its id and takes
// the new identity, so records, intents and polls follow it at once; an
// empty row of the new identity (one LockAccount or a refused poll may
// leave) is removed first.
func (s *SQLite) AdoptAccount(ctx context.Context, from, to Account) error {
	from, to, err := PrepareAdopt(from, to)
	if err != nil {
		return err
	}
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		fromID, err := accountID(ctx, tx, from, false)
		if err != nil {
			return err
		}
		if fromID == 0 {
			return fmt.Errorf("%w: %s", ErrNoAccount, from)
		}
		toID, err := accountID(ctx, tx, to, false)
		if err != nil {
			return err
		}
		if toID != 0 {
			n, err := accountRows(ctx, tx, toID)
			if err != nil {
				return err
			}
			if n > 0 {
				return fmt.Errorf("%w: %s holds %d records, intents or polls", ErrAccountInUse, to, n)
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM account WHERE id = ?`, toID); err != nil {
				return fmt.Errorf("removing the empty row of %s: %w", to, err)
			}
		}
		_, err = tx.ExecContext(ctx, `UPDATE account SET host = ?, port = ?, username = ? WHERE id = ?`,
			to.Host, to.Port, to.User, fromID)
		return err
	})
	if err != nil {
		return fmt.Errorf("adopting the state of %s for %s: %w", from, to, err)
	}
	return nil
}

// ForgetAccount implements Store.
func (s *SQLite) ForgetAccount(ctx context.Context, a Account) error {
	a, err := CanonicalAccount(a)
	if err != nil {
		return fmt.Errorf("forgetting account: %w", err)
	}
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		id, err := accountID(ctx, tx, a, false)
		if err != nil {
			return err
		}
		if id == 0 {
			return ErrNoAccount
		}
		for _, table := range []string{"message", "intent", "poll"} {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE account_id = ?`, id); err != nil {
				return fmt.Errorf("deleting from %s: %w", table, err)
			}
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM account WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("forgetting %s: %w", a, err)
	}
	return nil
}

// accountRows counts the records, intents and polls of account row id.
func accountRows(ctx context.Context, tx *sql.Tx, id int64) (int, error) {
	var n int
	err := tx.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM message WHERE account_id = ?1) +
		(SELECT count(*) FROM intent WHERE account_id = ?1) +
		(SELECT count(*) FROM poll WHERE account_id = ?1)`, id).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting the state of account row %d: %w", id, err)
	}
	return n, nil
}
