package oauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"golang.org/x/oauth2"
)

// Sentinel errors. Test for them with errors.Is.
var (
	// ErrLoginNeeded means the stored grant cannot be used any more (none
	// stored, revoked, expired, password changed: RFC 6749 §5.2
	// invalid_grant): only an interactive login helps. The error is a
	// *LoginNeededError that names the command to run.
	ErrLoginNeeded = errors.New("oauth: login needed")
	// ErrNoToken is wrapped by TokenStore.Load when nothing is stored.
	ErrNoToken = errors.New("oauth: no token stored")
	// ErrAccessDenied means the user (or the server's policy) refused the
	// authorization (RFC 6749 §4.1.2.1, RFC 8628 §3.5 access_denied).
	ErrAccessDenied = errors.New("oauth: authorization denied")
	// ErrCodeExpired means the device code expired before the user
	// approved it (RFC 8628 §3.5 expired_token).
	ErrCodeExpired = errors.New("oauth: device code expired before it was approved")
	// ErrStateMismatch means the redirect carried a state that is not the
	// one sent (RFC 6749 §10.12): a forged or stale response, ignored.
	ErrStateMismatch = errors.New("oauth: redirect state does not match the request")
	// ErrLoginTimeout means the browser login got no redirect in time.
	ErrLoginTimeout = errors.New("oauth: no answer from the browser in time")
	// ErrFlowNotAllowed means the provider does not offer the asked-for
	// login flow (Google's device flow and the mail scope, a custom
	// provider without auth_url or device_auth_url).
	ErrFlowNotAllowed = errors.New("oauth: login flow not offered by this provider")
	// ErrBadConfig wraps the problems Config.Validate found.
	ErrBadConfig = errors.New("oauth: invalid configuration")
)

// LoginNeededError says which account needs `popsync login`, and why.
type LoginNeededError struct {
	Name   string // the account's config name, for the command
	Reason string // what the server or the store said, without secrets
}

func (e *LoginNeededError) Error() string {
	name := e.Name
	if name == "" {
		name = "NAME"
	}
	return fmt.Sprintf("oauth2 login needed for account %s (%s): run `popsync login %s`", name, e.Reason, name)
}

// Is makes errors.Is(err, ErrLoginNeeded) true.
func (e *LoginNeededError) Is(target error) bool { return target == ErrLoginNeeded }

// TemporaryError is a failure that may go away by itself: the token
// endpoint could not be reached, timed out, answered 5xx or 429, or said
// temporarily_unavailable. Retry with backoff.
type TemporaryError struct {
	Op  string // "refreshing token", "requesting device code", ...
	Err error  // the cause, without secrets
}

func (e *TemporaryError) Error() string   { return e.Op + ": " + e.Err.Error() + " (temporary)" }
func (e *TemporaryError) Unwrap() error   { return e.Err }
func (e *TemporaryError) Temporary() bool { return true }

// ServerError is an OAuth error response (RFC 6749 §5.2) that is neither
// temporary nor invalid_grant: invalid_client, unauthorized_client,
// invalid_scope and the like. It needs a config fix.
type ServerError struct {
	Op          string
	Status      int    // HTTP status code
	Code        string // the "error" parameter
	Description string // the "error_description" parameter, secrets removed
}

func (e *ServerError) Error() string {
	s := fmt.Sprintf("%s: token endpoint answered HTTP %d", e.Op, e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Description != "" {
		s += ": " + e.Description
	}
	return s
}

func (e *ServerError) Temporary() bool { return false }

// maxDescription bounds the server text copied into an error.
const maxDescription = 200

// classify turns an error of golang.org/x/oauth2 or net/http into one of
// this package's, with every secret in secrets removed from its text.
// name is the account's config name for a LoginNeededError; it is empty
// for the logins, where invalid_grant is about a code, not a stored grant.
func classify(op, name string, err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		desc := clean(re.ErrorDescription, secrets)
		code := clean(re.ErrorCode, secrets)
		switch {
		case code == "invalid_grant" && name != "":
			reason := "the server rejected the refresh token: invalid_grant"
			if desc != "" {
				reason += ": " + desc
			}
			return &LoginNeededError{Name: name, Reason: reason}
		case code == "access_denied":
			return fmt.Errorf("%s: %w", op, ErrAccessDenied)
		case code == "expired_token":
			return fmt.Errorf("%s: %w", op, ErrCodeExpired)
		case status >= 500 || status == http.StatusTooManyRequests ||
			code == "temporarily_unavailable" || code == "server_error" || code == "slow_down":
			// RFC 6749 §4.1.2.1: server_error and temporarily_unavailable.
			return &TemporaryError{Op: op, Err: &ServerError{Op: "token endpoint", Status: status, Code: code, Description: desc}}
		default:
			return &ServerError{Op: op, Status: status, Code: code, Description: desc}
		}
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", op, context.Canceled)
	}
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var badCert x509.CertificateInvalidError
	if errors.As(err, &certErr) || errors.As(err, &unknownCA) || errors.As(err, &badHost) || errors.As(err, &badCert) {
		// Not temporary: retrying will not make the certificate trusted.
		return fmt.Errorf("%s: %s", op, clean(err.Error(), secrets))
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		// Connection refused, reset, DNS, the http.Client's Timeout.
		return &TemporaryError{Op: op, Err: errors.New(clean(err.Error(), secrets))}
	}
	// A malformed answer (not JSON, no access_token): the server or a
	// proxy in front of it is broken; that may pass.
	return &TemporaryError{Op: op, Err: errors.New(clean(err.Error(), secrets))}
}

// clean removes secrets from s and bounds its length.
func clean(s string, secrets []string) string {
	for _, sec := range secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "<redacted>")
		}
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxDescription {
		s = s[:maxDescription] + "..."
	}
	return s
}
