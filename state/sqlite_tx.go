package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// dbTime is t as a column stores it: microseconds since the epoch, NULL
// for the zero time.
func dbTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

// goTime is the time of a column dbTime wrote.
func goTime(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMicro(v.Int64)
}

// withTx runs fn in one write transaction (BEGIN IMMEDIATE) and commits it.
func (s *SQLite) withTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if s.isClosed() {
		return ErrClosed
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return classify(err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return classify(err)
	}
	if err := tx.Commit(); err != nil {
		if ctx.Err() != nil {
			// database/sql rolled back when ctx ended: nothing was
			// committed.
			return fmt.Errorf("%w (rolled back: %w)", ctx.Err(), err)
		}
		return classify(err)
	}
	return nil
}

// withAccount runs fn in one write transaction with the row id of a
// (canonical): the row is created if create is set; without it, fn is not
// run for an account that has no row.
func (s *SQLite) withAccount(ctx context.Context, a Account, create bool, fn func(tx *sql.Tx, id int64) error) error {
	return s.withTx(ctx, func(tx *sql.Tx) error {
		id, err := accountID(ctx, tx, a, create)
		if err != nil || id == 0 {
			return err
		}
		return fn(tx, id)
	})
}

// accountID returns the row id of a (canonical), creating the row if create
// is set; 0 if it does not exist and create is not set.
func accountID(ctx context.Context, tx *sql.Tx, a Account, create bool) (int64, error) {
	if create {
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO account (host, port, username) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
			a.Host, a.Port, a.User); err != nil {
			return 0, fmt.Errorf("adding account: %w", err)
		}
	}
	var id int64
	err := tx.QueryRowContext(ctx,
		`SELECT id FROM account WHERE host = ? AND port = ? AND username = ?`,
		a.Host, a.Port, a.User).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("looking up account: %w", err)
	}
	return id, nil
}

// rowsPerStatement is how many rows one statement of execRows writes.
// Per statement, database/sql and the driver cost about as much as
// SQLite's work for several rows: with one statement per row, the two
// batch transactions of a poll cost some 75 µs of CPU per message.
const rowsPerStatement = 64

// execRows runs the statement that stmt(k) returns for k rows over n rows
// in chunks of chunk rows, with the arguments appendArgs appends for row i
// (called for every row in order; i%chunk == 0 starts a statement). The
// statement for full chunks is prepared once.
func execRows(ctx context.Context, tx *sql.Tx, n, chunk int, stmt func(k int) string, appendArgs func(args []any, i int) []any) error {
	var full *sql.Stmt
	var args []any
	for start := 0; start < n; start += chunk {
		k := min(chunk, n-start)
		args = args[:0]
		for i := start; i < start+k; i++ {
			args = appendArgs(args, i)
		}
		var err error
		if k == chunk {
			if full == nil {
				if full, err = tx.PrepareContext(ctx, stmt(k)); err != nil {
					return err
				}
				defer full.Close()
			}
			_, err = full.ExecContext(ctx, args...)
		} else {
			_, err = tx.ExecContext(ctx, stmt(k), args...)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// placeholders returns "?, ?, ..." with n question marks.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// valueRows returns the VALUES list of n rows of cols parameters each.
func valueRows(n, cols int) string {
	row := "(" + placeholders(cols) + ")"
	return strings.TrimSuffix(strings.Repeat(row+", ", n), ", ")
}
