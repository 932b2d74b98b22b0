package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"popsync/configs"
	"popsync/fetch"
	"popsync/fetch/pop3"
	"popsync/schedule"
	"popsync/state"
	"popsync/state/postgres"
)

// common holds the flags every command that reads the config shares.
// They may also be given before the command: `popsync -c FILE fetch`.
type common struct {
	config    string
	quiet     bool
	verbose   bool
	trace     traceLevel
	logFormat string
}

func newCommon() *common {
	return &common{config: configs.DefaultPath(), logFormat: "text"}
}

var configDef = flagDef{short: "c", long: "config", arg: "FILE", file: true,
	help: "the config file (default: $XDG_CONFIG_HOME/popsync/config.toml, else ~/.config/popsync/config.toml)"}

func (c *common) register(f *flags) {
	f.String(&c.config, configDef)
	f.Bool(&c.quiet, flagDef{short: "q", long: "quiet",
		help: "print errors only; a poll that finds no new mail prints nothing at all (for cron)"})
	f.Bool(&c.verbose, flagDef{short: "v", long: "verbose",
		help: "log at debug level, with one line per message: UIDL, size, target and result"})
	f.Var(&c.trace, flagDef{long: "trace", arg: "[=LEVEL]", values: traceNames,
		help: "log the POP3 dialogue; LEVEL protocol (the default) replaces credentials by <redacted>, auth shows them (never share such a log)"})
	f.Var(traceAuthAlias{&c.trace}, flagDef{long: "trace-auth", hidden: true, help: "the old spelling of --trace=auth"})
	f.String(&c.logFormat, flagDef{long: "log-format", arg: "FORMAT", values: []string{"text", "json"},
		help: "the log format on stderr: text or json (JSON lines)"})
}

// logger builds the logger the flags ask for. Levels below Debug are
// named TRACE and TRACE-AUTH in the output, not DEBUG-4 and DEBUG-8.
func (c *common) logger(stderr io.Writer) (*slog.Logger, error) {
	if c.quiet && (c.verbose || c.trace != traceOff) {
		return nil, usageErrorf("-q cannot be combined with -v or --trace")
	}
	level := slog.LevelInfo
	switch {
	case c.quiet:
		level = slog.LevelError
	case c.trace == traceAuth:
		// The unredacted login lines are logged one level lower.
		level = pop3.LevelTraceAuth
	case c.trace == traceProtocol:
		level = pop3.LevelTrace
	case c.verbose:
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: levelNames}
	switch c.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(stderr, opts)), nil
	}
	return nil, usageErrorf("--log-format must be text or json, not %q", c.logFormat)
}

// levelNames names the trace levels in log output.
func levelNames(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 || a.Key != slog.LevelKey {
		return a
	}
	l, ok := a.Value.Any().(slog.Level)
	switch {
	case !ok || l >= slog.LevelDebug:
		return a
	case l <= pop3.LevelTraceAuth:
		return slog.String(slog.LevelKey, "TRACE-AUTH")
	}
	return slog.String(slog.LevelKey, "TRACE")
}

// configError is a config file that is missing or cannot be used: exit
// status exitConfig.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// stateError is a state file that cannot be used: exit status exitState.
type stateError struct{ err error }

func (e *stateError) Error() string { return e.err.Error() }
func (e *stateError) Unwrap() error { return e.err }

func (c *common) load() (*configs.Config, error) {
	cfg, err := configs.Load(c.config)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &configError{missingConfig(c.config)}
	}
	if err != nil {
		return nil, &configError{err}
	}
	return cfg, nil
}

// missingConfig says where popsync looked and how to get a config.
func missingConfig(path string) error {
	if path == configs.DefaultPath() {
		return fmt.Errorf("no config file at %s (the default place: $XDG_CONFIG_HOME/popsync/config.toml, else ~/.config/popsync/config.toml; -c FILE names another); "+
			"write a starter config with: popsync init you@example.net", path)
	}
	return fmt.Errorf("no config file at %s; write a starter config with: popsync init -c %s you@example.net", path, shellQuote(path))
}

// shellQuote quotes s for a shell command line when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+@:~", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// quarantineDir is where rejected messages go when a deliver entry names
// no quarantine: in the state folder.
func quarantineDir(cfg *configs.Config) string {
	return filepath.Join(cfg.State.Dir, "quarantine")
}

// openStoreReadOnly opens the state for reading only: it creates no file,
// and a missing state file reads as empty.
// A fleet's database is opened as usual: reading it creates no file.
func openStoreReadOnly(ctx context.Context, cfg *configs.Config) (*store, error) {
	return openStateReadOnly(ctx, cfg.State)
}

func openStateReadOnly(ctx context.Context, sc configs.State) (*store, error) {
	if sc.Fleet() {
		pg, err := postgres.Open(ctx, sc.URL, postgres.Options{LeaseTTL: sc.LeaseTTL.D()})
		if err != nil {
			return nil, &stateError{err}
		}
		return &store{Store: pg, tokens: pg.Tokens(), fleet: pg}, nil
	}
	st, _, err := state.OpenSQLiteReadOnly(ctx, sc.Path)
	if err != nil {
		return nil, &stateError{err}
	}
	return &store{Store: st, tokens: st.Tokens()}, nil
}

// printPlan lists what a dry run would do, per account and message.
func printPlan(w io.Writer, results []fetch.Result) {
	n := 0
	for _, r := range results {
		n += len(r.Plan)
	}
	if n == 0 {
		fmt.Fprintln(w, "dry run: nothing to fetch, skip or delete")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tACTION\tUIDL\tSIZE\tFROM\tSUBJECT")
	for _, r := range results {
		for _, m := range r.Plan {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", r.Account, m.Action, m.UIDL, m.Size, m.From, m.Subject)
		}
	}
	tw.Flush()
}

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
	seen := make(map[string]bool)
	for _, n := range want {
		a, ok := byName[n]
		if !ok {
			return nil, usageErrorf("no account %q in %s (accounts: %s)", n, cfg.Path, strings.Join(all, ", "))
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, a)
		}
	}
	return out, nil
}

// accountFailure is one account that failed in a fetch or check.
type accountFailure struct {
	name string
	err  error
}

// accountsError reports that accounts failed; the others were polled.
// Its exit status is that of the first failure in config order.
type accountsError struct {
	failed []accountFailure
	total  int
}

func (e *accountsError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d accounts failed", len(e.failed), e.total)
	for _, f := range e.failed {
		if h := hint(f.err); h != "" {
			fmt.Fprintf(&b, "\n  account %q: %s", f.name, h)
		}
	}
	return b.String()
}

func (e *accountsError) Unwrap() error { return e.failed[0].err }

// hint says what to change for the mistakes users make most, or "".
func hint(err error) string {
	switch {
	case errors.Is(err, pop3.ErrNotTLS):
		return `the server did not answer TLS; try tls = "starttls" or port 110`
	case errors.Is(err, pop3.ErrUnexpectedTLS):
		return `the server speaks TLS from the first byte on this port; try tls = "implicit" (port 995)`
	case errors.Is(err, pop3.ErrTLSRequired):
		return `the server does not offer STLS on this port; try tls = "implicit" and port 995`
	}
	return ""
}

func setupFetch(f *flags, g *common) runFunc {
	g.register(f)
	var accounts names
	f.Var(&accounts, flagDef{long: "account", arg: "NAME", help: "poll only this account (repeatable; names after the flags work too)"})
	var dryRun, keep, noKeep bool
	f.Bool(&dryRun, flagDef{long: "dry-run", help: "show what would be fetched and deleted; change nothing"})
	f.Bool(&keep, flagDef{long: "keep", help: "this time, leave every message on the server (keep = true, no delete_after)"})
	f.Bool(&noKeep, flagDef{long: "no-keep", help: "this time, delete each message from the server once it is delivered (keep = false)"})
	fetchLimit := -1
	f.Int(&fetchLimit, flagDef{long: "fetch-limit", arg: "N", help: "this time, fetch at most N new messages per account (0: all)"})
	var newIdentity names
	f.Var(&newIdentity, flagDef{long: "new-identity", arg: "NAME",
		help: "the account's changed host, port or user names another mailbox: start a seen-set of its own (repeatable; see popsync help state)"})
	return func(ctx context.Context, e *env, args []string) error {
		if keep && noKeep {
			return usageErrorf("--keep and --no-keep contradict each other")
		}
		if fetchLimit < -1 {
			return usageErrorf("--fetch-limit must be 0 or more, not %d", fetchLimit)
		}
		log, err := g.logger(e.stderr)
		if err != nil {
			return err
		}
		cfg, err := g.load()
		if err != nil {
			return err
		}
		sel, err := selectAccounts(cfg, append(accounts, args...))
		if err != nil {
			return err
		}
		sel = override(sel, keep, noKeep, fetchLimit)
		if sel, err = declareNew(cfg, sel, newIdentity); err != nil {
			return err
		}
		open := openStore
		if dryRun {
			open = openStoreReadOnly // a dry run writes nothing anywhere
		}
		st, err := open(ctx, cfg)
		if err != nil {
			return err
		}
		defer st.Close()
		o := &fetch.Options{Store: st, Logger: log, DryRun: dryRun, Trace: g.trace != traceOff, TraceAuth: g.trace == traceAuth,
			QuarantineDir: quarantineDir(cfg), Configured: func() []*configs.Account { return cfg.Accounts }}
		tokens := newTokens(st, log)
		o.Credential, o.TargetCredential = tokens.Credential, tokens.TargetCredential
		if g.verbose {
			o.OnMessage = func(ev fetch.MessageEvent) { logMessage(ctx, log, ev) }
		}
		if f, ok := e.stderr.(*os.File); ok && !g.quiet && term.IsTerminal(int(f.Fd())) {
			o.Progress = newProgress(f).update
		}
		results := o.PollAll(ctx, sel, cfg.Daemon.MaxParallel)
		if err := interrupted(ctx); err != nil {
			return err
		}
		if dryRun {
			printPlan(e.stdout, results)
		}
		var failed []accountFailure
		for _, r := range results {
			if r.Err != nil {
				failed = append(failed, accountFailure{r.Account, r.Err})
			}
		}
		if len(failed) > 0 {
			return &accountsError{failed: failed, total: len(results)}
		}
		return nil
	}
}

// logMessage is the line -v adds per message, as fetchmail -v does.
func logMessage(ctx context.Context, log *slog.Logger, ev fetch.MessageEvent) {
	attrs := []slog.Attr{slog.String("account", ev.Account), slog.String("uidl", ev.UIDL),
		slog.Int64("size", ev.Size), slog.String("target", ev.Target), slog.String("result", ev.Result)}
	level := slog.LevelInfo
	if ev.Err != nil {
		attrs = append(attrs, slog.String("error", ev.Err.Error()))
		level = slog.LevelWarn
	}
	log.LogAttrs(ctx, level, "message", attrs...)
}

// declareNew sets NewIdentity on copies of the accounts named by
// --new-identity.
func declareNew(cfg *configs.Config, sel []*configs.Account, named []string) ([]*configs.Account, error) {
	for _, n := range named {
		if _, ok := cfg.Lookup(n); !ok {
			return nil, usageErrorf("--new-identity: no account %q in %s", n, cfg.Path)
		}
	}
	out := make([]*configs.Account, len(sel))
	for i, a := range sel {
		out[i] = a
		if slices.Contains(named, a.Name) {
			cp := *a
			cp.NewIdentity = true
			out[i] = &cp
		}
	}
	return out, nil
}

// override applies the one-off --keep, --no-keep and --fetch-limit to
// copies of the accounts; the config is not changed.
func override(sel []*configs.Account, keep, noKeep bool, fetchLimit int) []*configs.Account {
	if !keep && !noKeep && fetchLimit < 0 {
		return sel
	}
	out := make([]*configs.Account, len(sel))
	for i, a := range sel {
		cp := *a
		switch {
		case keep:
			cp.Keep, cp.DeleteAfter = true, 0
		case noKeep:
			cp.Keep = false
		}
		if fetchLimit >= 0 {
			cp.FetchLimit = fetchLimit
		}
		out[i] = &cp
	}
	return out
}

func setupCheck(f *flags, g *common) runFunc {
	g.register(f)
	var accounts names
	f.Var(&accounts, flagDef{long: "account", arg: "NAME", help: "check only this account (repeatable; names after the flags work too)"})
	var connect bool
	f.Bool(&connect, flagDef{long: "connect", help: "log in to each account and report what the server offers; try every delivery target"})
	var runCommands bool
	f.Bool(&runCommands, flagDef{long: "run-commands", help: "run each password_command to see that it gives a password (without it, check only finds the program); the password is never shown"})
	return func(ctx context.Context, e *env, args []string) error {
		log, err := g.logger(e.stderr)
		if err != nil {
			return err
		}
		cfg, err := g.load()
		if err != nil {
			return err
		}
		sel, err := selectAccounts(cfg, append(accounts, args...))
		if err != nil {
			return err
		}
		stdout := e.stdout
		fmt.Fprintf(stdout, "%s: ok, %d account(s), state %s\n", cfg.Path, len(cfg.Accounts), cfg.State.Where())
		var failed []accountFailure
		// Local resources first, without the network and without
		// creating anything.
		if cfg.State.Fleet() {
			// The database is checked by --connect's logins, not here.
		} else if err := checkCreatable(cfg.State.Path, false); err != nil {
			fmt.Fprintf(stdout, "  state %s: FAILED: %v\n", cfg.State.Path, err)
			failed = append(failed, accountFailure{"state", &stateError{err}})
		}
		st, err := openStoreReadOnly(ctx, cfg)
		if err != nil {
			fmt.Fprintf(stdout, "  state %s: FAILED: %v\n", cfg.State.Where(), err)
			failed = append(failed, accountFailure{"state", &stateError{err}})
		} else {
			defer st.Close()
		}
		for _, a := range sel {
			var store state.Store
			if st != nil {
				store = st
			}
			probs := checkLocal(ctx, store, cfg, a, runCommands)
			fmt.Fprintf(stdout, "  %s: %s@%s tls=%s auth=%s keep=%v\n", a.Name, a.User, a.Addr(), a.TLS, a.Auth, a.Keep)
			for _, p := range probs {
				fmt.Fprintf(stdout, "    %s: FAILED: %v\n", p.what, p.err)
			}
			if len(probs) > 0 {
				failed = append(failed, accountFailure{a.Name, probs[0].err})
			}
		}
		if !connect {
			if len(failed) > 0 {
				return &accountsError{failed: failed, total: len(sel)}
			}
			return nil
		}
		tokens, closeStore, err := checkCredential(ctx, cfg, sel, log) // login.go
		if err != nil {
			return err
		}
		defer closeStore()
		co := fetch.CheckOptions{Logger: log, Trace: g.trace != traceOff, TraceAuth: g.trace == traceAuth}
		if tokens != nil {
			co.Credential, co.TargetCredential = tokens.Credential, tokens.TargetCredential
		}
		for _, a := range sel {
			r := fetch.Check(ctx, a, co)
			if err := interrupted(ctx); err != nil {
				return err
			}
			if r.Err != nil && r.Count == 0 && len(r.Targets) == 0 {
				failed = append(failed, accountFailure{a.Name, r.Err})
				fmt.Fprintf(stdout, "  %s: FAILED: %v\n", a.Name, r.Err)
				continue
			}
			fmt.Fprintf(stdout, "  %s: %s, %s; auth %s; %d messages, %d bytes\n    capabilities: %s\n",
				a.Name, r.Addr, r.TLSState, r.Mechanism, r.Count, r.Size, strings.Join(r.Caps, " "))
			if r.TLS != nil {
				fmt.Fprintf(stdout, "    tls: %s, %s\n", tls.VersionName(r.TLS.Version), tls.CipherSuiteName(r.TLS.CipherSuite))
				if len(r.TLS.PeerCertificates) > 0 {
					leaf := r.TLS.PeerCertificates[0]
					fmt.Fprintf(stdout, "    certificate: %s, issued by %s, valid until %s\n",
						leaf.Subject, leaf.Issuer, leaf.NotAfter.UTC().Format("2006-01-02 15:04 MST"))
				}
			}
			for _, tc := range r.Targets {
				if tc.Err != nil {
					fmt.Fprintf(stdout, "    deliver %s: FAILED: %v\n", tc.Target, tc.Err)
				} else {
					fmt.Fprintf(stdout, "    deliver %s: ok\n", tc.Target)
				}
			}
			if r.Err != nil {
				failed = append(failed, accountFailure{a.Name, r.Err})
			}
		}
		if len(failed) > 0 {
			return &accountsError{failed: failed, total: len(sel)}
		}
		return nil
	}
}

func setupStatus(f *flags, g *common) runFunc {
	g.register(f)
	var asJSON, all bool
	f.Bool(&asJSON, flagDef{long: "json", help: "print JSON"})
	f.Bool(&all, flagDef{long: "all", help: "also list the identities in the state that no configured account has (see popsync help state)"})
	return func(ctx context.Context, e *env, args []string) error {
		if len(args) > 0 {
			return usageErrorf("unexpected argument %q", args[0])
		}
		return status(ctx, e, g, asJSON, all)
	}
}

// statusRow is one identity in `popsync status`.
type statusRow struct {
	Account     string                `json:"account"`
	Identity    string                `json:"identity"`
	Schedule    string                `json:"schedule,omitempty"`
	LastPoll    time.Time             `json:"last_poll,omitzero"`
	LastSuccess time.Time             `json:"last_success,omitzero"`
	LastError   string                `json:"last_error,omitempty"` // of the latest poll, when it failed
	LastErrorAt time.Time             `json:"last_error_at,omitzero"`
	Seen        int                   `json:"seen"`
	Pending     int                   `json:"pending"`
	Daemon      *schedule.PlannedPoll `json:"daemon,omitempty"` // next poll, when a daemon runs
	Stale       bool                  `json:"stale,omitempty"`  // no configured account has the identity (--all)
	OAuth2      *tokenStatus          `json:"oauth2,omitempty"` // login.go
	Fleet       *fleetStatus          `json:"fleet,omitempty"`  // store.go, with [state] url
}

// status shows the configured accounts' current identities, each with its
// own history, and with all the identities no account has. It reads the
// state without writing (a read-only state file is fine, a missing one is
// empty). With a broken config it says so and shows what the state holds.
func status(ctx context.Context, e *env, c *common, asJSON, all bool) error {
	cfg, cfgErr := c.load()
	var stCfg configs.State
	if cfgErr != nil {
		var ok bool
		if stCfg, ok = configs.SalvageState(c.config); !ok {
			return cfgErr
		}
		fmt.Fprintf(e.stderr, "popsync status: the config cannot be used, showing every identity in the state %s:\n%v\n", stCfg.Path, cfgErr)
		all = true
	} else {
		stCfg = cfg.State
	}
	st, err := openStateReadOnly(ctx, stCfg)
	if err != nil {
		return err
	}
	defer st.Close()
	list, err := st.Status(ctx)
	if err != nil {
		return &stateError{err}
	}
	byID := make(map[state.Account]state.AccountStatus, len(list))
	for _, s := range list {
		byID[s.Account.Canonical()] = s
	}
	row := func(name string, s state.AccountStatus) statusRow {
		r := statusRow{Account: name, Identity: s.Account.String(), LastPoll: s.LastPoll, LastSuccess: s.LastSuccess,
			Seen: s.Seen, Pending: s.Pending}
		if !s.LastOK && !s.LastErrorAt.IsZero() {
			// An error is shown until a poll succeeds.
			r.LastError, r.LastErrorAt = s.LastError, s.LastErrorAt
		}
		return r
	}
	var rows, stale []statusRow
	var plan map[string]schedule.PlannedPoll
	var fleet fleetRows
	if cfg != nil {
		plan = daemonPlan(cfg.State)
		if fleet, err = fleetLeases(ctx, st); err != nil {
			return &stateError{err}
		}
		configured := make(map[state.Account]bool)
		for _, a := range cfg.Accounts {
			id := a.Identity()
			configured[id] = true
			s := byID[id]
			s.Account = id
			r := row(a.Name, s)
			r.Schedule, r.Daemon, r.Fleet = a.Schedule, planned(plan, a.Name), fleet.of(a)
			if r.OAuth2, err = oauth2Status(ctx, st, a); err != nil {
				return &stateError{err}
			}
			var changed *fetch.IdentityChangedError
			if err := fetch.CheckIdentity(ctx, st, a, cfg.Accounts); errors.As(err, &changed) {
				r.LastError = fmt.Sprintf("identity changed from %s: run popsync state adopt %s, or set new_identity = true", changed.Old[0], a.Name)
			}
			rows = append(rows, r)
		}
		for _, s := range list {
			if !configured[s.Account.Canonical()] {
				stale = append(stale, row(s.Name, s))
			}
		}
	} else {
		for _, s := range list {
			stale = append(stale, row(s.Name, s))
		}
	}
	if !all {
		stale = nil
	}
	if asJSON {
		out := append([]statusRow{}, rows...)
		for _, r := range stale {
			r.Stale = true
			out = append(out, r)
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	if cfg != nil && fleet != nil {
		fmt.Fprintln(tw, "ACCOUNT\tIDENTITY\tSCHEDULE\tNEXT DUE\tLEASE\tLAST POLL\tLAST SUCCESS\tSEEN\tPENDING\tOAUTH2\tLAST ERROR")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", r.Account, r.Identity, r.Schedule, r.Fleet.nextText(), r.Fleet.leaseText(),
				when(r.LastPoll), when(r.LastSuccess), r.Seen, r.Pending, r.OAuth2.text(r.Account), errorText(r))
		}
	} else if cfg != nil {
		fmt.Fprintln(tw, "ACCOUNT\tIDENTITY\tSCHEDULE\tNEXT POLL\tLAST POLL\tLAST SUCCESS\tSEEN\tPENDING\tOAUTH2\tLAST ERROR")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", r.Account, r.Identity, r.Schedule, nextPollText(plan, r.Account),
				when(r.LastPoll), when(r.LastSuccess), r.Seen, r.Pending, r.OAuth2.text(r.Account), errorText(r))
		}
	}
	if len(stale) > 0 {
		if cfg != nil {
			fmt.Fprintln(tw, "\nnot in the config (popsync state forget IDENTITY drops one):")
		}
		fmt.Fprintln(tw, "LAST NAME\tIDENTITY\t\t\tLAST POLL\tLAST SUCCESS\tSEEN\tPENDING\t\tLAST ERROR")
		for _, r := range stale {
			fmt.Fprintf(tw, "%s\t%s\t\t\t%s\t%s\t%d\t%d\t\t%s\n", r.Account, r.Identity,
				when(r.LastPoll), when(r.LastSuccess), r.Seen, r.Pending, errorText(r))
		}
	}
	return tw.Flush()
}

// errorText is the LAST ERROR column: the error with its time.
func errorText(r statusRow) string {
	if r.LastError == "" || r.LastErrorAt.IsZero() {
		return r.LastError
	}
	return when(r.LastErrorAt) + ": " + r.LastError
}

func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func setupVersion(f *flags, g *common) runFunc {
	return func(ctx context.Context, e *env, args []string) error {
		if len(args) > 0 {
			return usageErrorf("unexpected argument %q", args[0])
		}
		return printVersion(e.stdout)
	}
}

func printVersion(stdout io.Writer) error {
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
