package state_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"

	"popsync/state"
	"popsync/state/statetest"
)

// Child processes: the test binary re-executed with childEnv set to
// "<role> <state file>" plays one part and never runs the tests.
const childEnv = "POPSYNC_STATE_TEST_CHILD"

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

var acct = state.Account{Host: "pop.example.net", Port: 995, User: "me@example.net"}

func TestMain(m *testing.M) {
	if v := os.Getenv(childEnv); v != "" {
		role, path, _ := strings.Cut(v, " ")
		if err := child(role, path); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child opens the state file, does its part, says "ready" on stdout and then
// waits for stdin to close (or to be killed).
func child(role, path string) error {
	ctx := context.Background()
	s, err := state.OpenSQLite(ctx, path)
	if err != nil {
		return err
	}
	switch role {
	case "lock":
		if _, err := s.LockAccount(ctx, acct); err != nil {
			return err
		}
	case "deliver":
		recs := make([]state.Record, 100)
		for i := range recs {
			recs[i] = state.Record{UIDL: fmt.Sprintf("u%d", i), State: state.Delivered, DeliveredAt: t0}
		}
		if err := s.MarkDelivered(ctx, acct, recs); err != nil {
			return err
		}
	case "tokens":
		return tokenChild(ctx, s) // tokens_test.go
	default:
		return fmt.Errorf("unknown role %q", role)
	}
	fmt.Println("ready")
	_, err = io.Copy(io.Discard, os.Stdin)
	return err
}

// startChild runs a child and waits for its "ready"; the child is killed when
// the test ends.
func startChild(t *testing.T, role, path string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+role+" "+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child %s: %q, %v; stderr: %s", role, line, err, stderr.String())
	}
	return cmd
}

func tempPath(t *testing.T) string {
	return filepath.Join(t.TempDir(), "state.db")
}

func open(t *testing.T, path string) *state.SQLite {
	t.Helper()
	s, err := state.OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSQLiteConformance(t *testing.T) {
	statetest.RunSuite(t, func(t *testing.T) state.Store {
		return open(t, tempPath(t))
	})
}

func deliver(t *testing.T, s state.Store, a state.Account, n int) {
	t.Helper()
	recs := make([]state.Record, n)
	for i := range recs {
		recs[i] = state.Record{UIDL: fmt.Sprintf("%s-%06d", a.User, i), State: state.Delivered, Size: 4096, DeliveredAt: t0,
			Note: strings.Repeat("n", i%50)}
	}
	if err := s.MarkDelivered(t.Context(), a, recs); err != nil {
		t.Fatal(err)
	}
}

func mode(t *testing.T, p string) fs.FileMode {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func TestFileModes(t *testing.T) {
	// Even with an open umask the state stays private.
	old := syscall.Umask(0)
	defer syscall.Umask(old)

	base := t.TempDir()
	path := filepath.Join(base, "a", "b", "state.db")
	s := open(t, path)
	deliver(t, s, acct, 10)
	lease, err := s.LockAccount(t.Context(), acct)
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()

	for p, want := range map[string]fs.FileMode{
		filepath.Join(base, "a"):      0o700,
		filepath.Join(base, "a", "b"): 0o700,
		path:                          0o600,
		path + "-wal":                 0o600,
		path + "-shm":                 0o600,
		path + ".locks":               0o700,
		filepath.Join(path+".locks", state.LockFileName(acct)): 0o600,
	} {
		if got := mode(t, p); got != want {
			t.Errorf("mode of %s = %v, want %v", p, got, want)
		}
	}
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
}

func TestWALFilesTightened(t *testing.T) {
	path := tempPath(t)
	s := open(t, path)
	deliver(t, s, acct, 1)
	s.Close()
	// Left behind wider by something else (SQLite would reuse them).
	for _, p := range []string{path + "-wal", path + "-shm"} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s = open(t, path)
	for _, p := range []string{path + "-wal", path + "-shm"} {
		if got := mode(t, p); got != 0o600 {
			t.Errorf("mode of %s = %v, want 0600", p, got)
		}
	}
}

func TestPragmas(t *testing.T) {
	s := open(t, tempPath(t))
	db := state.DBOf(s)
	for pragma, want := range map[string]string{
		"journal_mode":   "wal",
		"synchronous":    "2", // FULL
		"foreign_keys":   "1",
		"busy_timeout":   "10000",
		"user_version":   strconv.Itoa(state.SchemaVersion),
		"application_id": strconv.Itoa(0x706f7073),
	} {
		var got string
		if err := db.QueryRowContext(t.Context(), "PRAGMA "+pragma).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("PRAGMA %s = %s, want %s", pragma, got, want)
		}
	}
}

func TestReopenKeepsData(t *testing.T) {
	path := tempPath(t)
	s := open(t, path)
	deliver(t, s, acct, 3)
	if err := s.RecordPoll(t.Context(), state.Poll{Name: "home", Account: acct, Start: t0}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	m, err := state.Reconcile(t.Context(), s, acct, []string{acct.User + "-000001", "new"}, t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 {
		t.Errorf("after reopening: %d known, want 1", len(m))
	}
	st, err := s.Status(t.Context())
	if err != nil || len(st) != 1 || st[0].Seen != 3 {
		t.Errorf("Status after reopening = %+v, %v", st, err)
	}
}

// An empty file (created by a previous run that died before its first
// commit, or by touch) is a new state file.
func TestEmptyFileIsNew(t *testing.T) {
	path := tempPath(t)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := open(t, path)
	deliver(t, s, acct, 1)
}

func sum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// makeDB creates a closed state file with some records.
func makeDB(t *testing.T, records int) string {
	t.Helper()
	path := tempPath(t)
	s := open(t, path)
	deliver(t, s, acct, records)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-wal"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("WAL still there after Close: %v", err)
	}
	// A clean close leaves the stamp that lets the next open skip
	// quick_check: the damage tests below spoil a stamped file, which the
	// stamp must not cover.
	if _, err := os.Stat(path + ".locks/checked"); err != nil {
		t.Fatalf("no stamp after a clean Close: %v", err)
	}
	return path
}

// TestStampGarbled: a stamp that does not parse or describes another file
// only costs the check.
func TestStampGarbled(t *testing.T) {
	for _, stamp := range []string{"", "garbage", "popsync-state-stamp 1\ndev 1 ino 2 size 3 mtime 4 ctime 5\n"} {
		path := makeDB(t, 10)
		if err := os.WriteFile(path+".locks/checked", []byte(stamp), 0o600); err != nil {
			t.Fatal(err)
		}
		s := open(t, path)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStampSameSizeRewrite: the file rewritten in place with the same
// size and its modification time put back is still checked (the change
// time differs) and refused when damaged.
func TestStampSameSizeRewrite(t *testing.T) {
	path := makeDB(t, 3000)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 3 * 4096; i < 4*4096; i++ {
		b[i] ^= 0x5a
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	refused(t, path, state.ErrCorrupt, "damaged or not an SQLite database")
}

// rawExec changes a database behind popsync's back.
func rawExec(t *testing.T, path string, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// refused opens path expecting an error wrapping want, and checks that the
// file was not modified.
func refused(t *testing.T, path string, want error, contains ...string) {
	t.Helper()
	before := sum(t, path)
	s, err := state.OpenSQLite(t.Context(), path)
	if err == nil {
		s.Close()
		t.Fatalf("OpenSQLite succeeded, want %v", want)
	}
	if !errors.Is(err, want) {
		t.Errorf("OpenSQLite: %v; want errors.Is %v", err, want)
	}
	for _, c := range append(contains, path) {
		if !strings.Contains(err.Error(), c) {
			t.Errorf("error %q does not mention %q", err, c)
		}
	}
	if sum(t, path) != before {
		t.Error("the refused file was modified")
	}
	t.Logf("error: %v", err)
}

func TestNewerSchema(t *testing.T) {
	path := makeDB(t, 10)
	rawExec(t, path, "PRAGMA user_version = 7")
	refused(t, path, state.ErrNewerSchema,
		fmt.Sprintf("is schema 7, this popsync knows up to %d; upgrade popsync", state.SchemaVersion))
}

// A newer popsync crashed and left its last transactions in the WAL: the
// refusal must not checkpoint them into the file either.
func TestNewerSchemaHotWAL(t *testing.T) {
	path := makeDB(t, 10)
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec("PRAGMA user_version = 7"); err != nil {
		t.Fatal(err)
	}
	// The crash image: the files as they are while db is still open.
	crashed := tempPath(t)
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(crashed+suffix, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	wal := sum(t, crashed+"-wal")
	refused(t, crashed, state.ErrNewerSchema, "is schema 7")
	if sum(t, crashed+"-wal") != wal {
		t.Error("the refused file's WAL was modified")
	}
}

func TestNotPopsyncDatabase(t *testing.T) {
	path := tempPath(t)
	rawExec(t, path, "CREATE TABLE songs (title TEXT)", "INSERT INTO songs VALUES ('la')")
	refused(t, path, state.ErrCorrupt, "not a popsync state file")
}

func TestCorrupt(t *testing.T) {
	const page = 4096
	tests := []struct {
		name  string
		spoil func(t *testing.T, path string)
	}{
		{"TextFile", func(t *testing.T, path string) {
			text := strings.Repeat("this is a note, not a database\n", 300)
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"TruncatedHalf", func(t *testing.T, path string) {
			st, _ := os.Stat(path)
			if err := os.Truncate(path, st.Size()/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"TruncatedToFirstPage", func(t *testing.T, path string) {
			if err := os.Truncate(path, page); err != nil {
				t.Fatal(err)
			}
		}},
		{"TruncatedInHeader", func(t *testing.T, path string) {
			if err := os.Truncate(path, 60); err != nil {
				t.Fatal(err)
			}
		}},
		{"RandomPages", func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			// Every third page after the first: b-tree pages of both
			// tables and indexes get hit.
			for off := page; off+page <= len(b); off += 3 * page {
				for i := off; i < off+page; i++ {
					b[i] = byte(rng.Uint32())
				}
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"RandomHeader", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			junk := make([]byte, 100)
			rng := rand.New(rand.NewPCG(3, 4))
			for i := range junk {
				junk[i] = byte(rng.Uint32())
			}
			if _, err := f.WriteAt(junk, 0); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := makeDB(t, 3000)
			tc.spoil(t, path)
			refused(t, path, state.ErrCorrupt, "damaged or not an SQLite database")
		})
	}
}

func TestPathIsDirectory(t *testing.T) {
	path := tempPath(t)
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := state.OpenSQLite(t.Context(), path)
	if err == nil {
		s.Close()
		t.Fatal("OpenSQLite on a directory succeeded")
	}
	t.Logf("error: %v", err)
}

// TestReadOnly needs an unprivileged user: root writes anyway. Run as root,
// it re-runs itself as nobody from a copy of the test binary that nobody can
// execute.
func TestReadOnly(t *testing.T) {
	if os.Geteuid() == 0 {
		runAsNobody(t, "^TestReadOnly$")
		return
	}
	t.Run("File", func(t *testing.T) {
		path := makeDB(t, 1)
		if err := os.Chmod(path, 0o400); err != nil {
			t.Fatal(err)
		}
		refused(t, path, state.ErrReadOnly, "not writable")
	})
	t.Run("Folder", func(t *testing.T) {
		path := makeDB(t, 1)
		if err := os.Chmod(filepath.Dir(path), 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(filepath.Dir(path), 0o700) })
		refused(t, path, state.ErrReadOnly, "not writable")
	})
	t.Run("FolderNoFile", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o700) })
		_, err := state.OpenSQLite(t.Context(), filepath.Join(dir, "state.db"))
		if !errors.Is(err, state.ErrReadOnly) {
			t.Errorf("OpenSQLite in a read-only folder: %v; want ErrReadOnly", err)
		}
	})
	t.Run("ParentNotCreatable", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o700) })
		_, err := state.OpenSQLite(t.Context(), filepath.Join(dir, "sub", "state.db"))
		if !errors.Is(err, state.ErrReadOnly) {
			t.Errorf("OpenSQLite under a read-only folder: %v; want ErrReadOnly", err)
		}
	})
}

func runAsNobody(t *testing.T, run string) {
	const nobody = 65534
	dir, err := os.MkdirTemp("", "popsync-state-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "state.test")
	exe, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), bin, "-test.run="+run, "-test.v", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "TMPDIR=" + os.TempDir(), "HOME=" + dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		// No CAP_SETUID, or a noexec temporary folder.
		t.Skipf("cannot run the test binary as uid %d: %v", nobody, err)
	}
	if err != nil {
		t.Fatalf("as uid %d: %v\n%s", nobody, err, out)
	}
	if !bytes.Contains(out, []byte("--- PASS")) {
		t.Fatalf("as uid %d: no test ran\n%s", nobody, out)
	}
	t.Logf("as uid %d:\n%s", nobody, out)
}

func TestMigrationForward(t *testing.T) {
	path := makeDB(t, 5)
	var calls int
	addColumn := func(ctx context.Context, tx *sql.Tx) error {
		calls++
		_, err := tx.ExecContext(ctx, "ALTER TABLE message ADD COLUMN label TEXT")
		return err
	}
	for range 2 {
		s, err := state.OpenSQLiteMigrations(t.Context(), path, addColumn)
		if err != nil {
			t.Fatal(err)
		}
		var v int
		if err := state.DBOf(s).QueryRow("PRAGMA user_version").Scan(&v); err != nil {
			t.Fatal(err)
		}
		if v != state.SchemaVersion+1 {
			t.Errorf("user_version = %d, want %d", v, state.SchemaVersion+1)
		}
		m, err := state.Reconcile(t.Context(), s, acct, []string{acct.User + "-000000"}, t0, time.Hour)
		if err != nil || len(m) != 1 {
			t.Errorf("Reconcile after migration = %v, %v", m, err)
		}
		s.Close()
	}
	if calls != 1 {
		t.Errorf("migration ran %d times, want 1", calls)
	}
	// This build's own schema is now older than the file.
	refused(t, path, state.ErrNewerSchema)

	// A failing migration leaves the file at its old version.
	path = makeDB(t, 1)
	boom := errors.New("boom")
	_, err := state.OpenSQLiteMigrations(t.Context(), path, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "CREATE TABLE half_done (x)"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("failing migration: %v", err)
	}
	s := open(t, path)
	var n int
	if err := state.DBOf(s).QueryRow("SELECT count(*) FROM sqlite_schema WHERE name = 'half_done'").Scan(&n); err != nil || n != 0 {
		t.Errorf("failed migration left a table behind: %d, %v", n, err)
	}
}

func TestTwoStoresConcurrentWriters(t *testing.T) {
	path := tempPath(t)
	stores := []*state.SQLite{open(t, path), open(t, path)}
	const workers, rounds, batch = 4, 25, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		s := stores[w%2]
		a := state.Account{Host: "pop.example.net", Port: 995, User: fmt.Sprintf("w%d", w)}
		shared := state.Account{Host: "pop.example.net", Port: 995, User: "shared"}
		wg.Go(func() {
			errs <- func() error {
				ctx := t.Context()
				var all []string
				for r := range rounds {
					recs := make([]state.Record, batch)
					for i := range recs {
						u := fmt.Sprintf("w%d-r%d-%d", w, r, i)
						all = append(all, u)
						recs[i] = state.Record{UIDL: u, State: state.Delivered, DeliveredAt: t0}
					}
					if err := s.MarkDelivered(ctx, a, recs); err != nil {
						return err
					}
					if err := s.MarkDelivered(ctx, shared, recs[:1]); err != nil {
						return err
					}
					if _, err := state.Reconcile(ctx, s, a, all, t0, time.Hour); err != nil {
						return err
					}
					if err := s.RecordPoll(ctx, state.Poll{Name: a.User, Account: a, Start: t0.Add(time.Duration(r) * time.Second)}); err != nil {
						return err
					}
					if _, err := s.Status(ctx); err != nil {
						return err
					}
				}
				return nil
			}()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	st, err := stores[1].Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != workers {
		t.Fatalf("Status: %d accounts, want %d", len(st), workers)
	}
	for _, a := range st {
		if a.Seen != rounds*batch {
			t.Errorf("%s: Seen = %d, want %d", a.Account, a.Seen, rounds*batch)
		}
	}
}

func TestLockAcrossStores(t *testing.T) {
	path := tempPath(t)
	s1, s2 := open(t, path), open(t, path)
	ctx := t.Context()
	lease, err := s1.LockAccount(ctx, acct)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s2.LockAccount(ctx, acct)
	if !errors.Is(err, state.ErrLocked) {
		t.Fatalf("LockAccount on a second store: %v; want ErrLocked", err)
	}
	if want := fmt.Sprintf("process %d", os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name the holder (%s)", err, want)
	}
	lease.Release()
	lease2, err := s2.LockAccount(ctx, acct)
	if err != nil {
		t.Fatalf("LockAccount after the other store unlocked: %v", err)
	}
	lease2.Release()

	// Close releases what the store still holds.
	if _, err := s1.LockAccount(ctx, acct); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	lease3, err := s2.LockAccount(ctx, acct)
	if err != nil {
		t.Fatalf("LockAccount after the holder closed: %v", err)
	}
	lease3.Release()
}

func TestLockFolderRecreated(t *testing.T) {
	path := tempPath(t)
	s := open(t, path)
	if err := os.RemoveAll(path + ".locks"); err != nil {
		t.Fatal(err)
	}
	lease, err := s.LockAccount(t.Context(), acct)
	if err != nil {
		t.Fatalf("LockAccount after the lock folder was removed: %v", err)
	}
	lease.Release()
	if got := mode(t, path+".locks"); got != 0o700 {
		t.Errorf("mode of the recreated lock folder = %v, want 0700", got)
	}
}

func TestLockAcrossProcesses(t *testing.T) {
	path := makeDB(t, 1)
	cmd := startChild(t, "lock", path)
	s := open(t, path)
	ctx := t.Context()
	_, err := s.LockAccount(ctx, acct)
	if !errors.Is(err, state.ErrLocked) {
		t.Fatalf("LockAccount while a child holds it: %v; want ErrLocked", err)
	}
	if want := fmt.Sprintf("process %d", cmd.Process.Pid); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name the child (%s)", err, want)
	}
	// Another account is free.
	other := acct
	other.Port = 110
	lease, err := s.LockAccount(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	lease.Release()
	// The holder dies without unlocking: the lock goes with it.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	lease, err = s.LockAccount(ctx, acct)
	if err != nil {
		t.Fatalf("LockAccount after the holder was killed: %v", err)
	}
	lease.Release()
}

// A delivery a killed process had committed is there for the next one.
func TestCommittedSurvivesKill(t *testing.T) {
	path := tempPath(t)
	cmd := startChild(t, "deliver", path)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	s := open(t, path)
	m, err := state.Reconcile(t.Context(), s, acct, []string{"u0", "u99", "u100"}, t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 {
		t.Errorf("after kill: %d of u0, u99 known, want 2", len(m))
	}
}

func TestBusyIsReported(t *testing.T) {
	path := tempPath(t)
	s, err := state.OpenSQLiteBusy(t.Context(), path, 200)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	deliver(t, s, acct, 1)
	// Another process holds the write lock for longer than the busy
	// timeout: here a raw connection that does not commit.
	raw, err := sql.Open("sqlite3", path+"?_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tx, err := raw.Begin()
	if err != nil {
		t.Fatal(err)
	}
	err = s.MarkDelivered(t.Context(), acct, []state.Record{{UIDL: "x", State: state.Delivered}})
	if !errors.Is(err, state.ErrBusy) {
		t.Errorf("MarkDelivered while another writer holds the database: %v; want ErrBusy", err)
	}
	t.Logf("error: %v", err)
	// Reads go on meanwhile (WAL).
	if _, err := s.Status(t.Context()); err != nil {
		t.Errorf("Status while another writer holds the database: %v", err)
	}
	tx.Rollback()
	if err := s.MarkDelivered(t.Context(), acct, []state.Record{{UIDL: "x", State: state.Delivered}}); err != nil {
		t.Errorf("MarkDelivered after the other writer finished: %v", err)
	}
}
