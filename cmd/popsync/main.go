// Command popsync fetches mail from POP3 accounts into Maildirs, MTAs,
// MDAs and IMAP mailboxes, exactly once. This file is the command line
// only: the command table, global flags, signals and the one switch from
// error to exit status. The work is done by the fetch, schedule, deliver,
// state and configs packages.
package main

//go:generate sh -c "awk '/^## Configuration reference/{p=1} /^## Running as a service/{p=0} p' ../../README.md > configref.md"
//go:generate sh -c "go run . help --man > ../../docs/popsync.1"

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"popsync/configs"
	"popsync/deliver"
	"popsync/fetch"
	"popsync/fetch/pop3"
	"popsync/internal/credential/oauth"
)

// Exit statuses. Where fetchmail(1) has a status for the same cause, it
// is fetchmail's, so that scripts written for it keep working; the rest
// are sysexits(3), as mpop(1) uses. 1 (fetchmail: "no mail") is never
// used: a poll that finds nothing new succeeded.
const (
	exitOK         = 0
	exitConnect    = 2   // connection, DNS or TLS failure (fetchmail 2)
	exitAuth       = 3   // login refused, or no password to log in with (fetchmail 3)
	exitProtocol   = 4   // the server broke the protocol (fetchmail 4)
	exitConfig     = 5   // config file missing or invalid (fetchmail 5, 6)
	exitServer     = 7   // the server answered -ERR (fetchmail 7)
	exitBusy       = 8   // another popsync polls the account or runs the daemon (fetchmail 8)
	exitLocked     = 9   // the server says the mailbox is in use, [IN-USE] (fetchmail 9)
	exitDelivery   = 10  // a delivery target failed (fetchmail 10)
	exitOther      = 11  // an account failed for another reason; the log says which
	exitUsage      = 64  // bad command line (EX_USAGE)
	exitIdentity   = 65  // an account's identity changed; refused until adopted or declared new (EX_DATAERR)
	exitInternal   = 70  // a bug (EX_SOFTWARE)
	exitState      = 74  // the state file cannot be used (EX_IOERR)
	exitSignalBase = 128 // + the signal: 130 for Ctrl-C, 143 for SIGTERM
)

// exitCodes documents the statuses for `-h`, the man page and the README.
var exitCodes = []struct {
	code    int
	meaning string
}{
	{exitOK, "success: every account was polled (with or without new mail)"},
	{exitConnect, "could not connect: refused, timed out, DNS, TLS handshake or certificate"},
	{exitAuth, "authentication failed: the server refused the login, or the password could not be obtained"},
	{exitProtocol, "the server sent something that is not POP3"},
	{exitConfig, "the config file is missing or invalid (every problem is listed, with its line)"},
	{exitServer, "the server refused a command with -ERR (other than the login)"},
	{exitBusy, "another popsync is polling the account, or a daemon already runs on the state file"},
	{exitLocked, "the server says the mailbox is in use ([IN-USE]); try again later"},
	{exitDelivery, "a delivery target failed: Maildir, SMTP, LMTP or MDA"},
	{exitOther, "an account failed for another reason; the log says which and why"},
	{exitUsage, "bad command line"},
	{exitIdentity, "an account's host, port or user changed and its new identity has no state: refused, so as not to fetch every message again (popsync state adopt NAME, or new_identity = true)"},
	{exitInternal, "internal error: please report it"},
	{exitState, "the state file cannot be used (corrupt, from a newer popsync, read-only, ...)"},
	{exitSignalBase + int(syscall.SIGINT), "interrupted (Ctrl-C); 143 for SIGTERM"},
}

// command is one entry of the command table.
type command struct {
	name    string
	args    string // the arguments after the flags, for the synopsis
	summary string
	about   string // a paragraph for `popsync help CMD` and the man page
	polls   bool   // its exit status follows the table above: help lists it
	setup   func(f *flags, g *common) runFunc
}

// runFunc runs a command with its arguments that are not flags.
type runFunc func(ctx context.Context, e *env, args []string) error

// env is where a command writes.
type env struct {
	stdout, stderr io.Writer
}

var commands []*command

func init() {
	commands = []*command{
		{name: "fetch", args: "[NAME...]", summary: "poll accounts once and exit", polls: true, setup: setupFetch,
			about: "Polls every account of the config once, or only the accounts named, and exits. " +
				"Each poll logs one line; -v adds one line per message, -q prints errors only."},
		{name: "run", summary: "the daemon: poll every account on its schedule until stopped", polls: true, setup: setupRun,
			about: "Polls every account on its schedule until SIGTERM or SIGINT (running polls may finish for " +
				"[daemon] shutdown_grace). SIGHUP reloads the config; SIGUSR1 polls every account now."},
		{name: "check", args: "[NAME...]", summary: "validate the config; with --connect, log in to each account", polls: true, setup: setupCheck,
			about: "Reads and validates the config, prints each account and checks, without the network and without " +
				"creating anything, what its polls will need: each password source resolves (a password_command is only " +
				"looked up, and run with --run-commands; no password is shown), each MDA program exists, each Maildir exists " +
				"or can be created, each tls_ca_file holds certificates, the state file can be written, and the account's " +
				"identity did not change (see popsync help state). With --connect it also logs in to each account and " +
				"reports the TLS version, cipher and server certificate and what the server offers, and tries every " +
				"SMTP, LMTP and MDA target, without fetching."},
		{name: "status", summary: "show per-account state: last poll, last error, seen, pending", setup: setupStatus,
			about: "Shows, for each configured account, its schedule, the daemon's next poll, the last poll, " +
				"the last success, the last error and the seen and pending counts."},
		{name: "login", args: "NAME", summary: "OAuth 2.0: log in to an account and store its token", setup: setupLogin,
			about: "Runs an interactive OAuth 2.0 login for an account with an [account.oauth2] table: the device flow " +
				"(a URL and a code to enter on any device) where the provider offers it, else the browser flow " +
				"(authorization code with PKCE and a redirect to 127.0.0.1). Prompts go to stderr. The token is stored " +
				"in the state file; then popsync logs in to the POP3 server with it and prints one line. " +
				"Then it logs in, one after the other, to each IMAP target of the account with an " +
				"[account.deliver.oauth2] table (an account may have only those), stores each token under its " +
				"target and tries it on the IMAP server."},
		{name: "logout", args: "NAME", summary: "OAuth 2.0: forget an account's stored token", setup: setupLogout,
			about: "Deletes the OAuth 2.0 tokens stored for the account and for its IMAP targets; " +
				"`popsync login NAME` logs in again."},
		{name: "init", args: "ADDRESS", summary: "write a commented starter config for an address", setup: setupInit,
			about: "Writes a starter config for ADDRESS (mode 0600; an existing file is never overwritten), " +
				"with the POP3 server, port and TLS of known providers: Gmail, Outlook and Microsoft 365, Yahoo, " +
				"GMX, web.de and Fastmail; other domains get pop.DOMAIN as a guess. It then says what to do next."},
		{name: "import", args: "fetchmail|getmail|mpop", summary: "convert a fetchmail, getmail or mpop config and its seen-state", setup: setupImport,
			about: "Reads the old tool's config and seen-state (never changing them, never contacting a server) and writes " +
				"a popsync config and seen-set, so that the first fetch gets exactly the mail the old tool had not fetched. " +
				"Options that cannot be converted are listed with file and line; --dry-run writes nothing."},
		{name: "demo", summary: "try popsync against a built-in POP3 server, into ./demo", setup: setupDemo,
			about: "Starts a built-in POP3 server with sample mail and syncs it into a real Maildir and seen-set in " +
				"the demo folder, twice, to show that nothing is fetched twice."},
		{name: "state", args: "adopt NAME | forget IDENTITY|NAME | copy", summary: "carry an account's state over to its new identity, drop an old identity's, or copy it into PostgreSQL", setup: setupState,
			about: "An account's identity is its host, port and user: the seen-set is kept per identity. After a config edit " +
				"that changes it, fetch refuses the account. If the new identity is the same mailbox (another name or port " +
				"for the same server), 'state adopt NAME' gives it the old identity's seen-set, intents and poll history; " +
				"if it is another mailbox, set new_identity = true on the account instead. 'state forget' drops the state of " +
				"an identity (user@host:port) or of every identity polled under a name; it refuses an account the config " +
				"still has unless --force is given. 'state copy --from FILE.db --to URL' copies the seen-set, open intents and " +
				"poll history of an SQLite state file into a PostgreSQL database, for [state] url; it refuses a database " +
				"that holds accounts already unless --force. Stop every daemon on both first."},
		{name: "version", summary: "print version and build information", setup: setupVersion,
			about: "Prints popsync's version, the commit it was built from and the Go version (also: popsync --version, -V)."},
		{name: "help", args: "[COMMAND]", summary: "show the help of popsync or of a command", setup: setupHelp,
			about: "Shows the help of a command, or the list of commands. With --man, prints the man page instead."},
		{name: "completion", args: "bash|zsh|fish", summary: "print a shell completion script", setup: setupCompletion,
			about: "Prints a completion script for bash, zsh or fish. Load it with: " +
				"source <(popsync completion bash), or for zsh: popsync completion zsh > \"${fpath[1]}/_popsync\", " +
				"or for fish: popsync completion fish > ~/.config/fish/completions/popsync.fish."},
	}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			cancel(&signalError{s})
		case <-done:
		}
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	close(done)
	signal.Stop(sigs)
	cancel(nil)
	os.Exit(code)
}

// run is popsync with its arguments: global flags, then a command.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr}
	g := newCommon()
	gf := newFlags("")
	g.register(gf)
	var version bool
	gf.Bool(&version, flagDef{short: "V", long: "version", help: "print the version and exit"})
	if err := gf.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return exitOK
		}
		return report(e, "", usageErrorf("%v", err))
	}
	args = gf.fs.Args()
	if version {
		return report(e, "version", printVersion(stdout))
	}
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	c := lookup(args[0])
	if c == nil {
		return report(e, "", usageErrorf("unknown command %q (commands: %s)", args[0], commandNames()))
	}
	f := newFlags(c.name)
	runCmd := c.setup(f, g)
	pos, err := f.parse(args[1:])
	if errors.Is(err, flag.ErrHelp) {
		commandHelp(stdout, c)
		return exitOK
	}
	if err == nil {
		err = runCmd(ctx, e, pos)
	}
	return report(e, c.name, err)
}

// report prints err, if any, and returns its exit status.
func report(e *env, name string, err error) int {
	code := exitCode(err)
	if code == exitOK {
		return code
	}
	prefix := "popsync: "
	if name != "" {
		prefix = "popsync " + name + ": "
	}
	fmt.Fprintf(e.stderr, "%s%v\n", prefix, err)
	if code == exitUsage {
		if name != "" {
			fmt.Fprintf(e.stderr, "Run 'popsync help %s' for its flags.\n", name)
		} else {
			fmt.Fprintf(e.stderr, "Run 'popsync help' for the commands.\n")
		}
	}
	return code
}

// exitCode is the one place an error becomes an exit status. It looks at
// the error's type, never its text. An *accountsError stands for its
// first failed account, in config order.
func exitCode(err error) int {
	var (
		usage    *usageError
		cfgErr   *configError
		stErr    *stateError
		sig      *signalError
		accounts *accountsError
		server   *pop3.Error
		netErr   net.Error
		rhe      tls.RecordHeaderError
		certErr  *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
	)
	polled := errors.As(err, &accounts)
	switch {
	case err == nil || errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &sig):
		return exitSignalBase + sig.number()
	case errors.As(err, &usage):
		return exitUsage
	case errors.As(err, &cfgErr) || errors.Is(err, configs.ErrInvalid):
		return exitConfig
	case errors.As(err, &stErr):
		return exitState
	case errors.Is(err, fetch.ErrIdentityChanged):
		return exitIdentity
	case errors.Is(err, fetch.ErrAccountBusy) || errors.Is(err, errDaemonRunning):
		return exitBusy
	case errors.Is(err, fetch.ErrDelivery) || errors.As(err, new(*deliver.DeliveryError)):
		return exitDelivery
	case errors.As(err, &server) && serverCode(server, "IN-USE"):
		return exitLocked
	case errors.As(err, &server) && isLoginError(server),
		errors.Is(err, configs.ErrSecretUnavailable), errors.Is(err, pop3.ErrNoMechanism),
		oauthAuthError(err), // login.go
		errors.Is(err, pop3.ErrPlaintextAuth):
		return exitAuth
	case errors.As(err, &netErr), errors.As(err, new(*oauth.TemporaryError)), errors.As(err, &rhe), errors.As(err, &certErr), errors.As(err, &unknown),
		errors.Is(err, pop3.ErrNotTLS), errors.Is(err, pop3.ErrUnexpectedTLS), errors.Is(err, pop3.ErrTLSRequired),
		errors.Is(err, pop3.ErrCertificate), errors.Is(err, pop3.ErrFingerprintMismatch),
		errors.Is(err, pop3.ErrTooSlow), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return exitConnect
	case errors.As(err, &server):
		return exitServer
	case errors.Is(err, pop3.ErrProtocol), errors.Is(err, pop3.ErrLineTooLong), errors.Is(err, pop3.ErrBadUIDL),
		errors.Is(err, pop3.ErrTooManyEntries), errors.Is(err, pop3.ErrDrainLimit),
		errors.Is(err, fetch.ErrListedSize), errors.Is(err, fetch.ErrOversized):
		return exitProtocol
	case polled:
		return exitOther
	}
	return exitInternal
}

// isLoginError reports whether a -ERR reply refused the login: RFC 3206
// §5 [AUTH], or any -ERR to the login commands themselves.
func isLoginError(e *pop3.Error) bool {
	if serverCode(e, "AUTH") {
		return true
	}
	switch e.Command {
	case "USER", "PASS", "APOP", "AUTH":
		return !e.Temporary()
	}
	return false
}

// serverCode reports whether the reply's RFC 2449 §8 response code is
// want or below it.
func serverCode(e *pop3.Error, want string) bool {
	return e.Code == want || len(e.Code) > len(want) && e.Code[:len(want)+1] == want+"/"
}

// signalError is the cause of a command stopped by a signal.
type signalError struct{ sig os.Signal }

func (e *signalError) Error() string {
	if e.sig == syscall.SIGTERM {
		return "terminated"
	}
	return "interrupted"
}

func (e *signalError) number() int {
	if s, ok := e.sig.(syscall.Signal); ok {
		return int(s)
	}
	return int(syscall.SIGINT)
}

// interrupted returns the signal that stopped ctx, or nil.
func interrupted(ctx context.Context) error {
	var se *signalError
	if ctx.Err() != nil && errors.As(context.Cause(ctx), &se) {
		return se
	}
	return nil
}
