// Package credential gets the secrets popsync logs in with: passwords from
// one of the sources a config names (Source: a literal, a file, a command
// or an environment variable), for an account, an SMTP or LMTP target with
// AUTH, an IMAP target or an OAuth2 client secret alike; and, through
// Credential, anything a login hands to a server, OAuth2 access tokens
// (package credential/oauth) included.
//
// It is responsible for reading a secret without leaking it (Secret prints
// redacted, errors never hold the value, a command's stdout is never
// quoted), and for saying whether a failure to get one is temporary
// (TemporaryError: a command that timed out, a token endpoint answering
// 503), to be retried with backoff like a network error, or needs the user
// (every error wraps ErrUnavailable). It is not responsible for which
// source a config may name, nor for logging in.
package credential

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// Errors of this package.
var (
	// ErrUnavailable is wrapped by every error of Source.Secret, so that a
	// caller can tell "could not obtain the secret" from a failed login.
	ErrUnavailable = errors.New("password unavailable")
)

// Credential is a secret a login hands to a server.
type Credential interface {
	// Secret returns the secret to send now. An error wraps ErrUnavailable
	// or, for OAuth2, the token source's own errors; Temporary says
	// whether it is worth retrying soon.
	Secret(ctx context.Context) (string, error)
	// Invalidate says the server refused secret: a Credential that keeps
	// a secret between uses (an OAuth2 access token) does not hand it out
	// again. A source that reads anew each time has nothing to forget.
	Invalidate(secret string)
}

// TokenSource is what an OAuth2 token source (credential/oauth.Source)
// offers a login.
type TokenSource interface {
	AccessToken(ctx context.Context) (string, error)
	Invalidate(accessToken string)
}

// FromTokens is the Credential of an OAuth2 token source: the secret is the
// current access token.
func FromTokens(ts TokenSource) Credential { return tokens{ts} }

type tokens struct{ ts TokenSource }

func (t tokens) Secret(ctx context.Context) (string, error) { return t.ts.AccessToken(ctx) }
func (t tokens) Invalidate(secret string)                   { t.ts.Invalidate(secret) }

// TemporaryError is a failure to get a secret that may go away by itself:
// a password_command that did not answer in time, a token endpoint that is
// down. Temporary reports true.
type TemporaryError struct{ Err error }

func (e *TemporaryError) Error() string   { return e.Err.Error() + " (temporary)" }
func (e *TemporaryError) Unwrap() error   { return e.Err }
func (e *TemporaryError) Temporary() bool { return true }

// IsTemporary reports whether err, or an error it wraps, says it is
// temporary (Temporary() true): this package's TemporaryError, an OAuth2
// token endpoint's, a network error.
func IsTemporary(err error) bool {
	for err != nil {
		if t, ok := err.(interface{ Temporary() bool }); ok && t.Temporary() {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if IsTemporary(e) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return false
}

// Secret is a password or token. It prints as "<redacted>" with every fmt
// verb, in slog records and when marshalled as text or JSON, so that logging
// or dumping a config can never leak it. Reveal returns the value.
type Secret string

const redacted = "<redacted>"

// Reveal returns the secret itself, for handing to an authenticator.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer.
func (s Secret) String() string { return redacted }

// GoString implements fmt.GoStringer.
func (s Secret) GoString() string { return redacted }

// Format implements fmt.Formatter for every verb, including %x and %q.
func (s Secret) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText implements encoding.TextMarshaler (and so JSON).
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
