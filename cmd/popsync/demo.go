package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"popsync/configs"
	"popsync/fetch"
	"popsync/fetch/pop3/pop3test"
	"popsync/state"
)

// cmdDemo runs a real sync against the built-in POP3 server: implicit TLS
// with a pinned certificate, a few dozen realistic messages, a real
// seen-set and a real Maildir, so a new user sees popsync work without an
// account of their own.
func setupDemo(f *flags, g *common) runFunc {
	dir, n := "demo", 40
	f.String(&dir, flagDef{long: "dir", arg: "DIR", file: true, help: "the folder for the demo's config, state and Maildir (default: demo)"})
	f.Int(&n, flagDef{long: "messages", arg: "N", help: "messages on the demo server (default: 40)"})
	return func(ctx context.Context, e *env, args []string) error {
		if len(args) > 0 {
			return usageErrorf("unexpected argument %q", args[0])
		}
		if n < 1 || n > 100000 {
			return usageErrorf("--messages must be between 1 and 100000")
		}
		return demo(ctx, e.stdout, e.stderr, &dir, &n)
	}
}

func demo(ctx context.Context, stdout, stderr io.Writer, dir *string, n *int) error {
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", abs, err)
	}

	cert, leaf, err := pop3test.SelfSigned()
	if err != nil {
		return fmt.Errorf("making the demo certificate: %w", err)
	}
	srv := pop3test.NewServer(pop3test.Config{
		User:        "demo",
		Password:    "demo-password",
		ImplicitTLS: true,
		TLS:         tlsServerConfig(cert),
	}, pop3test.SampleMessages(*n, 1)...)
	defer srv.Close()
	addr, err := srv.Listen()
	if err != nil {
		return fmt.Errorf("starting the demo server: %w", err)
	}
	host, port, _ := strings.Cut(addr, ":")

	cfgPath := filepath.Join(abs, "config.toml")
	cfgText := fmt.Sprintf(`# popsync demo: a built-in POP3 server on %s, gone when the demo ends.
[state]
path = "state.db"

[[account]]
name = "demo"
host = %q
port = %s
tls = "implicit"
tls_fingerprint = %q   # the demo server's self-signed certificate, pinned
user = "demo"
password = "demo-password"
keep = true

  [[account.deliver]]
  maildir = "Maildir"
`, addr, host, port, pop3test.Fingerprint(leaf))
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", cfgPath, err)
	}
	cfg, err := configs.Load(cfgPath)
	if err != nil {
		return &configError{err}
	}
	st, err := state.OpenSQLite(ctx, cfg.State.Path)
	if err != nil {
		return &stateError{err}
	}
	defer st.Close()

	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	o := &fetch.Options{Store: st, Logger: log}
	fmt.Fprintf(stdout, "demo POP3 server with %d messages on %s (implicit TLS, pinned certificate)\n", *n, addr)
	fmt.Fprintf(stdout, "config: %s\n\nfirst poll:\n", cfgPath)
	first := o.Poll(ctx, cfg.Accounts[0])
	if first.Err != nil {
		return &accountsError{failed: []accountFailure{{"demo", first.Err}}, total: 1}
	}
	fmt.Fprintf(stdout, "  %d new, %d delivered, %d bytes in %.2fs\n", first.New, first.Delivered, first.Bytes, first.Duration.Seconds())
	fmt.Fprintf(stdout, "second poll (nothing is fetched twice):\n")
	second := o.Poll(ctx, cfg.Accounts[0])
	if second.Err != nil {
		return &accountsError{failed: []accountFailure{{"demo", second.Err}}, total: 1}
	}
	fmt.Fprintf(stdout, "  %d new, %d delivered\n\n", second.New, second.Delivered)
	fmt.Fprintf(stdout, "Your mail is in %s (read it with: mutt -f %s)\n",
		filepath.Join(abs, "Maildir", "new"), filepath.Join(abs, "Maildir"))
	fmt.Fprintf(stdout, "See the seen-set: popsync status -c %s\n", cfgPath)
	return nil
}

func tlsServerConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}
