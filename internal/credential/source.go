package credential

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"popsync/internal/osfile"
)

// DefaultCommandTimeout bounds a command source without a timeout of its
// own.
const DefaultCommandTimeout = 10 * time.Second

// Output beyond these sizes is read and dropped: a password is one short line,
// and stderr is only quoted in an error.
const (
	maxCommandStdout = 64 << 10
	maxCommandStderr = 4 << 10
)

// Source is where one secret comes from: at most one of Literal, File,
// Command and Env is set (the config refuses more). Key names its config
// keys in messages: "password" for password, password_file, ..., or
// "smtp_password", "client_secret".
//
// A Source reads its secret anew at every Secret call, so an edited file or
// a rotated secret is picked up by the next login; Invalidate does nothing.
type Source struct {
	Key     string
	Literal Secret
	File    string        // first line of the file, which must not be readable by group or others
	Command []string      // first line of the command's stdout; run without a shell
	Timeout time.Duration // for Command; 0 means DefaultCommandTimeout
	Env     string        // an environment variable, which must be set and non-empty
	// CommandEnv gives the environment of Command: for a config's
	// sources, popsync's own without any secret the config names
	// (configs.ChildEnv). nil means os.Environ().
	CommandEnv Environment
}

// Environment gives the environment of a child process, as "NAME=value"
// entries.
type Environment interface {
	Environ() []string
}

// Literal is the Source of a secret given as is.
func Literal(secret string) Source { return Source{Literal: Secret(secret)} }

// IsZero reports whether s names no source.
func (s Source) IsZero() bool {
	return s.Literal == "" && s.File == "" && len(s.Command) == 0 && s.Env == ""
}

// key is the config key of the source that is set, for messages.
func (s Source) key() string {
	k := s.Key
	if k == "" {
		k = "password"
	}
	switch {
	case s.File != "":
		return k + "_file"
	case len(s.Command) > 0:
		return k + "_command"
	case s.Env != "":
		return k + "_env"
	}
	return k
}

// Secret returns the secret from the one source that is set:
//
//   - Literal: the value;
//   - File: the file's first line without its line ending;
//   - Env: the environment variable;
//   - Command: the first line the command prints on stdout. It runs
//     without a shell, with stdin from /dev/null, and is killed after
//     Timeout or when ctx ends. A failure quotes its stderr, never its
//     stdout; one that ran out of time is a TemporaryError.
//
// Every error wraps ErrUnavailable and never contains the secret.
func (s Source) Secret(ctx context.Context) (string, error) {
	v, err := s.secret(ctx)
	if err != nil {
		var te *TemporaryError
		if errors.As(err, &te) {
			return "", &TemporaryError{Err: fmt.Errorf("%w: %w", ErrUnavailable, te.Err)}
		}
		return "", fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return v, nil
}

// Invalidate implements Credential: a Source keeps nothing to forget.
func (s Source) Invalidate(string) {}

func (s Source) secret(ctx context.Context) (string, error) {
	switch {
	case s.Literal != "":
		return s.Literal.Reveal(), nil
	case s.File != "":
		return readFile(s.key(), s.File)
	case len(s.Command) > 0:
		timeout := s.Timeout
		if timeout <= 0 {
			timeout = DefaultCommandTimeout
		}
		env := os.Environ()
		if s.CommandEnv != nil {
			env = s.CommandEnv.Environ()
		}
		return runCommand(ctx, s.key(), s.Command, timeout, env)
	case s.Env != "":
		v, ok := os.LookupEnv(s.Env)
		if !ok {
			return "", fmt.Errorf("%s: environment variable %s is not set", s.key(), s.Env)
		}
		if v == "" {
			return "", fmt.Errorf("%s: environment variable %s is empty", s.key(), s.Env)
		}
		return v, nil
	}
	return "", fmt.Errorf("no %s source configured", s.key())
}

func readFile(key, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%s %s is readable by others (mode %04o); run: chmod 600 %s", key, path, perm, osfile.ShellQuote(path))
	}
	data, err := io.ReadAll(io.LimitReader(f, maxCommandStdout))
	if err != nil {
		return "", fmt.Errorf("%s: reading %s: %w", key, path, err)
	}
	line := firstLine(data)
	if line == "" {
		return "", fmt.Errorf("%s %s: first line is empty", key, path)
	}
	return line, nil
}

func runCommand(ctx context.Context, key string, argv []string, timeout time.Duration, env []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	stdout := &capWriter{max: maxCommandStdout}
	stderr := &capWriter{max: maxCommandStderr}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = nil // /dev/null
	// Never the secrets of other sources (CommandEnv).
	cmd.Env = env
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	// A child that leaves a grandchild holding our pipes must not keep Wait
	// blocked past the kill.
	cmd.WaitDelay = time.Second

	err := cmd.Run()
	if err != nil {
		timedOut := false
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			err = fmt.Errorf("no answer within %s", timeout)
			timedOut = true
		case ctx.Err() != nil:
			err = ctx.Err()
		}
		msg := fmt.Sprintf("%s %q: %v", key, argv[0], err)
		if e := strings.TrimSpace(stderr.buf.String()); e != "" {
			// One line, so that a log record stays one record.
			msg += "; stderr: " + strings.Join(strings.Fields(strings.ReplaceAll(e, "\n", " / ")), " ")
		}
		if timedOut {
			return "", &TemporaryError{Err: errors.New(msg)}
		}
		return "", errors.New(msg)
	}
	line := firstLine(stdout.buf.Bytes())
	if line == "" {
		return "", fmt.Errorf("%s %q printed nothing on its first line", key, argv[0])
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
