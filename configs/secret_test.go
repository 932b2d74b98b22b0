package configs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"popsync/internal/credential"
)

// The test binary doubles as the password command: run with "configs-helper"
// as its first argument, it acts out the mode that follows.
func TestMain(m *testing.M) {
	if len(os.Args) >= 3 && os.Args[1] == "configs-helper" {
		os.Exit(helper(os.Args[2], os.Args[3:]))
	}
	os.Exit(m.Run())
}

func helper(mode string, args []string) int {
	switch mode {
	case "echo": // print the arguments, one per line
		for _, a := range args {
			fmt.Println(a)
		}
		return 0
	case "crlf":
		fmt.Print("tok3n\r\nignored\r\n")
		return 0
	case "fail": // a secret on stdout, a reason on stderr, exit 3
		fmt.Println("hunter2-from-stdout")
		fmt.Fprintln(os.Stderr, "gpg: decryption failed: No secret key")
		return 3
	case "silent":
		return 0
	case "env": // write the environment to args[0], print a password
		if err := os.WriteFile(args[0], []byte(strings.Join(os.Environ(), "\n")), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("from-the-command")
		return 0
	case "hang":
		time.Sleep(time.Hour) // a stuck program; the caller's timeout must end it
		return 0
	}
	return 99
}

func helperCommand(t *testing.T, mode string, args ...string) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{exe, "configs-helper", mode}, args...)
}

func secretOf(t *testing.T, a *Account) (string, error) {
	t.Helper()
	s, err := a.Secret(t.Context())
	if err != nil && !errors.Is(err, ErrSecretUnavailable) {
		t.Errorf("error does not wrap ErrSecretUnavailable: %v", err)
	}
	return s, err
}

func TestSecretLiteral(t *testing.T) {
	s, err := secretOf(t, &Account{Name: "a", Password: credential.Literal("hunter2")})
	if err != nil || s != "hunter2" {
		t.Errorf("got %q, %v", s, err)
	}
	_, err = secretOf(t, &Account{Name: "a"})
	if err == nil || !strings.Contains(err.Error(), "no password source") {
		t.Errorf("no source: %v", err)
	}
}

func TestSecretFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask-proof
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, content string
		mode          os.FileMode
		want, errText string
	}{
		{"first line", "s3cret\nsecond line\n", 0o600, "s3cret", ""},
		{"no newline", " with spaces ", 0o400, " with spaces ", ""},
		{"crlf", "s3cret\r\n", 0o600, "s3cret", ""},
		{"readable by group", "hunter2\n", 0o640, "", "is readable by others (mode 0640); run: chmod 600 "},
		{"readable by all", "hunter2\n", 0o644, "", "(mode 0644)"},
		{"empty", "", 0o600, "", "first line is empty"},
		{"empty first line", "\nhunter2\n", 0o600, "", "first line is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := write(strings.ReplaceAll(tc.name, " ", "_"), tc.content, tc.mode)
			s, err := secretOf(t, &Account{Name: "a", Password: credential.Source{File: p}})
			if tc.errText == "" {
				if err != nil || s != tc.want {
					t.Errorf("got %q, %v; want %q", s, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errText) {
				t.Fatalf("got %q, %v; want error with %q", s, err, tc.errText)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error holds the secret: %v", err)
			}
		})
	}
	_, err := secretOf(t, &Account{Name: "a", Password: credential.Source{File: filepath.Join(dir, "missing")}})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestSecretEnv(t *testing.T) {
	t.Setenv("POPSYNC_TEST_PW", "from-env")
	t.Setenv("POPSYNC_TEST_EMPTY", "")
	s, err := secretOf(t, &Account{Name: "a", Password: credential.Source{Env: "POPSYNC_TEST_PW"}})
	if err != nil || s != "from-env" {
		t.Errorf("got %q, %v", s, err)
	}
	_, err = secretOf(t, &Account{Name: "a", Password: credential.Source{Env: "POPSYNC_TEST_EMPTY"}})
	if err == nil || !strings.Contains(err.Error(), "environment variable POPSYNC_TEST_EMPTY is empty") {
		t.Errorf("empty: %v", err)
	}
	_, err = secretOf(t, &Account{Name: "a", Password: credential.Source{Env: "POPSYNC_TEST_UNSET_VARIABLE"}})
	if err == nil || !strings.Contains(err.Error(), "environment variable POPSYNC_TEST_UNSET_VARIABLE is not set") {
		t.Errorf("unset: %v", err)
	}
}

func TestSecretCommand(t *testing.T) {
	// No shell: "$HOME" and ";" arrive as they are written.
	s, err := secretOf(t, &Account{Name: "a", Password: credential.Source{Command: helperCommand(t, "echo", "$HOME;x", "second")}})
	if err != nil || s != "$HOME;x" {
		t.Errorf("echo: got %q, %v", s, err)
	}
	s, err = secretOf(t, &Account{Name: "a", Password: credential.Source{Command: helperCommand(t, "crlf")}})
	if err != nil || s != "tok3n" {
		t.Errorf("crlf: got %q, %v", s, err)
	}

	_, err = secretOf(t, &Account{Name: "work", Password: credential.Source{Command: helperCommand(t, "fail")}})
	if err == nil {
		t.Fatal("fail: no error")
	}
	if credential.IsTemporary(err) {
		t.Errorf("a failing password_command is not temporary: %v", err)
	}
	for _, want := range []string{`account "work"`, "exit status 3", "gpg: decryption failed: No secret key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("fail: %q not in %v", want, err)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("fail: stdout leaked into the error: %v", err)
	}

	_, err = secretOf(t, &Account{Name: "a", Password: credential.Source{Command: helperCommand(t, "silent")}})
	if err == nil || !strings.Contains(err.Error(), "printed nothing") {
		t.Errorf("silent: %v", err)
	}

	_, err = secretOf(t, &Account{Name: "a", Password: credential.Source{Command: []string{filepath.Join(t.TempDir(), "no-such-program")}}})
	if err == nil || !strings.Contains(err.Error(), "no-such-program") {
		t.Errorf("missing program: %v", err)
	}
}

func TestSecretCommandTimeout(t *testing.T) {
	a := &Account{Name: "a", Password: credential.Source{Command: helperCommand(t, "hang"), Timeout: 200 * time.Millisecond}}
	start := time.Now()
	_, err := secretOf(t, a)
	if err == nil || !strings.Contains(err.Error(), "no answer within 200ms") {
		t.Errorf("got %v", err)
	}
	// A command that does not answer in time may answer next time: the
	// scheduler backs off as from a network error instead of waiting for
	// the user.
	if !credential.IsTemporary(err) || !errors.Is(err, ErrSecretUnavailable) {
		t.Errorf("timeout: temporary %v, unavailable %v: %v", credential.IsTemporary(err), errors.Is(err, ErrSecretUnavailable), err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("took %v", d)
	}

	// The caller's context ends it too.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	a.Password.Timeout = 0 // the 10s default
	if _, err := a.Secret(ctx); !errors.Is(err, ErrSecretUnavailable) || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("cancelled: %v", err)
	}
}

// TestSecretsNeverPrinted formats and logs a config holding secrets in every
// way a program might, and checks the secret never shows.
func TestSecretsNeverPrinted(t *testing.T) {
	const secret = "hunter2-very-secret"
	a := &Account{Name: "a", Host: "h", Port: 995, User: "u", Password: credential.Literal(secret),
		Deliver: []Deliver{{Target: &SMTPTarget{Addr: "h:25", Password: credential.Literal(secret)}}}}
	c := &Config{Accounts: []*Account{a}}

	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3s"} {
		out = append(out, fmt.Sprintf(verb, a), fmt.Sprintf(verb, *a), fmt.Sprintf(verb, a.Password), fmt.Sprintf(verb, a.Deliver))
	}
	out = append(out, fmt.Sprint(c), fmt.Sprintln(*a), a.Password.Literal.String(), a.Password.Literal.GoString())

	j, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, string(j))

	var logBuf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&logBuf, nil), slog.NewJSONHandler(&logBuf, nil)} {
		slog.New(h).Info("poll", "account", a, "password", a.Password, "acct", *a)
	}
	out = append(out, logBuf.String())

	for _, o := range out {
		if strings.Contains(o, secret) || strings.Contains(o, fmt.Sprintf("%x", secret)) {
			t.Errorf("secret printed: %s", o)
		}
	}
	if !strings.Contains(string(j), `"Literal":"\u003credacted\u003e"`) {
		t.Errorf("json: %s", j)
	}
	if a.Password.Literal.Reveal() != secret {
		t.Error("Reveal lost the value")
	}
}

// TestSecretsNeverInProblems puts secrets where they do not belong and in
// malformed shapes, and checks no problem quotes them.
func TestSecretsNeverInProblems(t *testing.T) {
	const secret = "hunter2-very-secret"
	for _, src := range []string{
		"[[account]]\nname = \"a\"\npassword = [\"" + secret + "\"]\n",
		"[[account]]\nname = \"a\"\npassword_env = \"" + secret + "\"\n",
		"[[account]]\nname = \"a\"\npassword_env = \"" + secret + "!\"\n",
		"[[account]]\nname = \"a\"\npassword_command = \"" + secret + "\"\n",
		"[[account]]\nname = \"a\"\npassword_command = [\"x\", 1, \"" + secret + "\"]\n",
		"[[account]]\nname = \"a\"\npassword_file = \"~" + secret + "\"\n",
		"[[account]]\nname = \"a\"\npasword = \"" + secret + "\"\n",
		"[[account]]\nname = \"a\"\npassword = \"" + secret + "\"\npassword_env = \"X\"\n",
		"[defaults]\npassword = \"" + secret + "\"\n[[account]]\nname = \"a\"\n",
		"[[account]]\nname = \"a\"\n[[account.deliver]]\nsmtp_password = \"" + secret + "\"\n",
		"[[account]]\nname = \"a\"\n[[account.deliver]]\nsmtp_password = {x = \"" + secret + "\"}\n",
		"[[account]]\nname = \"a\"\npassword = \"" + secret + "\n",
		"[[account]]\nname = \"a\"\npassword = '''" + secret + "\n",
	} {
		_, err := Parse([]byte(src), "config.toml", 0o644)
		if err == nil {
			t.Errorf("%q: no error", src)
			continue
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "hunter") {
			t.Errorf("%q: secret in error:\n%v", src, err)
		}
	}
}
