package oauth

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// RefreshMargin: an access token that expires within this much time is
// refreshed before it is handed out, so it cannot expire mid-login.
const RefreshMargin = 60 * time.Second

// keyState serializes the refreshes of one key of one store within the
// process, whichever Client they go through.
type keyState struct {
	// sem holds one token while a Source of this key loads, refreshes or
	// saves; a channel rather than a mutex so waiting honours ctx.
	sem chan struct{}
	// unsaved is a refreshed token whose Save failed. Its refresh token
	// may be the only one the server still accepts, so it is saved again
	// before anything else, and its access token is not handed out until
	// that worked. Guarded by sem.
	unsaved *Token

	mu sync.Mutex // guards rejected: Invalidate does not wait for sem
	// rejected is an access token a server refused although it looked
	// valid (Invalidate): it is refreshed before it is handed out again.
	rejected string
}

// stateKey names a key of a store.
type stateKey struct {
	store any
	key   string
}

// states holds the keyState of every key of every store in the process, so
// that Clients made per poll still never refresh one key twice at once.
var states struct {
	mu sync.Mutex
	m  map[stateKey]*keyState
}

func stateOf(store TokenStore, key string) *keyState {
	var sk stateKey
	if reflect.TypeOf(store).Comparable() {
		sk = stateKey{store: store, key: key}
	} else {
		// A store that cannot be a map key (a struct value with a slice,
		// say): one state per store type and key, which only serializes
		// more than needed.
		sk = stateKey{store: reflect.TypeOf(store), key: key}
	}
	states.mu.Lock()
	defer states.mu.Unlock()
	if states.m == nil {
		states.m = make(map[stateKey]*keyState)
	}
	st, ok := states.m[sk]
	if !ok {
		st = &keyState{sem: make(chan struct{}, 1)}
		states.m[sk] = st
	}
	return st
}

// Source hands out access tokens of one key, refreshing them through the
// Client's TokenStore. All Sources of the same key and store in the
// process share their state, so their refreshes never overlap. Two
// processes sharing a store are not serialized; when one of them rotated
// the refresh token under the other, the other's invalid_grant is followed
// by one retry with the token now stored.
type Source struct {
	c         *Client
	key, name string
	st        *keyState
}

// Source returns the Source of key (the account identity in the store);
// name is the account's config name, used in errors that ask for
// `popsync login NAME`. The Client must have a Store.
func (c *Client) Source(key, name string) (*Source, error) {
	if c.opts.Store == nil {
		return nil, errors.New("oauth: a token source needs Options.Store")
	}
	return &Source{c: c, key: key, name: name, st: stateOf(c.opts.Store, key)}, nil
}

// Token returns a token whose access token is valid for at least
// RefreshMargin (or has no expiry). When it had to refresh, the new token
// (with the rotated refresh token, if the server sent one) was saved in
// the store before Token returns. Errors: a *LoginNeededError (errors.Is
// ErrLoginNeeded) when no grant is left, a *TemporaryError when the token
// endpoint is unreachable or failing, a *ServerError for other OAuth
// error responses, and store errors as they are.
func (s *Source) Token(ctx context.Context) (Token, error) {
	select {
	case s.st.sem <- struct{}{}:
	case <-ctx.Done():
		return Token{}, fmt.Errorf("waiting for the token refresh of %s: %w", s.name, ctx.Err())
	}
	defer func() { <-s.st.sem }()

	store := s.c.opts.Store
	if u := s.st.unsaved; u != nil {
		if err := store.Save(ctx, s.key, *u); err != nil {
			return Token{}, fmt.Errorf("saving the refreshed oauth2 token of %s (again): %w", s.name, err)
		}
		s.st.unsaved = nil
	}
	tok, err := store.Load(ctx, s.key)
	if errors.Is(err, ErrNoToken) {
		return Token{}, &LoginNeededError{Name: s.name, Reason: "no token stored"}
	}
	if err != nil {
		return Token{}, fmt.Errorf("loading the oauth2 token of %s: %w", s.name, err)
	}
	s.st.mu.Lock()
	forced := tok.AccessToken != "" && tok.AccessToken == s.st.rejected
	s.st.mu.Unlock()
	if !forced && !tok.expiresWithin(time.Now(), RefreshMargin) {
		return tok, nil
	}
	if tok.RefreshToken == "" {
		return Token{}, &LoginNeededError{Name: s.name, Reason: "the access token expired and no refresh token is stored"}
	}
	fresh, err := s.refresh(ctx, tok)
	if errors.Is(err, ErrLoginNeeded) {
		// Another process may have rotated the refresh token since the
		// Load: then the store holds a newer one, which gets one try.
		cur, lerr := store.Load(ctx, s.key)
		if lerr != nil || cur.RefreshToken == "" || cur.RefreshToken == tok.RefreshToken {
			return Token{}, err
		}
		s.c.log.Info("oauth2 refresh token was replaced meanwhile; using the stored one", "account", s.name)
		if !cur.expiresWithin(time.Now(), RefreshMargin) && cur.AccessToken != s.rejectedToken() {
			return cur, nil
		}
		tok = cur
		fresh, err = s.refresh(ctx, tok)
	}
	if err != nil {
		return Token{}, err
	}
	// Durable before use: the server may already have retired the old
	// refresh token.
	if err := store.Save(ctx, s.key, fresh); err != nil {
		s.st.unsaved = &fresh
		return Token{}, fmt.Errorf("saving the refreshed oauth2 token of %s: %w", s.name, err)
	}
	s.st.mu.Lock()
	if s.st.rejected == tok.AccessToken {
		s.st.rejected = ""
	}
	s.st.mu.Unlock()
	s.c.log.Info("oauth2 token refreshed", "account", s.name, "forced", forced,
		"rotated", fresh.RefreshToken != tok.RefreshToken, "expiry", fresh.Expiry)
	return fresh, nil
}

// refresh runs the refresh_token grant (RFC 6749 §6) through
// golang.org/x/oauth2's TokenSource.
func (s *Source) refresh(ctx context.Context, old Token) (Token, error) {
	oc, octx, secret, err := s.c.oauth2Config(ctx, "")
	if err != nil {
		return Token{}, err
	}
	// An empty access token is never valid, so the TokenSource refreshes
	// on its first call.
	nt, err := oc.TokenSource(octx, &oauth2.Token{RefreshToken: old.RefreshToken}).Token()
	if err != nil {
		return Token{}, classify("refreshing the oauth2 token of "+s.name, s.name, err, old.RefreshToken, old.AccessToken, secret)
	}
	fresh := fromOAuth2(nt)
	if fresh.RefreshToken == "" {
		// RFC 6749 §6: without a new refresh token, the old one stays.
		fresh.RefreshToken = old.RefreshToken
	}
	return fresh, nil
}

// AccessToken is Token's access token.
func (s *Source) AccessToken(ctx context.Context) (string, error) {
	t, err := s.Token(ctx)
	return t.AccessToken, err
}

// Invalidate says that a server rejected accessToken although it had not
// expired (revoked, or the clocks disagree): the next Token refreshes once
// instead of handing it out again. Invalidating an older token than the
// stored one does nothing, so callers racing on the same rejection cause
// one refresh, not several.
func (s *Source) Invalidate(accessToken string) {
	if accessToken == "" {
		return
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	s.st.rejected = accessToken
}

func (s *Source) rejectedToken() string {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	return s.st.rejected
}

// TokenSource adapts s to golang.org/x/oauth2, for code that wants one
// (an IMAP client's SASL, say); ctx bounds every call.
func (s *Source) TokenSource(ctx context.Context) oauth2.TokenSource {
	return tokenSource{ctx: ctx, s: s}
}

type tokenSource struct {
	ctx context.Context
	s   *Source
}

func (t tokenSource) Token() (*oauth2.Token, error) {
	tok, err := t.s.Token(t.ctx)
	if err != nil {
		return nil, err
	}
	return &oauth2.Token{AccessToken: tok.AccessToken, TokenType: tok.TokenType, RefreshToken: tok.RefreshToken, Expiry: tok.Expiry}, nil
}
