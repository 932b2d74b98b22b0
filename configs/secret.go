package configs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Secret is a password or token. It prints as "<redacted>" with every fmt
// verb, in slog records and when marshalled as text or JSON, so that logging
// or dumping a config can never leak it. Reveal returns the value.
type Secret string

const redacted = "<redacted>"

// Reveal returns the secret itself, for handing to an authenticator.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer.
func (s Secret) String() string { return redacted }

// GoString implements fmt.GoStringer.
func (s Secret) GoString() string { return redacted }

// Format implements fmt.Formatter for every verb, including %x and %q.
func (s Secret) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText implements encoding.TextMarshaler (and so JSON).
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// DefaultPasswordCommandTimeout bounds a password_command when the account
// does not set password_command_timeout.
const DefaultPasswordCommandTimeout = 10 * time.Second

// Output beyond these sizes is read and dropped: a password is one short line,
// and stderr is only quoted in an error.
const (
	maxCommandStdout = 64 << 10
	maxCommandStderr = 4 << 10
)

// Secret returns the account's password (or, for auth xoauth2 and
// oauthbearer, its token) from the one source the config names:
//
//   - password: the literal value;
//   - password_file: the file's first line without its line ending; the file
//     must not be readable by group or others;
//   - password_env: the environment variable, which must be set and non-empty;
//   - password_command: the first line the command prints on stdout. It runs
//     without a shell, with stdin from /dev/null and the environment of
//     a.ChildEnv (no password_env secret of any account), and is killed after
//     PasswordCommandTimeout (default 10s) or when ctx ends. A failure quotes
//     its stderr, never its stdout.
//
// Every error wraps ErrSecretUnavailable and never contains the secret.
func (a *Account) Secret(ctx context.Context) (string, error) {
	s, err := a.secret(ctx)
	if err != nil {
		return "", fmt.Errorf("account %q: %w: %w", a.Name, ErrSecretUnavailable, err)
	}
	return s, nil
}

func (a *Account) secret(ctx context.Context) (string, error) {
	switch {
	case a.Password != "":
		return a.Password.Reveal(), nil
	case a.PasswordFile != "":
		return readPasswordFile(a.PasswordFile)
	case len(a.PasswordCommand) > 0:
		timeout := a.PasswordCommandTimeout.D()
		if timeout <= 0 {
			timeout = DefaultPasswordCommandTimeout
		}
		return runPasswordCommand(ctx, a.PasswordCommand, timeout, a.ChildEnv.Environ())
	case a.PasswordEnv != "":
		v, ok := os.LookupEnv(a.PasswordEnv)
		if !ok {
			return "", fmt.Errorf("password_env: environment variable %s is not set", a.PasswordEnv)
		}
		if v == "" {
			return "", fmt.Errorf("password_env: environment variable %s is empty", a.PasswordEnv)
		}
		return v, nil
	}
	return "", errors.New("no password source configured")
}

func readPasswordFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("password_file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("password_file: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("password_file %s is readable by others (mode %04o); run: chmod 600 %s", path, perm, shellQuote(path))
	}
	data, err := io.ReadAll(io.LimitReader(f, maxCommandStdout))
	if err != nil {
		return "", fmt.Errorf("password_file: reading %s: %w", path, err)
	}
	line := firstLine(data)
	if line == "" {
		return "", fmt.Errorf("password_file %s: first line is empty", path)
	}
	return line, nil
}

func runPasswordCommand(ctx context.Context, argv []string, timeout time.Duration, env []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	stdout := &capWriter{max: maxCommandStdout}
	stderr := &capWriter{max: maxCommandStderr}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = nil // /dev/null
	// Never the other accounts' password_env secrets (Account.ChildEnv).
	cmd.Env = env
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	// A child that leaves a grandchild holding our pipes must not keep Wait
	// blocked past the kill.
	cmd.WaitDelay = time.Second

	err := cmd.Run()
	if err != nil {
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			err = fmt.Errorf("no answer within %s", timeout)
		case ctx.Err() != nil:
			err = ctx.Err()
		}
		msg := fmt.Sprintf("password_command %q: %v", argv[0], err)
		if e := strings.TrimSpace(stderr.buf.String()); e != "" {
			// One line, so that a log record stays one record.
			msg += "; stderr: " + strings.Join(strings.Fields(strings.ReplaceAll(e, "\n", " / ")), " ")
		}
		return "", errors.New(msg)
	}
	line := firstLine(stdout.buf.Bytes())
	if line == "" {
		return "", fmt.Errorf("password_command %q printed nothing on its first line", argv[0])
	}
	return line, nil
}

// firstLine returns b up to the first newline, without the line ending.
func firstLine(b []byte) string {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	return string(bytes.TrimSuffix(b, []byte("\r")))
}

// capWriter keeps the first max bytes written to it and drops the rest
// without failing, so a chatty command is not killed by a broken pipe.
type capWriter struct {
	buf bytes.Buffer
	max int
}

func (w *capWriter) Write(p []byte) (int, error) {
	if room := w.max - w.buf.Len(); room > 0 {
		if len(p) > room {
			w.buf.Write(p[:room])
		} else {
			w.buf.Write(p)
		}
	}
	return len(p), nil
}
