package state

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unsafe"
)

// reconcileChunk is how many UIDLs one statement of Reconcile binds; well
// below SQLite's limit of 32766 parameters per statement.
const reconcileChunk = 500

func dbTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

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

// sqliteSeen is the SeenSet of ReadSeen.
type sqliteSeen struct {
	s    *SQLite
	a    Account
	id   int64  // the account's row id; 0 when it has no records
	text []byte // the records, as recordsQuery gives them; never modified
	// recs are the records decoded, index maps each UIDL (a string over
	// text) to its record's place in recs.
	recs  []seenRec
	notes []string
	index map[string]int32
}

// seenRec is a Record in 48 octets: its UIDL stays in sqliteSeen.text.
type seenRec struct {
	size, first        int64
	delivered, deleted int64 // noTime when NULL
	uoff, ulen         int32 // the UIDL in sqliteSeen.text
	note               int32 // index into sqliteSeen.notes; -1 for none
	state              uint8
	gone               bool
}

// noTime marks a NULL time in seenRec.
const noTime = math.MinInt64

func unixTime(us int64) time.Time {
	if us == noTime {
		return time.Time{}
	}
	return time.UnixMicro(us)
}

// ReadSeen implements Store. The records are read in one statement (see
// recordsQuery), decoded into 48 octets each and indexed by UIDL; the
// UIDLs stay in the statement's text.
func (s *SQLite) ReadSeen(ctx context.Context, a Account) (SeenSet, error) {
	a, err := CanonicalAccount(a)
	if err != nil {
		return nil, fmt.Errorf("reading seen-set: %w", err)
	}
	seen := &sqliteSeen{s: s, a: a}
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		id, err := accountID(ctx, tx, a, false)
		if err != nil || id == 0 {
			return err
		}
		seen.id = id
		seen.text, err = recordsText(ctx, tx, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reading seen-set of %s: %w", a, err)
	}
	if len(seen.text) > math.MaxInt32 {
		return nil, fmt.Errorf("reading seen-set of %s: %d octets of records, too many", a, len(seen.text))
	}
	n := bytes.Count(seen.text, []byte{'\n'}) + 1
	seen.index = make(map[string]int32, n)
	seen.recs = make([]seenRec, 0, n)
	t := seen.text
	for len(t) > 0 {
		uidl, r, gone, rest, err := parseRecord(t)
		if err != nil {
			return nil, fmt.Errorf("reading seen-set of %s: %w", a, err)
		}
		sr := seenRec{size: r.Size, first: r.FirstSeen.UnixMicro(), delivered: noTime, deleted: noTime,
			uoff: int32(cap(seen.text) - cap(uidl)), ulen: int32(len(uidl)), note: -1,
			state: uint8(r.State), gone: gone}
		if !r.DeliveredAt.IsZero() {
			sr.delivered = r.DeliveredAt.UnixMicro()
		}
		if !r.DeletedAt.IsZero() {
			sr.deleted = r.DeletedAt.UnixMicro()
		}
		if r.Note != "" {
			sr.note = int32(len(seen.notes))
			seen.notes = append(seen.notes, r.Note)
		}
		// The UIDL is unique per account (primary key); the text is
		// never modified, so the key can share its memory.
		seen.index[unsafe.String(&uidl[0], len(uidl))] = int32(len(seen.recs))
		seen.recs = append(seen.recs, sr)
		t = rest
	}
	return seen, nil
}

// Account implements SeenSet.
func (seen *sqliteSeen) Account() Account { return seen.a }

// record returns the record at k with its UIDL u.
func (seen *sqliteSeen) record(k int32, u string) Record {
	sr := &seen.recs[k]
	r := Record{UIDL: u, State: MsgState(sr.state), Size: sr.size, FirstSeen: time.UnixMicro(sr.first),
		DeliveredAt: unixTime(sr.delivered), DeletedAt: unixTime(sr.deleted)}
	if sr.note >= 0 {
		r.Note = seen.notes[sr.note]
	}
	return r
}

// Lookup implements SeenSet.
func (seen *sqliteSeen) Lookup(uidls []string) []Record {
	recs := make([]Record, len(uidls))
	for i, u := range uidls {
		if k, ok := seen.index[u]; ok {
			recs[i] = seen.record(k, u)
		}
	}
	return recs
}

// Reconcile implements SeenSet: it compares the records with the server's
// list in memory; only records whose "gone" mark changes are written, by
// batched UPDATE ... IN statements, and the prune is one DELETE on a
// partial index.
func (seen *sqliteSeen) Reconcile(ctx context.Context, uidls []string, now time.Time, grace time.Duration) ([]Record, error) {
	a := seen.a
	if err := CheckReconcile(a, uidls, now, grace); err != nil {
		return nil, err
	}
	recs := make([]Record, len(uidls))
	if seen.id == 0 {
		return recs, nil
	}
	listed := make([]bool, len(seen.recs))
	var gone, back []string
	for i, u := range uidls {
		k, ok := seen.index[u]
		if !ok {
			continue
		}
		if seen.recs[k].gone && !listed[k] {
			back = append(back, u)
		}
		listed[k] = true
		recs[i] = seen.record(k, u)
	}
	for k, l := range listed {
		if sr := &seen.recs[k]; !l && !sr.gone {
			gone = append(gone, string(seen.text[sr.uoff:sr.uoff+sr.ulen]))
		}
	}
	id := seen.id
	err := seen.s.withTx(ctx, func(tx *sql.Tx) error {
		if err := setGone(ctx, tx, id, gone, now.UnixMicro()); err != nil {
			return fmt.Errorf("marking gone UIDLs: %w", err)
		}
		if err := setGone(ctx, tx, id, back, nil); err != nil {
			return fmt.Errorf("marking returned UIDLs: %w", err)
		}
		if _, err := tx.ExecContext(ctx,
			`DELETE FROM message WHERE account_id = ? AND gone_since < ?`,
			id, now.Add(-grace).UnixMicro()); err != nil {
			return fmt.Errorf("pruning gone UIDLs: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reconciling %s: %w", a, err)
	}
	return recs, nil
}

// recordsQuery returns every record of account ?1 as one text, a line
// per record: "gone state size first_seen delivered_at deleted_at ulen
// nlen UIDLnote", with an empty field for NULL, and ulen and nlen the
// octet lengths of the UIDL and the note that follow, which may hold any
// character. One text rather than a row of 8 columns per record saves
// most of the CPU time of reading 100,000 records, which goes to per-row
// and per-column work in the driver and in database/sql; a blob is
// handed over with one copy. (Cutting the text into chunks with ORDER BY
// ... LIMIT costs more than the one large text saves in memory.)
const recordsQuery = `SELECT CAST(group_concat(printf('%d %d %d %d %s %s %d %d %s%s',
	gone_since IS NOT NULL, state, size, first_seen, ifnull(delivered_at, ''), ifnull(deleted_at, ''),
	octet_length(uidl), octet_length(note), uidl, note), char(10)) AS BLOB)
	FROM message WHERE account_id = ?`

// recordsText returns the text of recordsQuery for the account with row
// id id.
func recordsText(ctx context.Context, tx *sql.Tx, id int64) ([]byte, error) {
	rows, err := tx.QueryContext(ctx, recordsQuery, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, errors.Join(rows.Err(), errors.New("no result"))
	}
	var text []byte
	if err := rows.Scan(&text); err != nil {
		return nil, err
	}
	return text, rows.Close()
}

var errMalformed = fmt.Errorf("%w: malformed record", ErrCorrupt)

// parseRecord parses the first record of a text of recordsQuery and
// returns the rest of the text after it.
func parseRecord(t []byte) (uidl []byte, r Record, gone bool, rest []byte, err error) {
	bad := errMalformed
	var f [8]int64
	var null [8]bool
	for i := range f {
		k := bytes.IndexByte(t, ' ')
		if k < 0 {
			return nil, r, false, nil, bad
		}
		if k == 0 {
			null[i] = true
		} else {
			v, ok := parseInt(t[:k])
			if !ok {
				return nil, r, false, nil, bad
			}
			f[i] = v
		}
		t = t[k+1:]
	}
	ulen, nlen := int(f[6]), int(f[7])
	if ulen <= 0 || nlen < 0 || ulen+nlen > len(t) {
		return nil, r, false, nil, bad
	}
	r = Record{State: MsgState(f[1]), Size: f[2], FirstSeen: time.UnixMicro(f[3])}
	if nlen > 0 {
		r.Note = string(t[ulen : ulen+nlen])
	}
	if !null[4] {
		r.DeliveredAt = time.UnixMicro(f[4])
	}
	if !null[5] {
		r.DeletedAt = time.UnixMicro(f[5])
	}
	uidl = t[:ulen]
	t = t[ulen+nlen:]
	if len(t) > 0 {
		if t[0] != '\n' {
			return nil, r, false, nil, bad
		}
		t = t[1:]
	}
	return uidl, r, f[0] != 0, t, nil
}

// parseInt parses a decimal integer as SQLite prints it.
func parseInt(b []byte) (int64, bool) {
	neg := false
	if len(b) > 0 && b[0] == '-' {
		neg, b = true, b[1:]
	}
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	if neg {
		v = -v
	}
	return v, true
}

// setGone sets gone_since of the given UIDLs, many per statement.
func setGone(ctx context.Context, tx *sql.Tx, id int64, uidls []string, since any) error {
	return execRows(ctx, tx, len(uidls), reconcileChunk, func(n int) string {
		return "UPDATE message SET gone_since = ? WHERE account_id = ? AND uidl IN (" + placeholders(n) + ")"
	}, func(args []any, i int) []any {
		if i%reconcileChunk == 0 {
			args = append(args, since, id)
		}
		return append(args, uidls[i])
	})
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

// AddIntents implements Store.
func (s *SQLite) AddIntents(ctx context.Context, a Account, in []Intent) error {
	a, in, err := PrepareIntents(a, in, time.Now())
	if err != nil {
		return err
	}
	if len(in) == 0 {
		return nil
	}
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		id, err := accountID(ctx, tx, a, true)
		if err != nil {
			return err
		}
		return execRows(ctx, tx, len(in), rowsPerStatement, func(n int) string {
			return `INSERT INTO intent (account_id, uidl, target, token, size, created) VALUES ` +
				valueRows(n, 6) + `
			ON CONFLICT (account_id, uidl, target) DO UPDATE SET
				token = excluded.token, size = excluded.size, created = excluded.created`
		}, func(args []any, i int) []any {
			it := in[i]
			return append(args, id, it.UIDL, it.Target, it.Token, it.Size, it.Created.UnixMicro())
		})
	})
	if err != nil {
		return fmt.Errorf("adding intents for %s: %w", a, err)
	}
	return nil
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
		`SELECT i.uidl, i.target, i.token, i.size, i.created
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
		if err := rows.Scan(&it.UIDL, &it.Target, &it.Token, &it.Size, &created); err != nil {
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
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		id, err := accountID(ctx, tx, a, false)
		if err != nil || id == 0 {
			return err
		}
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

// MarkDelivered implements Store.
func (s *SQLite) MarkDelivered(ctx context.Context, a Account, recs []Record) error {
	a, recs, err := PrepareDelivered(a, recs, time.Now())
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		id, err := accountID(ctx, tx, a, true)
		if err != nil {
			return err
		}
		err = execRows(ctx, tx, len(recs), rowsPerStatement, func(n int) string {
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
	})
	if err != nil {
		return fmt.Errorf("marking delivered for %s: %w", a, err)
	}
	return nil
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
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		id, err := accountID(ctx, tx, a, true)
		if err != nil {
			return err
		}
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
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		id, err := accountID(ctx, tx, a, false)
		if err != nil || id == 0 {
			return err
		}
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

// RecordPoll implements Store.
func (s *SQLite) RecordPoll(ctx context.Context, p Poll) error {
	p, err := PreparePoll(p)
	if err != nil {
		return err
	}
	a := p.Account
	start := p.Start.UnixMicro()
	ok := p.Err == ""
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		id, err := accountID(ctx, tx, a, true)
		if err != nil {
			return err
		}
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
