package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"popsync/configs"
	"popsync/fetch"
	"popsync/state"
	"popsync/state/postgres"
)

// setupState is `popsync state adopt|forget|copy`: what to do with the
// state of an identity the config no longer uses, and moving an SQLite
// state into a fleet's PostgreSQL database.
func setupState(f *flags, g *common) runFunc {
	g.register(f)
	var from, to string
	f.String(&from, flagDef{long: "from", arg: "IDENTITY|FILE",
		help: "adopt: the old identity (user@host:port) to take over, when the name was polled under several; copy: the SQLite state file"})
	f.String(&to, flagDef{long: "to", arg: "URL", help: "copy: the PostgreSQL database (libpq URL or key=value string) to copy into"})
	var force bool
	f.Bool(&force, flagDef{long: "force", help: "forget: also the state of an account the config still has; copy: into a database that holds accounts already"})
	return func(ctx context.Context, e *env, args []string) error {
		if len(args) >= 1 && args[0] == "copy" {
			switch {
			case len(args) > 1:
				return usageErrorf("unexpected argument %q", args[1])
			case from == "" || to == "":
				return usageErrorf("state copy needs --from FILE.db and --to URL")
			}
			return copyState(ctx, e.stdout, from, to, force)
		}
		if len(args) != 2 || args[0] != "adopt" && args[0] != "forget" {
			return usageErrorf("want: popsync state adopt NAME, popsync state forget IDENTITY|NAME, or popsync state copy --from FILE.db --to URL")
		}
		cfg, err := g.load()
		if err != nil {
			return err
		}
		st, err := openStore(ctx, cfg)
		if err != nil {
			return err
		}
		defer st.Close()
		if args[0] == "adopt" {
			return adopt(ctx, e, cfg, st, args[1], from)
		}
		return forget(ctx, e, cfg, st, args[1], force)
	}
}

// adopt makes the current identity of account name take over the state of
// the identity the name was polled under before.
func adopt(ctx context.Context, e *env, cfg *configs.Config, st state.Store, name, from string) error {
	a, ok := cfg.Lookup(name)
	if !ok {
		return usageErrorf("no account %q in %s", name, cfg.Path)
	}
	id := a.Identity()
	all, err := st.Status(ctx)
	if err != nil {
		return &stateError{err}
	}
	inUse := make(map[state.Account]string)
	for _, c := range cfg.Accounts {
		inUse[c.Identity()] = c.Name
	}
	var old state.Account
	if from != "" {
		if old, err = parseIdentity(from); err != nil {
			return usageErrorf("--from: %v", err)
		}
	} else {
		var cands []string
		for _, s := range all {
			if s.Name == name && s.Account != id && inUse[s.Account] == "" {
				old = s.Account
				cands = append(cands, s.Account.String())
			}
		}
		switch len(cands) {
		case 0:
			return usageErrorf("account %q has no state under another identity than %s: nothing to adopt", name, id)
		case 1:
		default:
			return usageErrorf("account %q was polled under %s: say which with --from", name, strings.Join(cands, " and "))
		}
	}
	if other := inUse[old]; other != "" {
		return usageErrorf("%s is the identity of account %q in the config: it cannot be adopted", old, other)
	}
	for _, x := range []state.Account{old, id} {
		lease, err := st.LockAccount(ctx, x)
		if err != nil {
			return lockFailed("adopting", x, err)
		}
		defer lease.Release()
	}
	if err := st.AdoptAccount(ctx, old, id); err != nil {
		if errors.Is(err, state.ErrNoAccount) || errors.Is(err, state.ErrAccountInUse) {
			return usageErrorf("%v", err)
		}
		return &stateError{err}
	}
	fmt.Fprintf(e.stdout, "account %q: %s took over the seen-set, intents and poll history of %s\n", name, id, old)
	return nil
}

// forget drops the state of an identity, or of every identity a name was
// polled under.
func forget(ctx context.Context, e *env, cfg *configs.Config, st state.Store, what string, force bool) error {
	inUse := make(map[state.Account]string)
	for _, c := range cfg.Accounts {
		inUse[c.Identity()] = c.Name
	}
	var drop []state.Account
	if id, err := parseIdentity(what); err == nil {
		if n := inUse[id]; n != "" && !force {
			return usageErrorf("%s is the identity of account %q in the config; remove the account first, or pass --force", id, n)
		}
		drop = append(drop, id)
	} else {
		if _, ok := cfg.Lookup(what); ok && !force {
			return usageErrorf("account %q is in the config; to drop an old identity of it, name the identity (user@host:port; popsync status --all lists them), or pass --force", what)
		}
		all, err := st.Status(ctx)
		if err != nil {
			return &stateError{err}
		}
		for _, s := range all {
			if s.Name == what {
				drop = append(drop, s.Account)
			}
		}
		if len(drop) == 0 {
			return usageErrorf("no identity in the state was polled as %q (popsync status --all lists them)", what)
		}
	}
	for _, id := range drop {
		lease, err := st.LockAccount(ctx, id)
		if err != nil {
			return lockFailed("forgetting", id, err)
		}
		err = st.ForgetAccount(ctx, id)
		lease.Release()
		if errors.Is(err, state.ErrNoAccount) {
			return usageErrorf("%v", err)
		}
		if err != nil {
			return &stateError{err}
		}
		fmt.Fprintf(e.stdout, "forgot %s\n", id)
	}
	return nil
}

// lockFailed is the error of a state command that could not lock an
// identity: busy (exit 8) when another popsync polls it.
func lockFailed(doing string, a state.Account, err error) error {
	if errors.Is(err, state.ErrLocked) {
		return fmt.Errorf("%s %s: %w (%w)", doing, a, fetch.ErrAccountBusy, err)
	}
	return &stateError{fmt.Errorf("%s %s: %w", doing, a, err)}
}

// parseIdentity reads "user@host:port" (the user may hold '@'; an IPv6
// host is in brackets), as state.Account.String writes it.
func parseIdentity(s string) (state.Account, error) {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return state.Account{}, fmt.Errorf("%q is not an identity (user@host:port)", s)
	}
	host, port, err := net.SplitHostPort(s[at+1:])
	if err != nil {
		return state.Account{}, fmt.Errorf("%q is not an identity (user@host:port): %w", s, err)
	}
	p, err := strconv.Atoi(port)
	a := state.Account{Host: host, Port: p, User: s[:at]}
	if err != nil {
		return a, fmt.Errorf("%q is not an identity (user@host:port): bad port", s)
	}
	if err := a.Validate(); err != nil {
		return a, err
	}
	return a.Canonical(), nil
}

// copyTokens copies the OAuth 2.0 tokens of an SQLite state into the
// fleet's database (`popsync state copy`), login-needed marks included, so
// that its accounts need no new `popsync login`. A token the database
// holds already stays unless force.
func copyTokens(ctx context.Context, src *state.SQLite, dst *postgres.Store, force bool) (copied, kept int, err error) {
	toks, err := src.Tokens().All(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("copying state: %w", err)
	}
	if len(toks) == 0 {
		return 0, 0, nil
	}
	return dst.Tokens().CopyTokens(ctx, toks, force)
}
