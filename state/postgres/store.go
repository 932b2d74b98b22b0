// Package postgres is popsync's state store on PostgreSQL: the seen-set,
// intents and poll history of package state, in a database that several
// popsync daemons share, each polling an account only under a lease.
//
// It is responsible for the same facts as the SQLite store (see package
// state) with the same semantics, for its own schema (created and upgraded
// by Open, one upgrade at a time however many daemons start together), and
// for the fleet: daemons register with a heartbeat, claim their share of
// the due accounts (ClaimDue), hold each account by a lease with a
// fencing token, and every write of a delivery, an intent or a deletion
// checks in its own transaction that the lease is still held with that
// token. Every lease time comes from the database clock.
//
// It is not responsible for what a daemon does when a lease is lost
// (package fetch must then drop the POP3 connection without DELE or QUIT),
// for the schedule's cron specs (the caller computes the next due time),
// or for creating the database and its role.
//
// What the lease TTL trades: a daemon that dies holds its accounts until
// its leases expire (at most one TTL); a daemon that cannot reach the
// database gives its leases up at 3/4 of the TTL after its last renewal,
// so a shorter TTL also means an outage of the database of a few seconds
// aborts running polls. Open intents belong to the account, not to the
// daemon: the daemon that takes an account over resolves them as a
// restarted daemon would, so every daemon must see the same Maildir
// targets (shared storage), or deliver only over SMTP, LMTP or IMAP.
//
// Lease rows are never deleted: the fencing token of an account only
// grows.
package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"popsync/state"
)

// DefaultLeaseTTL is how long a lease lasts without renewal when
// Options.LeaseTTL is zero: how long a dead daemon's accounts wait before
// another daemon takes them.
const DefaultLeaseTTL = 60 * time.Second

// minLeaseTTL keeps renewal (every TTL/3) from turning into a busy loop.
const minLeaseTTL = 300 * time.Millisecond

// defaultOpTimeout bounds every database operation whose context has no
// earlier deadline, so a hung server cannot hang a poll.
const defaultOpTimeout = time.Minute

// defaultConnectTimeout is the connect timeout when the URL sets none.
const defaultConnectTimeout = 10 * time.Second

// Options configure a Store. The zero value is a Store for a single tool
// (status, state copy): it is no member of the fleet until Register.
type Options struct {
	// DaemonID names this daemon as the owner of its leases and in the
	// daemon table; it must be unique in the fleet. Default:
	// "<hostname>-<pid>-<8 random hex digits>".
	DaemonID string
	// LeaseTTL is how long a lease and a heartbeat last without renewal;
	// default DefaultLeaseTTL. Leases are renewed every LeaseTTL/3; a
	// lease that could not be renewed is given up (Done closes) a quarter
	// of the TTL before it can expire.
	LeaseTTL time.Duration
	// RequireLease refuses, with state.ErrLeaseLost, every write of
	// records or intents for an account this Store holds no lease on. A
	// daemon of a fleet sets it; tools that work on a database no daemon
	// uses do not.
	RequireLease bool
	// MaxConns is the size of the connection pool; default 4 or the
	// number of CPUs, whichever is more (pgxpool's default).
	MaxConns int32
	// OpTimeout bounds each operation whose context has no earlier
	// deadline; default one minute.
	OpTimeout time.Duration
	// Logger receives lease events (lost, taken over); default: discard.
	Logger *slog.Logger

	// For tests and benchmarks.
	tracer     pgx.QueryTracer
	dial       pgconn.DialFunc
	migrations []migration
	noIdlePing bool
}

// Store is the state.Store on PostgreSQL, opened by Open. It is safe for
// concurrent use.
//
// Account identities get a row id once (cached for the Store's life: rows
// are never deleted). A write is one pipelined, implicit transaction: all
// its statements, the fence first, go to the server in one round trip.
type Store struct {
	pool  *pgxpool.Pool
	opt   Options
	ttl   time.Duration
	where string // user@host:port/database, for messages; never the password
	log   *slog.Logger

	mu     sync.Mutex
	closed bool
	ids    map[state.Account]int64
	leases map[int64]*Lease // held, or lost and not yet released, by account id
	hb     *heartbeat

	takeovers, refused, lost atomic.Uint64
}

var _ state.Store = (*Store)(nil)

// Open connects to the database at url, a libpq URL
// ("postgres://user@host/db?sslmode=verify-full") or key=value string
// ("host=/run/postgresql dbname=popsync"); the password may come from the
// URL, PGPASSWORD or ~/.pgpass as in psql, and the other PG* variables fill
// in what the URL leaves out. It creates or upgrades the schema (one
// daemon at a time) and refuses a database of a newer popsync
// (state.ErrNewerSchema) or one whose encoding is not UTF-8.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's parse errors may quote parts of the string, password
		// included.
		return nil, errors.New("opening state database: the url is not a libpq URL or key=value connection string")
	}
	if opts.LeaseTTL == 0 {
		opts.LeaseTTL = DefaultLeaseTTL
	}
	if opts.LeaseTTL < minLeaseTTL {
		return nil, fmt.Errorf("opening state database: lease TTL %v is shorter than %v", opts.LeaseTTL, minLeaseTTL)
	}
	if opts.OpTimeout <= 0 {
		opts.OpTimeout = defaultOpTimeout
	}
	if opts.DaemonID == "" {
		opts.DaemonID, err = newDaemonID()
		if err != nil {
			return nil, fmt.Errorf("opening state database: %w", err)
		}
	}
	if opts.migrations == nil {
		if opts.migrations, err = loadMigrations(); err != nil {
			return nil, fmt.Errorf("opening state database: %w", err)
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	if opts.noIdlePing {
		cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
	}
	cc := cfg.ConnConfig
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = defaultConnectTimeout
	}
	if _, ok := cc.RuntimeParams["application_name"]; !ok {
		cc.RuntimeParams["application_name"] = "popsync"
	}
	cc.Tracer = opts.tracer
	if opts.dial != nil {
		cc.DialFunc = opts.dial
	}
	where := fmt.Sprintf("%s@%s/%s", cc.User, net.JoinHostPort(cc.Host, fmt.Sprint(cc.Port)), cc.Database)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening state database %s: %w", where, classify(err))
	}
	s := &Store{
		pool:   pool,
		opt:    opts,
		ttl:    opts.LeaseTTL,
		where:  where,
		log:    opts.Logger.With("daemon", opts.DaemonID),
		ids:    map[state.Account]int64{},
		leases: map[int64]*Lease{},
	}
	if err := s.init(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) init(ctx context.Context) error {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var enc string
	if err := s.pool.QueryRow(ctx, `SELECT current_setting('server_encoding')`).Scan(&enc); err != nil {
		return fmt.Errorf("opening state database %s: %w", s.where, s.fail(ctx, err))
	}
	if enc != "UTF8" {
		return fmt.Errorf("opening state database %s: its encoding is %s; popsync needs a UTF8 database (CREATE DATABASE ... ENCODING 'UTF8')", s.where, enc)
	}
	if err := migrate(ctx, s.pool, s.where, s.opt.migrations); err != nil {
		return err
	}
	return nil
}

// newDaemonID returns "<hostname>-<pid>-<random>".
func newDaemonID() (string, error) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "host"
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("making a daemon id: %w", err)
	}
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b)), nil
}

// DaemonID returns the owner name of this Store's leases.
func (s *Store) DaemonID() string { return s.opt.DaemonID }

// LeaseTTL returns the lease TTL in use.
func (s *Store) LeaseTTL() time.Duration { return s.ttl }

// String describes the database (user@host:port/database, no password).
func (s *Store) String() string { return s.where }

// Close ends the leases still held (as lost, see state.Lease) and hands
// them back, ends the daemon's registration and closes the connections. Calling it again returns nil.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	leases := make([]*Lease, 0, len(s.leases))
	for _, l := range s.leases {
		leases = append(leases, l)
	}
	hb := s.hb
	s.hb = nil
	s.mu.Unlock()
	// A poller still running under one of them must commit nothing:
	// the leases end as lost, and go back to the fleet at once.
	for _, l := range leases {
		l.handBack(fmt.Errorf("lease on %s: the store was closed: %w", l.account, state.ErrLeaseLost))
	}
	var err error
	if hb != nil {
		err = hb.stop(s)
	}
	s.pool.Close()
	return err
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// opContext bounds ctx by OpTimeout.
func (s *Store) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.opt.OpTimeout)
}

// fail classifies a database error; a canceled or expired ctx is named
// as such (the error then matches context.Canceled or
// context.DeadlineExceeded), and a closed Store as state.ErrClosed.
func (s *Store) fail(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w: %w", cerr, err)
	}
	if s.isClosed() && !errors.Is(err, state.ErrClosed) {
		return fmt.Errorf("%w: %w", state.ErrClosed, err)
	}
	return classify(err)
}

// fenceCode is the SQLSTATE popsync_fence raises (schema 3).
const fenceCode = "PSL01"

// classify wraps PostgreSQL errors callers may branch on with the
// matching sentinel of package state.
func classify(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == fenceCode:
			return fmt.Errorf("%w: %w", state.ErrLeaseLost, err)
		case pe.Code == "40001", pe.Code == "40P01", pe.Code == "55P03", pe.Code == "57014",
			pe.Code == "53300", pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03",
			strings.HasPrefix(pe.Code, "08"):
			// serialization failure, deadlock, lock or statement timeout,
			// too many connections, the server shutting down or
			// starting, a broken connection: temporary.
			return fmt.Errorf("%w: %w", state.ErrBusy, err)
		case pe.Code == "XX001", pe.Code == "XX002":
			return fmt.Errorf("%w: %w", state.ErrCorrupt, err)
		case pe.Code == "25006", pe.Code == "42501":
			// a read-only transaction (a hot standby), no privilege
			return fmt.Errorf("%w: %w", state.ErrReadOnly, err)
		}
		return err
	}
	var ne net.Error
	if errors.As(err, &ne) || pgconn.SafeToRetry(err) || isConnectError(err) {
		// The server cannot be reached or went away: temporary.
		return fmt.Errorf("%w: %w", state.ErrBusy, err)
	}
	return err
}

func isConnectError(err error) bool {
	var ce *pgconn.ConnectError
	return errors.As(err, &ce)
}

// canonical validates a and returns its canonical form.
func canonical(a state.Account) (state.Account, error) {
	a, err := state.CanonicalAccount(a)
	if err != nil {
		return a, err
	}
	return a, checkText(a)
}

// checkText refuses an identity PostgreSQL cannot store as text.
func checkText(a state.Account) error {
	if !validText(a.Host) || !validText(a.User) {
		return fmt.Errorf("invalid account %s: host and user must be UTF-8 without NUL", a)
	}
	return nil
}

// validText reports whether PostgreSQL can store s as text.
func validText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// pgText makes s storable as text: invalid UTF-8 and NUL become U+FFFD.
// Names, notes and error messages are for people; the octets the server
// sent (UIDLs) are stored as bytea and never changed.
func pgText(s string) string {
	if validText(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// accountID returns the row id of a (canonical), creating the row if
// create is set; 0 if it does not exist and create is not set. A new row
// is committed on its own, before the transaction that uses it, so that
// the cached id never names a row that was rolled back.
func (s *Store) accountID(ctx context.Context, a state.Account, create bool) (int64, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, state.ErrClosed
	}
	id, ok := s.ids[a]
	s.mu.Unlock()
	if ok {
		return id, nil
	}
	const sel = `SELECT id FROM account WHERE host = $1 AND port = $2 AND username = $3`
	err := s.pool.QueryRow(ctx, sel, a.Host, a.Port, a.User).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		if !create {
			return 0, nil
		}
		err = s.pool.QueryRow(ctx,
			`INSERT INTO account (host, port, username) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING id`,
			a.Host, a.Port, a.User).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			// Another daemon added it in between.
			err = s.pool.QueryRow(ctx, sel, a.Host, a.Port, a.User).Scan(&id)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("looking up account: %w", s.fail(ctx, err))
	}
	s.mu.Lock()
	s.ids[a] = id
	s.mu.Unlock()
	return id, nil
}

// write sends the statements fill queues as one implicit transaction in
// one round trip: in a pipeline PostgreSQL runs everything up to the Sync
// as one transaction, and the first error rolls all of it back.
//
// When this Store holds a lease on the account, the transaction starts
// with the fence (popsync_fence), so it commits only if the lease is still
// held with its token; a lost lease fails the write with
// state.ErrLeaseLost without asking the database. Without a lease the
// write is refused under Options.RequireLease, and unfenced otherwise.
func (s *Store) write(ctx context.Context, id int64, fill func(b *pgx.Batch)) error {
	b := &pgx.Batch{}
	l := s.leaseOf(id)
	switch {
	case l != nil:
		if err := l.Err(); err != nil {
			s.refused.Add(1)
			return err
		}
		b.Queue(`SELECT popsync_fence($1, $2, $3)`, id, s.opt.DaemonID, l.token)
	case s.opt.RequireLease:
		s.refused.Add(1)
		return fmt.Errorf("%w: daemon %s holds no lease on the account", state.ErrLeaseLost, s.opt.DaemonID)
	}
	fill(b)
	err := s.fail(ctx, s.pool.SendBatch(ctx, b).Close())
	if l != nil && errors.Is(err, state.ErrLeaseLost) {
		s.refused.Add(1)
		l.lose(err)
	}
	return err
}

func (s *Store) leaseOf(id int64) *Lease {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leases[id]
}

// Stats are counters of this Store's fleet work, for metrics.
type Stats struct {
	LeasesHeld int    // leases held now
	Takeovers  uint64 // leases acquired from an owner whose lease had expired
	Refused    uint64 // writes refused because the lease was lost or missing
	Lost       uint64 // leases lost: expired, taken over or not renewable
}

// Stats returns the counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	held := 0
	for _, l := range s.leases {
		if l.Err() == nil {
			held++
		}
	}
	s.mu.Unlock()
	return Stats{LeasesHeld: held, Takeovers: s.takeovers.Load(), Refused: s.refused.Load(), Lost: s.lost.Load()}
}
