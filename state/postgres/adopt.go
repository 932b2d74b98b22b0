package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"popsync/state"
)

// AdoptAccount implements state.Store. The account row keeps its id and
// takes the new identity, so records, intents, polls, its lease and its
// schedule follow it at once; an empty row of the new identity (a lease
// or a refused poll may leave one) is removed first. Both rows are locked
// for the transaction, so a daemon cannot claim either in between.
func (s *Store) AdoptAccount(ctx context.Context, from, to state.Account) error {
	from, to, err := state.PrepareAdopt(from, to)
	if err != nil {
		return err
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		fromID, err := lockedAccount(ctx, tx, from)
		if err != nil {
			return err
		}
		if fromID == 0 {
			return fmt.Errorf("%w: %s", state.ErrNoAccount, from)
		}
		toID, err := lockedAccount(ctx, tx, to)
		if err != nil {
			return err
		}
		if toID != 0 {
			var n int
			err := tx.QueryRow(ctx, `SELECT
				(SELECT count(*) FROM message WHERE account_id = $1) +
				(SELECT count(*) FROM intent WHERE account_id = $1) +
				(SELECT count(*) FROM poll WHERE account_id = $1)`, toID).Scan(&n)
			if err != nil {
				return err
			}
			if n > 0 {
				return fmt.Errorf("%w: %s holds %d records, intents or polls", state.ErrAccountInUse, to, n)
			}
			if err := deleteAccountRow(ctx, tx, toID); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `UPDATE account SET host = $1, port = $2, username = $3 WHERE id = $4`,
			to.Host, to.Port, to.User, fromID)
		return err
	})
	s.forgetIDs(from, to)
	if err != nil {
		if errors.Is(err, state.ErrNoAccount) || errors.Is(err, state.ErrAccountInUse) {
			return fmt.Errorf("adopting the state of %s for %s: %w", from, to, err)
		}
		return fmt.Errorf("adopting the state of %s for %s: %w", from, to, s.fail(ctx, err))
	}
	return nil
}

// ForgetAccount implements state.Store: the account's records, intents,
// polls, lease, schedule and row, in one transaction.
func (s *Store) ForgetAccount(ctx context.Context, a state.Account) error {
	a, err := state.CanonicalAccount(a)
	if err != nil {
		return fmt.Errorf("forgetting account: %w", err)
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		id, err := lockedAccount(ctx, tx, a)
		if err != nil {
			return err
		}
		if id == 0 {
			return state.ErrNoAccount
		}
		return deleteAccountRow(ctx, tx, id)
	})
	s.forgetIDs(a)
	if err != nil {
		if errors.Is(err, state.ErrNoAccount) {
			return fmt.Errorf("forgetting %s: %w", a, err)
		}
		return fmt.Errorf("forgetting %s: %w", a, s.fail(ctx, err))
	}
	return nil
}

// lockedAccount returns the row id of a, locked for the transaction, or 0.
func lockedAccount(ctx context.Context, tx pgx.Tx, a state.Account) (int64, error) {
	var id int64
	err := tx.QueryRow(ctx, `SELECT id FROM account WHERE host = $1 AND port = $2 AND username = $3 FOR UPDATE`,
		a.Host, a.Port, a.User).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return id, err
}

// deleteAccountRow removes account row id and every row that refers to it.
func deleteAccountRow(ctx context.Context, tx pgx.Tx, id int64) error {
	for _, table := range []string{"message", "intent", "poll", "lease", "schedule"} {
		if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE account_id = $1`, id); err != nil {
			return fmt.Errorf("deleting from %s: %w", table, err)
		}
	}
	_, err := tx.Exec(ctx, `DELETE FROM account WHERE id = $1`, id)
	return err
}

// forgetIDs drops cached row ids: an adopted or forgotten identity no
// longer names the row it named.
func (s *Store) forgetIDs(as ...state.Account) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range as {
		delete(s.ids, a)
	}
}
