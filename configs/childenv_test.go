package configs

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestChildEnvFromConfig: every password_env named in the file, in
// [defaults] or any account, used or shadowed, is withheld from the
// programs popsync starts, and a password_command sees none of them.
func TestChildEnvFromConfig(t *testing.T) {
	dump := filepath.Join(t.TempDir(), "env.out")
	cmd := helperCommand(t, "env", dump)
	quoted := make([]string, len(cmd))
	for i, c := range cmd {
		quoted[i] = fmt.Sprintf("%q", c)
	}
	c := mustParse(t, `
[defaults]
password_env = "PW_DEFAULTS"

[[account]]
name = "a"
host = "a.example.net"
user = "me"
password_env = "PW_A"
  [[account.deliver]]
  maildir = "/var/mail/a"

[[account]]
name = "b"
host = "b.example.net"
user = "me"
password_env = "PW_B"
  [[account.deliver]]
  maildir = "/var/mail/b"

[[account]]
name = "c"
host = "c.example.net"
user = "me"
password_command = [`+strings.Join(quoted, ", ")+`]
  [[account.deliver]]
  maildir = "/var/mail/c"
`)
	if got, want := c.ChildEnv.Names(), []string{"PW_A", "PW_B", "PW_DEFAULTS"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ChildEnv.Names() = %q, want %q", got, want)
	}
	secrets := map[string]string{
		"PW_A": "secret-a-4711", "PW_B": "secret-b-0815", "PW_DEFAULTS": "secret-defaults-42",
		"POPSYNC_TEST_PW": "secret-test-99", "SENDER": "inherited@example.test",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	t.Setenv("CHILDENV_KEPT", "kept")
	for _, a := range c.Accounts {
		if !reflect.DeepEqual(a.ChildEnv.Names(), c.ChildEnv.Names()) {
			t.Errorf("account %s: ChildEnv %q, want the config's", a.Name, a.ChildEnv.Names())
		}
	}

	pc, _ := c.Lookup("c")
	if s, err := secretOf(t, pc); err != nil || s != "from-the-command" {
		t.Fatalf("password_command: %q, %v", s, err)
	}
	b, err := os.ReadFile(dump)
	if err != nil {
		t.Fatal(err)
	}
	env := string(b)
	for k, v := range secrets {
		if strings.Contains(env, v) || strings.Contains(env, k+"=") {
			t.Errorf("password_command saw %s:\n%s", k, env)
		}
	}
	if !strings.Contains(env, "CHILDENV_KEPT=kept") {
		t.Errorf("password_command lost an ordinary variable:\n%s", env)
	}
	// The account's own lookup still reads the variable.
	if a, _ := c.Lookup("a"); a != nil {
		if s, err := secretOf(t, a); err != nil || s != secrets["PW_A"] {
			t.Errorf("password_env: %q, %v", s, err)
		}
	}
}

func TestChildEnvFilter(t *testing.T) {
	var zero ChildEnv
	in := []string{"PATH=/bin", "POPSYNC_X=1", "SENDER=s", "PW=2", "HOME=/root", "PWX=3", "MALFORMED"}
	if got, want := zero.Filter(in), []string{"PATH=/bin", "PW=2", "HOME=/root", "PWX=3", "MALFORMED"}; !reflect.DeepEqual(got, want) {
		t.Errorf("zero Filter = %q, want %q", got, want)
	}
	e := NewChildEnv("PW", "")
	if got, want := e.Filter(in), []string{"PATH=/bin", "HOME=/root", "PWX=3", "MALFORMED"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Filter = %q, want %q", got, want)
	}
}
