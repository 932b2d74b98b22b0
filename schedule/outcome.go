package schedule

import (
	"errors"
	"strings"

	"popsync/configs"
	"popsync/fetch"
	"popsync/fetch/pop3"
	"popsync/internal/credential"
)

// OutcomeOf classifies the error of a poll the way the scheduler treats it:
// OutcomeOK, OutcomeBusy, OutcomeAuth (wait MaxBackoff, report loudly) or
// OutcomeError (temporary: back off exponentially).
func OutcomeOf(err error) string {
	o, _ := classify(err)
	return o
}

// classify returns the outcome of a poll that ended with err, and whether
// the server refused the login with LOGIN-DELAY.
func classify(err error) (outcome string, loginDelay bool) {
	if err == nil {
		return OutcomeOK, false
	}
	if errors.Is(err, fetch.ErrAccountBusy) {
		return OutcomeBusy, false
	}
	if o, ok := classifyOAuth2(err); ok { // oauth2.go
		return o, false
	}
	var pe *pop3.Error
	if errors.As(err, &pe) {
		switch {
		case codeIs(pe.Code, "LOGIN-DELAY"):
			// RFC 2449 §8.1.2: logged in too soon after a previous login.
			return OutcomeError, true
		case pe.Temporary():
			// IN-USE (§8.1.1), SYS/TEMP (RFC 3206 §4): try again later.
			return OutcomeError, false
		case codeIs(pe.Code, "AUTH"):
			// RFC 3206 §5: the credentials are wrong.
			return OutcomeAuth, false
		case codeIs(pe.Code, "SYS/PERM"):
			// RFC 3206 §4: the server will not get better by itself.
			return OutcomeAuth, false
		}
		switch pe.Command {
		case "USER", "PASS", "APOP", "AUTH":
			// A refused login without a code: most often the password.
			return OutcomeAuth, false
		}
		return OutcomeError, false
	}
	// Failures that only the user can fix: retrying often would not help
	// and, for a server that counts failed logins, could lock the account.
	for _, target := range []error{pop3.ErrNoMechanism,
		pop3.ErrPlaintextAuth, pop3.ErrTLSRequired, pop3.ErrCertificate, pop3.ErrFingerprintMismatch} {
		if errors.Is(err, target) {
			return OutcomeAuth, false
		}
	}
	// A secret that could not be had for now (a password_command that
	// timed out, a token endpoint that is down) is retried like a network
	// failure; one that needs the user is not.
	if credential.IsTemporary(err) {
		return OutcomeError, false
	}
	if errors.Is(err, configs.ErrSecretUnavailable) {
		return OutcomeAuth, false
	}
	return OutcomeError, false
}

// codeIs reports whether a response code is want or below it (RFC 2449 §8:
// codes are hierarchical, "/"-separated).
func codeIs(code, want string) bool {
	return code == want || strings.HasPrefix(code, want+"/")
}

// Poll outcomes, the "outcome" label of popsync_polls_total.
const (
	OutcomeOK        = "ok"        // the poll succeeded
	OutcomeError     = "error"     // a temporary failure: retried with backoff
	OutcomeAuth      = "auth"      // login refused or impossible: retried slowly
	OutcomeBusy      = "busy"      // another popsync was polling the account
	OutcomeCancelled = "cancelled" // stopped by shutdown
	// OutcomeLoginNeeded: the account's OAuth 2.0 grant is gone; only
	// `popsync login NAME` helps. Later polls fail locally, without asking
	// the token endpoint, until the login stored a new token.
	OutcomeLoginNeeded = "login_needed"
)
