package storetest_test

import (
	"testing"

	"popsync/internal/credential/oauth"
	"popsync/internal/credential/oauth/storetest"
)

func TestMemoryStore(t *testing.T) {
	storetest.Run(t, func(*testing.T) oauth.TokenStore { return &oauth.MemoryStore{} })
}
