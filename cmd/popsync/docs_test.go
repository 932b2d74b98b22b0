package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"popsync/fetch"
	"popsync/internal/realtest"
)

// TestManPageUpToDate: docs/popsync.1 is what `popsync help --man`
// prints (go generate ./cmd/popsync writes it).
func TestManPageUpToDate(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "popsync.1"))
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != manPage() {
		t.Fatal("docs/popsync.1 is stale: run go generate ./cmd/popsync")
	}
	for _, c := range commands {
		if !strings.Contains(string(b), roff(synopsis(c))) {
			t.Errorf("the man page lacks %s", synopsis(c))
		}
		for _, d := range commandDefs(c) {
			if !d.hidden && !strings.Contains(string(b), roff(strings.TrimSpace(d.names()))) {
				t.Errorf("the man page lacks %s of %s", d.names(), c.name)
			}
		}
	}
}

// TestManPageRenders: groff formats it without a warning.
func TestManPageRenders(t *testing.T) {
	realtest.Require(t, "groff")
	cmd := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = strings.NewReader(manPage())
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("groff: %v\n%s", err, out)
	}
}

// TestREADMEExitCodes: the README's exit status table is the one -h and
// the man page show.
func TestREADMEExitCodes(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, e := range exitCodes {
		if seen[e.code] {
			t.Errorf("exit status %d listed twice", e.code)
		}
		seen[e.code] = true
		if row := exitCodeRow(e.code, e.meaning); !bytes.Contains(b, []byte(row)) {
			t.Errorf("README lacks the row %s", row)
		}
	}
}

// TestExitCodeFallbacks: the statuses no poll through the binary can be
// made to end with on purpose.
func TestExitCodeFallbacks(t *testing.T) {
	other := &accountsError{failed: []accountFailure{{"a", errors.New("reading seen-set: disk I/O error")}}, total: 1}
	if got := exitCode(other); got != exitOther {
		t.Errorf("an unclassified account failure: %d, want %d", got, exitOther)
	}
	if got := exitCode(errors.New("something unexpected")); got != exitInternal {
		t.Errorf("an unexpected error: %d, want %d", got, exitInternal)
	}
	// The first failed account decides, not the kind that sorts first.
	mixed := &accountsError{failed: []accountFailure{
		{"a", fmt.Errorf("x: %w", fetch.ErrDelivery)},
		{"b", fmt.Errorf("y: %w", fetch.ErrAccountBusy)},
	}, total: 3}
	if got := exitCode(mixed); got != exitDelivery {
		t.Errorf("mixed failures: %d, want %d (the first account's)", got, exitDelivery)
	}
}

// TestConfigRefMatchesREADME: the reference the man page carries is the
// README's (go generate ./cmd/popsync copies it).
func TestConfigRefMatchesREADME(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	start := strings.Index(s, "\n## Configuration reference\n")
	end := strings.Index(s, "\n## Running as a service\n")
	if start < 0 || end < start {
		t.Fatal("the README has no configuration reference section")
	}
	if want := s[start+1 : end+1]; configRef != want {
		t.Fatal("cmd/popsync/configref.md differs from the README's configuration reference: run go generate ./cmd/popsync")
	}
	man := manPage()
	for _, key := range []string{"password_command", "tls_fingerprint", "delete_after", "max_parallel", "on_reject", "smtp_tls"} {
		if !strings.Contains(man, roffText(key)) {
			t.Errorf("the man page lacks the key %s", key)
		}
	}
}

// exitCodeRow is one line of the README's exit status table.
func exitCodeRow(code int, meaning string) string {
	return "| " + strconv.Itoa(code) + " | " + meaning + " |"
}
