package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"popsync/fetch/pop3/pop3test"
)

// TestChildrenGetNoSecrets: two accounts with password_env secrets and one
// with a password_command deliver into an MDA that dumps its environment;
// at every verbosity (--trace-auth included), no configured secret is in any dump, neither in the
// MDA's nor in the password_command's, and the MDA still gets its own
// POPSYNC_* variables.
func TestChildrenGetNoSecrets(t *testing.T) {
	secrets := map[string]string{
		"CHILDTEST_PW_A":   "pw-a-" + t.Name() + "-31415",
		"CHILDTEST_PW_B":   "pw-b-" + t.Name() + "-27182",
		"CHILDTEST_UNUSED": "pw-defaults-16180",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	const commandPW = "pw-c-from-command"
	for _, flags := range [][]string{nil, {"-v"}, {"--trace"}, {"-v", "--trace", "--log-format", "json"}, {"--trace", "--trace-auth"}} {
		traceAuth := len(flags) > 1 && flags[1] == "--trace-auth"
		t.Run(strings.Join(append([]string{"flags"}, flags...), " "), func(t *testing.T) {
			dir := t.TempDir()
			dumps := filepath.Join(dir, "dumps")
			if err := os.Mkdir(dumps, 0o700); err != nil {
				t.Fatal(err)
			}
			var accounts strings.Builder
			for _, a := range []struct{ name, pw, source string }{
				{"a", secrets["CHILDTEST_PW_A"], `password_env = "CHILDTEST_PW_A"`},
				{"b", secrets["CHILDTEST_PW_B"], `password_env = "CHILDTEST_PW_B"`},
				{"c", commandPW, fmt.Sprintf(`password_command = ["sh", "-c", "env > \"$0/command.env\"; echo %s", %q]`, commandPW, dumps)},
			} {
				srv := pop3test.NewServer(pop3test.Config{User: "me", Password: a.pw}, pop3test.SampleMessages(2, int64(len(a.name)))...)
				t.Cleanup(func() { srv.Close() })
				addr, err := srv.Listen()
				if err != nil {
					t.Fatal(err)
				}
				host, port, _ := strings.Cut(addr, ":")
				fmt.Fprintf(&accounts, `
[[account]]
name = %q
host = %q
port = %s
tls = "none"
user = "me"
auth = "user"
%s
  [[account.deliver]]
  mda = ["sh", "-c", "env > \"$(mktemp \"$0/mda.XXXXXX\")\"; cat > /dev/null", %q]
`, a.name, host, port, a.source, dumps)
			}
			cfg := filepath.Join(dir, "config.toml")
			conf := fmt.Sprintf("[state]\npath = %q\n\n[defaults]\npassword_env = \"CHILDTEST_UNUSED\"\n%s", filepath.Join(dir, "state.db"), accounts.String())
			if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), append([]string{"fetch", "-c", cfg}, flags...), &stdout, &stderr); code != 0 {
				t.Fatalf("fetch exited %d:\n%s%s", code, stdout.String(), stderr.String())
			}
			ents, err := os.ReadDir(dumps)
			if err != nil {
				t.Fatal(err)
			}
			mdaRuns := 0
			for _, e := range ents {
				b, err := os.ReadFile(filepath.Join(dumps, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				env := string(b)
				if strings.HasPrefix(e.Name(), "mda.") {
					mdaRuns++
					if !strings.Contains(env, "POPSYNC_ACCOUNT=") || !strings.Contains(env, "POPSYNC_UIDL=") {
						t.Errorf("%s: the MDA lacks its POPSYNC_* variables:\n%s", e.Name(), env)
					}
				}
				for k, v := range secrets {
					if strings.Contains(env, v) || strings.Contains(env, k+"=") {
						t.Errorf("%s holds the secret of %s:\n%s", e.Name(), k, env)
					}
				}
				if strings.Contains(env, commandPW) {
					t.Errorf("%s holds the password_command's answer", e.Name())
				}
			}
			if mdaRuns != 6 {
				t.Errorf("%d MDA dumps, want 6 (2 messages for each of 3 accounts); files: %v", mdaRuns, ents)
			}
			if _, err := os.Stat(filepath.Join(dumps, "command.env")); err != nil {
				t.Errorf("the password_command left no dump: %v", err)
			}
			// --trace-auth shows the credentials in the log by design;
			// the children's environment stays clean all the same.
			for k, v := range secrets {
				if !traceAuth && strings.Contains(stdout.String()+stderr.String(), v) {
					t.Errorf("popsync's output shows %s", k)
				}
			}
		})
	}
}
