// Package state keeps popsync's seen-set and poll history behind the Store
// interface: which UIDLs of which account were delivered, quarantined or
// skipped, which deliveries are in flight (intents), which messages were
// deleted from the server, and how recent polls went.
//
// The package is responsible for making those facts durable and consistent:
// every batch is one transaction, a committed "delivered" survives power loss,
// UIDLs that left the server are pruned after a grace period, and two pollers
// never work on the same account at once (LockAccount). It is not responsible
// for deciding what to fetch, deliver or delete (package fetch does that), for
// looking for Maildir files when resolving intents, or for scheduling.
//
// Backends: SQLite (OpenSQLite). A PostgreSQL backend is planned; every backend
// must pass the conformance suite in popsync/state/statetest.
package state

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Errors callers branch on with errors.Is. Errors returned by a Store wrap
// one of these where it applies, together with the backend's own error.
var (
	// ErrLocked: LockAccount found the account held by another poller (this
	// process or another one).
	ErrLocked = errors.New("account is locked by another poll")
	// ErrNewerSchema: the state file was written by a newer popsync; it is
	// left untouched.
	ErrNewerSchema = errors.New("state file has a newer schema")
	// ErrCorrupt: the state file is damaged, not a database, or not a popsync
	// state file; it is left untouched (never reset).
	ErrCorrupt = errors.New("state file is corrupt")
	// ErrReadOnly: the state file or its folder cannot be written.
	ErrReadOnly = errors.New("state file is not writable")
	// ErrBusy: another writer held the database for longer than the busy
	// timeout. Temporary; the operation may be retried.
	ErrBusy = errors.New("state database is busy")
	// ErrClosed: the Store was used after Close.
	ErrClosed = errors.New("state store is closed")
	// ErrLeaseLost: the account's lease (a fleet of daemons sharing one
	// database) expired or was taken over; the write was refused. The
	// poll must stop: no DELE, no QUIT.
	ErrLeaseLost = errors.New("account lease lost")
)

// KeepPolls is how many polls per account a Store keeps; RecordPoll drops
// older ones.
const KeepPolls = 100

// Account is the identity the seen-set is keyed by: renaming an account in the
// config keeps its seen-set, changing host, port or user starts a new one.
// Host names compare case-insensitively (see Canonical).
type Account struct {
	Host string
	Port int
	User string
}

// String returns "user@host:port" ("user@[::1]:995" for IPv6 literals).
func (a Account) String() string {
	return a.User + "@" + net.JoinHostPort(a.Host, strconv.Itoa(a.Port))
}

// Canonical returns the form a Store keys by: the host lower-cased and
// without a trailing dot (DNS names are case-insensitive, RFC 4343). The user
// is kept as is: POP3 servers may treat user names case-sensitively.
func (a Account) Canonical() Account {
	a.Host = strings.ToLower(strings.TrimSuffix(a.Host, "."))
	return a
}

// Validate reports whether a can be used as an identity.
func (a Account) Validate() error {
	switch {
	case strings.TrimSuffix(a.Host, ".") == "":
		return fmt.Errorf("invalid account %s: empty host", a)
	case a.Port < 1 || a.Port > 65535:
		return fmt.Errorf("invalid account %s: port %d out of range", a, a.Port)
	case a.User == "":
		return fmt.Errorf("invalid account %s: empty user", a)
	}
	return nil
}

// MsgState is what became of a message. The numeric values are stored in
// state files: never renumber them.
type MsgState int

const (
	// Delivered: every delivery target confirmed the message durably.
	Delivered MsgState = 1
	// Quarantined: handled without normal delivery (for example kept aside
	// because it could not be parsed); not fetched again.
	Quarantined MsgState = 2
	// Skipped: left on the server on purpose (for example larger than
	// max_size); recorded so it is reported once, and upgraded by
	// MarkDelivered if it is delivered later.
	Skipped MsgState = 3
)

// String returns the lower-case name of s.
func (s MsgState) String() string {
	switch s {
	case Delivered:
		return "delivered"
	case Quarantined:
		return "quarantined"
	case Skipped:
		return "skipped"
	}
	return "MsgState(" + strconv.Itoa(int(s)) + ")"
}

// Record is what the seen-set knows about one UIDL of one account. A zero
// time means "not set". Stores keep times to the microsecond.
type Record struct {
	UIDL        string
	State       MsgState
	Size        int64
	FirstSeen   time.Time // first poll that saw the UIDL
	DeliveredAt time.Time // zero unless Delivered or Quarantined
	DeletedAt   time.Time // when DELE was committed on the server (QUIT succeeded)
	Note        string    // why it was skipped or quarantined
}

// Intent records a delivery about to be made durable: before the Maildir file
// named Token is renamed into new/ for delivery target Target, so that after a
// crash the fetcher can look for the file and decide delivered or not.
type Intent struct {
	UIDL    string
	Target  int    // index of the delivery target in the account's config
	Token   string // the Maildir file's unique name
	Size    int64
	Created time.Time
}

// Poll is the outcome of one poll of one account.
type Poll struct {
	Name       string // account name in the config at the time
	Account    Account
	Start, End time.Time
	OnServer   int // messages on the server
	New        int // messages not in the seen-set
	Delivered  int
	Deleted    int
	Skipped    int
	Bytes      int64  // bytes downloaded
	Err        string // empty when the poll succeeded; must not contain secrets
	Pending    int    // messages left on the server that are still to be delivered
}

// AccountStatus summarises one account for `popsync status`. All times are
// poll start times, so the latest poll failed exactly when LastErrorAt equals
// LastPoll (LastOK says the same).
type AccountStatus struct {
	Name        string // name used by the latest poll
	Account     Account
	LastPoll    time.Time
	LastOK      bool // whether the latest poll succeeded
	LastSuccess time.Time
	LastError   string // error of the latest failed poll, kept after later successes
	LastErrorAt time.Time
	Seen        int // records in the seen-set
	Pending     int // from the latest poll
}

// Store is the seen-set and poll history. A Store is safe for concurrent use.
// Every method that takes a slice applies it in one transaction: all or
// nothing. Accounts are keyed by their Canonical form. Blocking methods honour
// ctx.
type Store interface {
	// Reconcile takes the server's current UIDL list. In one transaction it
	// marks known UIDLs absent from the list as gone (since now, unless they
	// already are), clears "gone" for present ones, deletes records gone for
	// longer than grace (gone since before now-grace), and returns the
	// records of the present UIDLs that are known, Skipped ones included,
	// keyed by UIDL. Duplicate UIDLs in the list are tolerated.
	Reconcile(ctx context.Context, a Account, uidls []string, now time.Time, grace time.Duration) (map[string]Record, error)

	// Known returns the records of the given UIDLs that the seen-set
	// holds, like Reconcile but writing nothing (for a dry run).
	Known(ctx context.Context, a Account, uidls []string) (map[string]Record, error)

	// AddIntents records delivery intents, replacing an existing intent for
	// the same UIDL and target. A zero Created means now.
	AddIntents(ctx context.Context, a Account, in []Intent) error
	// Intents lists the account's open intents ordered by Created, UIDL,
	// Target.
	Intents(ctx context.Context, a Account) ([]Intent, error)
	// DropIntents removes every intent of the given UIDLs.
	DropIntents(ctx context.Context, a Account, uidls []string) error

	// MarkDelivered upserts records with State Delivered or Quarantined
	// (upgrading Skipped ones) and removes every intent of those UIDLs. A
	// zero DeliveredAt means now; a zero FirstSeen means DeliveredAt; an
	// existing record keeps the earlier FirstSeen and its DeletedAt unless
	// the new record sets one.
	MarkDelivered(ctx context.Context, a Account, recs []Record) error
	// MarkSkipped records UIDLs left on the server on purpose (State Skipped
	// or zero; Note says why). It never downgrades a Delivered or
	// Quarantined record.
	MarkSkipped(ctx context.Context, a Account, recs []Record) error
	// MarkDeleted sets DeletedAt of the given UIDLs; UIDLs without a record
	// are ignored. A zero at means now.
	MarkDeleted(ctx context.Context, a Account, uidls []string, at time.Time) error

	// RecordPoll stores a poll and keeps the latest KeepPolls per account.
	RecordPoll(ctx context.Context, p Poll) error
	// Polls returns up to limit (all kept if limit <= 0) polls of the
	// account, newest first.
	Polls(ctx context.Context, a Account, limit int) ([]Poll, error)
	// Status returns one entry per account that has recorded polls, ordered
	// by name, then identity.
	Status(ctx context.Context) ([]AccountStatus, error)

	// LockAccount makes sure two pollers (goroutines or processes) never poll
	// the same account at once. It returns an error wrapping ErrLocked at
	// once, without waiting, if another holder has the account. The lock
	// cannot go stale: it is released when unlock is called, when the Store
	// is closed, or when the process dies. unlock may be called more than
	// once.
	LockAccount(ctx context.Context, a Account) (unlock func(), err error)

	// Close releases held account locks and closes the store. Calling it
	// again returns nil.
	Close() error
}
