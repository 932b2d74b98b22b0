package oauthtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"
)

// memTransport hands requests for the server's own URL to its handler in
// memory and sends the rest out.
type memTransport struct{ s *Server }

func (m *memTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base, err := url.Parse(m.s.URL)
	if err != nil || req.URL.Host != base.Host {
		return http.DefaultTransport.RoundTrip(req)
	}
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	rec := httptest.NewRecorder()
	m.s.ServeHTTP(rec, req)
	if req.Body != nil {
		req.Body.Close()
	}
	if err := req.Context().Err(); err != nil {
		// The handler gave up because the client did (its Timeout).
		return nil, err
	}
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}

// userAgentTimeout bounds each request of the simulated browser.
const userAgentTimeout = 10 * time.Second

// Approve plays the user's browser on authURL (as a login printed it): it
// opens the consent page, allows access and follows the redirect to the
// client's loopback listener. It returns the listener's HTTP status.
func (s *Server) Approve(ctx context.Context, authURL string) (int, error) {
	return s.consent(ctx, authURL, "approve", nil)
}

// Deny is Approve with the user refusing: the redirect carries
// error=access_denied.
func (s *Server) Deny(ctx context.Context, authURL string) (int, error) {
	return s.consent(ctx, authURL, "deny", nil)
}

// ApproveWithState approves but delivers the redirect with its state
// replaced by state, as a forged or stale redirect would carry.
func (s *Server) ApproveWithState(ctx context.Context, authURL, state string) (int, error) {
	return s.consent(ctx, authURL, "approve", func(v url.Values) { v.Set("state", state) })
}

func (s *Server) consent(ctx context.Context, authURL, decision string, tamper func(url.Values)) (int, error) {
	hc := s.Client(userAgentTimeout)
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	get, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		return 0, fmt.Errorf("oauthtest user: %w", err)
	}
	resp, err := hc.Do(get)
	if err != nil {
		return 0, fmt.Errorf("oauthtest user: opening the consent page: %w", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	if resp.StatusCode == http.StatusFound {
		// The server refused the request itself and redirects with an
		// error: deliver that.
		return deliver(ctx, resp.Header.Get("Location"), tamper)
	}
	id := resp.Header.Get("X-Oauthtest-Request")
	if resp.StatusCode != http.StatusOK || id == "" {
		return 0, fmt.Errorf("oauthtest user: consent page answered %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	form := url.Values{"request": {id}, "decision": {decision}}
	post, err := http.NewRequestWithContext(ctx, http.MethodPost, s.AuthURL(), strings.NewReader(form.Encode()))
	if err != nil {
		return 0, fmt.Errorf("oauthtest user: %w", err)
	}
	post.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = hc.Do(post)
	if err != nil {
		return 0, fmt.Errorf("oauthtest user: submitting consent: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		return 0, fmt.Errorf("oauthtest user: consent answered %d, not a redirect", resp.StatusCode)
	}
	return deliver(ctx, resp.Header.Get("Location"), tamper)
}

// deliver follows the redirect to the client's loopback listener.
func deliver(ctx context.Context, location string, tamper func(url.Values)) (int, error) {
	u, err := url.Parse(location)
	if err != nil || location == "" {
		return 0, errors.New("oauthtest user: the redirect has no usable Location")
	}
	if tamper != nil {
		q := u.Query()
		tamper(q)
		u.RawQuery = q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, fmt.Errorf("oauthtest user: %w", err)
	}
	hc := &http.Client{Timeout: userAgentTimeout}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("oauthtest user: following the redirect: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	return resp.StatusCode, nil
}
