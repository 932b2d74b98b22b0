package oauth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"time"

	"golang.org/x/oauth2"
)

// DefaultBrowserTimeout bounds the wait for the browser's redirect when
// BrowserOptions.Timeout is zero.
const DefaultBrowserTimeout = 5 * time.Minute

// BrowserOptions steer Client.BrowserLogin.
type BrowserOptions struct {
	// Prompt shows the authorization URL to the user (always called,
	// before any browser is opened). Required.
	Prompt func(authURL string) error
	// NoBrowser only prints: no browser is started (--no-browser, and
	// the headless `ssh -L PORT:127.0.0.1:PORT` recipe).
	NoBrowser bool
	// Open starts a browser on the URL; nil means xdg-open. It is called
	// only when Getenv("DISPLAY") or Getenv("WAYLAND_DISPLAY") is set. A
	// failing Open is logged, not fatal: the URL was printed.
	Open func(ctx context.Context, authURL string) error
	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
	// Timeout bounds the wait for the redirect; 0 means
	// DefaultBrowserTimeout.
	Timeout time.Duration
	// Port is the loopback port to listen on; 0 picks a free one. A fixed
	// port is for the ssh -L recipe.
	Port int
	// RedirectHost is the host in the redirect URI: "127.0.0.1" (the
	// default, RFC 8252 §8.3 prefers the IP literal) or "localhost" for an
	// app registration that names http://localhost. The listener is on
	// 127.0.0.1 either way; servers ignore the port of a loopback
	// redirect (RFC 8252 §7.3).
	RedirectHost string
}

// callbackResult is what the one redirect request said.
type callbackResult struct {
	code string
	err  error
}

// BrowserLogin runs the authorization code grant (RFC 6749 §4.1) with PKCE
// S256 (RFC 7636) and a loopback redirect (RFC 8252 §7.3): it listens on
// 127.0.0.1, shows the authorization URL, and waits for exactly one
// redirect to the callback path; that request decides the result, then the
// listener is closed. The state parameter must come back unchanged
// (RFC 6749 §10.12), else ErrStateMismatch and no code is exchanged.
//
// Errors: ErrAccessDenied, ErrStateMismatch, ErrLoginTimeout,
// ErrFlowNotAllowed, ctx's error, *TemporaryError and *ServerError.
func (c *Client) BrowserLogin(parent context.Context, opts BrowserOptions) (Token, error) {
	if c.ep.authURL == "" {
		return Token{}, fmt.Errorf("browser login for provider %s: %w", c.cfg.Provider, ErrFlowNotAllowed)
	}
	if opts.Prompt == nil {
		return Token{}, errors.New("browser login: BrowserOptions.Prompt is required")
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultBrowserTimeout
	}
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()

	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(opts.Port)))
	if err != nil {
		return Token{}, fmt.Errorf("listening for the browser redirect: %w", err)
	}
	host := "127.0.0.1"
	switch opts.RedirectHost {
	case "", host:
	case "localhost":
		host = "localhost"
	default:
		l.Close()
		return Token{}, fmt.Errorf("browser login: redirect host %q is not 127.0.0.1 or localhost", opts.RedirectHost)
	}
	redirect := "http://" + net.JoinHostPort(host, strconv.Itoa(l.Addr().(*net.TCPAddr).Port)) + "/"
	state, err := randomString()
	if err != nil {
		l.Close()
		return Token{}, err
	}
	verifier := oauth2.GenerateVerifier() // RFC 7636 §4.1: 32 random octets, base64url
	oc, octx, secret, err := c.oauth2Config(ctx, redirect)
	if err != nil {
		l.Close()
		return Token{}, err
	}
	authOpts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier)}
	for k, v := range c.ep.authParams {
		authOpts = append(authOpts, oauth2.SetAuthURLParam(k, v))
	}
	authURL := oc.AuthCodeURL(state, authOpts...)

	results := make(chan callbackResult, 1)
	srv := &http.Server{
		Handler:           callbackHandler(state, results),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(l) // returns when srv is closed below
	}()
	stop := func() {
		// Shutdown lets the one answer reach the browser (the handler
		// hands over its result before it returns, so Close alone could
		// cut the response off); Close then drops anything still open.
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
		_ = srv.Close()
		<-served
	}

	if err := opts.Prompt(authURL); err != nil {
		stop()
		return Token{}, fmt.Errorf("showing the authorization URL: %w", err)
	}
	if !opts.NoBrowser {
		c.openBrowser(ctx, opts, authURL)
	}
	c.log.Info("oauth2 browser login: waiting for the redirect", "redirect_uri", redirect, "timeout", timeout)

	var res callbackResult
	select {
	case res = <-results:
	case <-ctx.Done():
		stop()
		if parent.Err() == nil {
			return Token{}, fmt.Errorf("waiting %v for the browser redirect to %s: %w", timeout, redirect, ErrLoginTimeout)
		}
		return Token{}, fmt.Errorf("waiting for the browser redirect: %w", ctx.Err())
	}
	stop()
	if res.err != nil {
		return Token{}, res.err
	}
	t, err := oc.Exchange(octx, res.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return Token{}, classify("exchanging the authorization code", "", err, res.code, verifier, secret)
	}
	tok := fromOAuth2(t)
	if tok.RefreshToken == "" {
		c.log.Warn("oauth2 browser login: the server sent no refresh token; the login lasts only as long as the access token")
	}
	return tok, nil
}

// callbackHandler answers the redirect. The first request to "/" is the
// authorization response (RFC 6749 §4.1.2); it is judged, answered with a
// short page, and its result sent. Any other path gets 404 (a browser's
// /favicon.ico) and changes nothing; later requests to "/" get 410.
func callbackHandler(state string, results chan<- callbackResult) http.Handler {
	done := make(chan struct{}, 1)
	done <- struct{}{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		select {
		case <-done:
		default:
			http.Error(w, "this login is finished", http.StatusGone)
			return
		}
		q := r.URL.Query()
		var res callbackResult
		status, msg := http.StatusOK, "popsync: login complete. You can close this window."
		switch got := q.Get("state"); {
		case subtle.ConstantTimeCompare([]byte(got), []byte(state)) != 1:
			res.err = fmt.Errorf("browser redirect: %w", ErrStateMismatch)
			status, msg = http.StatusBadRequest, "popsync: this answer does not belong to the login that was started (state mismatch). Start `popsync login` again."
		case q.Get("error") != "":
			code := clean(q.Get("error"), nil)
			desc := clean(q.Get("error_description"), nil)
			if code == "access_denied" {
				res.err = fmt.Errorf("browser redirect: %w", ErrAccessDenied)
			} else {
				res.err = &ServerError{Op: "browser redirect", Status: http.StatusFound, Code: code, Description: desc}
			}
			status, msg = http.StatusForbidden, "popsync: the login was not authorized ("+code+")."
		case q.Get("code") == "":
			res.err = errors.New("browser redirect: no code and no error in the redirect")
			status, msg = http.StatusBadRequest, "popsync: the answer has no authorization code."
		default:
			res.code = q.Get("code")
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		fmt.Fprintf(w, "<!doctype html><title>popsync</title><p>%s</p>\n", html.EscapeString(msg))
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		results <- res
	})
}

// openBrowser starts a browser when there is a display, and only logs a
// failure: the URL has been printed already.
func (c *Client) openBrowser(ctx context.Context, opts BrowserOptions, authURL string) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	if getenv("DISPLAY") == "" && getenv("WAYLAND_DISPLAY") == "" {
		c.log.Debug("oauth2 browser login: no display; not starting a browser")
		return
	}
	open := opts.Open
	if open == nil {
		open = xdgOpen
	}
	if err := open(ctx, authURL); err != nil {
		c.log.Warn("oauth2 browser login: could not start a browser; open the printed URL yourself", "error", err)
	}
}

// xdgOpen runs xdg-open, which returns once the browser is started.
func xdgOpen(ctx context.Context, authURL string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "xdg-open", authURL)
	cmd.Env = os.Environ()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("running xdg-open: %w", err)
	}
	return nil
}

// randomString returns 32 random octets, base64url without padding.
func randomString() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("making the state parameter: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
