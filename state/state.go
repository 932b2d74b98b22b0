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
	// ErrLeaseLost: an account's Lease ended before the poller released
	// it; whatever the poller has not committed yet must not be.
	ErrLeaseLost = errors.New("account lease lost")
	// ErrLeaseReleased: the Lease was released by its holder.
	ErrLeaseReleased = errors.New("account lease released")
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
	// ErrUnsafe: a file or folder of the state could be (or was) planted
	// by someone else: a symbolic link where popsync writes, a folder
	// others can write, a file or folder not owned by the user. Nothing
	// was written through it.
	ErrUnsafe = errors.New("state path is unsafe")
	// ErrClosed: the Store was used after Close.
	ErrClosed = errors.New("state store is closed")
	// ErrNoAccount: AdoptAccount or ForgetAccount was given an identity
	// the store holds nothing for.
	ErrNoAccount = errors.New("no state for this account")
	// ErrAccountInUse: AdoptAccount was asked to move state onto an
	// identity that has state of its own; nothing was changed.
	ErrAccountInUse = errors.New("account already has state")
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
	// Quarantined: refused for good by a delivery target and kept in the
	// quarantine Maildir instead (on_reject); not fetched again.
	Quarantined MsgState = 2
	// Skipped: left on the server on purpose (for example larger than
	// max_size); recorded so it is reported once, and upgraded by
	// MarkDelivered if it is delivered later.
	Skipped MsgState = 3
	// Imported: delivered by another tool (fetchmail, getmail, mpop) before
	// popsync took the account over; recorded by MarkImported. Never fetched,
	// and never deleted by popsync, which did not deliver it.
	Imported MsgState = 4
)

// recordedByMarkDelivered reports whether Store.MarkDelivered records
// messages in state s: the states of a message that is handled for good.
func (s MsgState) recordedByMarkDelivered() bool {
	return s == Delivered || s == Quarantined
}

// String returns the lower-case name of s.
func (s MsgState) String() string {
	switch s {
	case Delivered:
		return "delivered"
	case Quarantined:
		return "quarantined"
	case Skipped:
		return "skipped"
	case Imported:
		return "imported"
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

// Intent records a delivery in flight to one target. Two kinds:
//
//   - Before a staging target (Maildir) publishes a message, an intent
//     names where it will appear (Token, the Maildir file's unique name),
//     so that after a crash the fetcher can look for it and decide
//     delivered or not.
//   - Confirmed: a confirming target (SMTP, LMTP, MDA) accepted a message
//     whose delivery to another target failed; the retry skips this target
//     instead of delivering twice. Token is then empty.
type Intent struct {
	UIDL string
	// Target is the stable ID of the delivery target, derived from the
	// target's own settings (configs.Deliver.ID), not from its place in
	// the config. Schema 1 stored indexes: they read as LegacyTarget(i).
	Target    string
	Token     string // the target's name for the delivery; "" when Confirmed
	Confirmed bool
	Size      int64
	Created   time.Time
}

// QuarantineTarget is the Target of intents for the quarantine Maildir.
const QuarantineTarget = "quarantine"

// LegacyTarget is how an intent written by schema 1, which stored the
// index of the target in the account's deliver list, reads today. The
// fetcher maps it to the target at that index of the config it runs.
func LegacyTarget(index int) string { return "index:" + strconv.Itoa(index) }

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
	// ReadSeen reads the account's seen-set for a SeenSet.Reconcile (or
	// Lookup) with the server's list. An account without records gives an
	// empty set. The caller holds the account's lease until it has
	// reconciled. See also the package functions Reconcile and Known.
	ReadSeen(ctx context.Context, a Account) (SeenSet, error)

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
	// MarkImported records UIDLs that another tool (fetchmail, getmail,
	// mpop) delivered before popsync took the account over, as State
	// Imported (the State given must be Imported or zero), in one
	// transaction; see PrepareImported for the defaults. It is a union: a
	// Delivered, Quarantined or Imported record is left as it is, a
	// Skipped one becomes Imported. It returns how many records it added
	// or upgraded.
	MarkImported(ctx context.Context, a Account, recs []Record) (added int, err error)
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
	// the same account at once: it returns a held Lease, or an error
	// wrapping ErrLocked at once, without waiting, if another holder has
	// the account. A lease cannot go stale: it ends with Release, when the
	// Store is closed (then it is lost), when the process dies, or, for a
	// backend whose leases expire, when it cannot be renewed (lost).
	LockAccount(ctx context.Context, a Account) (Lease, error)

	// AdoptAccount moves everything the store holds for identity from (its
	// seen-set, intents and poll history) to identity to, in one
	// transaction: for a config edit that names the same mailbox another
	// way (another host name or port for the same server). It fails with
	// ErrNoAccount when from has no state and with ErrAccountInUse when to
	// has records, intents or polls of its own; then nothing changes.
	// Arguments are checked with PrepareAdopt. The caller holds both
	// identities' leases.
	AdoptAccount(ctx context.Context, from, to Account) error
	// ForgetAccount drops everything the store holds for a, in one
	// transaction: records, intents and polls. ErrNoAccount when there is
	// nothing. The caller holds the account's lease.
	ForgetAccount(ctx context.Context, a Account) error

	// Close ends held leases and closes the store. Calling it again
	// returns nil.
	Close() error
}

// IntentRecorder is a Store that can record one batch as delivered and
// the next batch's intents in one transaction, so that a fetcher waits
// for one commit (one flush) for both instead of two. A Store without it
// gets the two calls.
type IntentRecorder interface {
	// MarkDeliveredAddIntents is MarkDelivered of recs followed by
	// AddIntents of in, all or nothing. Either may be empty.
	MarkDeliveredAddIntents(ctx context.Context, a Account, recs []Record, in []Intent) error
}

// IntentRecorderOf returns st as an IntentRecorder, or nil if it is
// none. It looks through wrappers that name the Store they wrap with
// Unwrap() Store: a wrapper may offer Unwrap only if it changes nothing
// about MarkDelivered and AddIntents (it adds methods, say).
func IntentRecorderOf(st Store) IntentRecorder {
	for range 8 { // wrappers of wrappers, not a cycle
		if ir, ok := st.(IntentRecorder); ok {
			return ir
		}
		u, ok := st.(interface{ Unwrap() Store })
		if !ok {
			return nil
		}
		st = u.Unwrap()
	}
	return nil
}
