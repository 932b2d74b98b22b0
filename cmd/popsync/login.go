package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"popsync/configs"
	"popsync/fetch"
	"popsync/internal/credential/oauth"
	"popsync/state"
)

// newTokens is the one token source of a process: polls, the daemon and
// `popsync login` share it, so an account never refreshes twice at once.
func newTokens(st *state.SQLite, log *slog.Logger) *fetch.Tokens {
	return fetch.NewTokens(st.Tokens(), nil, log)
}

// accountArg parses flags written before and after the account name, as
// in `popsync login -c FILE work --device`, and returns the name.
func accountArg(fs *flag.FlagSet, args []string) (string, error) {
	flagErr := func(err error) error {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return exitWith(exitUsage, errors.New(""))
	}
	if err := fs.Parse(args); err != nil {
		return "", flagErr(err)
	}
	if fs.NArg() == 0 {
		return "", exitWith(exitUsage, errors.New("which account? give its name"))
	}
	name := fs.Arg(0)
	if err := parse(fs, fs.Args()[1:]); err != nil {
		return "", err
	}
	return name, nil
}

// loginAccount loads the config and returns the named account.
func loginAccount(c *common, name string) (*configs.Config, *configs.Account, error) {
	cfg, err := c.load()
	if err != nil {
		return nil, nil, err
	}
	a, err := selectAccounts(cfg, []string{name})
	if err != nil {
		return nil, nil, err
	}
	return cfg, a[0], nil
}

// cmdLogin is `popsync login NAME`: it runs an interactive OAuth 2.0 login
// for the account, stores the tokens, and tries them on the server.
func cmdLogin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("login", stderr)
	var c common
	c.register(fs)
	device := fs.Bool("device", false, "use the device flow: enter a code on any device's browser")
	browser := fs.Bool("browser", false, "use the browser flow (authorization code with PKCE, loopback redirect)")
	noBrowser := fs.Bool("no-browser", false, "browser flow: only print the URL, do not start a browser")
	port := fs.Int("port", 0, "browser flow: the loopback port of the redirect (for ssh -L); 0 picks a free one")
	timeout := fs.Duration("timeout", oauth.DefaultBrowserTimeout, "browser flow: how long to wait for the redirect")
	name, err := accountArg(fs, args)
	if err != nil {
		return err
	}
	if *device && *browser {
		return exitWith(exitUsage, errors.New("--device and --browser exclude each other"))
	}
	if *port < 0 || *port > 65535 {
		return exitWith(exitUsage, fmt.Errorf("--port %d is not a port", *port))
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	cfg, a, err := loginAccount(&c, name)
	if err != nil {
		return err
	}
	if a.OAuth2 == nil {
		return exitWith(exitConfig, fmt.Errorf("account %q has no [account.oauth2] table: it logs in with its password", a.Name))
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	tokens := newTokens(st, log)
	client, err := tokens.Client(a)
	if err != nil {
		return exitWith(exitConfig, err)
	}
	oc := a.OAuth2.Config(a.Name)
	useDevice := oc.DeviceFlowAllowed()
	switch {
	case *device && !useDevice:
		return exitWith(exitUsage, fmt.Errorf("account %q: provider %s offers no device flow for mail (custom providers need device_auth_url); use --browser", a.Name, a.OAuth2.Provider))
	case *browser:
		useDevice = false
	case *device:
		useDevice = true
	}

	var tok oauth.Token
	if useDevice {
		tok, err = client.DeviceLogin(ctx, oauth.WriteDevicePrompt(stderr))
	} else {
		tok, err = client.BrowserLogin(ctx, oauth.BrowserOptions{
			Prompt:    oauth.WriteAuthURL(stderr),
			NoBrowser: *noBrowser,
			Timeout:   *timeout,
			Port:      *port,
		})
	}
	if err != nil {
		return exitWith(exitAccounts, fmt.Errorf("account %s: %w", a.Name, err))
	}
	// Stored before anything else: the login is what the user did, and a
	// failing test login below must not throw it away.
	if err := tokens.Store().Save(ctx, a.TokenKey(), tok); err != nil {
		return exitWith(exitState, err)
	}
	log.Info("oauth2 token stored", "account", a.Name, "refresh_token", tok.RefreshToken != "", "expiry", tok.Expiry)

	o := &fetch.Options{Store: st, Logger: log, Trace: c.trace, TraceAuth: c.traceAuth, Credential: tokens.Credential}
	r, err := o.TryLogin(ctx, a)
	if err != nil {
		fmt.Fprintf(stdout, "%s: token stored, but logging in to %s failed: %v\n", a.Name, a.Addr(), err)
		return exitWith(exitAccounts, errors.New(""))
	}
	fmt.Fprintf(stdout, "%s: logged in to %s as %s with %s: %d messages, %d bytes\n", a.Name, a.Addr(), a.User, r.Mechanism, r.Count, r.Size)
	return nil
}

// cmdLogout is `popsync logout NAME`: it forgets the account's tokens.
func cmdLogout(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("logout", stderr)
	var c common
	c.register(fs)
	name, err := accountArg(fs, args)
	if err != nil {
		return err
	}
	cfg, a, err := loginAccount(&c, name)
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
		return exitWith(exitState, err)
	}
	if err := tt.Delete(ctx, a.TokenKey()); err != nil {
		return exitWith(exitState, err)
	}
	if info.Stored {
		fmt.Fprintf(stdout, "%s: oauth2 token deleted; `popsync login %s` to log in again\n", a.Name, a.Name)
	} else {
		fmt.Fprintf(stdout, "%s: no oauth2 token was stored\n", a.Name)
	}
	return nil
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
func oauth2Status(ctx context.Context, st *state.SQLite, a *configs.Account) (*tokenStatus, error) {
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
