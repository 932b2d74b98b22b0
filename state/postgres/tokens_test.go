package postgres

import (
	"testing"
	"time"

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

// TestTokenLoginNeeded: a gone grant is marked for every daemon of the
// database, a login saved meanwhile is not undone, and Save clears it.
func TestTokenLoginNeeded(t *testing.T) {
	db := newDB(t)
	a := open(t, db, Options{}).Tokens()
	b := open(t, db, Options{}).Tokens()
	ctx := t.Context()
	const key = "pop3 me@pop.example.net:995"

	info, err := a.Info(ctx, key)
	if err != nil || info.Stored || !info.LoginNeeded {
		t.Fatalf("Info of a missing token = %+v, %v; want not stored, login needed", info, err)
	}
	exp := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	if err := a.Save(ctx, key, oauth.Token{AccessToken: "at1", RefreshToken: "rt1", Expiry: exp}); err != nil {
		t.Fatal(err)
	}
	if info, err = b.Info(ctx, key); err != nil || !info.Stored || info.LoginNeeded || !info.RefreshToken || !info.Expiry.Equal(exp) {
		t.Fatalf("Info after Save = %+v, %v", info, err)
	}
	// A mark for a refresh token that is no longer stored changes nothing.
	if err := b.MarkLoginNeeded(ctx, key, "rt0", "invalid_grant"); err != nil {
		t.Fatal(err)
	}
	if info, _ = a.Info(ctx, key); info.LoginNeeded {
		t.Fatalf("a stale mark undid a newer login: %+v", info)
	}
	if err := b.MarkLoginNeeded(ctx, key, "rt1", "invalid_grant: revoked"); err != nil {
		t.Fatal(err)
	}
	if info, _ = a.Info(ctx, key); !info.LoginNeeded || info.NeededBecause != "invalid_grant: revoked" {
		t.Fatalf("Info after the mark = %+v; want login needed with the reason", info)
	}
	if err := a.Save(ctx, key, oauth.Token{AccessToken: "at2", RefreshToken: "rt2", Expiry: exp}); err != nil {
		t.Fatal(err)
	}
	if info, _ = b.Info(ctx, key); info.LoginNeeded {
		t.Fatalf("a new login left the mark: %+v", info)
	}
	if err := a.MarkLoginNeeded(ctx, "no such key", "rt2", "x"); err != nil {
		t.Fatalf("marking a missing token: %v", err)
	}
}
