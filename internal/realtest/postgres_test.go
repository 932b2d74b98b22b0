package realtest

import (
	"strings"
	"testing"
)

// psql runs one statement in database db as the superuser and returns
// its unaligned output.
func (p *Postgres) psql(t *testing.T, db, sql string) string {
	t.Helper()
	cmd := p.command("psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", p.SocketDir, "-p", "5432", "-U", p.User, "-d", db, "-c", sql)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql %q: %v: %s", sql, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestPostgres starts a cluster, checks that it is durable, reachable only
// over its socket with the password, and survives Restart.
func TestPostgres(t *testing.T) {
	p := StartPostgres(t, PostgresOptions{})
	if err := p.CreateDatabase("popsync_t"); err != nil {
		t.Fatal(err)
	}
	for setting, want := range map[string]string{
		"listen_addresses": "", "fsync": "on", "synchronous_commit": "on", "server_encoding": "UTF8",
	} {
		if got := p.psql(t, "popsync_t", "SHOW "+setting); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
	p.psql(t, "popsync_t", "CREATE TABLE k (v int); INSERT INTO k VALUES (42)")

	// Without the password the server refuses the connection.
	cmd := p.command("psql", "-X", "-w", "-h", p.SocketDir, "-p", "5432", "-U", p.User, "-d", "popsync_t", "-c", "SELECT 1")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("connected without a password: %s", out)
	}

	if err := p.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := p.psql(t, "popsync_t", "SELECT v FROM k"); got != "42" {
		t.Errorf("after restart: %q, want 42", got)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if p.Running() {
		t.Error("running after Stop")
	}
	if err := p.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if got := p.psql(t, "popsync_t", "SELECT v FROM k"); got != "42" {
		t.Errorf("after stop and start: %q, want 42", got)
	}
}
