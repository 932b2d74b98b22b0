package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"

	"golang.org/x/sys/unix"

	"popsync/configs"
	"popsync/fetch"
	"popsync/internal/credential"
	"popsync/state"
)

// The local checks of `popsync check`: what a poll will need besides the
// network, looked at without changing anything (no Maildir or state file is
// created, and a password_command runs only with --run-commands).

// localProblem is one thing a poll of the account would trip over.
type localProblem struct {
	what string // "password_file", "deliver maildir /x", ...
	err  error
}

// checkLocal returns the problems of account a.
func checkLocal(ctx context.Context, st state.Store, cfg *configs.Config, a *configs.Account, runCommands bool) []localProblem {
	var out []localProblem
	add := func(what string, err error) {
		if err != nil {
			out = append(out, localProblem{what, err})
		}
	}
	if !a.Password.IsZero() {
		add(a.Password.Key, checkSecret(ctx, a.Password, runCommands))
	}
	if a.TLSCAFile != "" {
		add("tls_ca_file", checkCAFile(a.TLSCAFile))
	}
	for _, d := range a.Deliver {
		switch t := d.Target.(type) {
		case *configs.MaildirTarget:
			add("deliver maildir "+t.Path, deliverErr(checkCreatable(t.Path, true)))
		case *configs.MDATarget:
			if _, err := exec.LookPath(t.Command[0]); err != nil {
				add("deliver mda "+t.Command[0], deliverErr(err))
			}
		case *configs.SMTPTarget:
			if !t.Password.IsZero() {
				add(t.Password.Key, checkSecret(ctx, t.Password, runCommands))
			}
		}
		if d.Quarantine != "" {
			add("quarantine "+d.Quarantine, deliverErr(checkCreatable(d.Quarantine, true)))
		}
	}
	if st != nil {
		add("identity", fetch.CheckIdentity(ctx, st, a, cfg.Accounts))
	}
	return out
}

// deliverErr marks a problem of a delivery target (exit status 10).
func deliverErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", fetch.ErrDelivery, err)
}

// checkSecret resolves a secret source and forgets the secret. A command
// is only looked up, unless run is set.
func checkSecret(ctx context.Context, s credential.Source, run bool) error {
	if len(s.Command) > 0 && !run {
		if _, err := exec.LookPath(s.Command[0]); err != nil {
			return fmt.Errorf("%w: %w", configs.ErrSecretUnavailable, err)
		}
		return nil
	}
	_, err := s.Secret(ctx)
	return err
}

// checkCAFile reads a PEM bundle and wants at least one certificate in it.
func checkCAFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return fmt.Errorf("%s holds no PEM certificate", path)
	}
	return nil
}

// checkCreatable reports whether path (a folder when dir is set, else a
// file) exists and can be written, or could be created: every part of it
// that exists is a folder (the last part: of its kind) and the deepest
// existing folder can be written. It creates nothing.
func checkCreatable(path string, dir bool) error {
	fi, err := os.Stat(path)
	switch {
	case err == nil && dir != fi.IsDir():
		if dir {
			return fmt.Errorf("%s is not a folder", path)
		}
		return fmt.Errorf("%s is a folder", path)
	case err == nil:
		if err := unix.Access(path, unix.W_OK); err != nil {
			return fmt.Errorf("%s cannot be written: %w", path, err)
		}
		if !dir {
			return checkCreatable(filepath.Dir(path), true)
		}
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	parent := filepath.Dir(path)
	for {
		fi, err := os.Stat(parent)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s cannot be created: %s is not a folder", path, parent)
			}
			if err := unix.Access(parent, unix.W_OK|unix.X_OK); err != nil {
				return fmt.Errorf("%s cannot be created: %s cannot be written: %w", path, parent, err)
			}
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s cannot be created: %w", path, err)
		}
		next := filepath.Dir(parent)
		if next == parent {
			return fmt.Errorf("%s cannot be created", path)
		}
		parent = next
	}
}
