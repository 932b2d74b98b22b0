package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"popsync/internal/realtest"
	"popsync/state"
	"popsync/state/statetest"
)

// One cluster for the package's tests, started by TestMain when the
// programs are there; every test gets a database of its own.
var (
	cluster   *realtest.Postgres
	launchErr error
	dbSeq     atomic.Int64
)

func TestMain(m *testing.M) {
	if realtest.PostgresAvailable() == nil {
		cluster, launchErr = realtest.LaunchPostgres(realtest.PostgresOptions{})
	}
	code := m.Run()
	if cluster != nil {
		if err := cluster.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping postgres:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// pg returns the shared cluster, skipping (or failing, under
// POPSYNC_REQUIRE_REAL=1) when PostgreSQL is not installed.
func pg(t testing.TB) *realtest.Postgres {
	t.Helper()
	realtest.RequirePostgres(t)
	if launchErr != nil {
		t.Fatalf("starting postgres: %v", launchErr)
	}
	return cluster
}

// newDB creates an empty database and returns its connection string.
func newDB(t testing.TB) string {
	t.Helper()
	p := pg(t)
	name := fmt.Sprintf("popsync_%d", dbSeq.Add(1))
	if err := p.CreateDatabase(name); err != nil {
		t.Fatal(err)
	}
	return p.ConnString(name)
}

func open(t testing.TB, url string, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), url, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// TestConformance runs the state.Store conformance suite against a real
// PostgreSQL.
func TestConformance(t *testing.T) {
	statetest.RunSuite(t, func(t *testing.T) state.Store {
		return open(t, newDB(t), Options{})
	})
}

// TestSchemaUpgrade: a database at schema 1 is upgraded step by step; a
// database of a newer popsync is refused and left as it is.
func TestSchemaUpgrade(t *testing.T) {
	ctx := t.Context()
	url := newDB(t)
	all, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < 3 {
		t.Fatalf("%d migrations, want at least 3", len(all))
	}
	old := open(t, url, Options{migrations: all[:1]})
	a := state.Account{Host: "pop.example.net", Port: 995, User: "me"}
	if err := old.MarkDelivered(ctx, a, []state.Record{{UIDL: "u1", State: state.Delivered}}); err != nil {
		t.Fatal(err)
	}
	if v, err := old.SchemaVersion(ctx); err != nil || v != 1 {
		t.Fatalf("SchemaVersion = %d, %v; want 1", v, err)
	}
	old.Close()

	s := open(t, url, Options{})
	if v, err := s.SchemaVersion(ctx); err != nil || v != len(all) {
		t.Fatalf("after upgrade SchemaVersion = %d, %v; want %d", v, err, len(all))
	}
	m, err := state.Known(ctx, s, a, []string{"u1"})
	if err != nil || len(m) != 1 {
		t.Fatalf("after upgrade Known = %v, %v; want u1", m, err)
	}
	if _, err := s.Acquire(ctx, a); err != nil {
		t.Fatalf("Acquire after upgrade: %v", err)
	}
	s.Close()

	// An older popsync (knows only schema 2) refuses the database.
	_, err = Open(ctx, url, Options{migrations: all[:2]})
	if !errors.Is(err, state.ErrNewerSchema) {
		t.Fatalf("Open with older migrations: %v, want ErrNewerSchema", err)
	}
	s = open(t, url, Options{})
	if v, _ := s.SchemaVersion(ctx); v != len(all) {
		t.Errorf("refused open changed the version to %d", v)
	}
}

// TestConcurrentFirstOpen: daemons starting together on an empty
// database create the schema once, without errors.
func TestConcurrentFirstOpen(t *testing.T) {
	url := newDB(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			s, err := Open(t.Context(), url, Options{})
			if err == nil {
				err = s.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	s := open(t, url, Options{})
	v, err := s.SchemaVersion(t.Context())
	if err != nil || v != len(mustMigrations(t)) {
		t.Errorf("SchemaVersion = %d, %v", v, err)
	}
}

func mustMigrations(t testing.TB) []migration {
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// TestOpenPassword: the password may come from PGPASSWORD or a pgpass
// file instead of the URL; a wrong one fails without showing it.
func TestOpenPassword(t *testing.T) {
	p := pg(t)
	url := newDB(t)
	dbname := url[strings.LastIndex(url, "dbname=")+len("dbname="):]
	dbname = strings.Fields(dbname)[0]
	bare := fmt.Sprintf("postgres:///%s?host=%s&port=%d&user=%s&sslmode=disable", dbname, p.SocketDir, p.Port, p.User)

	t.Setenv("PGPASSFILE", "/nonexistent")
	t.Setenv("PGPASSWORD", p.Password)
	s, err := Open(t.Context(), bare, Options{})
	if err != nil {
		t.Fatalf("Open with PGPASSWORD: %v", err)
	}
	s.Close()

	pass := t.TempDir() + "/pgpass"
	// Like libpq, pgx looks up a Unix socket connection as "localhost".
	line := fmt.Sprintf("localhost:%d:%s:%s:%s\n", p.Port, dbname, p.User, p.Password)
	if err := os.WriteFile(pass, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PGPASSWORD", "")
	os.Unsetenv("PGPASSWORD")
	t.Setenv("PGPASSFILE", pass)
	s, err = Open(t.Context(), bare, Options{})
	if err != nil {
		t.Fatalf("Open with a pgpass file: %v", err)
	}
	s.Close()

	t.Setenv("PGPASSFILE", "/nonexistent")
	wrong := "s3cret-wrong-password"
	_, err = Open(t.Context(), bare+"&password="+wrong, Options{})
	if err == nil {
		t.Fatal("Open with a wrong password: no error")
	}
	if strings.Contains(err.Error(), wrong) {
		t.Errorf("error shows the password: %v", err)
	}
	_, err = Open(t.Context(), "host=x password="+wrong+" port=notaport", Options{})
	if err == nil || strings.Contains(err.Error(), wrong) {
		t.Errorf("bad URL: %v", err)
	}
}

// TestFoldRecords: a slice naming a UIDL twice ends as applying it row by
// row would.
func TestFoldRecords(t *testing.T) {
	ctx := t.Context()
	s := open(t, newDB(t), Options{})
	a := state.Account{Host: "h", Port: 110, User: "u"}
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	err := s.MarkDelivered(ctx, a, []state.Record{
		{UIDL: "x", State: state.Quarantined, FirstSeen: t0, DeliveredAt: t0, DeletedAt: t0, Note: "first"},
		{UIDL: "x", State: state.Delivered, FirstSeen: t0.Add(time.Hour), DeliveredAt: t0.Add(time.Hour)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddIntents(ctx, a, []state.Intent{{UIDL: "y", Target: "t", Token: "a"}, {UIDL: "y", Target: "t", Token: "b"}}); err != nil {
		t.Fatal(err)
	}
	m, err := state.Known(ctx, s, a, []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	x := m["x"]
	if x.State != state.Delivered || !x.FirstSeen.Equal(t0) || !x.DeletedAt.Equal(t0) || x.Note != "" || !x.DeliveredAt.Equal(t0.Add(time.Hour)) {
		t.Errorf("folded record %+v", x)
	}
	in, err := s.Intents(ctx, a)
	if err != nil || len(in) != 1 || in[0].Token != "b" {
		t.Errorf("Intents = %+v, %v; want one with token b", in, err)
	}
}

// TestTextNotUTF8: names, notes and errors that are not UTF-8 are stored
// (with U+FFFD); UIDLs keep every octet.
func TestTextNotUTF8(t *testing.T) {
	ctx := t.Context()
	s := open(t, newDB(t), Options{})
	a := state.Account{Host: "h", Port: 110, User: "u"}
	t0 := time.Now()
	if err := s.RecordPoll(ctx, state.Poll{Name: "n\xff", Account: a, Start: t0, Err: "-ERR \xfe\x00 bad"}); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkSkipped(ctx, a, []state.Record{{UIDL: "\x00\xff", Note: "n\x00"}}); err != nil {
		t.Fatal(err)
	}
	st, err := s.Status(ctx)
	if err != nil || len(st) != 1 || st[0].LastError != "-ERR \uFFFD\uFFFD bad" || st[0].Name != "n\uFFFD" {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	m, err := state.Known(ctx, s, a, []string{"\x00\xff"})
	if err != nil || m["\x00\xff"].Note != "n\uFFFD" {
		t.Fatalf("Known = %+v, %v", m, err)
	}
}

// TestServerRestart: after pg_ctl restart -m fast the Store works again
// by itself; during the outage operations fail with ErrBusy, not hang.
func TestServerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts the shared cluster")
	}
	ctx := t.Context()
	p := pg(t)
	s := open(t, newDB(t), Options{})
	a := state.Account{Host: "h", Port: 110, User: "u"}
	if err := s.MarkDelivered(ctx, a, []state.Record{{UIDL: "1", State: state.Delivered}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	started := false
	defer func() {
		if !started {
			if err := p.Start(); err != nil {
				t.Error(err)
			}
		}
	}()
	octx, cancel := context.WithTimeout(ctx, 20*time.Second)
	err := s.MarkDelivered(octx, a, []state.Record{{UIDL: "2", State: state.Delivered}})
	cancel()
	if !errors.Is(err, state.ErrBusy) {
		t.Errorf("MarkDelivered with the server down: %v, want ErrBusy", err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	started = true
	if err := s.MarkDelivered(ctx, a, []state.Record{{UIDL: "2", State: state.Delivered}}); err != nil {
		t.Fatalf("MarkDelivered after the restart: %v", err)
	}
	m, err := state.Known(ctx, s, a, []string{"1", "2"})
	if err != nil || len(m) != 2 {
		t.Fatalf("Known = %v, %v", m, err)
	}
}

// countStatements counts the statements a Store sends, for tests and the
// benchmark.
type countStatements struct{ n atomic.Int64 }

func (c *countStatements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *countStatements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (c *countStatements) TraceBatchStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	c.n.Add(int64(d.Batch.Len()))
	return ctx
}

func (c *countStatements) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (c *countStatements) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}
