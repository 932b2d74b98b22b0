package state_test

import (
	"testing"
	"time"

	"popsync/state"
)

func TestMarkImportedIsAUnion(t *testing.T) {
	s := open(t, tempPath(t))
	ctx := t.Context()
	old := t0.Add(-48 * time.Hour)
	if err := s.MarkDelivered(ctx, acct, []state.Record{{UIDL: "d", State: state.Delivered, DeliveredAt: t0}}); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkSkipped(ctx, acct, []state.Record{{UIDL: "s", Note: "too big"}}); err != nil {
		t.Fatal(err)
	}
	recs := []state.Record{{UIDL: "d"}, {UIDL: "s"}, {UIDL: "a", DeliveredAt: old}, {UIDL: "b", State: state.Imported, Note: "by mpop"}}
	added, err := s.MarkImported(ctx, acct, recs)
	if err != nil {
		t.Fatal(err)
	}
	if added != 3 {
		t.Errorf("first import added %d, want 3 (a, b, and s upgraded)", added)
	}
	again, err := s.MarkImported(ctx, acct, recs)
	if err != nil || again != 0 {
		t.Errorf("second import added %d, %v; want 0, nil", again, err)
	}
	m, err := s.Known(ctx, acct, []string{"a", "b", "d", "s"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]state.MsgState{"a": state.Imported, "b": state.Imported, "d": state.Delivered, "s": state.Imported}
	for u, st := range want {
		if m[u].State != st {
			t.Errorf("%s: state %v, want %v", u, m[u].State, st)
		}
	}
	if !m["a"].DeliveredAt.Equal(old) || !m["a"].FirstSeen.Equal(old) {
		t.Errorf("a: delivered %v first seen %v, want the old tool's time %v", m["a"].DeliveredAt, m["a"].FirstSeen, old)
	}
	if !m["d"].DeliveredAt.Equal(t0) {
		t.Errorf("d: delivered %v, want %v (untouched)", m["d"].DeliveredAt, t0)
	}
	if m["b"].Note != "by mpop" || m["b"].DeliveredAt.IsZero() {
		t.Errorf("b: %+v", m["b"])
	}
	if state.Imported.String() != "imported" {
		t.Errorf("Imported.String() = %q", state.Imported.String())
	}
}

func TestMarkImportedRejects(t *testing.T) {
	s := open(t, tempPath(t))
	for _, r := range []state.Record{{UIDL: ""}, {UIDL: "x", State: state.Delivered}} {
		if _, err := s.MarkImported(t.Context(), acct, []state.Record{r}); err == nil {
			t.Errorf("MarkImported(%+v) succeeded", r)
		}
	}
}

// A state file of schema 1 (before Imported existed) keeps its records and
// takes Imported ones after the migration.
func TestMigrationToImported(t *testing.T) {
	path := tempPath(t)
	s, err := state.OpenSQLiteMigrations(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	rawExec(t, path, "PRAGMA user_version = 1")
	rawExec(t, path, "DROP TABLE message")
	rawExec(t, path, `CREATE TABLE message (account_id INTEGER NOT NULL REFERENCES account (id), uidl TEXT NOT NULL,
		state INTEGER NOT NULL CHECK (state IN (1, 2, 3)), size INTEGER NOT NULL, first_seen INTEGER NOT NULL,
		delivered_at INTEGER, deleted_at INTEGER, gone_since INTEGER, note TEXT NOT NULL DEFAULT '',
		PRIMARY KEY (account_id, uidl)) WITHOUT ROWID`)
	rawExec(t, path, "CREATE INDEX message_gone ON message (account_id, gone_since) WHERE gone_since IS NOT NULL")
	rawExec(t, path, "INSERT INTO account (id, host, port, username) VALUES (1, 'pop.example.net', 995, 'me@example.net')")
	rawExec(t, path, "INSERT INTO message (account_id, uidl, state, size, first_seen, delivered_at) VALUES (1, 'old', 1, 10, 5, 6)")
	s = open(t, path)
	if _, err := s.MarkImported(t.Context(), acct, []state.Record{{UIDL: "new"}}); err != nil {
		t.Fatal(err)
	}
	m, err := s.Known(t.Context(), acct, []string{"old", "new"})
	if err != nil {
		t.Fatal(err)
	}
	if m["old"].State != state.Delivered || m["old"].Size != 10 || m["new"].State != state.Imported {
		t.Errorf("after migration: %+v", m)
	}
}
