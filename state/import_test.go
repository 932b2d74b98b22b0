package state_test

import (
	"testing"

	"popsync/state"
)

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
	m, err := state.Known(t.Context(), s, acct, []string{"old", "new"})
	if err != nil {
		t.Fatal(err)
	}
	if m["old"].State != state.Delivered || m["old"].Size != 10 || m["new"].State != state.Imported {
		t.Errorf("after migration: %+v", m)
	}
}
