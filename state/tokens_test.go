package state_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"popsync/internal/credential/oauth"
	"popsync/internal/credential/oauth/storetest"
	"popsync/state"
)

func openTokens(t *testing.T) (*state.SQLite, state.TokenTable) {
	t.Helper()
	s, err := state.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, s.Tokens()
}

func TestTokenTableConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) oauth.TokenStore {
		_, tt := openTokens(t)
		return tt
	})
}

// Every TokenTable of one store is the same store to oauth.Source, which
// serializes refreshes per store and key.
func TestTokenTableIdentity(t *testing.T) {
	s, _ := openTokens(t)
	var a, b oauth.TokenStore = s.Tokens(), s.Tokens()
	if a != b {
		t.Error("two TokenTables of one store differ")
	}
}

func TestTokenTableInfo(t *testing.T) {
	s, tt := openTokens(t)
	ctx := t.Context()
	info, err := tt.Info(ctx, "k")
	if err != nil || info.Stored || !info.LoginNeeded {
		t.Fatalf("missing token: %+v, %v", info, err)
	}
	exp := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	if err := tt.Save(ctx, "k", oauth.Token{AccessToken: "at", RefreshToken: "rt", Expiry: exp}); err != nil {
		t.Fatal(err)
	}
	info, err = tt.Info(ctx, "k")
	if err != nil || !info.Stored || !info.RefreshToken || info.LoginNeeded || !info.Expiry.Equal(exp) {
		t.Fatalf("saved token: %+v, %v", info, err)
	}
	// A mark for a refresh token that was replaced meanwhile is dropped.
	if err := tt.MarkLoginNeeded(ctx, "k", "rt-older", "invalid_grant"); err != nil {
		t.Fatal(err)
	}
	if info, _ = tt.Info(ctx, "k"); info.LoginNeeded {
		t.Fatalf("marked through a stale refresh token: %+v", info)
	}
	if err := tt.MarkLoginNeeded(ctx, "k", "rt", "invalid_grant"); err != nil {
		t.Fatal(err)
	}
	if info, _ = tt.Info(ctx, "k"); !info.LoginNeeded || info.NeededBecause != "invalid_grant" {
		t.Fatalf("after MarkLoginNeeded: %+v", info)
	}
	// A new login (or refresh) clears the mark.
	if err := tt.Save(ctx, "k", oauth.Token{AccessToken: "at2", RefreshToken: "rt2", Expiry: exp}); err != nil {
		t.Fatal(err)
	}
	if info, _ = tt.Info(ctx, "k"); info.LoginNeeded {
		t.Fatalf("Save did not clear the mark: %+v", info)
	}
	// Expired without a refresh token: nothing can renew it.
	if err := tt.Save(ctx, "k", oauth.Token{AccessToken: "at3", Expiry: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if info, _ = tt.Info(ctx, "k"); !info.LoginNeeded {
		t.Fatalf("expired, no refresh token: %+v", info)
	}
	s.Close()
	if _, err := tt.Load(ctx, "k"); !errors.Is(err, state.ErrClosed) {
		t.Errorf("Load after Close: %v", err)
	}
}

// The tokens sit in a file only its owner can read, written with
// synchronous=FULL.
func TestTokenTableFileModeAndSync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "state.db")
	s, err := state.OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Tokens().Save(t.Context(), "k", oauth.Token{RefreshToken: "rt"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %04o, want 0600", p, fi.Mode().Perm())
		}
	}
	var got int
	if err := state.DBOf(s).QueryRowContext(t.Context(), "PRAGMA synchronous").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != 2 {
		t.Errorf("PRAGMA synchronous = %d, want 2 (FULL)", got)
	}
}

// tokenChild saves ever newer tokens and prints the number of each one
// once Save returned, until it is killed.
func tokenChild(ctx context.Context, s *state.SQLite) error {
	tt := s.Tokens()
	w := bufio.NewWriter(os.Stdout)
	for i := 1; ; i++ {
		tok := oauth.Token{AccessToken: fmt.Sprintf("at-%d", i), RefreshToken: fmt.Sprintf("rt-%d", i), Expiry: time.Now().Add(time.Hour)}
		if err := tt.Save(ctx, "k", tok); err != nil {
			return err
		}
		fmt.Fprintf(w, "%d\n", i)
		w.Flush()
	}
}

// A token whose Save returned survives a kill -9 at once: killed at random
// instants, the child never told of a save that the file then lacks.
func TestTokenSaveSurvivesKill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := state.OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for round := range 10 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=tokens "+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1<<16)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Wait for the first save, then kill at a random moment.
		first, ok := <-lines
		if !ok {
			cmd.Wait()
			t.Fatalf("round %d: child saved nothing", round)
		}
		time.Sleep(time.Duration(rng.Int64N(int64(50 * time.Millisecond))))
		cmd.Process.Kill()
		last := first
		for l := range lines {
			last = l
		}
		cmd.Wait()
		n, _ := strconv.Atoi(last)
		s, err := state.OpenSQLite(t.Context(), path)
		if err != nil {
			t.Fatalf("round %d: reopening after kill: %v", round, err)
		}
		tok, err := s.Tokens().Load(t.Context(), "k")
		s.Close()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		got, _ := strconv.Atoi(strings.TrimPrefix(tok.RefreshToken, "rt-"))
		if got < n {
			t.Fatalf("round %d: child reported save %d, the file holds %d", round, n, got)
		}
	}
}

// TestTokenTableAll: All lists every token with its secrets, when it was
// saved and its login-needed mark, ordered by key; it is what `popsync
// state copy` moves into PostgreSQL.
func TestTokenTableAll(t *testing.T) {
	ctx := t.Context()
	_, tt := openTokens(t)
	if all, err := tt.All(ctx); err != nil || len(all) != 0 {
		t.Fatalf("All of an empty table = %v, %v", all, err)
	}
	exp := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	before := time.Now().Add(-time.Second)
	toks := map[string]oauth.Token{
		"pop3 b@pop.example.net:995":        {AccessToken: "at-b", TokenType: "Bearer", RefreshToken: "rt-b", Expiry: exp},
		"pop3 a@pop.example.net:995":        {AccessToken: "at-a", RefreshToken: "rt-a"},
		"imap me@imap.example.net:993 sent": {AccessToken: "at-c"},
	}
	for k, tok := range toks {
		if err := tt.Save(ctx, k, tok); err != nil {
			t.Fatal(err)
		}
	}
	if err := tt.MarkLoginNeeded(ctx, "pop3 a@pop.example.net:995", "rt-a", "invalid_grant: revoked"); err != nil {
		t.Fatal(err)
	}
	all, err := tt.All(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || all[0].Key != "imap me@imap.example.net:993 sent" || all[1].Key != "pop3 a@pop.example.net:995" || all[2].Key != "pop3 b@pop.example.net:995" {
		t.Fatalf("All = %+v; want the three keys in order", all)
	}
	for _, st := range all {
		want := toks[st.Key]
		if st.Token.AccessToken != want.AccessToken || st.Token.TokenType != want.TokenType ||
			st.Token.RefreshToken != want.RefreshToken || !st.Token.Expiry.Equal(want.Expiry) {
			t.Errorf("%s: token %+v, want %+v", st.Key, st.Token, want)
		}
		if st.Saved.Before(before) || st.Saved.After(time.Now()) {
			t.Errorf("%s: saved %v, want about now", st.Key, st.Saved)
		}
		wantMark := ""
		if st.Key == "pop3 a@pop.example.net:995" {
			wantMark = "invalid_grant: revoked"
		}
		if st.LoginNeeded != wantMark {
			t.Errorf("%s: login needed %q, want %q", st.Key, st.LoginNeeded, wantMark)
		}
	}
}
