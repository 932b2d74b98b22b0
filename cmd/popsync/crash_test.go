package main_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"popsync/fetch/pop3/pop3test"
	"popsync/internal/realtest"
)

// crashRefill is how many messages are put on the server whenever the
// previous ones were all delivered.
const crashRefill = 100

// TestKillNineAtScale is TestKillNineExactlyOnce many times over: it kills
// `popsync fetch` with SIGKILL at a moment drawn uniformly over the
// expected length of each run (start-up included), POPSYNC_CRASH_RUNS
// times with keep = false and as many with keep = true, against a real
// Dovecot. It counts instead of stopping at the first problem: messages
// lost (gone from the server, not in the Maildir), duplicated (in the
// Maildir twice) and partial (a Maildir file that is none of the
// originals), and fails if any count is not zero.
//
// It is not part of the default run (it takes minutes): set
// POPSYNC_CRASH_RUNS=1000 to run it.
func TestKillNineAtScale(t *testing.T) {
	runs, _ := strconv.Atoi(os.Getenv("POPSYNC_CRASH_RUNS"))
	if runs <= 0 {
		t.Skip("set POPSYNC_CRASH_RUNS to the number of kills per keep setting")
	}
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) {
			crashRuns(t, runs, keep, nil)
		})
	}
}

// TestKillNinePostgres is TestKillNineAtScale with the state on
// PostgreSQL: there a batch's records and the next batch's intents are
// one fenced transaction too, and a killed run's lease must expire
// before the next run may poll. Set POPSYNC_PG_CRASH_RUNS to run it.
func TestKillNinePostgres(t *testing.T) {
	runs, _ := strconv.Atoi(os.Getenv("POPSYNC_PG_CRASH_RUNS"))
	if runs <= 0 {
		t.Skip("set POPSYNC_PG_CRASH_RUNS to the number of kills per keep setting")
	}
	realtest.RequirePostgres(t)
	pg := realtest.StartPostgres(t, realtest.PostgresOptions{})
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) {
			crashRuns(t, runs, keep, pg)
		})
	}
}

// pgCrashTTL is the kill loop's lease TTL, the least popsync accepts.
const pgCrashTTL = 300 * time.Millisecond

// usePostgres points the [state] of the config at cfg (written by
// writeConfig) to a new database of pg, and returns its URL.
func usePostgres(t *testing.T, cfg string, pg *realtest.Postgres) string {
	t.Helper()
	data, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(cfg)
	file := "path = " + strconv.Quote(filepath.Join(dir, "state.db"))
	if !strings.Contains(string(data), file) {
		t.Fatalf("%s has no %s", cfg, file)
	}
	db := fmt.Sprintf("crash%d", time.Now().UnixNano())
	if err := pg.CreateDatabase(db); err != nil {
		t.Fatal(err)
	}
	url := pg.ConnString(db)
	section := fmt.Sprintf("url = %q\nlease_ttl = %q\ndir = %q", url, pgCrashTTL.String(), filepath.Join(dir, "local"))
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(data), file, section, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return url
}

// crashRuns is the kill loop; with pg, the state is on PostgreSQL.
func crashRuns(t *testing.T, kills int, keep bool, pg *realtest.Postgres) {
	// Every killed client leaves a Dovecot session behind until Dovecot
	// notices; hundreds of kills in a row outgrow the default limit of
	// sessions per user and address, which is not what this test is about.
	d := realtest.StartDovecot(t, realtest.DovecotOptions{Config: "mail_max_userip_connections = 100000"})
	dir := t.TempDir()
	maildir := filepath.Join(dir, "Maildir")
	cfg := writeConfig(t, dir, d, account{name: "main", user: d.User, password: d.Password, keep: keep, maildir: maildir})

	want := make(map[string]bool)
	var all [][]byte
	batch := 0
	refill := func() {
		batch++
		more := datas(pop3test.SampleMessages(crashRefill, int64(1000+batch)))
		for _, m := range more {
			want[wantLF(m)] = true
		}
		all = append(all, more...)
		d.Deliver(t, more...)
	}
	refill()

	// An uninterrupted poll of a full refill and one that finds nothing,
	// on a probe account, set the range the kills are spread over.
	probeDir := t.TempDir()
	probe := writeConfig(t, probeDir, d, account{name: "main", user: d.User, password: d.Password, keep: true, maildir: filepath.Join(probeDir, "M")})
	if pg != nil {
		usePostgres(t, cfg, pg)
		usePostgres(t, probe, pg)
	}
	k := newKiller(t, cfg, probe, crashRefill, 2)
	if pg != nil {
		k.afterKill = pgCrashTTL + 200*time.Millisecond
	}
	t.Logf("keep=%v: full poll of %d %v, idle poll %v; seed %d", keep, crashRefill, k.full, k.idle, k.seed)

	lost := make(map[string]bool)
	dup := make(map[string]bool)
	partial := 0
	md := &maildirReader{dir: maildir}
	delivered := 0 // of want, in the Maildir
	for k.killed < kills {
		if delivered == len(want) {
			refill()
		}
		k.run(len(want) - delivered)

		// Count what this interruption did.
		have := make(map[string]int)
		for _, s := range md.read(t) {
			have[s]++
		}
		delivered = 0
		for s, n := range have {
			switch {
			case !want[s]:
				partial++
			case n > 1:
				dup[s] = true
			}
			if want[s] {
				delivered++
			}
		}
		if !keep {
			onServer := make(map[string]bool)
			for _, m := range d.Messages(t) {
				onServer[wantLF(m)] = true
			}
			for s := range want {
				if !onServer[s] && have[s] == 0 {
					lost[s] = true
				}
			}
		}
		if partial > 0 {
			// A partial file is counted once per check; do not count it
			// again on the next round.
			t.Errorf("after kill %d: a Maildir file is none of the originals", k.killed)
			break
		}
	}
	// A last run without interruption must complete the job.
	if r := runPopsync(t, "fetch", "-c", cfg); r.code != 0 {
		t.Fatalf("final run: exit %d\n%s", r.code, r.stderr)
	}
	have := make(map[string]int)
	for _, s := range md.read(t) {
		have[s]++
	}
	for s := range want {
		switch have[s] {
		case 0:
			lost[s] = true
		case 1:
		default:
			dup[s] = true
		}
	}
	onServer := d.Count(t)
	if keep && onServer != len(all) {
		t.Errorf("keep = true, but the server holds %d of %d", onServer, len(all))
	}
	if !keep && onServer != 0 {
		t.Errorf("keep = false, but the server still holds %d after the final run", onServer)
	}
	early, late := k.spread()
	t.Logf("keep=%v: %d kills (%d in the first half of the span, %d in the second), %d runs completed before their kill, %d messages: lost %d, duplicated %d, partial %d",
		keep, k.killed, early, late, k.done, len(want), len(lost), len(dup), partial)
	if len(lost) > 0 || len(dup) > 0 || partial > 0 {
		t.Fatalf("keep=%v: lost %d, duplicated %d, partial %d", keep, len(lost), len(dup), partial)
	}
}
