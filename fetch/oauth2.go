package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"

	"popsync/configs"
	"popsync/fetch/pop3"
	"popsync/internal/credential"
	"popsync/internal/credential/oauth"
	"popsync/state"
)

// OAuth 2.0 accounts log in with an access token instead of a password.
// Tokens hands them out: one oauth.Client and oauth.Source per account for
// the whole process, so `popsync run`'s polls and any other caller share
// one refresh per account (the oauth package serializes refreshes per store
// and key; one Source per account also keeps one Client per config).

// TokenStore is what polls need of the token store: the oauth.TokenStore,
// plus a mark that the grant is gone, so that an account that needs
// `popsync login` stops asking the token endpoint. state.TokenTable is one.
type TokenStore interface {
	oauth.TokenStore
	// Info describes the stored token without its secrets.
	Info(ctx context.Context, key string) (state.TokenInfo, error)
	// MarkLoginNeeded marks the token of key as needing a login, if its
	// refresh token is still refreshToken (a login that saved a new one
	// meanwhile is not undone).
	MarkLoginNeeded(ctx context.Context, key, refreshToken, reason string) error
}

// Tokens hands out the access tokens of OAuth 2.0 accounts. Make one per
// process with NewTokens and share it (Options.Credential and
// CheckOptions.Credential are its Credential method); it is safe for
// concurrent use.
type Tokens struct {
	store TokenStore
	http  *http.Client
	log   *slog.Logger

	mu      sync.Mutex
	sources map[string]*accountSource // by token key
}

type accountSource struct {
	cfg configs.OAuth2 // the config the Source was made from
	src *oauth.Source
}

// DefaultTokenHTTPTimeout bounds every request to a token endpoint: a slow
// endpoint is a temporary failure, not a hung poll.
const DefaultTokenHTTPTimeout = 30 * time.Second

// NewTokens returns the Tokens of store; its Credential method is the
// Options.Credential of a process that polls OAuth 2.0 accounts. hc makes the HTTP requests; nil
// means a client with DefaultTokenHTTPTimeout. Its Timeout must be set.
func NewTokens(store TokenStore, hc *http.Client, log *slog.Logger) *Tokens {
	if hc == nil {
		hc = &http.Client{Timeout: DefaultTokenHTTPTimeout}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Tokens{store: store, http: hc, log: log, sources: make(map[string]*accountSource)}
}

// Store returns the token store.
func (t *Tokens) Store() TokenStore { return t.store }

// Client returns an oauth.Client for a's [account.oauth2], for the logins
// of `popsync login`.
func (t *Tokens) Client(a *configs.Account) (*oauth.Client, error) {
	if a.OAuth2 == nil {
		return nil, fmt.Errorf("account %q has no [account.oauth2] table", a.Name)
	}
	return t.client(a.Name, a.OAuth2)
}

// TargetClient returns an oauth.Client for the [account.deliver.oauth2]
// of IMAP target it of account a, for the logins of `popsync login`.
func (t *Tokens) TargetClient(a *configs.Account, it *configs.IMAPTarget) (*oauth.Client, error) {
	if it.OAuth2 == nil {
		return nil, fmt.Errorf("account %q: target %s has no [account.deliver.oauth2] table", a.Name, it)
	}
	return t.client(a.Name, it.OAuth2)
}

func (t *Tokens) client(name string, cfg *configs.OAuth2) (*oauth.Client, error) {
	c, err := oauth.New(cfg.Config(name), oauth.Options{HTTPClient: t.http, Store: t.store, Logger: t.log})
	if err != nil {
		return nil, fmt.Errorf("account %q: %w", name, err)
	}
	return c, nil
}

// Source returns the account's token source: the same one for every call
// with the same token key and oauth2 config (a reload that changes the
// config gets a new one).
func (t *Tokens) Source(a *configs.Account) (*oauth.Source, error) {
	if a.OAuth2 == nil {
		return nil, fmt.Errorf("account %q has no [account.oauth2] table", a.Name)
	}
	return t.source(a.TokenKey(), a.Name, a.OAuth2)
}

// source returns the token source of key, made from cfg, for the logins
// of account name: one per key for the process, so that every poll and
// check shares its refreshes.
func (t *Tokens) source(key, name string, cfg *configs.OAuth2) (*oauth.Source, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s, ok := t.sources[key]; ok && reflect.DeepEqual(s.cfg, *cfg) {
		return s.src, nil
	}
	c, err := t.client(name, cfg)
	if err != nil {
		return nil, err
	}
	src, err := c.Source(key, name)
	if err != nil {
		return nil, err
	}
	t.sources[key] = &accountSource{cfg: *cfg, src: src}
	return src, nil
}

// ready fails with a *oauth.LoginNeededError, without a request to the
// token endpoint, when the grant of key is known to be gone.
func (t *Tokens) ready(ctx context.Context, key, name string) error {
	info, err := t.store.Info(ctx, key)
	if err != nil {
		return err
	}
	if info.LoginNeeded {
		return &oauth.LoginNeededError{Name: name, Reason: info.NeededBecause}
	}
	return nil
}

// Credential returns what account a logs in with: for an account with
// [account.oauth2] its access token through the account's Source, else
// its password source. It is Options.Credential and
// CheckOptions.Credential of a process that has a token store.
func (t *Tokens) Credential(a *configs.Account) (credential.Credential, error) {
	if a.OAuth2 == nil {
		return a.Password, nil
	}
	return t.credential(a.TokenKey(), a.Name, a.OAuth2)
}

// TargetCredential returns what IMAP target it of account a logs in
// with: for a target with [account.deliver.oauth2] its access token,
// stored under it.TokenKey() by `popsync login`, else its password
// source. It is Options.TargetCredential and
// CheckOptions.TargetCredential of a process that has a token store.
func (t *Tokens) TargetCredential(a *configs.Account, it *configs.IMAPTarget) (credential.Credential, error) {
	if it.OAuth2 == nil {
		return it.Password, nil
	}
	return t.credential(it.TokenKey(), a.Name, it.OAuth2)
}

func (t *Tokens) credential(key, name string, cfg *configs.OAuth2) (credential.Credential, error) {
	src, err := t.source(key, name, cfg)
	if err != nil {
		return nil, err
	}
	return &tokenCredential{t: t, key: key, name: name, src: src}, nil
}

// tokenCredential is the Credential of an OAuth 2.0 login: an account's
// or an IMAP target's.
type tokenCredential struct {
	t         *Tokens
	key, name string // token key; the account's name, for `popsync login`
	src       *oauth.Source
}

// Secret returns an access token to log in with (refreshed and saved
// first when it expires within oauth.RefreshMargin). When the grant turns
// out to be gone, the key is marked so that later polls do not ask the
// token endpoint again.
func (c *tokenCredential) Secret(ctx context.Context) (string, error) {
	t := c.t
	if err := t.ready(ctx, c.key, c.name); err != nil {
		return "", err
	}
	before, _ := t.store.Load(ctx, c.key)
	tok, err := c.src.AccessToken(ctx)
	var ln *oauth.LoginNeededError
	if errors.As(err, &ln) {
		// Marked in its own context: the poll's may be ending, and the
		// mark is what keeps the next polls from asking again.
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if merr := t.store.MarkLoginNeeded(mctx, c.key, before.RefreshToken, ln.Reason); merr != nil {
			t.log.Warn("recording that the account needs `popsync login`", "account", c.name, "token", c.key, "error", merr.Error())
		}
	}
	return tok, err
}

// Invalidate implements credential.Credential: the next Secret refreshes.
func (c *tokenCredential) Invalidate(secret string) { c.src.Invalidate(secret) }

// retryOnce marks a Credential whose refused secret is worth one more
// login after Invalidate: an OAuth 2.0 access token, which the refresh
// replaces. A password would only be refused again.
func (c *tokenCredential) retryOnce() {}

// Refreshes tells the IMAP target (deliver.IMAPOptions.Password) that a
// refused token is worth one more login: Invalidate makes the next Secret
// a refreshed one.
func (c *tokenCredential) Refreshes() bool { return true }

// ready is the first step of a poll: an account that needs `popsync
// login` fails at once, before it locks, opens targets or reads its
// seen-set.
func (c *tokenCredential) ready(ctx context.Context) error { return c.t.ready(ctx, c.key, c.name) }

// loginRejected reports whether err is the server refusing the token
// itself (RFC 3206 §4 [AUTH], or a bare -ERR to AUTH), not a temporary
// refusal such as IN-USE or SYS/TEMP.
func loginRejected(err error) bool {
	var pe *pop3.Error
	return errors.As(err, &pe) && pe.Command == "AUTH" && !pe.Temporary() && !codeIs(pe.Code, "LOGIN-DELAY")
}

// codeIs reports whether a response code is want or below it (RFC 2449
// §8: codes are hierarchical, "/"-separated).
func codeIs(code, want string) bool {
	return code == want || strings.HasPrefix(code, want+"/")
}

// loginOAuth2 connects and logs in with the account's access token. A
// token the server refuses although it looked valid (revoked, or the
// clocks disagree) is invalidated, refreshed once, and tried once more on
// a new connection.
func (p *pollRun) loginOAuth2(ctx context.Context) (*pop3.Client, error) {
	a := p.a
	if p.o.Credential == nil {
		return nil, errNoTokenStore(a)
	}
	tok, cred, err := p.o.secret(ctx, a)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		c, err := p.dial(ctx)
		if err != nil {
			return nil, fmt.Errorf("connecting to %s: %w", a.Addr(), err)
		}
		err = c.Auth(ctx, a.Auth, a.User, tok)
		if err == nil {
			return c, nil
		}
		c.Close()
		rejected := loginRejected(err)
		if rejected {
			cred.Invalidate(tok)
		}
		if _, retry := cred.(interface{ retryOnce() }); attempt > 0 || !rejected || !retry {
			return nil, fmt.Errorf("logging in to %s as %s with an oauth2 token: %w", a.Addr(), a.User, err)
		}
		p.log.Info("the server refused the oauth2 access token; refreshing it once", "error", err.Error())
		if tok, _, err = p.o.secret(ctx, a); err != nil {
			return nil, err
		}
	}
}

// oauth2Ready fails a poll of an OAuth 2.0 account that needs `popsync
// login` before it does anything else.
func (p *pollRun) oauth2Ready(ctx context.Context) error {
	if p.a.OAuth2 == nil {
		return nil
	}
	if p.o.Credential == nil {
		return errNoTokenStore(p.a)
	}
	cred, err := p.o.credential(p.a)
	if err != nil {
		return fmt.Errorf("account %q: %w", p.a.Name, err)
	}
	if r, ok := cred.(interface{ ready(context.Context) error }); ok {
		return r.ready(ctx)
	}
	return nil
}

// errNoTokenStore is the error of an OAuth 2.0 account polled without a
// token store (Options.Credential unset): a caller's mistake.
func errNoTokenStore(a *configs.Account) error {
	return fmt.Errorf("account %q uses [account.oauth2], but no token store is open (Options.Credential is nil)", a.Name)
}

// LoginResult is what TryLogin found.
type LoginResult struct {
	Mechanism string
	Count     int
	Size      int64
}

// TryLogin logs in to a as a poll would (for an OAuth 2.0 account: with
// the stored token, refreshed if needed, retried once if refused), counts
// the messages and logs out. It changes nothing on the server or in the
// seen-set; `popsync login` runs it after storing a new token.
func (o *Options) TryLogin(ctx context.Context, a *configs.Account) (LoginResult, error) {
	p := &pollRun{o: o, a: a, id: a.Identity(), log: o.logger().With("account", a.Name)}
	c, err := p.login(ctx)
	if err != nil {
		return LoginResult{}, err
	}
	defer c.Close()
	r := LoginResult{Mechanism: a.Auth}
	if r.Count, r.Size, err = c.Stat(ctx); err != nil {
		return r, fmt.Errorf("STAT: %w", err)
	}
	if err := c.Quit(ctx); err != nil {
		return r, fmt.Errorf("QUIT: %w", err)
	}
	return r, nil
}
