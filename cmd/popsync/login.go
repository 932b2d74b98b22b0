package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"popsync/configs"
	"popsync/fetch"
	"popsync/internal/credential"
	"popsync/internal/credential/oauth"
)

// newTokens is the one token source of a process: its polls and, in the
// daemon, every poll share it, so an account never refreshes twice at
// once.
func newTokens(st *store, log *slog.Logger) *fetch.Tokens {
	return fetch.NewTokens(st.Tokens(), nil, log)
}

// checkCredential opens the store for `check --connect` when an account
// logs in with OAuth 2.0; otherwise it returns nil (the password sources).
func checkCredential(ctx context.Context, cfg *configs.Config, sel []*configs.Account, log *slog.Logger) (func(*configs.Account) (credential.Credential, error), func(), error) {
	for _, a := range sel {
		if a.OAuth2 == nil {
			continue
		}
		st, err := openStore(ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		return newTokens(st, log).Credential, func() { st.Close() }, nil
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

// setupLogin is `popsync login NAME`: an interactive OAuth 2.0 login for
// the account; the token is stored and tried on the server.
func setupLogin(f *flags, g *common) runFunc {
	g.register(f)
	var device, browser, noBrowser bool
	f.Bool(&device, flagDef{long: "device", help: "use the device flow: a URL and a code to enter on any device"})
	f.Bool(&browser, flagDef{long: "browser", help: "use the browser flow: authorization code with PKCE, redirect to 127.0.0.1"})
	f.Bool(&noBrowser, flagDef{long: "no-browser", help: "browser flow: only print the URL, never start a browser"})
	port := 0
	f.Int(&port, flagDef{long: "port", arg: "N", help: "browser flow: the loopback port of the redirect, for ssh -L (0: any free one)"})
	timeout := oauth.DefaultBrowserTimeout.String()
	f.String(&timeout, flagDef{long: "timeout", arg: "DURATION", help: "browser flow: how long to wait for the redirect"})
	return func(ctx context.Context, e *env, args []string) error {
		if device && browser {
			return usageErrorf("--device and --browser exclude each other")
		}
		if port < 0 || port > 65535 {
			return usageErrorf("--port %d is not a port", port)
		}
		wait, err := time.ParseDuration(timeout)
		if err != nil || wait <= 0 {
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
		if a.OAuth2 == nil {
			return &configError{fmt.Errorf("account %q has no [account.oauth2] table: it logs in with its password", a.Name)}
		}
		st, err := openStore(ctx, cfg)
		if err != nil {
			return err
		}
		defer st.Close()
		tokens := newTokens(st, log)
		client, err := tokens.Client(a)
		if err != nil {
			return &configError{err}
		}
		useDevice := a.OAuth2.Config(a.Name).DeviceFlowAllowed()
		switch {
		case device && !useDevice:
			return usageErrorf("account %q: provider %s offers no device flow for mail (custom providers need device_auth_url); use --browser", a.Name, a.OAuth2.Provider)
		case browser:
			useDevice = false
		case device:
			useDevice = true
		}

		var tok oauth.Token
		if useDevice {
			tok, err = client.DeviceLogin(ctx, oauth.WriteDevicePrompt(e.stderr))
		} else {
			tok, err = client.BrowserLogin(ctx, oauth.BrowserOptions{
				Prompt:    oauth.WriteAuthURL(e.stderr),
				NoBrowser: noBrowser,
				Timeout:   wait,
				Port:      port,
			})
		}
		if ierr := interrupted(ctx); ierr != nil {
			return ierr
		}
		if err != nil {
			return fmt.Errorf("account %s: %w", a.Name, err)
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
			return &accountsError{failed: []accountFailure{{a.Name, err}}, total: 1}
		}
		fmt.Fprintf(e.stdout, "%s: logged in to %s as %s with %s: %d messages, %d bytes\n", a.Name, a.Addr(), a.User, r.Mechanism, r.Count, r.Size)
		return nil
	}
}

// setupLogout is `popsync logout NAME`: it forgets the account's tokens.
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
		info, err := tt.Info(ctx, a.TokenKey())
		if err != nil {
			return &stateError{err}
		}
		if err := tt.Delete(ctx, a.TokenKey()); err != nil {
			return &stateError{err}
		}
		if info.Stored {
			fmt.Fprintf(e.stdout, "%s: oauth2 token deleted; `popsync login %s` to log in again\n", a.Name, a.Name)
		} else {
			fmt.Fprintf(e.stdout, "%s: no oauth2 token was stored\n", a.Name)
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
// an account without [account.oauth2].
func oauth2Status(ctx context.Context, st *store, a *configs.Account) (*tokenStatus, error) {
	if a.OAuth2 == nil {
		return nil, nil
	}
	info, err := st.Tokens().Info(ctx, a.TokenKey())
	if err != nil {
		return nil, err
	}
	return &tokenStatus{ValidUntil: info.Expiry, RefreshToken: info.RefreshToken, LoginNeeded: info.LoginNeeded, Reason: info.NeededBecause}, nil
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
