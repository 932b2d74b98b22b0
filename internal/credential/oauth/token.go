package oauth

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// Token is what a login or a refresh produced. Its String and Format
// methods print no secret, so a Token in a log line or an error leaks
// nothing; marshal it with encoding/json to store it.
type Token struct {
	AccessToken  string    `json:"access_token"`
	TokenType    string    `json:"token_type,omitempty"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry,omitzero"` // zero: the server did not say
}

// String describes t without its secrets.
func (t Token) String() string {
	exp := "no expiry"
	if !t.Expiry.IsZero() {
		exp = "expires " + t.Expiry.UTC().Format(time.RFC3339)
	}
	rt := "no refresh token"
	if t.RefreshToken != "" {
		rt = "refresh token present"
	}
	at := "no access token"
	if t.AccessToken != "" {
		at = "access token present"
	}
	return fmt.Sprintf("oauth token (%s, %s, %s)", at, exp, rt)
}

// Format makes every verb, %#v and %+v included, print String.
func (t Token) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(t.String())) }

// expiresWithin reports whether the access token is missing or expires
// within d of now. A token without an expiry is trusted until a server
// rejects it ([Source.Invalidate]).
func (t Token) expiresWithin(now time.Time, d time.Duration) bool {
	if t.AccessToken == "" {
		return true
	}
	return !t.Expiry.IsZero() && !now.Add(d).Before(t.Expiry)
}

func fromOAuth2(t *oauth2.Token) Token {
	return Token{AccessToken: t.AccessToken, TokenType: t.TokenType, RefreshToken: t.RefreshToken, Expiry: t.Expiry}
}

// TokenStore keeps tokens by key (the account identity). Implementations
// must be safe for concurrent use.
type TokenStore interface {
	// Load returns the stored token, or an error wrapping ErrNoToken when
	// there is none.
	Load(ctx context.Context, key string) (Token, error)
	// Save replaces the stored token. When it returns nil the token is
	// durable: it survives a crash or kill -9 that follows at once.
	Save(ctx context.Context, key string, t Token) error
	// Delete forgets the token (logout); deleting a missing one is no
	// error.
	Delete(ctx context.Context, key string) error
}

// MemoryStore is a TokenStore in memory, for tests and one-shot tools.
// It is not durable. The zero value is ready to use.
type MemoryStore struct {
	mu     sync.Mutex
	tokens map[string]Token
	saves  int
}

// Load implements TokenStore.
func (m *MemoryStore) Load(_ context.Context, key string) (Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tokens[key]
	if !ok {
		return Token{}, fmt.Errorf("loading token %q: %w", key, ErrNoToken)
	}
	return t, nil
}

// Save implements TokenStore.
func (m *MemoryStore) Save(_ context.Context, key string, t Token) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tokens == nil {
		m.tokens = make(map[string]Token)
	}
	m.tokens[key] = t
	m.saves++
	return nil
}

// Delete implements TokenStore.
func (m *MemoryStore) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.tokens, key)
	return nil
}

// Saves returns how many times Save was called.
func (m *MemoryStore) Saves() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.saves
}
