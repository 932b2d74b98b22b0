package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"popsync/internal/credential/oauth"
	"popsync/state"
)

// TokenStore is oauth.TokenStore on the oauth_token table (schema 2): the
// fleet's OAuth2 tokens, shared by every daemon. A token is stored as the
// JSON of oauth.Token; Save returns once the commit is durable (fsync on
// the server), so a rotated refresh token is kept before it is used.
type TokenStore struct{ s *Store }

var _ oauth.TokenStore = (*TokenStore)(nil)

// Tokens returns the Store's token table.
func (s *Store) Tokens() *TokenStore { return &TokenStore{s: s} }

// Load implements oauth.TokenStore.
func (ts *TokenStore) Load(ctx context.Context, key string) (oauth.Token, error) {
	s := ts.s
	if !validText(key) {
		return oauth.Token{}, fmt.Errorf("loading token: the key is not UTF-8 without NUL")
	}
	if s.isClosed() {
		return oauth.Token{}, fmt.Errorf("loading token %q: %w", key, state.ErrClosed)
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var blob []byte
	err := s.pool.QueryRow(ctx, `SELECT blob FROM oauth_token WHERE key = $1`, key).Scan(&blob)
	if errors.Is(err, pgx.ErrNoRows) {
		return oauth.Token{}, fmt.Errorf("loading token %q: %w", key, oauth.ErrNoToken)
	}
	if err != nil {
		return oauth.Token{}, fmt.Errorf("loading token %q: %w", key, s.fail(ctx, err))
	}
	var t oauth.Token
	if err := json.Unmarshal(blob, &t); err != nil {
		// The error of encoding/json may quote the token's text.
		return oauth.Token{}, fmt.Errorf("loading token %q: %w: the stored token is not valid JSON", key, state.ErrCorrupt)
	}
	return t, nil
}

// Save implements oauth.TokenStore.
func (ts *TokenStore) Save(ctx context.Context, key string, t oauth.Token) error {
	s := ts.s
	if !validText(key) {
		return fmt.Errorf("saving token: the key is not UTF-8 without NUL")
	}
	if s.isClosed() {
		return fmt.Errorf("saving token %q: %w", key, state.ErrClosed)
	}
	blob, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("saving token %q: encoding it failed", key)
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	if _, err := s.pool.Exec(ctx, `INSERT INTO oauth_token (key, blob, updated, login_needed) VALUES ($1, $2, now(), '')
		ON CONFLICT (key) DO UPDATE SET blob = excluded.blob, updated = excluded.updated, login_needed = ''`, key, blob); err != nil {
		return fmt.Errorf("saving token %q: %w", key, s.fail(ctx, err))
	}
	return nil
}

// Delete implements oauth.TokenStore.
func (ts *TokenStore) Delete(ctx context.Context, key string) error {
	s := ts.s
	if !validText(key) {
		return fmt.Errorf("deleting token: the key is not UTF-8 without NUL")
	}
	if s.isClosed() {
		return fmt.Errorf("deleting token %q: %w", key, state.ErrClosed)
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	if _, err := s.pool.Exec(ctx, `DELETE FROM oauth_token WHERE key = $1`, key); err != nil {
		return fmt.Errorf("deleting token %q: %w", key, s.fail(ctx, err))
	}
	return nil
}

// MarkLoginNeeded records that the grant of key is gone, with the reason,
// unless the stored token's refresh token is no longer refreshToken: a
// login saved meanwhile (by this daemon or another) is not undone.
func (ts *TokenStore) MarkLoginNeeded(ctx context.Context, key, refreshToken, reason string) error {
	s := ts.s
	if !validText(key) || !validText(reason) {
		return fmt.Errorf("marking token: the key or reason is not UTF-8 without NUL")
	}
	if reason == "" {
		reason = "login needed"
	}
	if s.isClosed() {
		return fmt.Errorf("marking token %q: %w", key, state.ErrClosed)
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var blob []byte
		err := tx.QueryRow(ctx, `SELECT blob FROM oauth_token WHERE key = $1 FOR UPDATE`, key).Scan(&blob)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("marking token %q: %w", key, s.fail(ctx, err))
		}
		var t oauth.Token
		if json.Unmarshal(blob, &t) != nil || t.RefreshToken != refreshToken {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE oauth_token SET login_needed = $1 WHERE key = $2`, reason, key); err != nil {
			return fmt.Errorf("marking token %q: %w", key, s.fail(ctx, err))
		}
		return nil
	})
}

// Info describes the token of key without its secrets. A missing token
// is Stored false and LoginNeeded true, with no error.
func (ts *TokenStore) Info(ctx context.Context, key string) (state.TokenInfo, error) {
	s := ts.s
	if s.isClosed() {
		return state.TokenInfo{}, state.ErrClosed
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var (
		blob   []byte
		saved  time.Time
		reason string
	)
	err := s.pool.QueryRow(ctx, `SELECT blob, updated, login_needed FROM oauth_token WHERE key = $1`, key).Scan(&blob, &saved, &reason)
	if errors.Is(err, pgx.ErrNoRows) {
		return state.TokenInfo{LoginNeeded: true, NeededBecause: "no token stored"}, nil
	}
	if err != nil {
		return state.TokenInfo{}, fmt.Errorf("reading token %q: %w", key, s.fail(ctx, err))
	}
	var t oauth.Token
	if err := json.Unmarshal(blob, &t); err != nil {
		return state.TokenInfo{}, fmt.Errorf("reading token %q: %w: the stored token is not valid JSON", key, state.ErrCorrupt)
	}
	info := state.TokenInfo{Stored: true, Expiry: t.Expiry, RefreshToken: t.RefreshToken != "", Saved: saved,
		LoginNeeded: reason != "", NeededBecause: reason}
	if !info.LoginNeeded && !info.RefreshToken && (t.AccessToken == "" || (!t.Expiry.IsZero() && !time.Now().Before(t.Expiry))) {
		info.LoginNeeded, info.NeededBecause = true, "the access token expired and no refresh token is stored"
	}
	return info, nil
}

// CopyTokens writes toks, the tokens of an SQLite state (`popsync state
// copy`), into the table in one transaction, each with when it was saved
// and its "login needed" mark, so that the accounts need no new `popsync
// login`. A key the table holds already keeps its token unless force: it
// was saved by a login or refresh of the fleet and may be newer than the
// copy (a refresh token that rotated since cannot be used again). It
// returns how many tokens it wrote and how many it kept.
func (ts *TokenStore) CopyTokens(ctx context.Context, toks []state.StoredToken, force bool) (copied, kept int, err error) {
	s := ts.s
	if s.isClosed() {
		return 0, 0, fmt.Errorf("copying tokens: %w", state.ErrClosed)
	}
	for _, t := range toks {
		if !validText(t.Key) || !validText(t.LoginNeeded) {
			return 0, 0, fmt.Errorf("copying tokens: the key %q or its reason is not UTF-8 without NUL", pgText(t.Key))
		}
	}
	insert := `INSERT INTO oauth_token (key, blob, updated, login_needed) VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING`
	if force {
		insert = `INSERT INTO oauth_token (key, blob, updated, login_needed) VALUES ($1, $2, $3, $4)
			ON CONFLICT (key) DO UPDATE SET blob = excluded.blob, updated = excluded.updated, login_needed = excluded.login_needed`
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		copied, kept = 0, 0
		for _, t := range toks {
			blob, err := json.Marshal(t.Token)
			if err != nil {
				return fmt.Errorf("token %q: encoding it failed", t.Key)
			}
			saved := t.Saved
			if saved.IsZero() {
				saved = time.Now()
			}
			tag, err := tx.Exec(ctx, insert, t.Key, blob, saved, t.LoginNeeded)
			if err != nil {
				return fmt.Errorf("token %q: %w", t.Key, err)
			}
			if tag.RowsAffected() == 1 {
				copied++
			} else {
				kept++
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("copying tokens into %s: %w", s.where, s.fail(ctx, err))
	}
	return copied, kept, nil
}
