package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"popsync/internal/credential/oauth"
)

// OAuth 2.0 tokens live in a table of their own, oauth_token, keyed by the
// account's token key (configs.Account.TokenKey: the service and the
// identity). Nothing else in the state refers to them, and no other table
// holds a secret.

// migrateTokens creates the token table. IF NOT EXISTS: a file whose
// user_version was set back (as the tests of older migrations do) is
// migrated again without losing its tokens.
//
// login_needed is the reason the grant stopped working (invalid_grant, no
// refresh token): while it is set, polls ask for `popsync login` without
// asking the token endpoint again. Every Save clears it.
func migrateTokens(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `
CREATE TABLE IF NOT EXISTS oauth_token (
	key           TEXT PRIMARY KEY,
	access_token  TEXT NOT NULL,
	token_type    TEXT NOT NULL,
	refresh_token TEXT NOT NULL,
	expiry        INTEGER,          -- microseconds since the epoch; NULL: none given
	saved         INTEGER NOT NULL, -- when Save wrote the row
	login_needed  TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
`)
	return err
}

// TokenTable is the oauth.TokenStore of a SQLite state file. Each Save is
// one committed transaction, and the store runs with synchronous=FULL, so a
// saved token (a rotated refresh token above all) survives a kill -9 or a
// power loss that follows at once.
//
// It is a small value: every TokenTable of one SQLite compares equal, so
// oauth.Source serializes the refreshes of one key across all of them.
type TokenTable struct{ s *SQLite }

var _ oauth.TokenStore = TokenTable{}

// Tokens returns the store's token table.
func (s *SQLite) Tokens() TokenTable { return TokenTable{s: s} }

// Load implements oauth.TokenStore.
func (t TokenTable) Load(ctx context.Context, key string) (oauth.Token, error) {
	if t.s.isClosed() {
		return oauth.Token{}, ErrClosed
	}
	var tok oauth.Token
	var exp sql.NullInt64
	err := t.s.db.QueryRowContext(ctx,
		`SELECT access_token, token_type, refresh_token, expiry FROM oauth_token WHERE key = ?`, key).
		Scan(&tok.AccessToken, &tok.TokenType, &tok.RefreshToken, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return oauth.Token{}, fmt.Errorf("loading the oauth2 token of %s: %w", key, oauth.ErrNoToken)
	}
	if err != nil {
		return oauth.Token{}, fmt.Errorf("loading the oauth2 token of %s: %w", key, classify(err))
	}
	tok.Expiry = goTime(exp)
	return tok, nil
}

// Save implements oauth.TokenStore: it replaces the token in one committed
// transaction and clears a "login needed" mark.
func (t TokenTable) Save(ctx context.Context, key string, tok oauth.Token) error {
	err := t.s.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `
INSERT INTO oauth_token (key, access_token, token_type, refresh_token, expiry, saved, login_needed)
VALUES (?, ?, ?, ?, ?, ?, '')
ON CONFLICT (key) DO UPDATE SET access_token = excluded.access_token, token_type = excluded.token_type,
	refresh_token = excluded.refresh_token, expiry = excluded.expiry, saved = excluded.saved, login_needed = ''`,
			key, tok.AccessToken, tok.TokenType, tok.RefreshToken, dbTime(tok.Expiry), time.Now().UnixMicro())
		return err
	})
	if err != nil {
		return fmt.Errorf("saving the oauth2 token of %s: %w", key, err)
	}
	return nil
}

// Delete implements oauth.TokenStore (`popsync logout`).
func (t TokenTable) Delete(ctx context.Context, key string) error {
	err := t.s.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM oauth_token WHERE key = ?`, key)
		return err
	})
	if err != nil {
		return fmt.Errorf("deleting the oauth2 token of %s: %w", key, err)
	}
	return nil
}

// MarkLoginNeeded records that the stored grant no longer works, with the
// reason (which must hold no secret), if the stored refresh token is still
// refreshToken: a login that saved a new one since keeps working. A key
// without a token needs no mark: its absence says as much.
func (t TokenTable) MarkLoginNeeded(ctx context.Context, key, refreshToken, reason string) error {
	if reason == "" {
		reason = "login needed"
	}
	err := t.s.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE oauth_token SET login_needed = ? WHERE key = ? AND refresh_token = ?`, reason, key, refreshToken)
		return err
	})
	if err != nil {
		return fmt.Errorf("marking the oauth2 token of %s as needing a login: %w", key, err)
	}
	return nil
}

// TokenInfo describes a stored token without its secrets, for `popsync
// status` and for the poll's check before it asks the token endpoint.
type TokenInfo struct {
	Stored        bool      // a token is stored
	Expiry        time.Time // of the access token; zero when none was given
	RefreshToken  bool      // a refresh token is stored
	Saved         time.Time // when it was last saved (login or refresh)
	LoginNeeded   bool      // the grant is gone: only `popsync login` helps
	NeededBecause string    // why, when LoginNeeded
}

// Info returns what is known about the token of key. A missing token is
// Stored false and LoginNeeded true, with no error.
func (t TokenTable) Info(ctx context.Context, key string) (TokenInfo, error) {
	if t.s.isClosed() {
		return TokenInfo{}, ErrClosed
	}
	var (
		info          TokenInfo
		exp           sql.NullInt64
		saved         int64
		access, fresh string
	)
	err := t.s.db.QueryRowContext(ctx,
		`SELECT access_token, refresh_token, expiry, saved, login_needed FROM oauth_token WHERE key = ?`, key).
		Scan(&access, &fresh, &exp, &saved, &info.NeededBecause)
	if errors.Is(err, sql.ErrNoRows) {
		return TokenInfo{LoginNeeded: true, NeededBecause: "no token stored"}, nil
	}
	if err != nil {
		return TokenInfo{}, fmt.Errorf("reading the oauth2 token of %s: %w", key, classify(err))
	}
	info.Stored = true
	info.Expiry = goTime(exp)
	info.RefreshToken = fresh != ""
	info.Saved = time.UnixMicro(saved)
	info.LoginNeeded = info.NeededBecause != ""
	if !info.LoginNeeded && !info.RefreshToken && (access == "" || (!info.Expiry.IsZero() && !time.Now().Before(info.Expiry))) {
		info.LoginNeeded, info.NeededBecause = true, "the access token expired and no refresh token is stored"
	}
	return info, nil
}

// StoredToken is one row of a token table, secrets included: what `popsync
// state copy` moves from one store to another. It is never for display.
type StoredToken struct {
	Key         string
	Token       oauth.Token
	Saved       time.Time // when it was last saved (login or refresh)
	LoginNeeded string    // why the grant stopped working; "" while it works
}

// All returns every stored token, ordered by key, read in one
// transaction.
func (t TokenTable) All(ctx context.Context) ([]StoredToken, error) {
	if t.s.isClosed() {
		return nil, ErrClosed
	}
	var all []StoredToken
	err := t.s.withTx(ctx, func(tx *sql.Tx) error {
		all = nil
		rows, err := tx.QueryContext(ctx, `SELECT key, access_token, token_type, refresh_token, expiry, saved, login_needed
			FROM oauth_token ORDER BY key`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var st StoredToken
			var exp sql.NullInt64
			var saved int64
			if err := rows.Scan(&st.Key, &st.Token.AccessToken, &st.Token.TokenType, &st.Token.RefreshToken, &exp, &saved, &st.LoginNeeded); err != nil {
				return err
			}
			st.Token.Expiry = goTime(exp)
			st.Saved = time.UnixMicro(saved)
			all = append(all, st)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("reading the oauth2 tokens: %w", err)
	}
	return all, nil
}
