package postgres

import (
	"testing"

	"popsync/internal/credential/oauth"
	"popsync/internal/credential/oauth/storetest"
)

// TestTokenStore runs the oauth.TokenStore conformance suite on the token
// table.
func TestTokenStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) oauth.TokenStore {
		return open(t, newDB(t), Options{}).Tokens()
	})
}
