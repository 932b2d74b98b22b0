package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckRefusesOneMailboxTwice is the end-to-end guard of the account
// identity: two spellings of one mailbox (case, a trailing dot, the default
// port written or not) would share one seen-set, and the second account
// would take the first one's mail for delivered and never fetch it. `check`
// must refuse the config and name both accounts' lines.
func TestCheckRefusesOneMailboxTwice(t *testing.T) {
	cases := []struct{ name, first, second string }{
		{"case and trailing dot", `host = "pop.example.net"`, `host = "POP.example.net."`},
		{"default port written", `host = "pop.example.net"`, "host = \"pop.example.net.\"\nport = 995"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := `[state]
path = "` + filepath.Join(dir, "state.db") + `"

[[account]]
name = "first"
` + c.first + `
user = "me"
password = "x"
  [[account.deliver]]
  maildir = "` + filepath.Join(dir, "first") + `"

[[account]]
name = "second"
` + c.second + `
user = "me"
password = "x"
  [[account.deliver]]
  maildir = "` + filepath.Join(dir, "second") + `"
`
			path := filepath.Join(dir, "config.toml")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			r := runPopsync(t, "check", "-c", path)
			if r.code != 5 {
				t.Fatalf("check exit code %d, want 5 (invalid config); stdout %q stderr %q", r.code, r.stdout, r.stderr)
			}
			// The second account's header is line 12, the first's line 4.
			want := path + `:12: account "second": has the same host, port and user as account "first" (line 4)`
			if !strings.Contains(r.stderr, want) {
				t.Fatalf("stderr does not name both lines;\nwant %q\ngot  %q", want, r.stderr)
			}
			if !strings.Contains(r.stderr, "me@pop.example.net:995") {
				t.Errorf("stderr does not show the shared identity: %q", r.stderr)
			}
			if _, err := os.Stat(filepath.Join(dir, "state.db")); err == nil {
				t.Error("check created the state file of a refused config")
			}
		})
	}
}
