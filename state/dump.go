package state

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// AccountDump is everything a Store holds about one account, for moving a
// state from one backend to another (`popsync state copy`).
type AccountDump struct {
	Account Account // canonical
	Records []DumpRecord
	Intents []Intent
	Polls   []Poll         // the kept polls, newest first (as Store.Polls)
	Status  *AccountStatus // nil when the account has recorded no poll
}

// DumpRecord is a Record with its "gone" mark: when a Reconcile first
// missed the UIDL on the server (zero while it is listed).
type DumpRecord struct {
	Record
	GoneSince time.Time
}

// A Dumper is a Store that can hand over everything it holds.
type Dumper interface {
	// Dump calls fn for every account the store knows, records, intents
	// and polls included, in one consistent read, ordered by identity.
	// An error from fn ends the dump and is returned.
	Dump(ctx context.Context, fn func(AccountDump) error) error
}

var _ Dumper = (*SQLite)(nil)

// Dump implements Dumper. It reads in one transaction, which holds the
// write lock: the state file cannot change under the dump. Run it with
// no daemon working on the file.
func (s *SQLite) Dump(ctx context.Context, fn func(AccountDump) error) error {
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		type acct struct {
			id int64
			d  AccountDump
		}
		var accts []acct
		rows, err := tx.QueryContext(ctx, `SELECT id, host, port, username, name, last_poll, last_ok,
			last_success, coalesce(last_error, ''), last_error_at, coalesce(pending, 0)
			FROM account ORDER BY host, port, username`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var x acct
			var name sql.NullString
			var last, lastSuccess, lastErrorAt sql.NullInt64
			var lastOK sql.NullBool
			var st AccountStatus
			if err := rows.Scan(&x.id, &x.d.Account.Host, &x.d.Account.Port, &x.d.Account.User, &name, &last,
				&lastOK, &lastSuccess, &st.LastError, &lastErrorAt, &st.Pending); err != nil {
				rows.Close()
				return err
			}
			if last.Valid {
				st.Name, st.Account, st.LastOK = name.String, x.d.Account, lastOK.Bool
				st.LastPoll, st.LastSuccess, st.LastErrorAt = goTime(last), goTime(lastSuccess), goTime(lastErrorAt)
				x.d.Status = &st
			}
			accts = append(accts, x)
		}
		if err := closeRows(rows); err != nil {
			return err
		}
		for _, x := range accts {
			if err := dumpAccount(ctx, tx, x.id, &x.d); err != nil {
				return fmt.Errorf("reading %s: %w", x.d.Account, err)
			}
			if x.d.Status != nil {
				x.d.Status.Seen = len(x.d.Records)
			}
			if err := fn(x.d); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("dumping state file %s: %w", s.path, err)
	}
	return nil
}

func dumpAccount(ctx context.Context, tx *sql.Tx, id int64, d *AccountDump) error {
	rows, err := tx.QueryContext(ctx, `SELECT uidl, state, size, first_seen, delivered_at, deleted_at, gone_since, note
		FROM message WHERE account_id = ? ORDER BY uidl`, id)
	if err != nil {
		return err
	}
	for rows.Next() {
		var r DumpRecord
		var first int64
		var delivered, deleted, gone sql.NullInt64
		if err := rows.Scan(&r.UIDL, &r.State, &r.Size, &first, &delivered, &deleted, &gone, &r.Note); err != nil {
			rows.Close()
			return err
		}
		r.FirstSeen, r.DeliveredAt, r.DeletedAt, r.GoneSince = time.UnixMicro(first), goTime(delivered), goTime(deleted), goTime(gone)
		d.Records = append(d.Records, r)
	}
	if err := closeRows(rows); err != nil {
		return err
	}
	rows, err = tx.QueryContext(ctx, `SELECT uidl, target, token, confirmed, size, created FROM intent
		WHERE account_id = ? ORDER BY created, uidl, target`, id)
	if err != nil {
		return err
	}
	for rows.Next() {
		var it Intent
		var created int64
		if err := rows.Scan(&it.UIDL, &it.Target, &it.Token, &it.Confirmed, &it.Size, &created); err != nil {
			rows.Close()
			return err
		}
		it.Created = time.UnixMicro(created)
		d.Intents = append(d.Intents, it)
	}
	if err := closeRows(rows); err != nil {
		return err
	}
	rows, err = tx.QueryContext(ctx, `SELECT name, started, finished, on_server, new, delivered, deleted, skipped,
		bytes, err, pending FROM poll WHERE account_id = ? ORDER BY id DESC`, id)
	if err != nil {
		return err
	}
	for rows.Next() {
		p := Poll{Account: d.Account}
		var start int64
		var end sql.NullInt64
		if err := rows.Scan(&p.Name, &start, &end, &p.OnServer, &p.New, &p.Delivered, &p.Deleted,
			&p.Skipped, &p.Bytes, &p.Err, &p.Pending); err != nil {
			rows.Close()
			return err
		}
		p.Start, p.End = time.UnixMicro(start), goTime(end)
		d.Polls = append(d.Polls, p)
	}
	return closeRows(rows)
}

// closeRows closes rows and returns the error that ended the iteration,
// if any.
func closeRows(rows *sql.Rows) error {
	err := rows.Err()
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	return err
}
