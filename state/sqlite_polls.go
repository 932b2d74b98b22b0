package state

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// RecordPoll implements Store.
func (s *SQLite) RecordPoll(ctx context.Context, p Poll) error {
	p, err := PreparePoll(p)
	if err != nil {
		return err
	}
	a := p.Account
	start := p.Start.UnixMicro()
	ok := p.Err == ""
	err = s.withAccount(ctx, a, true, func(tx *sql.Tx, id int64) error {
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO poll (account_id, name, started, finished, on_server, new, delivered, deleted, skipped, bytes, err, pending)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			id, p.Name, start, dbTime(p.End), p.OnServer, p.New, p.Delivered, p.Deleted, p.Skipped,
			p.Bytes, p.Err, p.Pending); err != nil {
			return fmt.Errorf("adding poll: %w", err)
		}
		if _, err := tx.ExecContext(ctx,
			`DELETE FROM poll WHERE account_id = ?1 AND id <=
				(SELECT id FROM poll WHERE account_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)`,
			id, KeepPolls); err != nil {
			return fmt.Errorf("pruning polls: %w", err)
		}
		// The summary only moves forward in time, should polls be recorded
		// out of order.
		var last, lastSuccess, lastErrorAt sql.NullInt64
		if err := tx.QueryRowContext(ctx,
			`SELECT last_poll, last_success, last_error_at FROM account WHERE id = ?`, id).
			Scan(&last, &lastSuccess, &lastErrorAt); err != nil {
			return fmt.Errorf("reading account summary: %w", err)
		}
		if !last.Valid || start >= last.Int64 {
			if _, err := tx.ExecContext(ctx,
				`UPDATE account SET name = ?, last_poll = ?, last_ok = ?, pending = ? WHERE id = ?`,
				p.Name, start, ok, p.Pending, id); err != nil {
				return fmt.Errorf("updating account summary: %w", err)
			}
		}
		if ok && (!lastSuccess.Valid || start >= lastSuccess.Int64) {
			if _, err := tx.ExecContext(ctx, `UPDATE account SET last_success = ? WHERE id = ?`, start, id); err != nil {
				return fmt.Errorf("updating account summary: %w", err)
			}
		}
		if !ok && (!lastErrorAt.Valid || start >= lastErrorAt.Int64) {
			if _, err := tx.ExecContext(ctx,
				`UPDATE account SET last_error = ?, last_error_at = ? WHERE id = ?`, p.Err, start, id); err != nil {
				return fmt.Errorf("updating account summary: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording poll of %s: %w", a, err)
	}
	return nil
}

// Polls implements Store.
func (s *SQLite) Polls(ctx context.Context, a Account, limit int) ([]Poll, error) {
	a, err := CanonicalAccount(a)
	if err != nil {
		return nil, fmt.Errorf("listing polls: %w", err)
	}
	if s.isClosed() {
		return nil, fmt.Errorf("listing polls of %s: %w", a, ErrClosed)
	}
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	rows, err := s.db.QueryContext(ctx,
		`SELECT p.name, p.started, p.finished, p.on_server, p.new, p.delivered, p.deleted, p.skipped,
			p.bytes, p.err, p.pending
		FROM poll p JOIN account a ON a.id = p.account_id
		WHERE a.host = ? AND a.port = ? AND a.username = ?
		ORDER BY p.id DESC LIMIT ?`, a.Host, a.Port, a.User, limit)
	if err != nil {
		return nil, fmt.Errorf("listing polls of %s: %w", a, classify(err))
	}
	defer rows.Close()
	var out []Poll
	for rows.Next() {
		p := Poll{Account: a}
		var start int64
		var end sql.NullInt64
		if err := rows.Scan(&p.Name, &start, &end, &p.OnServer, &p.New, &p.Delivered, &p.Deleted,
			&p.Skipped, &p.Bytes, &p.Err, &p.Pending); err != nil {
			return nil, fmt.Errorf("listing polls of %s: %w", a, classify(err))
		}
		p.Start = time.UnixMicro(start)
		p.End = goTime(end)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing polls of %s: %w", a, classify(err))
	}
	return out, nil
}

// Status implements Store.
func (s *SQLite) Status(ctx context.Context) ([]AccountStatus, error) {
	if s.isClosed() {
		return nil, fmt.Errorf("reading status: %w", ErrClosed)
	}
	rows, err := s.db.QueryContext(ctx,
		`SELECT a.host, a.port, a.username, a.name, a.last_poll, a.last_ok, a.last_success,
			coalesce(a.last_error, ''), a.last_error_at, a.pending,
			(SELECT count(*) FROM message m WHERE m.account_id = a.id)
		FROM account a WHERE a.last_poll IS NOT NULL
		ORDER BY a.name, a.host, a.port, a.username`)
	if err != nil {
		return nil, fmt.Errorf("reading status: %w", classify(err))
	}
	defer rows.Close()
	var out []AccountStatus
	for rows.Next() {
		var st AccountStatus
		var last, lastSuccess, lastErrorAt sql.NullInt64
		if err := rows.Scan(&st.Account.Host, &st.Account.Port, &st.Account.User, &st.Name, &last,
			&st.LastOK, &lastSuccess, &st.LastError, &lastErrorAt, &st.Pending, &st.Seen); err != nil {
			return nil, fmt.Errorf("reading status: %w", classify(err))
		}
		st.LastPoll = goTime(last)
		st.LastSuccess = goTime(lastSuccess)
		st.LastErrorAt = goTime(lastErrorAt)
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading status: %w", classify(err))
	}
	return out, nil
}
