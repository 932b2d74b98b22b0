package oauth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/oauth2"
)

// DevicePrompt is what the user must see to approve a device login
// (RFC 8628 §3.3): the page to open and the code to type there.
type DevicePrompt struct {
	VerificationURI         string
	VerificationURIComplete string // the URI with the code in it; may be empty
	UserCode                string
	Expiry                  time.Time // the code is useless after this
}

// DeviceLogin runs the device authorization grant (RFC 8628): it asks for
// a device code, hands the URL and user code to prompt, and polls the
// token endpoint at the interval the server asked for until the user
// approved, denied, or the code expired. golang.org/x/oauth2 does the
// polling: it waits the interval before each request, adds 5 seconds on
// slow_down and keeps polling on authorization_pending (§3.5).
//
// Errors: ErrAccessDenied, ErrCodeExpired, ErrFlowNotAllowed, ctx's error
// when cancelled, *TemporaryError and *ServerError from the endpoints.
func (c *Client) DeviceLogin(ctx context.Context, prompt func(DevicePrompt) error) (Token, error) {
	if c.ep.deviceAuthURL == "" {
		return Token{}, fmt.Errorf("device login for provider %s: %w", c.cfg.Provider, ErrFlowNotAllowed)
	}
	oc, octx, secret, err := c.oauth2Config(ctx, "")
	if err != nil {
		return Token{}, err
	}
	// RFC 8628 §3.1: a confidential client authenticates here as at the
	// token endpoint; golang.org/x/oauth2 sends only client_id.
	var authOpts []oauth2.AuthCodeOption
	if secret != "" {
		authOpts = append(authOpts, oauth2.SetAuthURLParam("client_secret", secret))
	}
	da, err := oc.DeviceAuth(octx, authOpts...)
	if err != nil {
		return Token{}, classify("requesting a device code", "", err, secret)
	}
	if da.DeviceCode == "" || da.UserCode == "" || da.VerificationURI == "" {
		return Token{}, &TemporaryError{Op: "requesting a device code", Err: errors.New("the answer lacks device_code, user_code or verification_uri")}
	}
	if err := prompt(DevicePrompt{
		VerificationURI:         da.VerificationURI,
		VerificationURIComplete: da.VerificationURIComplete,
		UserCode:                da.UserCode,
		Expiry:                  da.Expiry,
	}); err != nil {
		return Token{}, fmt.Errorf("showing the device code: %w", err)
	}
	c.log.Info("oauth2 device login: waiting for approval", "interval_s", da.Interval, "expiry", da.Expiry)
	t, err := oc.DeviceAccessToken(octx, da)
	if err != nil {
		// DeviceAccessToken bounds the wait by the code's expiry with a
		// context deadline of its own.
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil && !da.Expiry.IsZero() && !time.Now().Before(da.Expiry) {
			return Token{}, fmt.Errorf("waiting for the device login: %w", ErrCodeExpired)
		}
		if ctx.Err() != nil {
			return Token{}, fmt.Errorf("waiting for the device login: %w", ctx.Err())
		}
		return Token{}, classify("waiting for the device login", "", err, da.DeviceCode, secret)
	}
	tok := fromOAuth2(t)
	if tok.RefreshToken == "" {
		c.log.Warn("oauth2 device login: the server sent no refresh token; the login lasts only as long as the access token")
	}
	return tok, nil
}
