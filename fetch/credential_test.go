package fetch_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"popsync/configs"
	"popsync/fetch/pop3/pop3test"
	"popsync/internal/credential"
	"popsync/schedule"
)

// fakeCredential hands out a scripted secret or error and records what was
// invalidated.
type fakeCredential struct {
	mu          sync.Mutex
	secret      string
	err         error
	invalidated []string
}

func (f *fakeCredential) Secret(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.secret, f.err
}

func (f *fakeCredential) Invalidate(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invalidated = append(f.invalidated, s)
}

// TestRefusedSecretIsInvalidated: the poll logs in with what
// Options.Credential returns, and a secret the server refuses is handed
// back through Invalidate (an OAuth2 token is then refreshed, not offered
// again); an accepted one is not.
func TestRefusedSecretIsInvalidated(t *testing.T) {
	msgs := pop3test.SampleMessages(2, 51)
	e := newEnv(t, msgs, pop3test.Config{})
	cred := &fakeCredential{secret: "not the password"}
	e.opts.Credential = func(a *configs.Account) (credential.Credential, error) { return cred, nil }
	r := e.poll()
	if schedule.OutcomeOf(r.Err) != schedule.OutcomeAuth {
		t.Fatalf("wrong secret: outcome %q (%v)", schedule.OutcomeOf(r.Err), r.Err)
	}
	if len(cred.invalidated) != 1 || cred.invalidated[0] != "not the password" {
		t.Fatalf("invalidated %q, want the refused secret once", cred.invalidated)
	}
	cred.secret = testPass
	e.mustPoll()
	if len(cred.invalidated) != 1 {
		t.Fatalf("an accepted secret was invalidated: %q", cred.invalidated)
	}
	e.wantExactlyOnce(msgs)
}

// TestTemporarySecretFailureBacksOff: a secret that cannot be had for now
// (a password_command that timed out, a token endpoint answering 503) is
// a temporary failure, retried with backoff, not a login failure; one that
// needs the user is a login failure. Neither reaches the server.
func TestTemporarySecretFailureBacksOff(t *testing.T) {
	e := newEnv(t, pop3test.SampleMessages(1, 52), pop3test.Config{})
	cred := &fakeCredential{err: &credential.TemporaryError{Err: errors.New("token endpoint: 503 Service Unavailable")}}
	e.opts.Credential = func(a *configs.Account) (credential.Credential, error) { return cred, nil }
	if r := e.poll(); schedule.OutcomeOf(r.Err) != schedule.OutcomeError || !credential.IsTemporary(r.Err) {
		t.Errorf("temporary secret failure: outcome %q (%v)", schedule.OutcomeOf(r.Err), r.Err)
	}
	cred.err = errors.Join(configs.ErrSecretUnavailable, errors.New("password_file: permission denied"))
	if r := e.poll(); schedule.OutcomeOf(r.Err) != schedule.OutcomeAuth {
		t.Errorf("lasting secret failure: outcome %q (%v)", schedule.OutcomeOf(r.Err), r.Err)
	}
	if n := e.srv.Stats().Logins; n != 0 {
		t.Errorf("%d logins without a secret", n)
	}
}
