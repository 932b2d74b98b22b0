package main_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"popsync/internal/realtest"
)

// completionScript writes `popsync completion SHELL` to a file.
func completionScript(t *testing.T, shell string) string {
	t.Helper()
	r := runPopsync(t, "completion", shell)
	if r.code != 0 || r.stdout == "" {
		t.Fatalf("completion %s: exit %d\n%s", shell, r.code, r.stderr)
	}
	path := filepath.Join(t.TempDir(), "popsync."+shell)
	if err := os.WriteFile(path, []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The words a completion must offer, from the command table.
var completionCases = []struct {
	line string // what was typed, the last word being completed
	want []string
}{
	{"popsync ", []string{"fetch", "run", "check", "status", "init", "demo", "version", "help", "completion"}},
	{"popsync fe", []string{"fetch"}},
	{"popsync fetch --", []string{"--config", "--quiet", "--verbose", "--dry-run", "--keep", "--no-keep", "--fetch-limit", "--account"}},
	{"popsync -c x.toml fetch --d", []string{"--dry-run"}},
	{"popsync fetch --log-format ", []string{"text", "json"}},
	{"popsync check --co", []string{"--connect", "--config"}},
	{"popsync init --provider ", []string{"gmail", "microsoft", "fastmail", "isp"}},
	{"popsync completion ", []string{"bash", "zsh", "fish"}},
	{"popsync help ", []string{"fetch", "init"}},
}

func TestCompletionBash(t *testing.T) {
	realtest.Require(t, "bash")
	script := completionScript(t, "bash")
	for _, tc := range completionCases {
		words := strings.Split(tc.line, " ")
		var quoted []string
		for _, w := range words {
			quoted = append(quoted, "'"+w+"'")
		}
		prog := "source " + script + "; COMP_WORDS=(" + strings.Join(quoted, " ") + "); COMP_CWORD=" +
			strconv.Itoa(len(words)-1) + "; _popsync; printf '%s\\n' \"${COMPREPLY[@]}\""
		out, err := exec.Command("bash", "-c", prog).CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", tc.line, err, out)
		}
		got := strings.Fields(string(out))
		for _, w := range tc.want {
			if !contains(got, w) {
				t.Errorf("bash completion of %q offers %v, lacks %s", tc.line, got, w)
			}
		}
	}
	if r := runPopsync(t, "completion", "tcsh"); r.code != 64 {
		t.Errorf("completion tcsh: exit %d, want 64", r.code)
	}
}

func TestCompletionFish(t *testing.T) {
	realtest.Require(t, "fish")
	script := completionScript(t, "fish")
	for _, tc := range completionCases {
		out, err := exec.Command("fish", "--no-config", "-c", "source "+script+"; complete -C '"+tc.line+"'").CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", tc.line, err, out)
		}
		var got []string
		for _, l := range strings.Split(string(out), "\n") {
			w, _, _ := strings.Cut(l, "\t")
			got = append(got, w)
		}
		for _, w := range tc.want {
			if !contains(got, w) {
				t.Errorf("fish completion of %q offers %v, lacks %s", tc.line, got, w)
			}
		}
	}
}

// TestCompletionZsh checks the script parses and names every command and
// flag; zsh offers no way to run a completion outside a terminal.
func TestCompletionZsh(t *testing.T) {
	realtest.Require(t, "zsh")
	script := completionScript(t, "zsh")
	if out, err := exec.Command("zsh", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(script)
	for _, tc := range completionCases {
		for _, w := range tc.want {
			if !strings.Contains(string(b), w) {
				t.Errorf("the zsh script lacks %s", w)
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
