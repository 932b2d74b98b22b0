package schedule

import (
	"errors"

	"popsync/internal/credential/oauth"
)

// classifyOAuth2 sorts the failures of getting an OAuth 2.0 token: a gone
// grant needs `popsync login`; a token endpoint that is down, slow or rate
// limiting is temporary (backoff, like a POP3 server that is down); any
// other OAuth error answer (invalid_client, invalid_scope) or a bad
// oauth2 config needs the user.
func classifyOAuth2(err error) (outcome string, ok bool) {
	var te *oauth.TemporaryError
	var se *oauth.ServerError
	switch {
	case errors.Is(err, oauth.ErrLoginNeeded):
		return OutcomeLoginNeeded, true
	case errors.As(err, &te):
		return OutcomeError, true
	case errors.As(err, &se), errors.Is(err, oauth.ErrBadConfig):
		return OutcomeAuth, true
	}
	return "", false
}
