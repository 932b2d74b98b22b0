// Package storetest is the conformance suite of oauth.TokenStore: every
// store of OAuth 2.0 tokens (the state store's token table on SQLite and
// PostgreSQL, the in-memory one) runs it from its own tests.
//
// It checks what oauth.Source relies on: a missing token is ErrNoToken, a
// saved token comes back field for field, Save replaces, Delete forgets
// and is idempotent, keys do not mix, and concurrent use is safe. It
// cannot check durability across a crash; the stores' own tests must.
package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"popsync/internal/credential/oauth"
)

// Run runs the suite; open returns a new, empty store for each subtest.
func Run(t *testing.T, open func(t *testing.T) oauth.TokenStore) {
	sample := oauth.Token{
		AccessToken:  "at-Zm9vYmFy.with~odd_chars+/=",
		TokenType:    "Bearer",
		RefreshToken: "rt-0.AAAA-long-refresh-token-0123456789",
		// Sub-second precision and a zone other than UTC must survive.
		Expiry: time.Date(2031, 5, 6, 7, 8, 9, 123456000, time.FixedZone("X", 3600)),
	}
	equal := func(a, b oauth.Token) bool {
		return a.AccessToken == b.AccessToken && a.TokenType == b.TokenType && a.RefreshToken == b.RefreshToken && a.Expiry.Equal(b.Expiry)
	}

	t.Run("Missing", func(t *testing.T) {
		s := open(t)
		if _, err := s.Load(t.Context(), "nobody"); !errors.Is(err, oauth.ErrNoToken) {
			t.Errorf("Load of a missing key: %v, want ErrNoToken", err)
		}
		if err := s.Delete(t.Context(), "nobody"); err != nil {
			t.Errorf("Delete of a missing key: %v", err)
		}
	})
	t.Run("RoundTrip", func(t *testing.T) {
		s := open(t)
		if err := s.Save(t.Context(), "k", sample); err != nil {
			t.Fatal(err)
		}
		got, err := s.Load(t.Context(), "k")
		if err != nil || !equal(got, sample) {
			t.Errorf("Load = %+v, %v; want the saved token (expiry %v, got %v)", got, err, sample.Expiry, got.Expiry)
		}
		empty := oauth.Token{RefreshToken: "rt-only"}
		if err := s.Save(t.Context(), "k", empty); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Load(t.Context(), "k"); err != nil || !equal(got, empty) || !got.Expiry.IsZero() {
			t.Errorf("after replacing: %+v, %v; want only a refresh token and no expiry", got, err)
		}
	})
	t.Run("KeysApart", func(t *testing.T) {
		s := open(t)
		a, b := sample, sample
		b.RefreshToken = "rt-b"
		if err := s.Save(t.Context(), "pop3 a.example 995 me", a); err != nil {
			t.Fatal(err)
		}
		if err := s.Save(t.Context(), "pop3 b.example 995 me", b); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(t.Context(), "pop3 a.example 995 me"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Load(t.Context(), "pop3 a.example 995 me"); !errors.Is(err, oauth.ErrNoToken) {
			t.Errorf("deleted key: %v, want ErrNoToken", err)
		}
		if got, err := s.Load(t.Context(), "pop3 b.example 995 me"); err != nil || !equal(got, b) {
			t.Errorf("other key after a delete: %+v, %v", got, err)
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		s := open(t)
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				key := fmt.Sprintf("k%d", i%2)
				for j := range 20 {
					tok := sample
					tok.RefreshToken = fmt.Sprintf("rt-%d-%d", i, j)
					if err := s.Save(t.Context(), key, tok); err != nil {
						t.Error(err)
						return
					}
					if _, err := s.Load(t.Context(), key); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	})
}
