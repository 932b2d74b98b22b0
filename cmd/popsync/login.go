package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"popsync/configs"
	"popsync/fetch"
	"popsync/internal/credential/oauth"
)

// newTokens is the one token source of a process: its polls and, in the
// daemon, every poll share it, so an account never refreshes twice at
// once.
func newTokens(st *store, log *slog.Logger) *fetch.Tokens {
	return fetch.NewTokens(st.Tokens(), nil, log)
}

// checkCredential opens the store for `check --connect` when an account
// or one of its IMAP targets logs in with OAuth 2.0; otherwise it returns
// nil (the password sources).
func checkCredential(ctx context.Context, cfg *configs.Config, sel []*configs.Account, log *slog.Logger) (*fetch.Tokens, func(), error) {
	for _, a := range sel {
		if a.OAuth2 == nil && len(oauthTargets(a)) == 0 {
			continue
		}
		st, err := openStore(ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		return newTokens(st, log), func() { st.Close() }, nil
	}
	return nil, func() {}, nil
}

// oauthAuthError reports whether err is an OAuth 2.0 failure only the user
// can fix: a grant that is gone (`popsync login`), a login that was
// denied, expired or forged, or an error answer such as invalid_client.
// A token endpoint that is down is not one: it is temporary.
func oauthAuthError(err error) bool {
	if errors.As(err, new(*oauth.TemporaryError)) {
		return false
	}
	return errors.Is(err, oauth.ErrLoginNeeded) || errors.Is(err, oauth.ErrAccessDenied) ||
		errors.Is(err, oauth.ErrCodeExpired) || errors.Is(err, oauth.ErrStateMismatch) ||
		errors.Is(err, oauth.ErrLoginTimeout) || errors.Is(err, oauth.ErrFlowNotAllowed) ||
		errors.As(err, new(*oauth.ServerError))
}

// oneAccount loads the config and returns the one account named in args.
func oneAccount(g *common, args []string) (*configs.Config, *configs.Account, error) {
	switch len(args) {
	case 0:
		return nil, nil, usageErrorf("which account? give its name")
	case 1:
	default:
		return nil, nil, usageErrorf("unexpected argument %q", args[1])
	}
	cfg, err := g.load()
	if err != nil {
		return nil, nil, err
	}
	sel, err := selectAccounts(cfg, args)
	if err != nil {
		return nil, nil, err
	}
	return cfg, sel[0], nil
}

// oauthTargets returns the IMAP targets of a that log in with OAuth 2.0
// ([account.deliver.oauth2]), in config order.
func oauthTargets(a *configs.Account) []*configs.IMAPTarget {
	var out []*configs.IMAPTarget
	for _, d := range a.Deliver {
		if t, ok := d.Target.(*configs.IMAPTarget); ok && t.OAuth2 != nil {
			out = append(out, t)
		}
	}
	return out
}

// loginFlow is how `popsync login` obtains a token: its flags.
type loginFlow struct {
	device, browser, noBrowser bool
	port                       int
	wait                       time.Duration
}

// login runs the flow for one oauth2 table (what says whose, for
// messages) and returns the new token.
func (lf loginFlow) login(ctx context.Context, e *env, what string, cfg oauth.Config, client *oauth.Client) (oauth.Token, error) {
	useDevice := cfg.DeviceFlowAllowed()
	switch {
	case lf.device && !useDevice:
		return oauth.Token{}, usageErrorf("%s: provider %s offers no device flow for mail (custom providers need device_auth_url); use --browser", what, cfg.Provider)
	case lf.browser:
		useDevice = false
	case lf.device:
		useDevice = true
	}
	var tok oauth.Token
	var err error
	if useDevice {
		tok, err = client.DeviceLogin(ctx, oauth.WriteDevicePrompt(e.stderr))
	} else {
		tok, err = client.BrowserLogin(ctx, oauth.BrowserOptions{
			Prompt:    oauth.WriteAuthURL(e.stderr),
			NoBrowser: lf.noBrowser,
			Timeout:   lf.wait,
			Port:      lf.port,
		})
	}
	if ierr := interrupted(ctx); ierr != nil {
		return oauth.Token{}, ierr
	}
	if err != nil {
		return oauth.Token{}, fmt.Errorf("%s: %w", what, err)
	}
	return tok, nil
}

// setupLogin is `popsync login NAME`: an interactive OAuth 2.0 login for
// the account and for each of its IMAP targets with
// [account.deliver.oauth2], one after the other; each token is stored
// and tried on its server.
func setupLogin(f *flags, g *common) runFunc {
	g.register(f)
	var lf loginFlow
	f.Bool(&lf.device, flagDef{long: "device", help: "use the device flow: a URL and a code to enter on any device"})
	f.Bool(&lf.browser, flagDef{long: "browser", help: "use the browser flow: authorization code with PKCE, redirect to 127.0.0.1"})
	f.Bool(&lf.noBrowser, flagDef{long: "no-browser", help: "browser flow: only print the URL, never start a browser"})
	f.Int(&lf.port, flagDef{long: "port", arg: "N", help: "browser flow: the loopback port of the redirect, for ssh -L (0: any free one)"})
	timeout := oauth.DefaultBrowserTimeout.String()
	f.String(&timeout, flagDef{long: "timeout", arg: "DURATION", help: "browser flow: how long to wait for the redirect"})
	return func(ctx context.Context, e *env, args []string) error {
		if lf.device && lf.browser {
			return usageErrorf("--device and --browser exclude each other")
		}
		if lf.port < 0 || lf.port > 65535 {
			return usageErrorf("--port %d is not a port", lf.port)
		}
		var err error
		lf.wait, err = time.ParseDuration(timeout)
		if err != nil || lf.wait <= 0 {
			return usageErrorf("--timeout %q is not a duration such as 5m", timeout)
		}
		log, err := g.logger(e.stderr)
		if err != nil {
			return err
		}
		cfg, a, err := oneAccount(g, args)
		if err != nil {
			return err
		}
		targets := oauthTargets(a)
		if a.OAuth2 == nil && len(targets) == 0 {
			return &configError{fmt.Errorf("account %q has no [account.oauth2] table and no imap target with [account.deliver.oauth2]: it logs in with passwords", a.Name)}
		}
		st, err := openStore(ctx, cfg)
		if err != nil {
			return err
		}
		defer st.Close()
		tokens := newTokens(st, log)
		var failed []accountFailure

		if a.OAuth2 != nil {
			client, err := tokens.Client(a)
			if err != nil {
				return &configError{err}
			}
			tok, err := lf.login(ctx, e, "account "+a.Name, a.OAuth2.Config(a.Name), client)
			if err != nil {
				return err
			}
			// Stored before anything else: the login is what the user did,
			// and a failing test login below must not throw it away.
			if err := tokens.Store().Save(ctx, a.TokenKey(), tok); err != nil {
				return &stateError{err}
			}
			log.Info("oauth2 token stored", "account", a.Name, "refresh_token", tok.RefreshToken != "", "expiry", tok.Expiry)

			o := &fetch.Options{Store: st, Logger: log, Trace: g.trace != traceOff, TraceAuth: g.trace == traceAuth,
				Credential: tokens.Credential}
			r, err := o.TryLogin(ctx, a)
			if err != nil {
				fmt.Fprintf(e.stdout, "%s: token stored, but logging in to %s failed: %v\n", a.Name, a.Addr(), err)
				failed = append(failed, accountFailure{a.Name, err})
			} else {
				fmt.Fprintf(e.stdout, "%s: logged in to %s as %s with %s: %d messages, %d bytes\n", a.Name, a.Addr(), a.User, r.Mechanism, r.Count, r.Size)
			}
		}

		for _, d := range a.Deliver {
			t, ok := d.Target.(*configs.IMAPTarget)
			if !ok || t.OAuth2 == nil {
				continue
			}
			client, err := tokens.TargetClient(a, t)
			if err != nil {
				return &configError{err}
			}
			fmt.Fprintf(e.stderr, "%s: logging in to the IMAP target %s as %s\n", a.Name, t.Addr(), t.User)
			tok, err := lf.login(ctx, e, fmt.Sprintf("account %s, imap target %s", a.Name, t.Addr()), t.OAuth2.Config(a.Name), client)
			if err != nil {
				return err
			}
			if err := tokens.Store().Save(ctx, t.TokenKey(), tok); err != nil {
				return &stateError{err}
			}
			log.Info("oauth2 token stored", "account", a.Name, "target", t.String(), "refresh_token", tok.RefreshToken != "", "expiry", tok.Expiry)
			if err := tryTarget(ctx, a, d, tokens); err != nil {
				fmt.Fprintf(e.stdout, "%s: token stored, but logging in to the IMAP target %s failed: %v\n", a.Name, t.Addr(), err)
				failed = append(failed, accountFailure{a.Name, err})
				continue
			}
			fmt.Fprintf(e.stdout, "%s: logged in to the IMAP target %s as %s with %s\n", a.Name, t.Addr(), t.User, t.Auth)
		}
		if len(failed) > 0 {
			return &accountsError{failed: failed, total: 1}
		}
		return nil
	}
}

// tryTarget logs in to the IMAP target of d with its stored token, looks
// for its mailbox and logs out, as `popsync check --connect` does.
func tryTarget(ctx context.Context, a *configs.Account, d configs.Deliver, tokens *fetch.Tokens) error {
	t, err := fetch.OpenTargetWith(a, d, tokens.TargetCredential)
	if err != nil {
		return err
	}
	defer t.Close()
	if ck, ok := t.(interface{ Check(context.Context) error }); ok {
		return ck.Check(ctx)
	}
	return nil
}

// setupLogout is `popsync logout NAME`: it forgets the tokens of the
// account and of its IMAP targets.
func setupLogout(f *flags, g *common) runFunc {
	g.register(f)
	return func(ctx context.Context, e *env, args []string) error {
		cfg, a, err := oneAccount(g, args)
		if err != nil {
			return err
		}
		st, err := openStore(ctx, cfg)
		if err != nil {
			return err
		}
		defer st.Close()
		tt := st.Tokens()
		type owner struct{ key, what string }
		owners := []owner{{a.TokenKey(), ""}}
		for _, t := range oauthTargets(a) {
			owners = append(owners, owner{t.TokenKey(), " (IMAP target " + t.Addr() + ")"})
		}
		for _, o := range owners {
			info, err := tt.Info(ctx, o.key)
			if err != nil {
				return &stateError{err}
			}
			if err := tt.Delete(ctx, o.key); err != nil {
				return &stateError{err}
			}
			switch {
			case info.Stored:
				fmt.Fprintf(e.stdout, "%s%s: oauth2 token deleted; `popsync login %s` to log in again\n", a.Name, o.what, a.Name)
			case o.what == "":
				fmt.Fprintf(e.stdout, "%s: no oauth2 token was stored\n", a.Name)
			}
		}
		return nil
	}
}

// tokenStatus is the OAuth 2.0 part of a `popsync status` row. It never
// holds a token.
type tokenStatus struct {
	ValidUntil   time.Time `json:"token_valid_until,omitzero"`
	RefreshToken bool      `json:"refresh_token"`
	LoginNeeded  bool      `json:"login_needed"`
	Reason       string    `json:"login_needed_reason,omitempty"`
}

// oauth2Status reads the token state of a for `popsync status`; nil for
// an account without [account.oauth2] and without an IMAP target with
// [account.deliver.oauth2]. An IMAP target that needs a login makes the
// row need one (`popsync login NAME` logs in both).
func oauth2Status(ctx context.Context, st *store, a *configs.Account) (*tokenStatus, error) {
	var ts *tokenStatus
	if a.OAuth2 != nil {
		info, err := st.Tokens().Info(ctx, a.TokenKey())
		if err != nil {
			return nil, err
		}
		ts = &tokenStatus{ValidUntil: info.Expiry, RefreshToken: info.RefreshToken, LoginNeeded: info.LoginNeeded, Reason: info.NeededBecause}
	}
	for _, t := range oauthTargets(a) {
		info, err := st.Tokens().Info(ctx, t.TokenKey())
		if err != nil {
			return nil, err
		}
		switch {
		case ts == nil:
			ts = &tokenStatus{ValidUntil: info.Expiry, RefreshToken: info.RefreshToken}
		case ts.LoginNeeded:
			continue
		}
		if info.LoginNeeded {
			ts.LoginNeeded, ts.Reason = true, "imap target "+t.Addr()+": "+info.NeededBecause
		}
	}
	return ts, nil
}

// text is the OAUTH2 column of `popsync status`.
func (t *tokenStatus) text(name string) string {
	switch {
	case t == nil:
		return "-"
	case t.LoginNeeded:
		// Why is in LAST ERROR, or no token was ever stored.
		return "LOGIN NEEDED: popsync login " + name
	}
	s := "token valid until " + when(t.ValidUntil)
	if t.ValidUntil.IsZero() {
		s = "token without expiry"
	} else if !time.Now().Before(t.ValidUntil) {
		s = "token expired " + when(t.ValidUntil)
	}
	if t.RefreshToken {
		s += ", refresh token present"
	} else {
		s += ", no refresh token"
	}
	return s
}
