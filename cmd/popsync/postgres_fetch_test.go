package main_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"popsync/fetch/pop3/pop3test"
	"popsync/internal/realtest"
	"popsync/state"
	"popsync/state/postgres"
)

// TestFetchPostgresState: `popsync fetch` with its state on PostgreSQL
// fetches a mailbox of several batches (each batch's records go in one
// transaction with the next batch's intents) into the Maildir exactly
// once, leaves no intent open and every message recorded, and a second
// run finds nothing new.
func TestFetchPostgresState(t *testing.T) {
	realtest.RequirePostgres(t)
	pg := realtest.StartPostgres(t, realtest.PostgresOptions{})
	d := realtest.StartDovecot(t, realtest.DovecotOptions{})
	msgs := datas(pop3test.SampleMessages(300, 19))
	d.Deliver(t, msgs...)

	dir := t.TempDir()
	maildir := filepath.Join(dir, "Maildir")
	cfg := writeConfig(t, dir, d, account{name: "main", user: d.User, password: d.Password, keep: true, maildir: maildir})
	url := usePostgres(t, cfg, pg) // the same config, its state on PostgreSQL

	for run := range 2 {
		if r := runPopsync(t, "fetch", "-c", cfg); r.code != 0 {
			t.Fatalf("run %d: exit %d\n%s", run+1, r.code, r.stderr)
		}
		have := make(map[string]int)
		for _, s := range maildirContents(t, maildir) {
			have[s]++
		}
		for i, m := range msgs {
			if n := have[wantLF(m)]; n != 1 {
				t.Errorf("run %d: message %d is in the Maildir %d times", run+1, i, n)
			}
		}
		if len(have) != len(msgs) {
			t.Errorf("run %d: %d distinct messages in the Maildir, want %d", run+1, len(have), len(msgs))
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "state.db")); err == nil {
		t.Error("a SQLite state file was written beside PostgreSQL")
	}

	st, err := postgres.Open(t.Context(), url, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	host, port, _ := strings.Cut(d.TLSAddr, ":")
	portN, _ := strconv.Atoi(port)
	a := state.Account{Host: host, Port: portN, User: d.User}
	if in, err := st.Intents(t.Context(), a); err != nil || len(in) != 0 {
		t.Errorf("open intents after the runs: %d, %v; want none", len(in), err)
	}
	sts, err := st.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(sts) != 1 || sts[0].Account != a.Canonical() || sts[0].Seen != len(msgs) || !sts[0].LastOK {
		t.Errorf("status %+v; want one account, its last poll ok, %d records", sts, len(msgs))
	}
}
