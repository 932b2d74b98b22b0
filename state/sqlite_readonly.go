package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
)

// OpenSQLiteReadOnly opens the state file at path for reading only, for
// the commands that must not change anything (status, check, fetch
// --dry-run): it never creates, migrates or stamps the file, creates no
// lock folder or lock file (its leases hold nothing: it writes nothing),
// and every write through it fails. A file that does not exist reads as an
// empty state (an empty database in memory); exists reports whether the
// file exists.
//
// While a writer has the file open, its write-ahead log (<db>-wal) and
// shared-memory index exist and are read along. Without them (no writer
// since the last clean close), or in a folder that cannot be written, the
// file is opened as immutable: a reader of a WAL database would otherwise
// create both files and, read-only, could not remove them. A writer that
// starts during such a read is not seen by it.
func OpenSQLiteReadOnly(ctx context.Context, path string) (s *SQLite, exists bool, err error) {
	if path == "" {
		return nil, false, errors.New("opening state file: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, false, fmt.Errorf("opening state file %s: %w", path, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s, err := openMemory(ctx, abs)
		return s, false, err
	case err != nil:
		return nil, false, fmt.Errorf("opening state file: %w", fileErr(err))
	case fi.IsDir():
		return nil, false, fmt.Errorf("opening state file %s: is a folder", abs)
	}
	q := url.Values{}
	q.Set("mode", "ro")
	q.Set("_query_only", "1")
	q.Set("_busy_timeout", fmt.Sprint(busyTimeoutMS))
	if _, err := os.Lstat(abs + "-wal"); err != nil || dirWritable(filepath.Dir(abs)) != nil {
		q.Set("immutable", "1")
	}
	db, err := sql.Open("sqlite3", fileURI(abs)+"?"+q.Encode())
	if err != nil {
		return nil, true, fmt.Errorf("opening state file %s: %w", abs, err)
	}
	db.SetMaxOpenConns(1)
	s = &SQLite{db: db, path: abs, lockDir: abs + ".locks", locks: map[*accountLock]struct{}{}, readOnly: true}
	// What probe checks before OpenSQLite writes, on this connection:
	// probe's own would create the -wal and -shm files.
	var version, appID int64
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		db.Close()
		return nil, true, openError(abs, "reading", err)
	}
	if err := db.QueryRowContext(ctx, "PRAGMA application_id").Scan(&appID); err != nil {
		db.Close()
		return nil, true, openError(abs, "reading", err)
	}
	switch {
	case appID != sqliteAppID && !(appID == 0 && version == 0):
		db.Close()
		return nil, true, &stateError{
			msg:  fmt.Sprintf("%s is an SQLite database but not a popsync state file (application_id %#x, user_version %d); popsync will not touch it", abs, appID, version),
			kind: ErrCorrupt,
		}
	case version > int64(len(schemaMigrations)):
		db.Close()
		return nil, true, newerSchema(abs, version, len(schemaMigrations))
	}
	if version != int64(len(schemaMigrations)) && version != 0 {
		db.Close()
		return nil, true, &stateError{
			msg:  fmt.Sprintf("state file %s has schema %d, this popsync reads %d: run popsync fetch once to upgrade it", abs, version, len(schemaMigrations)),
			kind: ErrReadOnly,
		}
	}
	if version == 0 {
		// An empty file: no tables yet.
		db.Close()
		s, err := openMemory(ctx, abs)
		return s, true, err
	}
	return s, true, nil
}

// openMemory is an empty state in memory, read-only once its schema is in,
// standing for the state file abs that does not exist (yet).
func openMemory(ctx context.Context, abs string) (*SQLite, error) {
	db, err := sql.Open("sqlite3", ":memory:")
	if err != nil {
		return nil, fmt.Errorf("opening an empty state: %w", err)
	}
	// One connection that lives as long as the Store: :memory: is per
	// connection.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	if err := migrate(ctx, db, abs, schemaMigrations); err != nil {
		db.Close()
		return nil, err
	}
	if _, err := db.ExecContext(ctx, "PRAGMA query_only = 1"); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening an empty state: %w", err)
	}
	return &SQLite{db: db, path: abs, lockDir: abs + ".locks", locks: map[*accountLock]struct{}{}, readOnly: true}, nil
}
