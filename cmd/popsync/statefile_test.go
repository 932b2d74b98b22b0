package main_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"

	"popsync/internal/realtest"
	"popsync/state"
)

// exitState is cmd/popsync's exit code for a state file it cannot use.
const exitState = 74

// stateEnv is a config whose one account points at a closed port, and a
// real state file with a seen-set of n messages and a recorded poll: a
// `popsync fetch` that got past the state file would fail to connect
// (exit 1), one that refuses the state file exits 4.
type stateEnv struct {
	dir, cfg, db string
}

const stateUser = "me@example.test"

func newStateEnv(t *testing.T, dir string, n int) *stateEnv {
	t.Helper()
	e := &stateEnv{dir: dir, cfg: filepath.Join(t.TempDir(), "config.toml"), db: filepath.Join(dir, "state.db")}
	conf := fmt.Sprintf(`[state]
path = %q

[[account]]
name = "a"
host = "127.0.0.1"
port = 1
tls = "none"
user = %q
password = "x"
timeout = "2s"
  [[account.deliver]]
  maildir = %q
`, e.db, stateUser, filepath.Join(t.TempDir(), "Maildir"))
	if err := os.WriteFile(e.cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	st, err := state.OpenSQLite(ctx, e.db)
	if err != nil {
		t.Fatal(err)
	}
	id := state.Account{Host: "127.0.0.1", Port: 1, User: stateUser}
	now := time.Now()
	for start := 0; start < n; start += 500 {
		var recs []state.Record
		for i := start; i < min(start+500, n); i++ {
			recs = append(recs, state.Record{UIDL: fmt.Sprintf("uidl-%08d-%s", i, strings.Repeat("x", 40)), State: state.Delivered, Size: 1234, DeliveredAt: now})
		}
		if err := st.MarkDelivered(ctx, id, recs); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.RecordPoll(ctx, state.Poll{Name: "a", Account: id, Start: now, End: now, Delivered: n}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(e.db + "-wal"); err == nil {
		t.Fatal("a WAL is left after Close: corrupting the main file alone would not test it")
	}
	return e
}

// fetch runs `popsync fetch` and checks it neither panicked nor touched
// the state file's bytes when it refused it.
func (e *stateEnv) fetch(t *testing.T) runResult {
	t.Helper()
	before, _ := os.ReadFile(e.db)
	r := runPopsync(t, "fetch", "-c", e.cfg)
	if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine ") || r.code == 70 {
		t.Fatalf("popsync fetch crashed (exit %d):\n%s", r.code, r.stderr)
	}
	if r.code == exitState {
		after, err := os.ReadFile(e.db)
		if err == nil && !bytes.Equal(before, after) {
			t.Fatalf("popsync changed the state file it refused (%d -> %d bytes)", len(before), len(after))
		}
	}
	return r
}

func (e *stateEnv) wantRefused(t *testing.T, says ...string) runResult {
	t.Helper()
	r := e.fetch(t)
	if r.code != exitState {
		t.Fatalf("exit %d, want %d (state)\n%s", r.code, exitState, r.stderr)
	}
	for _, s := range says {
		if !strings.Contains(r.stderr, s) {
			t.Fatalf("message does not say %q:\n%s", s, r.stderr)
		}
	}
	if !strings.Contains(r.stderr, e.db) {
		t.Fatalf("message does not name the state file:\n%s", r.stderr)
	}
	return r
}

func overwrite(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestStateFileCorrupt(t *testing.T) {
	const page = 4096
	cases := []struct {
		name    string
		corrupt func(t *testing.T, path string, size int64, r *rand.Rand)
	}{
		{"every page but the first", func(t *testing.T, p string, size int64, r *rand.Rand) {
			overwrite(t, p, page, randomBytes(r, int(size-page)))
		}},
		{"the first page after the header", func(t *testing.T, p string, size int64, r *rand.Rand) {
			overwrite(t, p, 100, randomBytes(r, page-100))
		}},
		{"the header", func(t *testing.T, p string, size int64, r *rand.Rand) {
			overwrite(t, p, 0, randomBytes(r, 100))
		}},
		{"the whole file", func(t *testing.T, p string, size int64, r *rand.Rand) {
			overwrite(t, p, 0, randomBytes(r, int(size)))
		}},
		{"every other page", func(t *testing.T, p string, size int64, r *rand.Rand) {
			for off := int64(page); off < size; off += 2 * page {
				overwrite(t, p, off, randomBytes(r, page))
			}
		}},
	}
	for _, tc := range cases {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("%s/%d", tc.name, seed), func(t *testing.T) {
				e := newStateEnv(t, t.TempDir(), 3000)
				st, err := os.Stat(e.db)
				if err != nil {
					t.Fatal(err)
				}
				tc.corrupt(t, e.db, st.Size(), rand.New(rand.NewPCG(seed, 7)))
				e.wantRefused(t, "will not touch it")
				// Refused again: nothing was "repaired" behind the user's back.
				e.wantRefused(t, "will not touch it")
			})
		}
	}
}

func TestStateFileTruncated(t *testing.T) {
	for _, keep := range []string{"half", "first page", "100 bytes", "10 bytes", "nothing"} {
		t.Run(keep, func(t *testing.T) {
			e := newStateEnv(t, t.TempDir(), 3000)
			st, err := os.Stat(e.db)
			if err != nil {
				t.Fatal(err)
			}
			size := map[string]int64{"half": st.Size() / 2, "first page": 4096, "100 bytes": 100, "10 bytes": 10, "nothing": 0}[keep]
			if err := os.Truncate(e.db, size); err != nil {
				t.Fatal(err)
			}
			e.wantRefused(t)
		})
	}
}

func TestStateFileNewerSchema(t *testing.T) {
	e := newStateEnv(t, t.TempDir(), 10)
	db, err := sql.Open("sqlite3", e.db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	e.wantRefused(t, "schema 99", "upgrade popsync")
}

func TestStateFileReadOnly(t *testing.T) {
	var dir string
	if os.Getuid() == 0 {
		dir = t.TempDir()
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
			if realtest.RequireReal() {
				t.Fatalf("mount tmpfs: %v: %s", err, out)
			}
			t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
		}
		t.Cleanup(func() { exec.Command("umount", dir).Run() })
	} else {
		dir = t.TempDir()
	}
	e := newStateEnv(t, dir, 100)
	if os.Getuid() == 0 {
		if out, err := exec.Command("mount", "-o", "remount,ro", dir).CombinedOutput(); err != nil {
			t.Fatalf("remount ro: %v: %s", err, out)
		}
	} else {
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o700) })
	}
	e.wantRefused(t, "not writable")
}

// TestStateFolderUnsafe: `popsync fetch` with a state folder that others
// can write, or a link in place of the state file, exits 4 naming the
// path, the reason and the fix, and writes nothing through the link.
func TestStateFolderUnsafe(t *testing.T) {
	e := newStateEnv(t, t.TempDir(), 10)
	if err := os.Chmod(e.dir, 0o775); err != nil {
		t.Fatal(err)
	}
	e.wantRefused(t, "state folder "+e.dir+" is writable by others (mode 0775)", "chmod go-w "+e.dir)
	if err := os.Chmod(e.dir, 0o700); err != nil {
		t.Fatal(err)
	}

	real := filepath.Join(t.TempDir(), "real.db")
	if err := os.Rename(e.db, real); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, e.db); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(real)
	if err != nil {
		t.Fatal(err)
	}
	e.wantRefused(t, "is a symbolic link")
	if after, _ := os.ReadFile(real); !bytes.Equal(before, after) {
		t.Error("the link's target was changed")
	}
	if _, err := os.Stat(real + "-wal"); err == nil {
		t.Error("a WAL was made next to the link's target")
	}
}

// TestStateFileLockedByAnotherProcess holds the state file with an
// exclusive SQLite lock in another process: fetch waits out the busy
// timeout (10s), then exits 4 saying the file is busy.
func TestStateFileLockedByAnotherProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out SQLite's 10s busy timeout")
	}
	e := newStateEnv(t, t.TempDir(), 100)
	stop := holdLock(t, "sqlite", e.db)
	defer stop()
	begin := time.Now()
	e.wantRefused(t, "busy")
	t.Logf("refused after %v", time.Since(begin).Round(time.Millisecond))
}

// TestStateAccountLockedByAnotherProcess: another process polls the
// account (holds its lock). That is not a broken state file: the account
// fails with a message naming the holder (exit 1), the state file is
// fine.
func TestStateAccountLockedByAnotherProcess(t *testing.T) {
	e := newStateEnv(t, t.TempDir(), 100)
	stop := holdLock(t, "account", e.db)
	defer stop()
	r := e.fetch(t)
	if r.code != 8 || !strings.Contains(r.stderr, "another popsync is polling this account") {
		t.Fatalf("exit %d, want 8 naming the other poller\n%s", r.code, r.stderr)
	}
}

// holdLock starts this test binary as a helper process that holds a lock
// on db (kind "sqlite": an exclusive database lock; "account": the
// account lock), and returns a function that releases it.
func holdLock(t *testing.T, kind, db string) func() {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldLock$")
	cmd.Env = append(os.Environ(), "POPSYNC_HELPER_LOCK="+kind, "POPSYNC_HELPER_DB="+db)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	held := false
	for sc.Scan() {
		if sc.Text() == "HELD" {
			held = true
			break
		}
	}
	if !held {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("the helper did not take the lock")
	}
	return func() {
		stdin.Close()
		cmd.Wait()
	}
}

// TestHelperHoldLock is not a test: holdLock runs it in a child process.
// It takes the lock, says HELD and keeps it until stdin is closed.
func TestHelperHoldLock(t *testing.T) {
	kind, db := os.Getenv("POPSYNC_HELPER_LOCK"), os.Getenv("POPSYNC_HELPER_DB")
	if kind == "" {
		t.Skip("helper process only")
	}
	ctx := context.Background()
	switch kind {
	case "sqlite":
		sdb, err := sql.Open("sqlite3", db)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := sdb.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.ExecContext(ctx, "PRAGMA locking_mode = EXCLUSIVE"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.ExecContext(ctx, "BEGIN EXCLUSIVE"); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
	case "account":
		st, err := state.OpenSQLite(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		lease, err := st.LockAccount(ctx, state.Account{Host: "127.0.0.1", Port: 1, User: stateUser})
		if err != nil {
			t.Fatal(err)
		}
		defer lease.Release()
	}
	fmt.Println("HELD")
	os.Stdin.Read(make([]byte, 1))
}
