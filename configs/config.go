package configs

import (
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"popsync/internal/credential"
	"popsync/state"
)

// Config is a loaded, validated configuration with every default filled in
// and every path absolute.
type Config struct {
	Path     string // absolute path of the file it was read from
	State    State
	Daemon   Daemon
	Accounts []*Account // in file order

	// ChildEnv is the environment for programs popsync starts, without
	// the secrets this file names; see ChildEnv.
	ChildEnv ChildEnv
}

// State configures the seen-set store.
type State struct {
	Path string // SQLite database file; empty when URL is set
	// URL is the PostgreSQL database of a fleet ([state] url): a libpq
	// URL or key=value string, password included if the user put one
	// there. Never print it: Redacted is the printable form.
	URL string
	// LeaseTTL is [state] lease_ttl (only with URL); 0 means the store's
	// default.
	LeaseTTL Duration
	// Dir holds popsync's own local files that are not the store: the
	// daemon lock and schedule of `popsync run` and the default quarantine
	// Maildirs. Name tells the files of one store from another's in Dir.
	// For SQLite they are the folder and the name of Path; a store that
	// is no local file (a database server) still has both.
	Dir, Name string
}

// LocalFile returns the path of the store's own local file that ends in
// suffix: Dir/Name + suffix.
func (s State) LocalFile(suffix string) string { return filepath.Join(s.Dir, s.Name+suffix) }

// Fleet reports whether the store is a PostgreSQL database shared by
// daemons.
func (s State) Fleet() bool { return s.URL != "" }

// Where names the store for messages: the SQLite file, or the database
// URL without its password.
func (s State) Where() string {
	if s.URL != "" {
		return RedactURL(s.URL)
	}
	return s.Path
}

// fleetStateName is State.Name with url: the local files of a fleet
// store are Dir/fleet.*.
const fleetStateName = "fleet"

// DefaultStateDir is the folder of a fleet store's local files when
// [state] dir is not given: $XDG_STATE_HOME/popsync, else
// ~/.local/state/popsync.
func DefaultStateDir() string { return filepath.Dir(DefaultStatePath()) }

// sqliteState is the State of the SQLite file at path.
func sqliteState(path string) State {
	return State{Path: path, Dir: filepath.Dir(path), Name: filepath.Base(path)}
}

// Daemon configures `popsync run`.
type Daemon struct {
	MaxParallel   int      // accounts polled at once
	ShutdownGrace Duration // how long running polls may finish after SIGTERM
	Metrics       string   // "host:port" for /metrics and /healthz; "" = off
	// MetricsPublic allows a Metrics address that is not loopback (an
	// empty host, another interface); without it such an address is a
	// config error.
	MetricsPublic bool
}

// IsLoopbackListen reports whether the listen address "host:port" stays
// on this machine: its host is a loopback IP address or "localhost". An
// empty host (":9465") listens on every interface and is not loopback.
func IsLoopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// TLS modes (key "tls").
const (
	TLSImplicit = "implicit" // TLS from the first byte (RFC 8314 §3.3, port 995)
	TLSStartTLS = "starttls" // plain connection upgraded with STLS (RFC 2595 §4, port 110)
	TLSNone     = "none"     // no TLS at all
)

// Authentication methods (key "auth").
const (
	AuthAuto        = "auto"        // pick the strongest the server offers
	AuthUser        = "user"        // USER/PASS (RFC 1939 §7)
	AuthAPOP        = "apop"        // APOP (RFC 1939 §7)
	AuthPlain       = "plain"       // SASL PLAIN (RFC 4616)
	AuthLogin       = "login"       // SASL LOGIN
	AuthCRAMMD5     = "cram-md5"    // SASL CRAM-MD5 (RFC 2195)
	AuthXOAuth2     = "xoauth2"     // SASL XOAUTH2; the password is the token
	AuthOAuthBearer = "oauthbearer" // SASL OAUTHBEARER (RFC 7628); the password is the token
)

// Built-in defaults.
const (
	DefaultMaxParallel   = 8
	DefaultShutdownGrace = Duration(30 * time.Second)
	DefaultTLS           = TLSImplicit
	DefaultAuth          = AuthAuto
	DefaultTimeout       = Duration(60 * time.Second)
	DefaultSchedule      = "@every 5m"
	DefaultPortImplicit  = 995 // RFC 8314 §7.3
	DefaultPortPlain     = 110 // RFC 1939 §3
)

// Account is one remote POP3 mailbox and what to do with its mail.
type Account struct {
	Name string
	Line int // line of the [[account]] header

	Host           string
	Port           int
	TLS            string // TLSImplicit, TLSStartTLS or TLSNone
	TLSCAFile      string // PEM bundle to trust instead of the system roots; "" = system roots
	TLSFingerprint string // SHA-256 of the server certificate, 64 lowercase hex digits without colons; "" = not pinned
	TLSServerName  string // name to verify the certificate against; "" = Host

	User     string
	Password credential.Source // keys password, password_file, _command, _env; see Account.Secret
	Auth     string            // one of the Auth* constants
	// OAuth2 is the [account.oauth2] table: when set, the account logs in
	// with an OAuth 2.0 access token (Auth is xoauth2 or oauthbearer) and
	// has no password source.
	OAuth2 *OAuth2

	Keep        bool     // leave messages on the server after delivery
	DeleteAfter Duration // with Keep: delete this long after delivery; 0 = never
	MaxSize     Size     // larger messages are left alone and reported; 0 = no limit
	FetchLimit  int      // messages per poll; 0 = all
	Timeout     Duration // per network read/write
	AddReceived bool     // prepend a Received: trace header
	Schedule    string   // robfig/cron spec, checked by ParseSchedule
	RunAtStart  bool     // `popsync run` polls the account once at start, before its schedule
	// NewIdentity says that the account, whose host, port or user changed,
	// is another mailbox than the one its name had: it starts a seen-set
	// of its own instead of being refused (see fetch.CheckIdentity).
	NewIdentity bool

	Deliver []Deliver // every entry gets every message

	// ChildEnv is the environment for the programs started for this
	// account (its password_command, its MDA targets): the config's
	// ChildEnv, so that no account's program sees any account's secret.
	ChildEnv ChildEnv
}

// Addr returns "host:port", with brackets around an IPv6 host.
func (a *Account) Addr() string { return net.JoinHostPort(a.Host, strconv.Itoa(a.Port)) }

// DefaultPort is the port of an account that names none: 995 with
// implicit TLS, 110 otherwise.
func DefaultPort(tls string) int {
	if tls == TLSImplicit {
		return DefaultPortImplicit
	}
	return DefaultPortPlain
}

// Identity returns the key of the account's seen-set, in the canonical form
// every Store keys by (state.Account.Canonical: host lower-cased, without a
// trailing dot) and with the port always explicit, whether the config wrote
// it or took the default of its tls mode. Renaming an account keeps its
// identity; changing host, port or user starts a new seen-set.
//
// It is the one place an identity is made from a config: the duplicate check
// of Load, the poll, the daemon's reload, status, metrics and the lock names
// all use it, so no two of them can disagree about which mailbox is which.
func (a *Account) Identity() state.Account {
	return state.Account{Host: a.Host, Port: a.Port, User: a.User}.Canonical()
}

// Lookup returns the account named name.
func (c *Config) Lookup(name string) (*Account, bool) {
	for _, a := range c.Accounts {
		if a.Name == name {
			return a, true
		}
	}
	return nil, false
}

// DefaultPath is where popsync looks for its config without -c:
// $XDG_CONFIG_HOME/popsync/config.toml, else ~/.config/popsync/config.toml.
func DefaultPath() string {
	return filepath.Join(xdgDir("XDG_CONFIG_HOME", ".config"), "popsync", "config.toml")
}

// DefaultStatePath is the seen-set database used when [state] path is not
// given: $XDG_STATE_HOME/popsync/state.db, else ~/.local/state/popsync/state.db.
func DefaultStatePath() string {
	return filepath.Join(xdgDir("XDG_STATE_HOME", filepath.Join(".local", "state")), "popsync", "state.db")
}

// xdgDir returns $env when it is an absolute path (the XDG Base Directory
// spec says relative values are to be ignored), else $HOME/fallback.
func xdgDir(env, fallback string) string {
	if d := os.Getenv(env); filepath.IsAbs(d) {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, fallback)
}

// Load reads, checks and returns the config file at path. The file must be
// owned by the user running popsync or by root, in a folder that only they
// can write (or a sticky one); one that holds a password must also be
// readable by its owner only (see Parse). A file that cannot
// be read gives a wrapped os error; a file that can be read but is not a
// usable config gives *Errors listing every problem (errors.Is ErrInvalid).
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("reading config: %s is a directory", path)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("reading config %s: %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("resolving config path: %w", err)
	}
	return parseFile(data, path, fi.Mode(), ownerProblems(abs, fi))
}

// Parse checks data as the contents of the config file at path, whose
// permissions are mode (Load passes the file's; the password rule depends on
// it). path names the file in messages, and relative paths in the config
// resolve against its folder.
func Parse(data []byte, path string, mode fs.FileMode) (*Config, error) {
	return parseFile(data, path, mode, nil)
}

// parseFile is Parse with problems about the file itself (its owner, its
// folder) found by Load.
func parseFile(data []byte, path string, mode fs.FileMode, fileProblems []string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("resolving config path: %w", err)
	}
	d := &decoder{
		abs:   abs,
		dir:   filepath.Dir(abs),
		mode:  mode,
		hints: keyHints(),
	}
	cfg := d.decode(data)
	for _, msg := range fileProblems {
		d.probs.add(Problem{Msg: msg})
	}
	if err := d.probs.err(path); err != nil {
		return nil, err
	}
	return cfg, nil
}
