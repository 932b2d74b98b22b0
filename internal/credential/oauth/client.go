package oauth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// DefaultHTTPTimeout bounds each HTTP request when Options.HTTPClient is
// nil.
const DefaultHTTPTimeout = 30 * time.Second

// maxFormBody bounds the request bodies the scope-adding transport reads.
const maxFormBody = 64 << 10

// Options are the collaborators of a Client.
type Options struct {
	// HTTPClient makes every request. Its Timeout must be set: a token
	// endpoint that hangs must not hang a poll. nil means a client with
	// DefaultHTTPTimeout.
	HTTPClient *http.Client
	// Store keeps the tokens of Sources. Logins do not need it.
	Store TokenStore
	// Logger gets one line per refresh and login step, never a secret.
	// nil discards.
	Logger *slog.Logger
}

// Client runs logins and refreshes for one Config. It is safe for
// concurrent use.
type Client struct {
	cfg  Config
	ep   endpoint
	http *http.Client
	opts Options
	log  *slog.Logger
}

// New checks cfg and returns a Client for it.
func New(cfg Config, opts Options) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	if hc.Timeout <= 0 {
		return nil, fmt.Errorf("%w: the HTTP client has no Timeout", ErrBadConfig)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ep := cfg.resolve()
	// A copy of the caller's client whose transport adds the scope to
	// refresh requests and bounds each request by hc.Timeout itself (see
	// transport). Redirects are not followed: a token endpoint that
	// redirects a POST is misconfigured.
	c := *hc
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c.Transport = &transport{base: base, timeout: hc.Timeout, tokenURL: ep.tokenURL, scope: strings.Join(ep.scopes, " ")}
	c.Timeout = 0
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Client{cfg: cfg, ep: ep, http: &c, opts: opts, log: log}, nil
}

// Scopes returns the scopes the Client asks for.
func (c *Client) Scopes() []string { return append([]string(nil), c.ep.scopes...) }

// oauth2Config builds golang.org/x/oauth2's view of the client, with the
// secret fetched now, and a context that carries the HTTP client.
func (c *Client) oauth2Config(ctx context.Context, redirectURL string) (*oauth2.Config, context.Context, string, error) {
	secret := ""
	if c.cfg.ClientSecret != nil {
		s, err := c.cfg.ClientSecret(ctx)
		if err != nil {
			return nil, nil, "", fmt.Errorf("reading the oauth2 client secret: %w", err)
		}
		secret = s
	}
	oc := &oauth2.Config{
		ClientID:     c.cfg.ClientID,
		ClientSecret: secret,
		Endpoint: oauth2.Endpoint{
			AuthURL:       c.ep.authURL,
			TokenURL:      c.ep.tokenURL,
			DeviceAuthURL: c.ep.deviceAuthURL,
			// RFC 6749 §2.3.1 allows the secret in the body; Microsoft and
			// Google accept it there, and public clients (no secret) must
			// send client_id in the body anyway. Fixed, so no probing
			// request is ever sent twice.
			AuthStyle: oauth2.AuthStyleInParams,
		},
		RedirectURL: redirectURL,
		Scopes:      c.ep.scopes,
	}
	return oc, context.WithValue(ctx, oauth2.HTTPClient, c.http), secret, nil
}

// transport wraps the caller's RoundTripper for two things.
//
// It adds the configured scope to refresh_token requests that have none.
// golang.org/x/oauth2 sends no scope when it refreshes (golang/oauth2 PR
// #540 is still open), and the Microsoft identity platform then issues a
// token for another resource or none at all; RFC 6749 §6 allows the scope
// on a refresh, equal to the original one.
//
// It applies the HTTP client's Timeout to each request as a context
// deadline that ends when the body is read to its end or closed:
// golang.org/x/oauth2 reads some answers without closing them, which with
// http.Client.Timeout would leave the timer running.
type transport struct {
	base     http.RoundTripper
	timeout  time.Duration
	tokenURL string
	scope    string
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	req = req.WithContext(ctx)
	if req.Method == http.MethodPost && req.Body != nil && t.scope != "" && req.URL.String() == t.tokenURL {
		r2, err := t.addScope(req)
		if err != nil {
			cancel()
			return nil, err
		}
		req = r2
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelBody{rc: resp.Body, cancel: cancel}
	return resp, nil
}

func (t *transport) addScope(req *http.Request) (*http.Request, error) {
	body, err := io.ReadAll(io.LimitReader(req.Body, maxFormBody+1))
	req.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading token request body: %w", err)
	}
	if len(body) > maxFormBody {
		return nil, errors.New("token request body too large")
	}
	if v, err := url.ParseQuery(string(body)); err == nil && v.Get("grant_type") == "refresh_token" && v.Get("scope") == "" {
		v.Set("scope", t.scope)
		body = []byte(v.Encode())
	}
	r2 := req.Clone(req.Context())
	r2.Body = io.NopCloser(bytes.NewReader(body))
	r2.ContentLength = int64(len(body))
	r2.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	return r2, nil
}

// cancelBody ends a request's context at the body's end or Close.
type cancelBody struct {
	rc     io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.cancel()
	}
	return n, err
}

func (b *cancelBody) Close() error {
	err := b.rc.Close()
	b.cancel()
	return err
}
