package configs

import (
	"context"
	"fmt"

	"popsync/internal/credential"
)

// Secret is a password or token that never prints (credential.Secret).
type Secret = credential.Secret

// DefaultPasswordCommandTimeout bounds a password_command when the account
// does not set password_command_timeout.
const DefaultPasswordCommandTimeout = credential.DefaultCommandTimeout

// Secret returns the account's password (or, for auth xoauth2 and
// oauthbearer, its token) from the one source the config names; see
// credential.Source.Secret. Every error names the account, wraps
// ErrSecretUnavailable and never contains the secret; a temporary one (a
// password_command that timed out) is a *credential.TemporaryError.
func (a *Account) Secret(ctx context.Context) (string, error) {
	s, err := a.Password.Secret(ctx)
	if err != nil {
		return "", fmt.Errorf("account %q: %w", a.Name, err)
	}
	return s, nil
}
