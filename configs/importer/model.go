// Package importer reads the configuration and seen-state of fetchmail,
// getmail6 and mpop and converts them into a popsync config and seen-set
// records, for `popsync import`.
//
// It parses the old tools' own file formats (fetchmail's rc grammar and
// .fetchids, getmail's INI getmailrc and oldmail files, mpop's rc and
// UIDLS files), maps every option it can onto popsync's config keys, and
// lists every one it cannot, with file, line and reason. It never
// connects to a server, never runs a command named in an old config and
// never writes anything: writing the config, the password files and the
// seen-set is the caller's job (cmd/popsync).
package importer

import (
	"fmt"
	"time"
)

// Tools are the names the importer knows, as `popsync import` takes them.
const (
	Fetchmail = "fetchmail"
	Getmail   = "getmail"
	Mpop      = "mpop"
)

// Pos is a place in an old tool's file.
type Pos struct {
	File string
	Line int
}

func (p Pos) String() string {
	if p.Line <= 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d", p.File, p.Line)
}

// Error is a file the importer cannot read: a syntax error in a config or
// a corrupt or truncated seen-state file. It always names file and line.
type Error struct {
	Pos
	Msg string
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

func errorf(p Pos, format string, args ...any) *Error {
	return &Error{Pos: p, Msg: fmt.Sprintf(format, args...)}
}

// Issue is an option of the old config that is not carried over.
type Issue struct {
	Pos
	Account string // the popsync account it belongs to; empty for global options
	Option  string // the option as the old tool spells it
	Reason  string
	// Harmless: the option has no effect on what popsync delivers (log
	// settings, tuning popsync does on its own); listed, but not an error
	// under --strict.
	Harmless bool
}

func (i Issue) String() string {
	s := i.Pos.String() + ": " + i.Option + ": " + i.Reason
	if i.Account != "" {
		s = i.Pos.String() + ": account " + i.Account + ": " + i.Option + ": " + i.Reason
	}
	return s
}

// Account is one converted account, in popsync's terms. Zero values mean
// popsync's default.
type Account struct {
	Name string
	Pos  Pos // where the old tool's account starts

	Host       string
	Port       int    // 0: the default of TLS
	TLS        string // implicit, starttls or none
	CAFile     string
	Print      string // tls_fingerprint (SHA-256)
	ServerName string
	User       string

	Password        string   // goes into a password file, never into the config
	PasswordCommand []string // password_command

	Auth        string // empty: auto
	Keep        bool
	DeleteAfter int   // days; 0: never
	MaxSize     int64 // octets; 0: no limit
	FetchLimit  int
	Timeout     time.Duration
	NoReceived  bool // add_received = false

	Deliver []Target

	// TODO lists why the account cannot be used as converted (a delivery
	// that cannot be expressed, seen-state that cannot be read). The
	// account is written with these as comments and a value that makes
	// `popsync check` fail, never with a guessed target.
	TODO []string
	// Comments are remarks written above the account: what changes in
	// behaviour, where a value came from.
	Comments []string

	// SeenFile is where the old tool keeps this account's seen-state.
	SeenFile string

	// seenKey identifies the account in its seen-state file.
	seenHost string
	seenPort int // 0: the file does not say
	seenUser string
	// slashAsDash: the old tool wrote '/' in a UIDL as '-' (getmail).
	slashAsDash bool
}

// Target is one [[account.deliver]].
type Target struct {
	Maildir string
	MDA     []string
	SMTP    string
	LMTP    string
	Rcpt    []string
}

// Global is what belongs to the whole config rather than one account.
type Global struct {
	Schedule string // [defaults] schedule; empty: popsync's default
	Comments []string
}

// Import is a converted old config.
type Import struct {
	Tool     string
	Files    []string // the config files read
	Global   Global
	Accounts []*Account
	Issues   []Issue
}

func (im *Import) issue(p Pos, account, option, reason string) {
	im.Issues = append(im.Issues, Issue{Pos: p, Account: account, Option: option, Reason: reason})
}

func (im *Import) harmless(p Pos, account, option, reason string) {
	im.Issues = append(im.Issues, Issue{Pos: p, Account: account, Option: option, Reason: reason, Harmless: true})
}

// Strict returns the issues that --strict refuses.
func (im *Import) Strict() []Issue {
	var out []Issue
	for _, i := range im.Issues {
		if !i.Harmless {
			out = append(out, i)
		}
	}
	return out
}
