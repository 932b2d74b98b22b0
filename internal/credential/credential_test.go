package credential

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSourceKeysInMessages(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "pw")
	if err := os.WriteFile(p, []byte("s3cret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Source{Key: "smtp_password", File: p}.Secret(t.Context())
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "smtp_password_file "+p+" is readable by others") {
		t.Errorf("file readable by others: %v", err)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error holds the secret: %v", err)
	}
	_, err = Source{Env: "POPSYNC_TEST_UNSET_VARIABLE"}.Secret(t.Context())
	if !strings.Contains(err.Error(), "password_env: environment variable POPSYNC_TEST_UNSET_VARIABLE is not set") {
		t.Errorf("env without a key: %v", err)
	}
	if _, err := (Source{Key: "client_secret"}).Secret(t.Context()); err == nil || !strings.Contains(err.Error(), "no client_secret source") {
		t.Errorf("no source: %v", err)
	}
	if s, err := Literal("x").Secret(t.Context()); s != "x" || err != nil {
		t.Errorf("literal: %q, %v", s, err)
	}
	if !(Source{}).IsZero() || Literal("x").IsZero() {
		t.Error("IsZero")
	}
}

func TestIsTemporary(t *testing.T) {
	tmp := &TemporaryError{Err: errors.New("503")}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("x"), false},
		{tmp, true},
		{fmt.Errorf("account %q: %w", "a", tmp), true},
		{errors.Join(errors.New("x"), fmt.Errorf("y: %w", tmp)), true},
		{fmt.Errorf("%w: %w", ErrUnavailable, errors.New("exit status 1")), false},
	} {
		if got := IsTemporary(tc.err); got != tc.want {
			t.Errorf("IsTemporary(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

type tokenSource struct {
	tok     string
	invalid []string
}

func (s *tokenSource) AccessToken(context.Context) (string, error) { return s.tok, nil }
func (s *tokenSource) Invalidate(t string)                         { s.invalid = append(s.invalid, t) }

func TestFromTokens(t *testing.T) {
	ts := &tokenSource{tok: "at-1"}
	c := FromTokens(ts)
	s, err := c.Secret(t.Context())
	if s != "at-1" || err != nil {
		t.Fatalf("Secret = %q, %v", s, err)
	}
	c.Invalidate(s)
	if len(ts.invalid) != 1 || ts.invalid[0] != "at-1" {
		t.Errorf("Invalidate reached the token source with %q", ts.invalid)
	}
}

type env []string

func (e env) Environ() []string { return e }

// TestCommandEnv: a command source runs with the environment CommandEnv
// gives, not popsync's own.
func TestCommandEnv(t *testing.T) {
	t.Setenv("POPSYNC_TEST_SECRET", "do-not-pass")
	s, err := Source{Command: []string{"/bin/sh", "-c", `echo "${POPSYNC_TEST_SECRET:-none}:$ONLY"`},
		CommandEnv: env{"ONLY=this", "PATH=/usr/bin:/bin"}}.Secret(t.Context())
	if err != nil || s != "none:this" {
		t.Errorf("command saw %q, %v; want only the given environment", s, err)
	}
}
