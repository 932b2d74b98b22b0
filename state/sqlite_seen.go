package state

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"
	"unsafe"
)

// reconcileChunk is how many UIDLs one statement of Reconcile binds; well
// below SQLite's limit of 32766 parameters per statement.
const reconcileChunk = 500

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
	err = s.withAccount(ctx, a, false, func(tx *sql.Tx, id int64) error {
		text, err := recordsText(ctx, tx, id)
		seen.id, seen.text = id, text
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
