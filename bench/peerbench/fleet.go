package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"popsync/internal/realtest"
	"popsync/state"
	"popsync/state/postgres"
)

// fleetOptions configure the fleet benchmark (-fleet).
type fleetOptions struct {
	accounts    int
	daemons     []int
	maxParallel int
	popsync     string
	dataDir     string
}

// fleetMail adds to each fleet size a cycle in which every account has
// new mail.
var fleetMail = flag.Bool("fleet-mail", true, "-fleet: also a cycle in which every account has 1-5 new small messages (keep mode, into a Maildir)")

// fleetResult is one fleet size's cycles.
type fleetResult struct {
	daemons            int
	first, cycle       time.Duration // the first cycle (start-up included), a steady one
	statements, xacts  int64         // in the database, during the cycle
	stmtPerPoll, xPoll float64

	// The cycle with new mail (fleetMail): messages delivered in it.
	mail                       time.Duration
	mailMsgs                   int
	mailStatements, mailXacts  int64
	mailStmtPerPoll, mailXPoll float64
}

// runFleet measures a cycle of `popsync run` daemons sharing one
// PostgreSQL database over accounts with no new mail, and (fleetMail) one
// in which every account has a few new messages: for each fleet size,
// a fresh database, the daemons started together, the time until every
// account has a recorded poll, and what the database did meanwhile
// (pg_stat_statements calls, and transactions from pg_stat_database,
// which with pipelined writes are the round trips that wrote or read).
func runFleet(ctx context.Context, o fleetOptions) error {
	logf("fleet: starting PostgreSQL (pg_stat_statements) and Dovecot with %d users", o.accounts)
	pg, err := realtest.LaunchPostgres(realtest.PostgresOptions{Config: "shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\nmax_connections = 200"})
	if err != nil {
		return err
	}
	defer pg.Close()
	users := make([]string, o.accounts)
	for i := range users {
		users[i] = fmt.Sprintf("f%05d", i)
	}
	d, err := realtest.LaunchDovecot(realtest.DovecotOptions{Users: users, Connections: 100000,
		Config: "mail_max_userip_connections = 100000"})
	if err != nil {
		return err
	}
	defer d.Close()
	dir := filepath.Join(o.dataDir, "fleet")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	bin := o.popsync
	if bin == "" {
		bin = filepath.Join(dir, "popsync")
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "popsync/cmd/popsync").CombinedOutput(); err != nil {
			return fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	var results []fleetResult
	for _, n := range o.daemons {
		r, err := fleetCycle(ctx, o, pg, d, users, bin, dir, n)
		if err != nil {
			return err
		}
		results = append(results, r)
		logf("fleet: %d daemon(s): first cycle over %d accounts in %v, steady cycle in %v; %.1f statements and %.1f transactions per account poll",
			n, o.accounts, r.first.Round(time.Millisecond), r.cycle.Round(time.Millisecond), r.stmtPerPoll, r.xPoll)
		if r.mailMsgs > 0 {
			logf("fleet: %d daemon(s): cycle with %d new messages in %v; %.1f statements and %.1f transactions per account poll",
				n, r.mailMsgs, r.mail.Round(time.Millisecond), r.mailStmtPerPoll, r.mailXPoll)
		}
	}
	fmt.Printf("\n| daemons | accounts | first cycle (start-up) | steady cycle | polls/s | statements per poll | transactions per poll |\n")
	fmt.Printf("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range results {
		fmt.Printf("| %d | %d | %.1f s | %.1f s | %.0f | %.1f | %.1f |\n", r.daemons, o.accounts, r.first.Seconds(), r.cycle.Seconds(),
			float64(o.accounts)/r.cycle.Seconds(), r.stmtPerPoll, r.xPoll)
	}
	if !*fleetMail {
		return nil
	}
	fmt.Printf("\nWith new mail (1-5 messages per account, keep mode, into a Maildir):\n\n")
	fmt.Printf("| daemons | accounts | messages | cycle | polls/s | messages/s | statements per poll | transactions per poll |\n")
	fmt.Printf("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range results {
		fmt.Printf("| %d | %d | %d | %.1f s | %.0f | %.0f | %.1f | %.1f |\n", r.daemons, o.accounts, r.mailMsgs, r.mail.Seconds(),
			float64(o.accounts)/r.mail.Seconds(), float64(r.mailMsgs)/r.mail.Seconds(), r.mailStmtPerPoll, r.mailXPoll)
	}
	return nil
}

func fleetCycle(ctx context.Context, o fleetOptions, pg *realtest.Postgres, d *realtest.Dovecot, users []string, bin, dir string, n int) (fleetResult, error) {
	r := fleetResult{daemons: n}
	db := fmt.Sprintf("fleet%d", n)
	if err := pg.CreateDatabase(db); err != nil {
		return r, err
	}
	url := pg.ConnString(db)
	cfg := filepath.Join(dir, db+".toml")
	var b strings.Builder
	fmt.Fprintf(&b, "[state]\nurl = %q\ndir = %q\n\n[daemon]\nmax_parallel = %d\n\n", url, filepath.Join(dir, db), o.maxParallel)
	host, port, _ := strings.Cut(d.TLSAddr, ":")
	fmt.Fprintf(&b, "[defaults]\nhost = %q\nport = %s\ntls = \"implicit\"\ntls_ca_file = %q\npassword = %q\nschedule = \"@every 24h\"\nkeep = true\n",
		host, port, d.CAFile, d.Password)
	for _, u := range users {
		fmt.Fprintf(&b, "\n[[account]]\nname = %q\nuser = %q\n\n  [[account.deliver]]\n  maildir = %q\n", u, u, filepath.Join(dir, db, "m", u))
	}
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		return r, err
	}
	// The schema first, so that the statistics count the cycle only.
	st, err := postgres.Open(ctx, url, postgres.Options{})
	if err != nil {
		return r, err
	}
	defer st.Close()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return r, err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		return r, err
	}
	if _, err := conn.Exec(ctx, `SELECT pg_stat_statements_reset(), pg_stat_reset()`); err != nil {
		return r, err
	}
	start := time.Now()
	procs, err := startFleet(bin, cfg, dir, db, n, "")
	defer func() { stopFleet(procs) }()
	if err != nil {
		return r, err
	}
	idents := make(map[state.Account]bool, len(users))
	portN, _ := strconv.Atoi(port)
	for _, u := range users {
		idents[state.Account{Host: host, Port: portN, User: u}.Canonical()] = true
	}
	if err := waitCycle(ctx, st, idents, start, n); err != nil {
		return r, err
	}
	r.first = time.Since(start)
	// The steady cycle: every account due again at once, the daemons
	// warmed up (registered, accounts scheduled, statements prepared).
	time.Sleep(time.Second)
	r.cycle, r.statements, r.xacts, err = dueCycle(ctx, conn, db, st, idents, n, procs)
	procs = nil
	if err != nil {
		return r, err
	}
	polls := float64(len(users))
	r.stmtPerPoll = perPoll(r.statements, r.cycle, polls)
	r.xPoll = perPoll(r.xacts, r.cycle, polls)
	if !*fleetMail {
		return r, nil
	}

	// The cycle with new mail: the daemons started again and settled
	// (every account is due in a day), then 1-5 small messages for every
	// account, then every account due at once.
	if procs, err = startFleet(bin, cfg, dir, db, n, "-mail"); err != nil {
		return r, err
	}
	// An idle backend reports its transactions within 10 s: the
	// daemons' start-up stays out of the counts.
	time.Sleep(12 * time.Second)
	total, err := fleetDeliver(d, users, int64(n))
	if err != nil {
		return r, err
	}
	defer fleetEmpty(d, users)
	r.mail, r.mailStatements, r.mailXacts, err = dueCycle(ctx, conn, db, st, idents, n, procs)
	procs = nil
	if err != nil {
		return r, err
	}
	r.mailMsgs = total
	got := 0
	for _, u := range users {
		k, err := countEntries(filepath.Join(dir, db, "m", u, "new"), filepath.Join(dir, db, "m", u, "cur"))
		if err != nil {
			return r, err
		}
		got += k
	}
	if got != total {
		return r, fmt.Errorf("%d daemons: the Maildirs hold %d messages after the cycle with new mail, want %d", n, got, total)
	}
	r.mailStmtPerPoll = perPoll(r.mailStatements, r.mail, polls)
	r.mailXPoll = perPoll(r.mailXacts, r.mail, polls)
	return r, nil
}

// dueCycle makes every account due at once, waits until all n daemons
// (procs) have polled every account of idents, and stops them. It returns
// how long the cycle took and the statements and transactions the
// database counted over it, the daemons' statistics sent.
func dueCycle(ctx context.Context, conn *pgx.Conn, db string, st *postgres.Store, idents map[state.Account]bool, n int, procs []*exec.Cmd) (took time.Duration, stmts, xacts int64, err error) {
	defer func() { stopFleet(procs) }()
	stmts0, x0, err := dbCounters(ctx, conn, db)
	if err != nil {
		return 0, 0, 0, err
	}
	start := time.Now()
	if _, err := conn.Exec(ctx, `UPDATE schedule SET next_due = now()`); err != nil {
		return 0, 0, 0, err
	}
	if err := waitCycle(ctx, st, idents, start, n); err != nil {
		return 0, 0, 0, err
	}
	took = time.Since(start)
	// Stopped daemons have sent their statistics.
	stopFleet(procs)
	procs = nil
	time.Sleep(time.Second)
	stmts1, x1, err := dbCounters(ctx, conn, db)
	if err != nil {
		return 0, 0, 0, err
	}
	return took, stmts1 - stmts0, x1 - x0, nil
}

// perPoll divides count over polls, less the Status queries of waitCycle,
// which are in the counts too: few (one per 50 ms of the cycle, which
// took took), and subtracted as well as they can be: one statement and
// one transaction each.
func perPoll(count int64, took time.Duration, polls float64) float64 {
	probes := float64(took/(50*time.Millisecond)) + 1
	return (float64(count) - probes) / polls
}

// startFleet starts n `popsync run` daemons on cfg, each logging to a
// file of its own in dir. On error it returns the daemons it started.
func startFleet(bin, cfg, dir, db string, n int, tag string) ([]*exec.Cmd, error) {
	var procs []*exec.Cmd
	for i := range n {
		cmd := exec.Command(bin, "run", "-q", "-c", cfg)
		logFile, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s%s-daemon%d.log", db, tag, i)))
		if err != nil {
			return procs, err
		}
		cmd.Stderr = logFile
		err = cmd.Start()
		logFile.Close() // the child has its own descriptor
		if err != nil {
			return procs, err
		}
		procs = append(procs, cmd)
	}
	return procs, nil
}

// stopFleet stops the daemons with SIGTERM and waits for them.
func stopFleet(procs []*exec.Cmd) {
	for _, p := range procs {
		p.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		p.Wait()
	}
}

// fleetDeliver puts 1-5 small messages (1-4 KB) into the server Maildir
// of every user, owned like the Maildir, and returns how many.
func fleetDeliver(d *realtest.Dovecot, users []string, seed int64) (int, error) {
	rng := rand.New(rand.NewPCG(uint64(seed), 11))
	now := time.Now()
	total := 0
	for ui, u := range users {
		newDir := filepath.Join(d.MaildirOf(u), "new")
		fi, err := os.Stat(newDir)
		if err != nil {
			return total, fmt.Errorf("delivering to %s: %w", u, err)
		}
		sys, _ := fi.Sys().(*syscall.Stat_t)
		for k := range 1 + rng.IntN(5) {
			var b strings.Builder
			fmt.Fprintf(&b, "From: sender%d@example.org\nTo: %s@example.net\nMessage-ID: <%d.%d.%d.fleet@peerbench>\nSubject: fleet message %d\nDate: %s\n\n",
				k, u, seed, ui, k, k, now.Format(time.RFC1123Z))
			size := 1000 + rng.IntN(3000)
			for b.Len() < size {
				b.WriteString("a line of a small fleet message, to make it a few kilobytes long\n")
			}
			name := fmt.Sprintf("%d.M%dP%d.peerbench%d_%d,S=%d", now.Unix(), ui*8+k, os.Getpid(), seed, k, b.Len())
			path := filepath.Join(newDir, name)
			if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
				return total, fmt.Errorf("delivering to %s: %w", u, err)
			}
			if sys != nil {
				if err := os.Lchown(path, int(sys.Uid), int(sys.Gid)); err != nil {
					return total, fmt.Errorf("delivering to %s: %w", u, err)
				}
			}
			total++
		}
	}
	return total, nil
}

// fleetEmpty removes every message from the users' server Maildirs, so
// that the next fleet size starts with no mail again.
func fleetEmpty(d *realtest.Dovecot, users []string) {
	for _, u := range users {
		for _, sub := range []string{"new", "cur"} {
			dir := filepath.Join(d.MaildirOf(u), sub)
			ents, err := os.ReadDir(dir)
			if err != nil {
				continue
			}
			for _, e := range ents {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
}

// countEntries counts the entries of the directories that exist.
func countEntries(dirs ...string) (int, error) {
	n := 0
	for _, dir := range dirs {
		ents, err := os.ReadDir(dir)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return n, err
		}
		n += len(ents)
	}
	return n, nil
}

// dbCounters reads the statements executed (pg_stat_statements) and the
// transactions committed or rolled back in database db.
func dbCounters(ctx context.Context, conn *pgx.Conn, db string) (stmts, xacts int64, err error) {
	err = conn.QueryRow(ctx, `SELECT
		(SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1),
		(SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = $1)`, db).Scan(&stmts, &xacts)
	if err != nil {
		return 0, 0, fmt.Errorf("reading statistics: %w", err)
	}
	return stmts, xacts, nil
}

// waitCycle waits until every account of idents has a poll that started
// after since.
func waitCycle(ctx context.Context, st *postgres.Store, idents map[state.Account]bool, since time.Time, n int) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		all, err := st.Status(ctx)
		if err != nil {
			return err
		}
		done := 0
		for _, s := range all {
			if idents[s.Account] && s.LastPoll.After(since) {
				done++
			}
		}
		if done == len(idents) {
			return nil
		}
		if time.Since(since) > 30*time.Minute {
			return fmt.Errorf("%d daemons: only %d of %d accounts polled in 30 minutes", n, done, len(idents))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
