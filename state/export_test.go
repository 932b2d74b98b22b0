package state

import (
	"context"
	"database/sql"
)

// Hooks for the external tests and benchmarks of this package.

// SchemaVersion is the schema version this build writes.
var SchemaVersion = len(schemaMigrations)

// OpenSQLiteSync opens with PRAGMA synchronous set to sync ("FULL", "NORMAL").
func OpenSQLiteSync(ctx context.Context, path, sync string) (*SQLite, error) {
	return openSQLite(ctx, path, sqliteOptions{synchronous: sync})
}

// OpenSQLiteMigrations opens with extra migrations after the real ones.
func OpenSQLiteMigrations(ctx context.Context, path string, extra ...func(context.Context, *sql.Tx) error) (*SQLite, error) {
	ms := append([]migration(nil), schemaMigrations...)
	for _, m := range extra {
		ms = append(ms, m)
	}
	return openSQLite(ctx, path, sqliteOptions{migrations: ms})
}

// DBOf exposes the database handle.
func DBOf(s *SQLite) *sql.DB { return s.db }

// LockFileName is the lock file name of a canonical account.
var LockFileName = lockFileName

// OpenSQLiteBusy opens with a busy timeout of ms milliseconds.
func OpenSQLiteBusy(ctx context.Context, path string, ms int) (*SQLite, error) {
	return openSQLite(ctx, path, sqliteOptions{busyTimeout: ms})
}

// OpenSQLiteSchema opens with only the first n migrations: a state file as
// an older popsync made it.
func OpenSQLiteSchema(ctx context.Context, path string, n int) (*SQLite, error) {
	return openSQLite(ctx, path, sqliteOptions{migrations: schemaMigrations[:n]})
}
