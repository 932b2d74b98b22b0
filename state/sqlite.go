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
	"strings"
	"sync"
	"syscall"

	"github.com/mattn/go-sqlite3"

	"popsync/internal/osfile"
)

// sqliteAppID marks popsync state files in the SQLite header (PRAGMA
// application_id), so popsync never mistakes another program's database for
// its own. It spells "pops".
const sqliteAppID = 0x706f7073

// busyTimeoutMS is how long a writer waits for another process's write
// transaction before giving up with ErrBusy. SQLite's busy wait does not
// notice a canceled context: cancellation takes effect when it ends.
const busyTimeoutMS = 10000

// SQLite is the Store kept in one SQLite file, opened by OpenSQLite.
//
// Files: the database itself (mode 0600 when OpenSQLite creates it), the
// SQLite write-ahead log and shared-memory index next to it (<db>-wal,
// <db>-shm; SQLite creates them with the database file's permission bits and
// OpenSQLite sets them to those bits again after opening, in case an older
// run or another tool left them wider), and the folder <db>.locks (0700)
// holding one flock(2) lock file (0600) per account identity. Lock files are
// never deleted: deleting a locked file would let a second poller lock a new
// file of the same name.
//
// Durability: WAL with synchronous=FULL, so the WAL is fsynced at every
// commit and a committed "delivered" survives power loss before anything is
// deleted from the server.
type SQLite struct {
	db      *sql.DB
	path    string
	lockDir string

	mu     sync.Mutex
	closed bool
	locks  map[*accountLock]struct{}
}

var _ Store = (*SQLite)(nil)

// sqliteOptions are knobs for tests and benchmarks; the zero value is what
// OpenSQLite uses.
type sqliteOptions struct {
	synchronous string      // PRAGMA synchronous; "" means FULL
	busyTimeout int         // milliseconds; 0 means busyTimeoutMS
	migrations  []migration // nil means schemaMigrations
}

// OpenSQLite opens the state file at path, creating it (mode 0600) and its
// parent folders (0700) if needed, and migrates its schema forward.
//
// It refuses, without modifying the file, a file from a newer popsync
// (ErrNewerSchema), a damaged file, a file that is not SQLite or not a
// popsync state file (ErrCorrupt; `PRAGMA quick_check` runs at every open
// unless the file is unchanged since popsync closed it, see stampMatches),
// a file or folder it cannot write (ErrReadOnly), and (ErrUnsafe) a folder
// that group or others can write or another user owns, a state file or
// lock folder owned by another user, and a symbolic link in place of the
// state file, its -wal, -shm or -journal file, the lock folder or a lock
// file (see CheckFolder).
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	return openSQLite(ctx, path, sqliteOptions{})
}

func openSQLite(ctx context.Context, path string, opt sqliteOptions) (*SQLite, error) {
	if path == "" {
		return nil, errors.New("opening state file: empty path")
	}
	if opt.synchronous == "" {
		opt.synchronous = "FULL"
	}
	if opt.busyTimeout == 0 {
		opt.busyTimeout = busyTimeoutMS
	}
	if opt.migrations == nil {
		opt.migrations = schemaMigrations
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("opening state file %s: %w", path, err)
	}
	if err := prepareFile(abs); err != nil {
		return nil, err
	}
	if _, err := checkLockDir(abs + ".locks"); err != nil {
		return nil, err
	}
	if err := probe(ctx, abs, len(opt.migrations), !stampMatches(abs, abs+".locks")); err != nil {
		return nil, err
	}

	q := url.Values{}
	q.Set("mode", "rw") // the file exists by now; never let SQLite create one
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", opt.synchronous) // overrides the NORMAL the driver picks for WAL
	q.Set("_txlock", "immediate")          // writers queue on the busy timeout instead of failing to upgrade
	q.Set("_busy_timeout", fmt.Sprint(opt.busyTimeout))
	q.Set("_foreign_keys", "1")
	db, err := sql.Open("sqlite3", fileURI(abs)+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("opening state file %s: %w", abs, err)
	}
	// SQLite has one writer at a time and every transaction here writes
	// (BEGIN IMMEDIATE). One connection lets goroutines of this process
	// queue in database/sql instead of polling in SQLite's busy handler;
	// other processes still read concurrently thanks to WAL.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)

	s := &SQLite{
		db:      db,
		path:    abs,
		lockDir: abs + ".locks",
		locks:   map[*accountLock]struct{}{},
	}
	if err := s.init(ctx, opt); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *SQLite) init(ctx context.Context, opt sqliteOptions) error {
	if err := s.db.PingContext(ctx); err != nil {
		return openError(s.path, "opening", err)
	}
	var mode string
	if err := s.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return openError(s.path, "reading journal mode of", err)
	}
	if !strings.EqualFold(mode, "wal") {
		// For example on a file system without shared memory support.
		return fmt.Errorf("opening state file %s: cannot enable write-ahead logging (journal mode is %q)", s.path, mode)
	}
	if err := migrate(ctx, s.db, s.path, opt.migrations); err != nil {
		return err
	}
	st, err := os.Stat(s.path)
	if err != nil {
		return fmt.Errorf("opening state file %s: %w", s.path, err)
	}
	for _, p := range []string{s.path + "-wal", s.path + "-shm"} {
		if err := os.Chmod(p, st.Mode().Perm()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("setting the mode of %s: %w", p, err)
		}
	}
	if err := os.Mkdir(s.lockDir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating lock folder: %w", fileErr(err))
	}
	if _, err := checkLockDir(s.lockDir); err != nil {
		return err
	}
	return nil
}

// fileURI returns an SQLite URI for an absolute path; url.URL escapes the
// characters SQLite would otherwise read as URI syntax ('?', '#', '%').
func fileURI(abs string) string {
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}).String()
}

// prepareFile creates the parent folders (0700) and the database file (0600)
// if missing, and checks that both can be written: SQLite would silently open
// a write-protected file read-only, and needs the folder for its -wal and
// -shm files. The folder must be the user's alone (CheckFolder) and no
// file SQLite opens may be a symbolic link.
func prepareFile(abs string) error {
	dir := filepath.Dir(abs)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating the folder of state file %s: %w", abs, fileErr(err))
	}
	if err := CheckFolder(dir); err != nil {
		return fmt.Errorf("opening state file %s: %w", abs, err)
	}
	// SQLite opens these by name; none may be a link planted before the
	// folder was checked.
	for _, p := range []struct{ path, what string }{
		{abs, "state file"}, {abs + "-wal", "state log file"}, {abs + "-shm", "state index file"}, {abs + "-journal", "state journal file"},
	} {
		if err := noLink(p.path, p.what); err != nil {
			return err
		}
	}
	if err := dirWritable(dir); err != nil {
		return &stateError{
			msg:  fmt.Sprintf("state file %s is not writable: its folder is not (SQLite keeps its log files next to the state file)", abs),
			kind: ErrReadOnly,
			err:  err,
		}
	}
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	created := err == nil
	if errors.Is(err, fs.ErrExist) {
		f, err = os.OpenFile(abs, os.O_RDWR|syscall.O_NOFOLLOW, 0)
	}
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return symlinkError(abs, "state file")
		}
		if errors.Is(err, syscall.EISDIR) {
			return fmt.Errorf("opening state file %s: it is a folder", abs)
		}
		if isReadOnly(err) {
			return &stateError{msg: fmt.Sprintf("state file %s is not writable", abs), kind: ErrReadOnly, err: err}
		}
		return fmt.Errorf("opening state file %s: %w", abs, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("opening state file %s: %w", abs, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("opening state file %s: not a regular file", abs)
	}
	if err := checkOwner(abs, "state file", st); err != nil {
		return err
	}
	if !created && st.Size() == 0 {
		// SQLite takes an empty file for a new database. The lock folder
		// is made only once a schema was committed, so an empty file next
		// to it was truncated: starting afresh would fetch the mailbox
		// again.
		if _, err := os.Stat(abs + ".locks"); err == nil {
			return &stateError{
				msg:  corruptMsg(abs),
				kind: ErrCorrupt,
				err:  fmt.Errorf("the file is empty, but %s.locks shows it held a seen-set", abs),
			}
		}
	}
	if created {
		// Make the new directory entry durable before SQLite commits into
		// the file.
		if err := osfile.SyncDir(dir); err != nil {
			return fmt.Errorf("creating state file %s: syncing folder %s: %w", abs, dir, err)
		}
	}
	return nil
}

func isReadOnly(err error) bool {
	return errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS)
}

// fileErr marks permission errors as ErrReadOnly.
func fileErr(err error) error {
	if isReadOnly(err) {
		return fmt.Errorf("%w: %w", ErrReadOnly, err)
	}
	return err
}

// probe checks the file before the real connection touches it (enabling WAL
// writes the header): a read-only connection, which never checkpoints a WAL
// left by a crash into the file, reads the header fields and runs PRAGMA
// quick_check. A newer, foreign or damaged file is refused here, unmodified.
//
// With check false (see stampMatches) quick_check is left out.
func probe(ctx context.Context, abs string, known int, check bool) error {
	db, err := sql.Open("sqlite3", fileURI(abs)+"?mode=ro&_busy_timeout="+fmt.Sprint(busyTimeoutMS))
	if err != nil {
		return fmt.Errorf("opening state file %s: %w", abs, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(ctx)
	if err != nil {
		return openError(abs, "opening", err)
	}
	defer conn.Close()

	var version, appID, objects int64
	if err := conn.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return openError(abs, "reading", err)
	}
	if err := conn.QueryRowContext(ctx, "PRAGMA application_id").Scan(&appID); err != nil {
		return openError(abs, "reading", err)
	}
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&objects); err != nil {
		return openError(abs, "reading", err)
	}
	if check {
		if err := quickCheck(ctx, conn, abs); err != nil {
			return err
		}
	}
	fresh := appID == 0 && version == 0 && objects == 0
	if appID != sqliteAppID && !fresh {
		return &stateError{
			msg:  fmt.Sprintf("%s is an SQLite database but not a popsync state file (application_id %#x, user_version %d); popsync will not touch it", abs, appID, version),
			kind: ErrCorrupt,
		}
	}
	if version > int64(known) {
		return newerSchema(abs, version, known)
	}
	return nil
}

func quickCheck(ctx context.Context, conn *sql.Conn, abs string) error {
	rows, err := conn.QueryContext(ctx, "PRAGMA quick_check(5)")
	if err != nil {
		return openError(abs, "checking", err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return openError(abs, "checking", err)
		}
		// The first report is prefixed "*** in database main ***\n".
		line = strings.TrimPrefix(line, "*** in database main ***")
		line = strings.ReplaceAll(strings.TrimSpace(line), "\n", "; ")
		if line != "ok" && line != "" {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return openError(abs, "checking", err)
	}
	if len(problems) > 0 {
		return &stateError{
			msg:  corruptMsg(abs),
			kind: ErrCorrupt,
			err:  errors.New("quick_check: " + strings.Join(problems, "; ")),
		}
	}
	return nil
}

func corruptMsg(abs string) string {
	return fmt.Sprintf("state file %s is damaged or not an SQLite database; popsync will not touch it: "+
		"restore a backup, or move it away to start afresh (mail kept on the servers is then fetched again)", abs)
}

func newerSchema(abs string, version int64, known int) error {
	return &stateError{
		msg:  fmt.Sprintf("state file %s is schema %d, this popsync knows up to %d; upgrade popsync", abs, version, known),
		kind: ErrNewerSchema,
	}
}

// openError describes an SQLite error met while opening: damage and
// permission problems get their own messages and sentinels.
func openError(abs, doing string, err error) error {
	var se sqlite3.Error
	if errors.As(err, &se) {
		switch se.Code {
		case sqlite3.ErrCorrupt, sqlite3.ErrNotADB:
			return &stateError{msg: corruptMsg(abs), kind: ErrCorrupt, err: err}
		case sqlite3.ErrReadonly, sqlite3.ErrPerm, sqlite3.ErrCantOpen:
			if se.Code != sqlite3.ErrCantOpen || isReadOnly(se.SystemErrno) {
				return &stateError{msg: fmt.Sprintf("state file %s is not writable", abs), kind: ErrReadOnly, err: err}
			}
		}
	}
	return fmt.Errorf("%s state file %s: %w", doing, abs, classify(err))
}

// classify wraps SQLite errors that callers may branch on with the matching
// sentinel.
func classify(err error) error {
	var se sqlite3.Error
	if !errors.As(err, &se) {
		return err
	}
	switch se.Code {
	case sqlite3.ErrCorrupt, sqlite3.ErrNotADB:
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	case sqlite3.ErrBusy, sqlite3.ErrLocked:
		return fmt.Errorf("%w: %w", ErrBusy, err)
	case sqlite3.ErrReadonly, sqlite3.ErrPerm:
		return fmt.Errorf("%w: %w", ErrReadOnly, err)
	}
	return err
}

// stateError carries a message written for the user, the sentinel it is an
// instance of, and the underlying cause.
type stateError struct {
	msg  string
	kind error
	err  error
}

func (e *stateError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *stateError) Unwrap() []error {
	var errs []error
	if e.kind != nil {
		errs = append(errs, e.kind)
	}
	if e.err != nil {
		errs = append(errs, e.err)
	}
	return errs
}

// Close releases the account locks still held and closes the database.
func (s *SQLite) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	locks := make([]*accountLock, 0, len(s.locks))
	for l := range s.locks {
		locks = append(locks, l)
	}
	s.mu.Unlock()
	for _, l := range locks {
		l.End(lostLease(l.a, "the state store was closed"))
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("closing state file %s: %w", s.path, err)
	}
	writeStamp(s.path, s.lockDir)
	return nil
}

// Path returns the absolute path of the state file.
func (s *SQLite) Path() string { return s.path }

func (s *SQLite) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}
