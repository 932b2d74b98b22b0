package main

import (
	"errors"
	"fmt"
	"testing"

	"popsync/internal/credential/oauth"
)

// The exit statuses of OAuth 2.0 failures, as the README's OAuth 2.0
// section lists them.
func TestOAuth2ExitCodes(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{&accountsError{failed: []accountFailure{{"work", fmt.Errorf("account %q: %w", "work", &oauth.LoginNeededError{Name: "work", Reason: "invalid_grant"})}}, total: 2}, exitAuth},
		{fmt.Errorf("account work: %w", fmt.Errorf("waiting: %w", oauth.ErrAccessDenied)), exitAuth},
		{fmt.Errorf("account work: %w", oauth.ErrCodeExpired), exitAuth},
		{fmt.Errorf("account work: %w", oauth.ErrStateMismatch), exitAuth},
		{&oauth.ServerError{Op: "refreshing", Status: 401, Code: "invalid_client"}, exitAuth},
		// 503 from the token endpoint: temporary, like a server that is down.
		{&oauth.TemporaryError{Op: "refreshing", Err: &oauth.ServerError{Op: "token endpoint", Status: 503}}, exitConnect},
		{&oauth.TemporaryError{Op: "refreshing", Err: errors.New("dial tcp: connection refused")}, exitConnect},
	} {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("%v: exit %d, want %d", c.err, got, c.want)
		}
	}
}
