package main

import (
	"bytes"
	"context"
	"errors"

	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"popsync/configs"
	"popsync/configs/importer"
	"popsync/state"
)

// setupImport converts the old tool's config and seen-state. It reads the
// old files and never changes them, and never contacts a server.
func setupImport(f *flags, g *common) runFunc {
	var (
		rcs                       names
		fromState, out, statePath string
		dryRunF, strictF, forceF  bool
	)
	f.Var(&rcs, flagDef{long: "rc", arg: "FILE", file: true, help: "the old config file (repeatable for getmail); default: the tool's own"})
	f.String(&fromState, flagDef{long: "from-state", arg: "PATH", file: true, help: "the old seen-state (fetchmail idfile, getmail data directory, mpop UIDLS file) when not where the config says"})
	f.String(&out, flagDef{short: "o", long: "output", arg: "CONFIG", file: true, help: "the popsync config to write (default: popsync's default config path)"})
	f.String(&statePath, flagDef{long: "state", arg: "DB", file: true, help: "the [state] path of the new config, where the seen-state is imported"})
	f.Bool(&dryRunF, flagDef{long: "dry-run", help: "print the config and the UIDL counts; write nothing"})
	f.Bool(&strictF, flagDef{long: "strict", help: "refuse when an old option cannot be converted"})
	f.Bool(&forceF, flagDef{long: "force", help: "replace an existing config file"})
	return func(ctx context.Context, e *env, args []string) error {
		switch {
		case len(args) == 0:
			return usageErrorf("name the tool to import from: fetchmail, getmail or mpop")
		case len(args) > 1:
			return usageErrorf("unexpected argument %q", args[1])
		}
		switch args[0] {
		case importer.Fetchmail, importer.Getmail, importer.Mpop:
		default:
			return usageErrorf("unknown tool %q: want fetchmail, getmail or mpop", args[0])
		}
		if out == "" {
			out = configs.DefaultPath()
		}
		if statePath == "" {
			statePath = configs.DefaultStatePath()
		}
		return runImport(ctx, e.stdout, e.stderr, args[0], rcs, fromState, &out, &statePath, &dryRunF, &strictF, &forceF)
	}
}

// exitWith gives err the exit status code through the error types
// exitCode knows.
func exitWith(code int, err error) error {
	switch code {
	case exitConfig:
		return &configError{err}
	case exitState:
		return &stateError{err}
	}
	return &usageError{msg: err.Error()}
}

func runImport(ctx context.Context, stdout, stderr io.Writer, tool string, rcs names, fromState string,
	out, statePath *string, dryRun, strict, force *bool) error {
	home, err := os.UserHomeDir()
	if err != nil {
		return exitWith(exitUsage, fmt.Errorf("finding the home folder: %w", err))
	}
	l, err := importer.Load(importer.LoadOptions{Tool: tool, RC: rcs, FromState: fromState, Home: home})
	if err != nil {
		return exitWith(exitConfig, err)
	}
	for _, i := range l.Issues {
		kind := "not converted"
		if i.Harmless {
			kind = "ignored"
		}
		fmt.Fprintf(stderr, "%s: %s\n", kind, i)
	}
	for _, w := range l.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	for _, e := range l.Corrupt {
		fmt.Fprintf(stderr, "error: seen-state: %v\n", e)
	}
	if bad := l.Strict(); *strict && len(bad) > 0 {
		return exitWith(exitConfig, fmt.Errorf("--strict: %d option(s) cannot be converted (listed above); nothing written", len(bad)))
	}
	if len(l.Accounts) == 0 {
		return exitWith(exitConfig, fmt.Errorf("no POP3 account to import in %s", strings.Join(l.Files, ", ")))
	}
	cfg := importer.Emit(l.Import, importer.EmitOptions{StatePath: *statePath})

	if *dryRun {
		stdout.Write(cfg)
		fmt.Fprintln(stdout)
		for _, a := range l.Accounts {
			fmt.Fprintf(stdout, "# %s: %s\n", a.Name, seenSummary(l, a, "would be imported"))
		}
		return corruptErr(l)
	}

	outAbs, err := filepath.Abs(*out)
	if err != nil {
		return exitWith(exitUsage, err)
	}
	if _, err := os.Lstat(outAbs); err == nil && !*force {
		return exitWith(exitUsage, fmt.Errorf("%s exists: not overwritten (--force replaces it)", outAbs))
	}
	dir := filepath.Dir(outAbs)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return exitWith(exitUsage, fmt.Errorf("creating %s: %w", dir, err))
	}
	for _, a := range l.Accounts {
		if a.Password == "" {
			continue
		}
		p := filepath.Join(dir, importer.PasswordFile(a))
		if old, err := os.ReadFile(p); err == nil && !*force && strings.TrimRight(string(old), "\n") != a.Password {
			return exitWith(exitUsage, fmt.Errorf("%s exists with another password: not overwritten (--force replaces it)", p))
		}
	}

	// The seen-state first: a config without it would make the first
	// poll fetch everything again.
	db := *statePath
	if strings.HasPrefix(db, "~/") {
		db = filepath.Join(home, db[2:])
	} else if !filepath.IsAbs(db) {
		db = filepath.Join(dir, db)
	}
	if len(l.Seen) > 0 {
		if err := importSeen(ctx, db, l, stdout); err != nil {
			return err
		}
	}
	for _, a := range l.Accounts {
		if _, ok := l.Seen[a]; !ok {
			fmt.Fprintf(stdout, "%s: %s\n", a.Name, seenSummary(l, a, ""))
		}
	}
	for _, a := range l.Accounts {
		if a.Password == "" {
			continue
		}
		p := filepath.Join(dir, importer.PasswordFile(a))
		if err := writeDurable(p, []byte(a.Password+"\n")); err != nil {
			return exitWith(exitUsage, err)
		}
	}
	if err := writeDurable(outAbs, cfg); err != nil {
		return exitWith(exitUsage, err)
	}
	fmt.Fprintf(stdout, "wrote %s\n", outAbs)
	todo := 0
	for _, a := range l.Accounts {
		if len(a.TODO) > 0 {
			todo++
		}
	}
	if todo > 0 {
		fmt.Fprintf(stdout, "%d account(s) have a TODO: popsync check fails until each is settled and its %q line removed\n", todo, importer.TODOKey)
	} else {
		fmt.Fprintf(stdout, "next: popsync check -c %s; stop %s's cron job or daemon; then popsync run -c %s\n", outAbs, tool, outAbs)
	}
	return corruptErr(l)
}

func corruptErr(l *importer.Loaded) error {
	if len(l.Corrupt) > 0 {
		return exitWith(exitState, fmt.Errorf("%d seen-state file(s) could not be read (listed above); their accounts imported nothing", len(l.Corrupt)))
	}
	return nil
}

func seenSummary(l *importer.Loaded, a *importer.Account, verb string) string {
	recs, ok := l.Seen[a]
	if !ok {
		return "no seen-state imported (" + a.SeenFile + ")"
	}
	s := fmt.Sprintf("%d UIDLs from %s", l.Counts[a], l.SeenFiles[a])
	if len(recs) != l.Counts[a] {
		s += fmt.Sprintf(" (%d seen-set records with getmail's '-' read as '/' too)", len(recs))
	}
	if verb != "" {
		s += " " + verb
	}
	return s
}

// importSeen merges the old seen-state into the store as Imported records.
func importSeen(ctx context.Context, db string, l *importer.Loaded, stdout io.Writer) error {
	if err := os.MkdirAll(filepath.Dir(db), 0o700); err != nil {
		return exitWith(exitState, fmt.Errorf("creating the state folder: %w", err))
	}
	st, err := state.OpenSQLite(ctx, db)
	if err != nil {
		return exitWith(exitState, err)
	}
	defer st.Close()
	// Accounts popsync has polled already, with the size of their
	// seen-set: importing into them is a merge.
	polled := map[state.Account]int{}
	sts, err := st.Status(ctx)
	if err != nil {
		return exitWith(exitState, err)
	}
	for _, s := range sts {
		polled[s.Account.Canonical()] = s.Seen
	}
	for _, a := range l.Accounts {
		recs, ok := l.Seen[a]
		if !ok {
			continue
		}
		id := importer.Identity(a)
		had, wasPolled := polled[id.Canonical()]
		added, err := st.MarkImported(ctx, id, recs)
		if err != nil {
			return exitWith(exitState, err)
		}
		line := fmt.Sprintf("%s: %s imported into %s", a.Name, seenSummary(l, a, ""), db)
		switch {
		case added < len(recs):
			line += fmt.Sprintf("; merged with the existing seen-set: %d added, %d already there", added, len(recs)-added)
		case wasPolled && had > 0:
			line += fmt.Sprintf("; merged with the %d records popsync already had for this account", had)
		}
		fmt.Fprintln(stdout, line)
	}
	return st.Close()
}

// writeDurable writes data to path with mode 0600: a temporary file in the
// same folder, fsynced, renamed over path, and the folder fsynced.
func writeDurable(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := io.Copy(f, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, fs.ErrInvalid) {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
