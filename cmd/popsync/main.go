// Command popsync fetches mail from POP3 accounts into Maildirs, MTAs and
// MDAs, exactly once. This file is the command line only: flags, wiring and
// exit codes. The work is done by the fetch, schedule, deliver, state and
// configs packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes, as the README's table lists them.
const (
	exitOK       = 0 // every account succeeded
	exitAccounts = 1 // at least one account failed; the others were polled
	exitUsage    = 2 // bad command line
	exitConfig   = 3 // the config file is missing or invalid
	exitState    = 4 // the state file cannot be used
	exitInternal = 70
)

// exitError carries an exit code through the command functions.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitWith(code int, err error) error { return &exitError{code: code, err: err} }

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = []command{
	{"fetch", "poll accounts once and exit", cmdFetch},
	{"run", "the daemon: poll every account on its schedule until stopped", cmdRun},
	{"check", "validate the config; with --connect, log in to each account", cmdCheck},
	{"status", "show per-account state: last poll, last error, seen, pending", cmdStatus},
	{"login", "OAuth2: log in to an account and store its token", cmdLogin},
	{"logout", "OAuth2: forget an account's stored token", cmdLogout},
	{"demo", "try popsync against a built-in POP3 server, into ./demo", cmdDemo},
	{"version", "print version and build information", cmdVersion},
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: popsync COMMAND [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'popsync COMMAND -h' for the flags of a command.\n")
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	name := args[0]
	if name == "-h" || name == "--help" || name == "help" {
		usage(stdout)
		return exitOK
	}
	for _, c := range commands {
		if c.name != name {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		if err == nil {
			return exitOK
		}
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.err != nil && ee.err.Error() != "" {
				fmt.Fprintf(stderr, "popsync %s: %v\n", name, ee.err)
			}
			return ee.code
		}
		fmt.Fprintf(stderr, "popsync %s: %v\n", name, err)
		return exitInternal
	}
	fmt.Fprintf(stderr, "popsync: unknown command %q\n\n", name)
	usage(stderr)
	return exitUsage
}
