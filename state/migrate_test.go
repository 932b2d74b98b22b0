package state_test

import (
	"path/filepath"
	"testing"
	"time"

	"popsync/state"
)

// TestMigrateIntentTargets: a state file of schema 1, whose intents name
// targets by their index in the config and mark confirmed deliveries with
// the token "=confirmed", opens with its intents and records intact: an
// index becomes a LegacyTarget, the quarantine's 1000 the
// QuarantineTarget, the token a Confirmed flag; and the message table
// takes a record state schema 1 did not know.
func TestMigrateIntentTargets(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "state.db")
	old, err := state.OpenSQLiteSchema(ctx, path, 1)
	if err != nil {
		t.Fatal(err)
	}
	db := state.DBOf(old)
	c := acct.Canonical()
	us := t0.UnixMicro()
	for _, q := range []string{
		`INSERT INTO account (id, host, port, username) VALUES (1, '` + c.Host + `', 995, '` + c.User + `')`,
		`INSERT INTO message (account_id, uidl, state, size, first_seen, delivered_at, note) VALUES (1, 'done', 1, 42, ?1, ?1, '')`,
		`INSERT INTO message (account_id, uidl, state, size, first_seen, note) VALUES (1, 'big', 3, 99, ?1, 'size 99 over max_size 10')`,
		`INSERT INTO intent (account_id, uidl, target, token, size, created) VALUES (1, 'm1', 0, '1740830400.M1P2Q3.host', 10, ?1)`,
		`INSERT INTO intent (account_id, uidl, target, token, size, created) VALUES (1, 'm1', 2, '=confirmed', 10, ?1)`,
		`INSERT INTO intent (account_id, uidl, target, token, size, created) VALUES (1, 'q1', 1000, '1740830401.M1P2Q4.host', 20, ?1 + 1)`,
	} {
		if _, err := db.ExecContext(ctx, q, us); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := state.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatalf("opening a schema 1 file: %v", err)
	}
	defer s.Close()
	var v int
	if err := state.DBOf(s).QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != state.SchemaVersion {
		t.Fatalf("user_version = %d, %v; want %d", v, err, state.SchemaVersion)
	}
	got, err := s.Intents(ctx, acct)
	if err != nil {
		t.Fatal(err)
	}
	want := []state.Intent{
		{UIDL: "m1", Target: state.LegacyTarget(0), Token: "1740830400.M1P2Q3.host", Size: 10, Created: t0},
		{UIDL: "m1", Target: state.LegacyTarget(2), Confirmed: true, Size: 10, Created: t0},
		{UIDL: "q1", Target: state.QuarantineTarget, Token: "1740830401.M1P2Q4.host", Size: 20, Created: t0.Add(time.Microsecond)},
	}
	if len(got) != len(want) {
		t.Fatalf("intents after migration:\n got %+v\nwant %+v", got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.UIDL != w.UIDL || g.Target != w.Target || g.Token != w.Token || g.Confirmed != w.Confirmed ||
			g.Size != w.Size || !g.Created.Equal(w.Created) {
			t.Errorf("intent %d after migration:\n got %+v\nwant %+v", i, g, w)
		}
	}
	m, err := state.Known(ctx, s, acct, []string{"done", "big"})
	if err != nil {
		t.Fatal(err)
	}
	if r := m["done"]; r.State != state.Delivered || r.Size != 42 || !r.DeliveredAt.Equal(t0) {
		t.Errorf("delivered record after migration: %+v", r)
	}
	if r := m["big"]; r.State != state.Skipped || r.Note != "size 99 over max_size 10" {
		t.Errorf("skipped record after migration: %+v", r)
	}
	// The gone index survived the table rebuild: pruning still works.
	if _, err := state.Reconcile(ctx, s, acct, []string{"big"}, t0, time.Hour); err != nil {
		t.Fatal(err)
	}
	if m, err := state.Reconcile(ctx, s, acct, []string{"big"}, t0.Add(2*time.Hour), time.Hour); err != nil || len(m) != 1 {
		t.Errorf("after the grace: %v, %v; want only big", m, err)
	}
	// A record state added later needs no rebuild of the table.
	if _, err := state.DBOf(s).ExecContext(ctx,
		`INSERT INTO message (account_id, uidl, state, size, first_seen) VALUES (1, 'later', 4, 1, 1)`); err != nil {
		t.Errorf("a fourth record state: %v", err)
	}
	if _, err := state.DBOf(s).ExecContext(ctx,
		`INSERT INTO message (account_id, uidl, state, size, first_seen) VALUES (1, 'zero', 0, 1, 1)`); err == nil {
		t.Error("state 0 was stored")
	}
}
