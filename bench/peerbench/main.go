// Command peerbench measures popsync against the POP3 fetchers it replaces
// (mpop, getmail6, fetchmail) on the same mailboxes of one private Dovecot
// on 127.0.0.1, and checks that every tool delivered every message intact.
//
// It is responsible for provisioning (the Dovecot instance, generated
// mailboxes, each tool's configuration), timing (wall, CPU, peak RSS of the
// tool's process tree), checking the output by Message-ID, and the report
// (medians of repeated runs, ratios to mpop). It is not a test: it asserts
// nothing about speed and is never run by `go test`. See bench/README.md.
//
// Run it from the repository root, as root (it then runs Dovecot and the
// fetchers as two unprivileged users) or as an ordinary user:
//
//	go run ./bench/peerbench -scenarios keep,delete -n 10000
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Scenarios, in the order they run.
var scenarioNames = []string{"keep", "delete", "accounts", "poll", "first", "big", "smtp", "imap"}

// defaultTools are the tools each scenario runs unless -tools says
// otherwise (and only those installed).
var defaultTools = map[string][]string{
	"keep":     {"popsync", "mpop", "getmail", "fetchmail", "wire-maildir"},
	"delete":   {"popsync", "mpop", "getmail", "fetchmail"},
	"accounts": {"popsync", "popsync-serial", "mpop", "wire-null"},
	"poll":     {"popsync", "mpop"},
	"first":    {"popsync", "mpop"},
	"big":      {"popsync", "mpop", "fetchmail"},
	"smtp":     {"popsync", "fetchmail", "wire-smtp"},
	"imap":     {"popsync", "popsync-imap"},
}

type options struct {
	scenarios   []string
	tools       []string
	n           int
	accounts    int
	perAccount  int
	pollN       int
	firstN      int
	smtpN       int
	smtpConns   []int
	imapN       int
	bigMiB      int
	repeats     int
	seed        uint64
	maxParallel int
	// moreParallel are the further values of -max-parallel: the accounts
	// scenario also runs popsync-pN with max_parallel = N for each.
	moreParallel []int
	popsync      string
	dataDir      string
	outDir       string
	serverUser   string
	clientUser   string
	serve        bool
	flushDelays  []time.Duration
}

func main() {
	var o options
	var scen, tools string
	flag.StringVar(&scen, "scenarios", "keep,delete,accounts,poll,first,big,smtp,imap", "comma-separated: "+strings.Join(scenarioNames, ", ")+" (or all)")
	flag.StringVar(&tools, "tools", "", "comma-separated: run only these of each scenario's tools (popsync, popsync-serial, mpop, getmail, fetchmail; default: all of them that are installed)")
	flag.IntVar(&o.n, "n", 10000, "messages in the mailbox of the keep and delete scenarios")
	flag.IntVar(&o.accounts, "accounts", 50, "accounts of the accounts scenario")
	flag.IntVar(&o.perAccount, "per-account", 200, "messages per account of the accounts scenario")
	flag.IntVar(&o.pollN, "poll-n", 100000, "messages on the server in the poll scenario")
	flag.IntVar(&o.firstN, "first-n", 100000, "messages of the first scenario: the first sync of a big mailbox (small messages) into an empty Maildir")
	flag.IntVar(&o.smtpN, "smtp-n", 2000, "messages reinjected over SMTP in the smtp scenario")
	var smtpConns string
	flag.StringVar(&smtpConns, "smtp-connections", "", "in the smtp scenario, also run popsync as popsync-cN with connections = N in its smtp entry, for each comma-separated N (e.g. 1,2,4,8)")
	flag.IntVar(&o.imapN, "imap-n", 2000, "messages of the imap scenario (POP3 into Dovecot IMAP against POP3 into Maildir)")
	flag.IntVar(&o.bigMiB, "big-mib", 200, "size of the one message of the big scenario, MiB")
	flag.IntVar(&o.repeats, "repeats", 3, "timed runs per tool and scenario; the report shows medians")
	flag.Uint64Var(&o.seed, "seed", 1, "mail generator seed; the same seed gives byte-identical mailboxes")
	var parallel string
	flag.StringVar(&parallel, "max-parallel", "8", "popsync's max_parallel; with several comma-separated values (e.g. 4,8,16), the accounts scenario also runs popsync-pN for each value after the first")
	flag.StringVar(&o.popsync, "popsync", "", "popsync binary to measure (default: build ./cmd/popsync into the data folder)")
	flag.StringVar(&o.dataDir, "data", "/tmp/popsync-peerbench", "folder for generated mail, server and tool state")
	flag.StringVar(&o.outDir, "out", "", "results folder (default: DATA/results/DATE)")
	flag.StringVar(&o.serverUser, "server-user", "popbench", "as root: the unprivileged user that runs Dovecot")
	flag.StringVar(&o.clientUser, "client-user", "popclient", "as root: the unprivileged user that runs the fetchers")
	var delays string
	flag.StringVar(&delays, "flush-delay", "", "also run every tool as NAME@DELAY under strace, each fsync-family call delayed by DELAY (a slower disk), e.g. 2ms,10ms")
	flag.BoolVar(&o.serve, "serve", false, "only start Dovecot with the -n mailbox as user \"main\" and the -poll-n one as user \"poll\", and wait for Ctrl-C (for profiling and trying tools by hand)")
	var fleet string
	fo := fleetOptions{}
	flag.StringVar(&fleet, "fleet", "", "instead of the scenarios: a cycle of popsync daemons on one PostgreSQL database over accounts without new mail, for each comma-separated fleet size (e.g. 1,2,4)")
	flag.IntVar(&fo.accounts, "fleet-accounts", 2000, "accounts of the -fleet benchmark")
	flag.Parse()
	for i, f := range strings.Split(parallel, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "peerbench: -max-parallel wants positive numbers such as 8 or 4,8,16, not %q\n", parallel)
			os.Exit(2)
		}
		if i == 0 {
			o.maxParallel = n
		} else if n != o.maxParallel && !slices.Contains(o.moreParallel, n) {
			o.moreParallel = append(o.moreParallel, n)
		}
	}
	if fleet != "" {
		for f := range strings.SplitSeq(fleet, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				fmt.Fprintf(os.Stderr, "peerbench: -fleet wants fleet sizes such as 1,2,4, not %q\n", fleet)
				os.Exit(2)
			}
			fo.daemons = append(fo.daemons, n)
		}
		fo.maxParallel, fo.popsync, fo.dataDir = o.maxParallel, o.popsync, o.dataDir
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := runFleet(ctx, fo)
		stop()
		if err != nil {
			fmt.Fprintf(os.Stderr, "peerbench: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "peerbench: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	}
	for f := range strings.SplitSeq(smtpConns, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "peerbench: -smtp-connections wants counts such as 1,2,4,8, not %q\n", smtpConns)
			os.Exit(2)
		}
		o.smtpConns = append(o.smtpConns, n)
	}
	if scen == "all" {
		scen = strings.Join(scenarioNames, ",")
	}
	for s := range strings.SplitSeq(scen, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !slices.Contains(scenarioNames, s) {
			fmt.Fprintf(os.Stderr, "peerbench: unknown scenario %q (known: %s)\n", s, strings.Join(scenarioNames, ", "))
			os.Exit(2)
		}
		o.scenarios = append(o.scenarios, s)
	}
	for t := range strings.SplitSeq(tools, ",") {
		if t = strings.TrimSpace(t); t != "" {
			o.tools = append(o.tools, t)
		}
	}
	var err error
	if o.flushDelays, err = parseFlushDelays(delays); err != nil {
		fmt.Fprintf(os.Stderr, "peerbench: %v\n", err)
		os.Exit(2)
	}
	if o.repeats < 1 || o.n < 1 || o.accounts < 1 || o.perAccount < 1 || o.pollN < 1 || o.firstN < 1 || o.smtpN < 1 || o.imapN < 1 || o.bigMiB < 1 {
		fmt.Fprintln(os.Stderr, "peerbench: counts and sizes must be positive")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "peerbench: %v\n", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, o options) error {
	server, err := lookupUser(o.serverUser)
	if err != nil {
		return err
	}
	client, err := lookupUser(o.clientUser)
	if err != nil {
		return err
	}
	if _, err := os.Stat(timeBin); err != nil {
		return fmt.Errorf("every run is measured with GNU time (apt-get install time): %w", err)
	}
	if err := os.MkdirAll(o.dataDir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(o.dataDir, 0o755); err != nil {
		return err
	}
	if o.popsync == "" {
		bin := filepath.Join(o.dataDir, "bin", "popsync")
		logf("building popsync into %s", bin)
		if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "popsync/cmd/popsync")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building popsync (run peerbench from inside the popsync module): %w", err)
		}
		o.popsync = bin
	}
	if o.popsync, err = filepath.Abs(o.popsync); err != nil {
		return err
	}
	if o.outDir == "" {
		o.outDir = filepath.Join(o.dataDir, "results", time.Now().Format("20060102-150405"))
	}
	if err := os.MkdirAll(filepath.Join(o.outDir, "logs"), 0o755); err != nil {
		return err
	}

	r := &runner{o: o, server: server, client: client, start: time.Now()}
	// Output of an earlier run, and of this one when it ends: deleted
	// before any timed run starts, or after the last.
	if err := r.settle(ctx); err != nil {
		return err
	}
	defer func() {
		logf("removing old output")
		if err := r.emptyTrash(); err != nil {
			logf("%v", err)
		}
	}()
	for _, n := range o.moreParallel {
		defaultTools["accounts"] = append(defaultTools["accounts"], parallelTool(n))
	}
	wireNull, err := buildWireNull(o.dataDir)
	if err != nil {
		return err
	}
	ts, err := withSlowDisks(allTools(o.popsync, o.moreParallel), o.flushDelays)
	if err != nil {
		return err
	}
	// It never flushes: a slowed disk changes nothing for it.
	ts = append(ts, wireTools(wireNull)...)
	for _, t := range ts {
		if t.available() {
			r.tools = append(r.tools, t)
		} else {
			logf("%s is not installed: left out", t.name)
		}
	}
	r.users = []string{"main", "poll", "first", "big", "reinject", imapUser}
	for i := 1; i <= o.accounts; i++ {
		r.users = append(r.users, accountUser(i))
	}
	logf("starting dovecot (server user %s, fetchers run as %s)", server.name, client.name)
	r.srv, err = startDovecot(ctx, o.dataDir, server, r.users, slices.Contains(o.scenarios, "imap"))
	if err != nil {
		return err
	}
	defer func() {
		if err := r.srv.stop(); err != nil {
			logf("%v", err)
		}
	}()
	if o.serve {
		return r.serveOnly(ctx)
	}
	logf("dovecot on %s; results -> %s", r.srv.addr, o.outDir)
	if err := r.openRaw(); err != nil {
		return err
	}
	defer r.raw.Close()

	var errs []error
	for _, s := range o.scenarios {
		if ctx.Err() != nil {
			break
		}
		logf("=== scenario %s", s)
		var err error
		switch s {
		case "keep":
			err = r.fetchScenario(ctx, "keep", true)
		case "delete":
			err = r.fetchScenario(ctx, "delete", false)
		case "accounts":
			err = r.accountsScenario(ctx)
		case "poll":
			err = r.pollScenario(ctx)
		case "first":
			err = r.firstScenario(ctx)
		case "big":
			err = r.bigScenario(ctx)
		case "smtp":
			err = r.smtpScenario(ctx)
		case "imap":
			err = r.imapScenario(ctx)
		}
		if err != nil {
			logf("scenario %s: %v", s, err)
			errs = append(errs, fmt.Errorf("scenario %s: %w", s, err))
		}
	}
	if err := r.writeReport(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(append(errs, ctx.Err())...)
}

func accountUser(i int) string { return fmt.Sprintf("a%03d", i) }

// serveOnly fills the "main" and "poll" mailboxes and keeps Dovecot
// running until ctx ends.
func (r *runner) serveOnly(ctx context.Context) error {
	for _, mb := range []struct {
		user string
		spec goldSpec
	}{
		{"main", goldSpec{Mix: mixReal, N: r.o.n, Seed: r.o.seed}},
		{"poll", goldSpec{Mix: mixSmall, N: r.o.pollN, Seed: r.o.seed, Account: 1000}},
	} {
		g, err := r.gold(mb.spec)
		if err != nil {
			return err
		}
		if err := r.populate(ctx, mb.user, g); err != nil {
			return err
		}
		logf("user %s: %d messages (%.1f MB); server Maildir %s", mb.user, len(g.msgs), float64(g.wire)/1e6, r.srv.maildir(mb.user))
	}
	logf("dovecot on %s, password %s; Ctrl-C stops it", r.srv.addr, r.srv.password)
	<-ctx.Done()
	return nil
}

// buildWireNull builds the wirenull floor into dataDir/bin, where the
// client user can run it, and returns its path.
func buildWireNull(dataDir string) (string, error) {
	dir := filepath.Join(dataDir, "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "wirenull")
	out, err := exec.Command("go", "build", "-o", bin, "popsync/bench/peerbench/wirenull").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building wirenull (run peerbench from the repository): %v: %s", err, out)
	}
	return bin, nil
}
