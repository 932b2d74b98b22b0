package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"popsync/state"
)

// ErrNotEmpty: CopyFrom found accounts in the target database and was not
// told to copy over them.
var ErrNotEmpty = errors.New("state database is not empty")

// CopyOptions tune CopyFrom.
type CopyOptions struct {
	// Force copies into a database that already holds accounts: each
	// copied account's records, intents and polls in the target are
	// replaced by the source's; other accounts stay as they are.
	Force bool
}

// CopyStats counts what CopyFrom copied.
type CopyStats struct {
	Accounts, Records, Intents, Polls int
}

// CopyFrom copies everything src holds (`popsync state copy`, from an
// SQLite state file) into this database: records with their gone marks,
// open intents, the kept polls and each account's status summary. It
// refuses, with ErrNotEmpty and without writing, a database that already
// holds accounts unless opts.Force. Each account is copied in one
// transaction, so an interrupted copy leaves whole accounts; run it again
// with Force. Leases and schedules are not copied: the fleet starts
// with every account free and due.
//
// Run it with no daemon working on either state.
func (s *Store) CopyFrom(ctx context.Context, src state.Dumper, opts CopyOptions) (CopyStats, error) {
	var st CopyStats
	if s.isClosed() {
		return st, fmt.Errorf("copying state: %w", state.ErrClosed)
	}
	if !opts.Force {
		var n int
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM account`).Scan(&n); err != nil {
			return st, fmt.Errorf("copying state into %s: %w", s.where, s.fail(ctx, err))
		}
		if n > 0 {
			return st, fmt.Errorf("copying state into %s: it holds %d accounts already (force to replace the copied ones): %w", s.where, n, ErrNotEmpty)
		}
	}
	err := src.Dump(ctx, func(d state.AccountDump) error {
		if err := s.copyAccount(ctx, d, opts.Force); err != nil {
			return fmt.Errorf("copying %s: %w", d.Account, err)
		}
		st.Accounts++
		st.Records += len(d.Records)
		st.Intents += len(d.Intents)
		st.Polls += len(d.Polls)
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("copying state into %s: %w", s.where, err)
	}
	return st, nil
}

func (s *Store) copyAccount(ctx context.Context, d state.AccountDump, force bool) error {
	a, err := canonical(d.Account)
	if err != nil {
		return err
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	id, err := s.accountID(ctx, a, true)
	if err != nil {
		return err
	}
	b := &pgx.Batch{}
	if force {
		for _, table := range []string{"message", "intent", "poll"} {
			b.Queue(`DELETE FROM `+table+` WHERE account_id = $1`, id)
		}
	}
	if n := len(d.Records); n > 0 {
		uidls, states, sizes := make([][]byte, n), make([]int16, n), make([]int64, n)
		first, notes := make([]time.Time, n), make([]string, n)
		delivered, deleted, gone := make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n)
		for i, r := range d.Records {
			uidls[i], states[i], sizes[i], first[i], notes[i] = []byte(r.UIDL), int16(r.State), r.Size, r.FirstSeen, pgText(r.Note)
			delivered[i], deleted[i], gone[i] = pgTime(r.DeliveredAt), pgTime(r.DeletedAt), pgTime(r.GoneSince)
		}
		b.Queue(`INSERT INTO message (account_id, uidl, state, size, first_seen, delivered_at, deleted_at, gone_since, note)
			SELECT $1::bigint, * FROM unnest($2::bytea[], $3::smallint[], $4::bigint[], $5::timestamptz[], $6::timestamptz[],
				$7::timestamptz[], $8::timestamptz[], $9::text[])`,
			id, uidls, states, sizes, first, delivered, deleted, gone, notes)
	}
	if n := len(d.Intents); n > 0 {
		uidls, tokens, targets := make([][]byte, n), make([][]byte, n), make([]string, n)
		confirmed, sizes, created := make([]bool, n), make([]int64, n), make([]time.Time, n)
		for i, it := range d.Intents {
			uidls[i], tokens[i], targets[i], confirmed[i] = []byte(it.UIDL), []byte(it.Token), pgText(it.Target), it.Confirmed
			sizes[i], created[i] = it.Size, it.Created
		}
		b.Queue(`INSERT INTO intent (account_id, uidl, target, token, confirmed, size, created)
			SELECT $1::bigint, * FROM unnest($2::bytea[], $3::text[], $4::bytea[], $5::boolean[], $6::bigint[], $7::timestamptz[])`,
			id, uidls, targets, tokens, confirmed, sizes, created)
	}
	if n := len(d.Polls); n > 0 {
		// Oldest first, so that the ids keep the recording order.
		names, errs := make([]string, n), make([]string, n)
		start, end := make([]time.Time, n), make([]pgtype.Timestamptz, n)
		onServer, nw, deliv, del, skip, pend := make([]int32, n), make([]int32, n), make([]int32, n), make([]int32, n), make([]int32, n), make([]int32, n)
		bytes := make([]int64, n)
		for i := range d.Polls {
			p := d.Polls[n-1-i]
			names[i], errs[i], start[i], end[i] = pgText(p.Name), pgText(p.Err), p.Start, pgTime(p.End)
			onServer[i], nw[i], deliv[i], del[i], skip[i], pend[i] = int32(p.OnServer), int32(p.New), int32(p.Delivered), int32(p.Deleted), int32(p.Skipped), int32(p.Pending)
			bytes[i] = p.Bytes
		}
		b.Queue(`INSERT INTO poll (account_id, name, started, finished, on_server, new, delivered, deleted, skipped, bytes, err, pending)
			SELECT $1::bigint, name, started, finished, on_server, new, delivered, deleted, skipped, bytes, err, pending
			FROM unnest($2::text[], $3::timestamptz[], $4::timestamptz[], $5::integer[], $6::integer[],
				$7::integer[], $8::integer[], $9::integer[], $10::bigint[], $11::text[], $12::integer[])
				WITH ORDINALITY AS t (name, started, finished, on_server, new, delivered, deleted, skipped, bytes, err, pending, ord)
			ORDER BY ord`,
			id, names, start, end, onServer, nw, deliv, del, skip, bytes, errs, pend)
	}
	if st := d.Status; st != nil {
		b.Queue(`UPDATE account SET name = $2, last_poll = $3, last_ok = $4, last_success = $5,
			last_error = nullif($6, ''), last_error_at = $7, pending = $8 WHERE id = $1`,
			id, pgText(st.Name), st.LastPoll, st.LastOK, pgTime(st.LastSuccess), pgText(st.LastError), pgTime(st.LastErrorAt), st.Pending)
	} else if force {
		b.Queue(`UPDATE account SET name = NULL, last_poll = NULL, last_ok = NULL, last_success = NULL,
			last_error = NULL, last_error_at = NULL, pending = NULL WHERE id = $1`, id)
	}
	if b.Len() == 0 {
		return nil
	}
	return s.fail(ctx, s.pool.SendBatch(ctx, b).Close())
}

var _ state.Dumper = (*Store)(nil)

// Dump implements state.Dumper, in one repeatable-read transaction.
func (s *Store) Dump(ctx context.Context, fn func(state.AccountDump) error) error {
	if s.isClosed() {
		return fmt.Errorf("dumping state: %w", state.ErrClosed)
	}
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("dumping %s: %w", s.where, s.fail(ctx, err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	type acct struct {
		id int64
		d  state.AccountDump
	}
	var accts []acct
	rows, err := tx.Query(ctx, `SELECT id, host, port, username, name, last_poll, coalesce(last_ok, false),
		last_success, coalesce(last_error, ''), last_error_at, coalesce(pending, 0)
		FROM account ORDER BY host COLLATE "C", port, username COLLATE "C"`)
	if err != nil {
		return fmt.Errorf("dumping %s: %w", s.where, s.fail(ctx, err))
	}
	for rows.Next() {
		var x acct
		var name *string
		var last, lastSuccess, lastErrorAt pgtype.Timestamptz
		var st state.AccountStatus
		if err := rows.Scan(&x.id, &x.d.Account.Host, &x.d.Account.Port, &x.d.Account.User, &name, &last,
			&st.LastOK, &lastSuccess, &st.LastError, &lastErrorAt, &st.Pending); err != nil {
			rows.Close()
			return fmt.Errorf("dumping %s: %w", s.where, s.fail(ctx, err))
		}
		if last.Valid {
			if name != nil {
				st.Name = *name
			}
			st.Account = x.d.Account
			st.LastPoll, st.LastSuccess, st.LastErrorAt = last.Time, goTime(lastSuccess), goTime(lastErrorAt)
			x.d.Status = &st
		}
		accts = append(accts, x)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("dumping %s: %w", s.where, s.fail(ctx, err))
	}
	for _, x := range accts {
		if err := dumpAccount(ctx, tx, x.id, &x.d); err != nil {
			return fmt.Errorf("dumping %s of %s: %w", x.d.Account, s.where, s.fail(ctx, err))
		}
		if x.d.Status != nil {
			x.d.Status.Seen = len(x.d.Records)
		}
		if err := fn(x.d); err != nil {
			return err
		}
	}
	return nil
}

func dumpAccount(ctx context.Context, tx pgx.Tx, id int64, d *state.AccountDump) error {
	rows, err := tx.Query(ctx, `SELECT uidl, state, size, first_seen, delivered_at, deleted_at, gone_since, note
		FROM message WHERE account_id = $1 ORDER BY uidl`, id)
	if err != nil {
		return err
	}
	for rows.Next() {
		var r state.DumpRecord
		var uidl []byte
		var st int16
		var delivered, deleted, gone pgtype.Timestamptz
		if err := rows.Scan(&uidl, &st, &r.Size, &r.FirstSeen, &delivered, &deleted, &gone, &r.Note); err != nil {
			rows.Close()
			return err
		}
		r.UIDL, r.State = string(uidl), state.MsgState(st)
		r.DeliveredAt, r.DeletedAt, r.GoneSince = goTime(delivered), goTime(deleted), goTime(gone)
		d.Records = append(d.Records, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	rows, err = tx.Query(ctx, `SELECT uidl, target, token, confirmed, size, created FROM intent
		WHERE account_id = $1 ORDER BY created, uidl, target COLLATE "C"`, id)
	if err != nil {
		return err
	}
	for rows.Next() {
		var it state.Intent
		var uidl, token []byte
		if err := rows.Scan(&uidl, &it.Target, &token, &it.Confirmed, &it.Size, &it.Created); err != nil {
			rows.Close()
			return err
		}
		it.UIDL, it.Token = string(uidl), string(token)
		d.Intents = append(d.Intents, it)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	rows, err = tx.Query(ctx, `SELECT name, started, finished, on_server, new, delivered, deleted, skipped,
		bytes, err, pending FROM poll WHERE account_id = $1 ORDER BY id DESC`, id)
	if err != nil {
		return err
	}
	for rows.Next() {
		p := state.Poll{Account: d.Account}
		var end pgtype.Timestamptz
		if err := rows.Scan(&p.Name, &p.Start, &end, &p.OnServer, &p.New, &p.Delivered, &p.Deleted,
			&p.Skipped, &p.Bytes, &p.Err, &p.Pending); err != nil {
			rows.Close()
			return err
		}
		p.End = goTime(end)
		d.Polls = append(d.Polls, p)
	}
	rows.Close()
	return rows.Err()
}
