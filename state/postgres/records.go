package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"popsync/state"
)

// Rows go to the server as arrays, one statement for a whole batch
// (INSERT ... SELECT FROM unnest(...)). One statement cannot upsert the
// same key twice, so a slice that names a key more than once is folded
// first, the way applying it row by row (as the SQLite store does) would
// end.

// AddIntents implements state.Store.
func (s *Store) AddIntents(ctx context.Context, a state.Account, in []state.Intent) error {
	a, in, err := state.PrepareIntents(a, in, time.Now())
	if err != nil {
		return err
	}
	if err := checkText(a); err != nil {
		return fmt.Errorf("adding intents: %w", err)
	}
	if len(in) == 0 {
		return nil
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	id, err := s.accountID(ctx, a, true)
	if err != nil {
		return fmt.Errorf("adding intents for %s: %w", a, err)
	}
	err = s.write(ctx, id, func(b *pgx.Batch) { queueIntents(b, id, in) })
	if err != nil {
		return fmt.Errorf("adding intents for %s: %w", a, err)
	}
	return nil
}

// queueIntents queues the upsert of in, checked by state.PrepareIntents:
// of intents with the same UIDL and target, the last one counts.
func queueIntents(b *pgx.Batch, id int64, in []state.Intent) {
	type key struct{ uidl, target string }
	last := make(map[key]int, len(in))
	for i, it := range in {
		last[key{it.UIDL, it.Target}] = i
	}
	var (
		uidls, tokens [][]byte
		targets       []string
		confirmed     []bool
		sizes         []int64
		created       []time.Time
	)
	for i, it := range in {
		if last[key{it.UIDL, it.Target}] != i {
			continue
		}
		uidls = append(uidls, []byte(it.UIDL))
		targets = append(targets, pgText(it.Target))
		tokens = append(tokens, []byte(it.Token))
		confirmed = append(confirmed, it.Confirmed)
		sizes = append(sizes, it.Size)
		created = append(created, it.Created)
	}
	b.Queue(`INSERT INTO intent (account_id, uidl, target, token, confirmed, size, created)
		SELECT $1::bigint, * FROM unnest($2::bytea[], $3::text[], $4::bytea[], $5::boolean[], $6::bigint[], $7::timestamptz[])
		ON CONFLICT (account_id, uidl, target) DO UPDATE SET
			token = excluded.token, confirmed = excluded.confirmed, size = excluded.size, created = excluded.created`,
		id, uidls, targets, tokens, confirmed, sizes, created)
}

// Intents implements state.Store.
func (s *Store) Intents(ctx context.Context, a state.Account) ([]state.Intent, error) {
	a, err := canonical(a)
	if err != nil {
		return nil, fmt.Errorf("listing intents: %w", err)
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	id, err := s.accountID(ctx, a, false)
	if err != nil {
		return nil, fmt.Errorf("listing intents of %s: %w", a, err)
	}
	if id == 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT uidl, target, token, confirmed, size, created FROM intent
		WHERE account_id = $1 ORDER BY created, uidl, target COLLATE "C"`, id)
	if err != nil {
		return nil, fmt.Errorf("listing intents of %s: %w", a, s.fail(ctx, err))
	}
	defer rows.Close()
	var out []state.Intent
	for rows.Next() {
		var it state.Intent
		var uidl, token []byte
		if err := rows.Scan(&uidl, &it.Target, &token, &it.Confirmed, &it.Size, &it.Created); err != nil {
			return nil, fmt.Errorf("listing intents of %s: %w", a, s.fail(ctx, err))
		}
		it.UIDL, it.Token = string(uidl), string(token)
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing intents of %s: %w", a, s.fail(ctx, err))
	}
	return out, nil
}

// DropIntents implements state.Store.
func (s *Store) DropIntents(ctx context.Context, a state.Account, uidls []string) error {
	a, err := canonical(a)
	if err != nil {
		return fmt.Errorf("dropping intents: %w", err)
	}
	if len(uidls) == 0 {
		return nil
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	id, err := s.accountID(ctx, a, false)
	if err != nil || id == 0 {
		if err != nil {
			return fmt.Errorf("dropping intents of %s: %w", a, err)
		}
		return nil
	}
	err = s.write(ctx, id, func(b *pgx.Batch) {
		b.Queue(`DELETE FROM intent WHERE account_id = $1 AND uidl = ANY($2::bytea[])`, id, byteSlices(uidls))
	})
	if err != nil {
		return fmt.Errorf("dropping intents of %s: %w", a, err)
	}
	return nil
}

// foldRecords folds records of the same UIDL into one, as upserting them
// one after the other would: the last one's fields, the earliest
// FirstSeen, the last DeletedAt set.
func foldRecords(recs []state.Record) []state.Record {
	at := make(map[string]int, len(recs))
	out := make([]state.Record, 0, len(recs))
	for _, r := range recs {
		k, ok := at[r.UIDL]
		if !ok {
			at[r.UIDL] = len(out)
			out = append(out, r)
			continue
		}
		prev := out[k]
		if !prev.FirstSeen.IsZero() && (r.FirstSeen.IsZero() || prev.FirstSeen.Before(r.FirstSeen)) {
			r.FirstSeen = prev.FirstSeen
		}
		if r.DeletedAt.IsZero() {
			r.DeletedAt = prev.DeletedAt
		}
		out[k] = r
	}
	return out
}

// recordColumns are records as the column arrays of an unnest(...)
// upsert, in the order given.
type recordColumns struct {
	uidls            [][]byte
	states           []int16
	sizes            []int64
	first, delivered []time.Time
	deleted          []pgtype.Timestamptz
	notes            []string
}

func columnsOf(recs []state.Record) recordColumns {
	n := len(recs)
	c := recordColumns{uidls: make([][]byte, n), states: make([]int16, n), sizes: make([]int64, n),
		first: make([]time.Time, n), delivered: make([]time.Time, n), deleted: make([]pgtype.Timestamptz, n),
		notes: make([]string, n)}
	for i, r := range recs {
		c.uidls[i], c.states[i], c.sizes[i] = []byte(r.UIDL), int16(r.State), r.Size
		c.first[i], c.delivered[i], c.deleted[i], c.notes[i] = r.FirstSeen, r.DeliveredAt, pgTime(r.DeletedAt), pgText(r.Note)
	}
	return c
}

// writeRecords is what every record upsert shares: the account's text
// checked, its row found or made, and queue's statements run in one
// fenced transaction with recs as columns. doing names the operation in
// errors ("marking delivered"). recs were checked by the state.Prepare
// function of the operation; none is nothing to do.
func (s *Store) writeRecords(ctx context.Context, a state.Account, recs []state.Record, doing string,
	queue func(b *pgx.Batch, id int64, c recordColumns)) error {
	if err := checkText(a); err != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	if len(recs) == 0 {
		return nil
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	id, err := s.accountID(ctx, a, true)
	if err != nil {
		return fmt.Errorf("%s for %s: %w", doing, a, err)
	}
	c := columnsOf(recs)
	if err := s.write(ctx, id, func(b *pgx.Batch) { queue(b, id, c) }); err != nil {
		return fmt.Errorf("%s for %s: %w", doing, a, err)
	}
	return nil
}

// MarkDelivered implements state.Store: the upsert and the removal of
// the intents in one fenced transaction.
func (s *Store) MarkDelivered(ctx context.Context, a state.Account, recs []state.Record) error {
	a, recs, err := state.PrepareDelivered(a, recs, time.Now())
	if err != nil {
		return err
	}
	return s.writeRecords(ctx, a, foldRecords(recs), "marking delivered", queueDelivered)
}

// queueDelivered queues MarkDelivered's statements for c.
func queueDelivered(b *pgx.Batch, id int64, c recordColumns) {
	b.Queue(`INSERT INTO message AS m (account_id, uidl, state, size, first_seen, delivered_at, deleted_at, note)
		SELECT $1::bigint, * FROM unnest($2::bytea[], $3::smallint[], $4::bigint[], $5::timestamptz[], $6::timestamptz[],
			$7::timestamptz[], $8::text[])
		ON CONFLICT (account_id, uidl) DO UPDATE SET
			state = excluded.state,
			size = excluded.size,
			first_seen = least(m.first_seen, excluded.first_seen),
			delivered_at = excluded.delivered_at,
			deleted_at = coalesce(excluded.deleted_at, m.deleted_at),
			gone_since = NULL,
			note = excluded.note`,
		id, c.uidls, c.states, c.sizes, c.first, c.delivered, c.deleted, c.notes)
	b.Queue(`DELETE FROM intent WHERE account_id = $1 AND uidl = ANY($2::bytea[])`, id, c.uidls)
}

// MarkDeliveredAddIntents implements state.IntentRecorder: what
// MarkDelivered(recs) and then AddIntents(in) would write, in one fenced
// transaction, so that a batch's records and the next batch's intents
// cost one commit.
func (s *Store) MarkDeliveredAddIntents(ctx context.Context, a state.Account, recs []state.Record, in []state.Intent) error {
	now := time.Now()
	a, recs, err := state.PrepareDelivered(a, recs, now)
	if err != nil {
		return err
	}
	a, in, err = state.PrepareIntents(a, in, now)
	if err != nil {
		return err
	}
	if err := checkText(a); err != nil {
		return fmt.Errorf("marking delivered and adding intents: %w", err)
	}
	recs = foldRecords(recs)
	if len(recs) == 0 && len(in) == 0 {
		return nil
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	id, err := s.accountID(ctx, a, true)
	if err == nil {
		err = s.write(ctx, id, func(b *pgx.Batch) {
			if len(recs) > 0 {
				queueDelivered(b, id, columnsOf(recs))
			}
			if len(in) > 0 {
				queueIntents(b, id, in)
			}
		})
	}
	if err != nil {
		return fmt.Errorf("marking delivered and adding intents for %s: %w", a, err)
	}
	return nil
}

// MarkSkipped implements state.Store.
func (s *Store) MarkSkipped(ctx context.Context, a state.Account, recs []state.Record) error {
	a, recs, err := state.PrepareSkipped(a, recs, time.Now())
	if err != nil {
		return err
	}
	return s.writeRecords(ctx, a, foldRecords(recs), "marking skipped", func(b *pgx.Batch, id int64, c recordColumns) {
		// The WHERE of the upsert keeps delivered and quarantined
		// records as they are.
		b.Queue(`INSERT INTO message AS m (account_id, uidl, state, size, first_seen, note)
			SELECT $1::bigint, u, $6, sz, f, n FROM unnest($2::bytea[], $3::bigint[], $4::timestamptz[], $5::text[]) AS t (u, sz, f, n)
			ON CONFLICT (account_id, uidl) DO UPDATE SET
				size = excluded.size,
				first_seen = least(m.first_seen, excluded.first_seen),
				gone_since = NULL,
				note = excluded.note
			WHERE m.state = excluded.state`,
			id, c.uidls, c.sizes, c.first, c.notes, int16(state.Skipped))
	})
}

// MarkDeleted implements state.Store.
func (s *Store) MarkDeleted(ctx context.Context, a state.Account, uidls []string, at time.Time) error {
	a, at, err := state.PrepareDeleted(a, at, time.Now())
	if err != nil {
		return err
	}
	if err := checkText(a); err != nil {
		return fmt.Errorf("marking deleted: %w", err)
	}
	if len(uidls) == 0 {
		return nil
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	id, err := s.accountID(ctx, a, false)
	if err != nil {
		return fmt.Errorf("marking deleted for %s: %w", a, err)
	}
	if id == 0 {
		return nil
	}
	err = s.write(ctx, id, func(b *pgx.Batch) {
		b.Queue(`UPDATE message SET deleted_at = $2 WHERE account_id = $1 AND uidl = ANY($3::bytea[])`, id, at, byteSlices(uidls))
	})
	if err != nil {
		return fmt.Errorf("marking deleted for %s: %w", a, err)
	}
	return nil
}

// RecordPoll implements state.Store: the poll, the pruning of old polls
// and the account summary in one transaction. It is not fenced: a poll
// that lost its lease still has its outcome recorded.
func (s *Store) RecordPoll(ctx context.Context, p state.Poll) error {
	p, err := state.PreparePoll(p)
	if err != nil {
		return err
	}
	a := p.Account
	if err := checkText(a); err != nil {
		return fmt.Errorf("recording poll %q: %w", p.Name, err)
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	id, err := s.accountID(ctx, a, true)
	if err != nil {
		return fmt.Errorf("recording poll of %s: %w", a, err)
	}
	b := &pgx.Batch{}
	queuePoll(b, id, p)
	if err := s.fail(ctx, s.pool.SendBatch(ctx, b).Close()); err != nil {
		return fmt.Errorf("recording poll of %s: %w", a, err)
	}
	return nil
}

// queuePoll queues the statements of RecordPoll for poll p of the
// account with row id id: the poll, the pruning of old polls, the
// summary.
func queuePoll(b *pgx.Batch, id int64, p state.Poll) {
	name, perr := pgText(p.Name), pgText(p.Err)
	b.Queue(`INSERT INTO poll (account_id, name, started, finished, on_server, new, delivered, deleted, skipped, bytes, err, pending)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		id, name, p.Start, pgTime(p.End), p.OnServer, p.New, p.Delivered, p.Deleted, p.Skipped, p.Bytes, perr, p.Pending)
	b.Queue(`DELETE FROM poll WHERE account_id = $1 AND id <=
		(SELECT id FROM poll WHERE account_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)`, id, state.KeepPolls)
	// The summary only moves forward in time, should polls be recorded
	// out of order. SET expressions see the row as it was.
	b.Queue(`UPDATE account SET
			name = CASE WHEN last_poll IS NULL OR $2 >= last_poll THEN $3 ELSE name END,
			last_ok = CASE WHEN last_poll IS NULL OR $2 >= last_poll THEN $4 ELSE last_ok END,
			pending = CASE WHEN last_poll IS NULL OR $2 >= last_poll THEN $5 ELSE pending END,
			last_poll = CASE WHEN last_poll IS NULL OR $2 >= last_poll THEN $2 ELSE last_poll END,
			last_success = CASE WHEN $4 AND (last_success IS NULL OR $2 >= last_success) THEN $2 ELSE last_success END,
			last_error = CASE WHEN NOT $4 AND (last_error_at IS NULL OR $2 >= last_error_at) THEN $6 ELSE last_error END,
			last_error_at = CASE WHEN NOT $4 AND (last_error_at IS NULL OR $2 >= last_error_at) THEN $2 ELSE last_error_at END
		WHERE id = $1`, id, p.Start, name, p.Err == "", p.Pending, perr)
}

// Polls implements state.Store.
func (s *Store) Polls(ctx context.Context, a state.Account, limit int) ([]state.Poll, error) {
	a, err := canonical(a)
	if err != nil {
		return nil, fmt.Errorf("listing polls: %w", err)
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	id, err := s.accountID(ctx, a, false)
	if err != nil {
		return nil, fmt.Errorf("listing polls of %s: %w", a, err)
	}
	if id == 0 {
		return nil, nil
	}
	var lim *int
	if limit > 0 {
		lim = &limit
	}
	rows, err := s.pool.Query(ctx, `SELECT name, started, finished, on_server, new, delivered, deleted, skipped, bytes, err, pending
		FROM poll WHERE account_id = $1 ORDER BY id DESC LIMIT $2`, id, lim)
	if err != nil {
		return nil, fmt.Errorf("listing polls of %s: %w", a, s.fail(ctx, err))
	}
	defer rows.Close()
	var out []state.Poll
	for rows.Next() {
		p := state.Poll{Account: a}
		var end pgtype.Timestamptz
		if err := rows.Scan(&p.Name, &p.Start, &end, &p.OnServer, &p.New, &p.Delivered, &p.Deleted,
			&p.Skipped, &p.Bytes, &p.Err, &p.Pending); err != nil {
			return nil, fmt.Errorf("listing polls of %s: %w", a, s.fail(ctx, err))
		}
		p.End = goTime(end)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing polls of %s: %w", a, s.fail(ctx, err))
	}
	return out, nil
}

// Status implements state.Store.
func (s *Store) Status(ctx context.Context) ([]state.AccountStatus, error) {
	if s.isClosed() {
		return nil, fmt.Errorf("reading status: %w", state.ErrClosed)
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT a.host, a.port, a.username, a.name, a.last_poll, a.last_ok, a.last_success,
			coalesce(a.last_error, ''), a.last_error_at, a.pending,
			(SELECT count(*) FROM message m WHERE m.account_id = a.id)
		FROM account a WHERE a.last_poll IS NOT NULL
		ORDER BY a.name COLLATE "C", a.host COLLATE "C", a.port, a.username COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("reading status: %w", s.fail(ctx, err))
	}
	defer rows.Close()
	var out []state.AccountStatus
	for rows.Next() {
		var st state.AccountStatus
		var last, lastSuccess, lastErrorAt pgtype.Timestamptz
		if err := rows.Scan(&st.Account.Host, &st.Account.Port, &st.Account.User, &st.Name, &last,
			&st.LastOK, &lastSuccess, &st.LastError, &lastErrorAt, &st.Pending, &st.Seen); err != nil {
			return nil, fmt.Errorf("reading status: %w", s.fail(ctx, err))
		}
		st.LastPoll, st.LastSuccess, st.LastErrorAt = goTime(last), goTime(lastSuccess), goTime(lastErrorAt)
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading status: %w", s.fail(ctx, err))
	}
	return out, nil
}
