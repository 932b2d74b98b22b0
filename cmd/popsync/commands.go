package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"popsync/configs"
	"popsync/fetch"
	"popsync/fetch/pop3"
	"popsync/internal/credential"
	"popsync/schedule"
	"popsync/state"
)

// common holds the flags every command that reads the config shares.
type common struct {
	config    string
	verbose   bool
	trace     bool
	traceAuth bool
	logFormat string
}

func (c *common) register(fs *flag.FlagSet) {
	def := configs.DefaultPath()
	fs.StringVar(&c.config, "c", def, "config file")
	fs.StringVar(&c.config, "config", def, "config file")
	fs.BoolVar(&c.verbose, "v", false, "verbose: log at debug level")
	fs.BoolVar(&c.trace, "trace", false, "log the POP3 dialogue (credentials redacted)")
	fs.BoolVar(&c.traceAuth, "trace-auth", false, "with --trace, do not redact credentials (never share such a log)")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
}

func (c *common) logger(stderr io.Writer) (*slog.Logger, error) {
	level := slog.LevelInfo
	if c.verbose {
		level = slog.LevelDebug
	}
	if c.trace {
		level = pop3.LevelTrace
		if c.traceAuth {
			// The unredacted login lines are logged one level lower.
			level = pop3.LevelTraceAuth
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(stderr, opts)), nil
	}
	return nil, exitWith(exitUsage, fmt.Errorf("--log-format must be text or json, not %q", c.logFormat))
}

func (c *common) load() (*configs.Config, error) {
	cfg, err := configs.Load(c.config)
	if err != nil {
		return nil, exitWith(exitConfig, err)
	}
	return cfg, nil
}

// quarantineDir is where rejected messages go when a deliver entry names
// no quarantine: in the state folder.
func quarantineDir(cfg *configs.Config) string {
	return filepath.Join(cfg.State.Dir, "quarantine")
}

func openStore(ctx context.Context, cfg *configs.Config) (*state.SQLite, error) {
	st, err := state.OpenSQLite(ctx, cfg.State.Path)
	if err != nil {
		return nil, exitWith(exitState, err)
	}
	return st, nil
}

// names is a repeatable string flag.
type names []string

func (n *names) String() string     { return strings.Join(*n, ",") }
func (n *names) Set(v string) error { *n = append(*n, v); return nil }

// selectAccounts returns the accounts named, or all when none is named.
func selectAccounts(cfg *configs.Config, want []string) ([]*configs.Account, error) {
	if len(want) == 0 {
		return cfg.Accounts, nil
	}
	byName := make(map[string]*configs.Account, len(cfg.Accounts))
	var all []string
	for _, a := range cfg.Accounts {
		byName[a.Name] = a
		all = append(all, a.Name)
	}
	var out []*configs.Account
	for _, n := range want {
		a, ok := byName[n]
		if !ok {
			return nil, exitWith(exitUsage, fmt.Errorf("no account %q in %s (accounts: %s)", n, cfg.Path, strings.Join(all, ", ")))
		}
		out = append(out, a)
	}
	return out, nil
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("popsync "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return exitWith(exitUsage, errors.New(""))
	}
	if fs.NArg() > 0 {
		return exitWith(exitUsage, fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	return nil
}

func cmdFetch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fetch", stderr)
	var c common
	c.register(fs)
	var accounts names
	fs.Var(&accounts, "account", "poll only this account (repeatable)")
	dryRun := fs.Bool("dry-run", false, "show what would be fetched and deleted; change nothing")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	cfg, err := c.load()
	if err != nil {
		return err
	}
	sel, err := selectAccounts(cfg, accounts)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	o := &fetch.Options{Store: st, Logger: log, DryRun: *dryRun, Trace: c.trace, TraceAuth: c.traceAuth,
		QuarantineDir: quarantineDir(cfg), Credential: newTokens(st, log).Credential}
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		o.Progress = newProgress(f).update
	}
	results := o.PollAll(ctx, sel, cfg.Daemon.MaxParallel)
	failed := 0
	for _, r := range results {
		if r.Err != nil {
			failed++
		}
	}
	if failed > 0 {
		return exitWith(exitAccounts, fmt.Errorf("%d of %d accounts failed", failed, len(results)))
	}
	return nil
}

func cmdCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", stderr)
	var c common
	c.register(fs)
	var accounts names
	fs.Var(&accounts, "account", "check only this account (repeatable)")
	connect := fs.Bool("connect", false, "log in to each account and report what the server offers")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	cfg, err := c.load()
	if err != nil {
		return err
	}
	sel, err := selectAccounts(cfg, accounts)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok, %d account(s), state %s\n", cfg.Path, len(cfg.Accounts), cfg.State.Path)
	if !*connect {
		for _, a := range sel {
			fmt.Fprintf(stdout, "  %s: %s@%s tls=%s auth=%s keep=%v\n", a.Name, a.User, a.Addr(), a.TLS, a.Auth, a.Keep)
		}
		return nil
	}
	// OAuth 2.0 accounts log in with the token in the state store.
	var cred func(*configs.Account) (credential.Credential, error)
	for _, a := range sel {
		if a.OAuth2 != nil && cred == nil {
			st, err := openStore(ctx, cfg)
			if err != nil {
				return err
			}
			defer st.Close()
			cred = newTokens(st, log).Credential
		}
	}
	failed := 0
	for _, a := range sel {
		r := fetch.Check(ctx, a, fetch.CheckOptions{Logger: log, Trace: c.trace, TraceAuth: c.traceAuth, Credential: cred})
		if r.Err != nil && r.Count == 0 && len(r.Targets) == 0 {
			failed++
			fmt.Fprintf(stdout, "  %s: FAILED: %v\n", a.Name, r.Err)
			continue
		}
		fmt.Fprintf(stdout, "  %s: %s, %s; auth %s; %d messages, %d bytes\n    capabilities: %s\n",
			a.Name, r.Addr, r.TLSState, r.Mechanism, r.Count, r.Size, strings.Join(r.Caps, " "))
		for _, tc := range r.Targets {
			if tc.Err != nil {
				fmt.Fprintf(stdout, "    deliver %s: FAILED: %v\n", tc.Target, tc.Err)
			} else {
				fmt.Fprintf(stdout, "    deliver %s: ok\n", tc.Target)
			}
		}
		if r.Err != nil {
			failed++
		}
	}
	if failed > 0 {
		return exitWith(exitAccounts, fmt.Errorf("%d of %d accounts failed", failed, len(sel)))
	}
	return nil
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", stderr)
	var c common
	c.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := c.load()
	if err != nil {
		return err
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	all, err := st.Status(ctx)
	if err != nil {
		return exitWith(exitState, err)
	}
	// The store keys by identity: an account renamed in the config keeps
	// its history, and two names never share one.
	byID := make(map[state.Account]state.AccountStatus, len(all))
	for _, s := range all {
		byID[s.Account.Canonical()] = s
	}
	type row struct {
		Account     string                `json:"account"`
		Schedule    string                `json:"schedule"`
		LastPoll    time.Time             `json:"last_poll,omitzero"`
		LastSuccess time.Time             `json:"last_success,omitzero"`
		LastError   string                `json:"last_error,omitempty"`
		LastErrorAt time.Time             `json:"last_error_at,omitzero"`
		Seen        int                   `json:"seen"`
		Pending     int                   `json:"pending"`
		Daemon      *schedule.PlannedPoll `json:"daemon,omitempty"` // next poll, when a daemon runs
		OAuth2      *tokenStatus          `json:"oauth2,omitempty"` // login.go
	}
	plan := daemonPlan(cfg.State)
	rows := make([]row, 0, len(cfg.Accounts))
	for _, a := range cfg.Accounts {
		s := byID[a.Identity()]
		rows = append(rows, row{Account: a.Name, Schedule: a.Schedule, LastPoll: s.LastPoll,
			LastSuccess: s.LastSuccess, LastError: s.LastError, LastErrorAt: s.LastErrorAt,
			Seen: s.Seen, Pending: s.Pending, Daemon: planned(plan, a.Name)})
		if rows[len(rows)-1].OAuth2, err = oauth2Status(ctx, st, a); err != nil {
			return exitWith(exitState, err)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tSCHEDULE\tNEXT POLL\tLAST POLL\tLAST SUCCESS\tSEEN\tPENDING\tOAUTH2\tLAST ERROR")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", r.Account, r.Schedule, nextPollText(plan, r.Account),
			when(r.LastPoll), when(r.LastSuccess), r.Seen, r.Pending, r.OAuth2.text(r.Account), r.LastError)
	}
	return tw.Flush()
}

func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func cmdVersion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	v, rev, dirty, goVersion := "(devel)", "", "", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "+dirty"
				}
			}
		}
	}
	fmt.Fprintf(stdout, "popsync %s", v)
	if rev != "" {
		fmt.Fprintf(stdout, " (%s%s)", rev, dirty)
	}
	fmt.Fprintf(stdout, " %s\n", goVersion)
	return nil
}
