package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"popsync/state"
)

// schemaFiles is the schema history: schema/NNNN_name.sql brings the
// schema from version NNNN-1 to NNNN. Append only: a released file is
// never edited.
//
//go:embed schema/*.sql
var schemaFiles embed.FS

// migrationLockKey is the advisory lock (pg_advisory_xact_lock) that makes
// daemons starting together upgrade one at a time. It spells "pops".
const migrationLockKey = 0x706f7073

// A migration is one schema file.
type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads the embedded schema files in order and checks that
// they number 1, 2, 3, ... without gaps.
func loadMigrations() ([]migration, error) {
	names, err := fs.Glob(schemaFiles, "schema/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for i, name := range names { // fs.Glob sorts
		base := path.Base(name)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v != i+1 {
			return nil, fmt.Errorf("schema file %s: want version %d first in its name", base, i+1)
		}
		b, err := schemaFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: base, sql: string(b)})
	}
	return ms, nil
}

// migrate brings the schema up to the last of migrations in one
// transaction, under a transaction-scoped advisory lock: a second daemon
// starting at the same moment waits, then finds the schema current. The
// version lives in popsync_schema, one row.
func migrate(ctx context.Context, pool *pgxpool.Pool, where string, migrations []migration) error {
	fail := func(doing string, err error) error {
		return fmt.Errorf("%s state database %s: %w", doing, where, classify(err))
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fail("opening", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLockKey)); err != nil {
		return fail("locking the schema of", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS popsync_schema (
		one      boolean PRIMARY KEY DEFAULT true CHECK (one),
		version  integer NOT NULL,
		upgraded timestamptz NOT NULL DEFAULT now()
	)`); err != nil {
		return fail("creating the schema version table of", err)
	}
	version := 0
	err = tx.QueryRow(ctx, `SELECT version FROM popsync_schema`).Scan(&version)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fail("reading the schema version of", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("state database %s is schema %d, this popsync knows up to %d; upgrade popsync: %w",
			where, version, len(migrations), state.ErrNewerSchema)
	}
	if version == len(migrations) {
		return nil
	}
	for _, m := range migrations[version:] {
		// Without arguments pgx sends the file as one simple query:
		// several statements, one round trip.
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return fmt.Errorf("upgrading state database %s to schema %d (%s): %w", where, m.version, m.name, classify(err))
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO popsync_schema (version) VALUES ($1)
		ON CONFLICT (one) DO UPDATE SET version = excluded.version, upgraded = now()`, len(migrations)); err != nil {
		return fail("recording the schema version of", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fail("upgrading", err)
	}
	return nil
}

// SchemaVersion returns the schema version of the database.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	if err := s.pool.QueryRow(ctx, `SELECT version FROM popsync_schema`).Scan(&v); err != nil {
		return 0, fmt.Errorf("reading the schema version of %s: %w", s.where, s.fail(ctx, err))
	}
	return v, nil
}
