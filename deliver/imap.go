package deliver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"

	"popsync/internal/credential"
)

// Authentication of an IMAP target (IMAPOptions.Auth).
const (
	IMAPAuthAuto         = ""              // AUTH=PLAIN if offered, else the LOGIN command, else AUTH=LOGIN
	IMAPAuthPlain        = "plain"         // SASL PLAIN (RFC 4616)
	IMAPAuthLogin        = "login"         // SASL LOGIN
	IMAPAuthXOAuth2      = "xoauth2"       // Google's and Microsoft's XOAUTH2; Password returns the access token
	IMAPAuthOAuthBearer  = "oauthbearer"   // SASL OAUTHBEARER (RFC 7628); Password returns the access token
	IMAPAuthLoginCommand = "login-command" // the LOGIN command (RFC 3501 §6.2.3)
)

// Internal dates of appended messages (IMAPOptions.InternalDate).
const (
	// IMAPDateReceived dates a message by its Date field, else by its
	// first Received field, else by the server's clock.
	IMAPDateReceived = "received"
	// IMAPDateNow leaves the date to the server: the time of the APPEND.
	IMAPDateNow = "now"
)

// Stages of an IMAP delivery (DeliveryError.Stage) besides StageConnect,
// StageHello (capabilities, STARTTLS), StageAuth and StageSize.
const (
	StageAppend = "append" // the APPEND command and its tagged reply
	StageLookup = "lookup" // Delivered: EXAMINE, SEARCH, FETCH
)

// IMAPTokenHeader is the field an IMAP target puts on top of every message
// it appends; its value is the delivery's token. Delivered finds a message
// by it after a crash (see IMAP).
const IMAPTokenHeader = "X-Popsync-Id"

// ErrAppendLimit: the message is larger than the IMAP server accepts (its
// APPENDLIMIT, RFC 7889, or a NO [TOOBIG] reply), so it was not sent. It
// arrives in a temporary *DeliveryError at StageSize or StageAppend whose
// Text gives the size and the limit: the message must stay on the POP3
// server, and retrying will not help until the limit changes.
var ErrAppendLimit = errors.New("message larger than the IMAP server's APPENDLIMIT")

// IMAPOptions configure an IMAP target.
type IMAPOptions struct {
	// Addr is "host:port".
	Addr string
	// TLS is TLSImplicit (also ""), TLSStartTLS or TLSNone. With
	// TLSStartTLS the upgrade must succeed, or nothing is sent; only
	// TLSNone lets the password cross the network in the clear.
	TLS string
	// TLSConfig is used for TLS; nil means the system roots and the host
	// of Addr as the name to verify.
	TLSConfig *tls.Config
	// User is the login name; "" only for a server that greets with
	// PREAUTH.
	User string
	// Password gives the password, or the OAuth2 access token for
	// IMAPAuthXOAuth2 and IMAPAuthOAuthBearer (credential.FromTokens of
	// a token source). Its Secret is asked once per connection, and its
	// error is reported as an authentication failure; a secret the
	// server refuses (a tagged NO to the login, or the error challenge
	// of XOAUTH2 and OAUTHBEARER) is Invalidated, so an OAuth2 token is
	// not offered again. When Password also has a method Refreshes()
	// bool that says true (a token source, which replaces an invalidated
	// token), a refused token is followed by one more login, on a new
	// connection, with the next secret.
	Password credential.Credential
	// Auth is one of the IMAPAuth constants.
	Auth string
	// Mailbox receives the messages; default "INBOX". Names are UTF-8;
	// the client encodes them for the wire (RFC 3501 §5.1.3).
	Mailbox string
	// Create makes a missing mailbox (NO [TRYCREATE], RFC 3501 §6.3.11)
	// and appends again, once.
	Create bool
	// Flags are set on every appended message, e.g. `\Seen`; none by
	// default, so new mail shows as unread.
	Flags []string
	// InternalDate is IMAPDateReceived (also "") or IMAPDateNow.
	InternalDate string
	// SpoolDir holds each message while it streams in, so that APPEND
	// can announce its exact size; created (0700) when missing. It must
	// belong to this target alone: Cleanup and RemoveStale remove files
	// there.
	SpoolDir string
	// Connections is how many connections Publish spreads a batch over,
	// all to Mailbox, each authenticated once and kept for the target's
	// life; default DefaultIMAPConnections. Providers limit the
	// simultaneous connections of one account (Gmail 15, Microsoft 365
	// about 20), counting every other client of the account too.
	Connections int
	// Timeout bounds the dial and every wait for the server (each read
	// and write must make progress within it); default
	// DefaultCommandTimeout.
	Timeout time.Duration
	// Dial opens the connection; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger gets the server's BYE and [ALERT] texts at Warn and
	// reconnects at Debug; nil discards.
	Logger *slog.Logger
}

// DefaultIMAPConnections is IMAPOptions.Connections when unset. Where
// each message costs a round trip (a server without MULTIAPPEND, see
// IMAP), the rate grows with the connections:
// BenchmarkIMAPConnectionsLatency measured 30, 56, 112 and 146 messages/s
// over 1, 2, 4 and 8 against Dovecot 10 ms away without MULTIAPPEND
// (486, 987, 783 and 603 with it). A process killed in the middle of a
// batch leaves an APPEND being committed on each connection, which the
// server may finish after the next poll's Delivered looked for it; the
// fetcher waits LateCommit for those before it fetches them again, and
// with that the kill -9 loop found no message lost or appended twice in
// 1,800 kills over 4 connections.
const DefaultIMAPConnections = 4

// imapWindow is how many APPENDs one connection has in flight at most.
// A connection takes the next message of the batch only when it has room,
// so that the batch spreads over the connections by how fast each one
// goes, and not by who was first to fill its socket buffer.
const imapWindow = 32

// IMAPUID names a message in an IMAP mailbox: its UID is valid as long as
// the mailbox's UIDVALIDITY stays the same (RFC 3501 §2.3.1.1).
type IMAPUID struct {
	UIDValidity uint32
	UID         uint32
}

// IMAP is a staging target that appends messages to a mailbox of an IMAP
// server (RFC 3501 §6.3.11), exactly once across crashes:
//
//   - Begin..Write..Close streams the message to a spool file in
//     SpoolDir, with one field on top, "X-Popsync-Id: TOKEN"; bare LF
//     becomes CRLF, nothing else changes. The spool gives APPEND the exact
//     size it must announce without holding the message in memory.
//   - Prepare only checks the deliveries: the spool needs no fsync, since
//     until the fetcher records the message as delivered (after Publish)
//     the message is still on the POP3 server, and a lost spool file
//     means only that it is fetched again.
//   - Publish appends the messages of the batch over up to Connections
//     connections at once; a message counts as published only on the
//     tagged OK to its own APPEND (with UIDPLUS, RFC 4315, the reply's
//     APPENDUID is kept: IMAPDelivery.UID).
//   - Delivered, after a crash, reads the X-Popsync-Id field of the
//     mailbox's newest 1000 messages (where an interrupted batch sits,
//     whether or not the server's search index has caught up, and in
//     whatever order its connections stored it: the fetcher's batches,
//     512 messages by default, are smaller than that), then looks for the tokens not found there with
//     UID SEARCH HEADER X-Popsync-Id TOKEN (RFC 3501 §6.4.4) and confirms
//     each hit by fetching that field: no SEARCH implementation (Dovecot,
//     Gmail and Microsoft 365 match substrings or words) can make a false
//     match count. The token is 26 random base32 characters, one word to
//     every such search.
//
// The first connection is opened by the first Begin; the others by the
// first Publish whose batch has work for them, all at once. Each is
// authenticated once (a password is asked for once per target; a token
// source that refreshes, once per connection), kept for every later
// batch, and closed with LOGOUT by Close; one the server dropped between
// uses is replaced. A failure to set up the first is temporary and sticky
// (DeliveryError.TargetDown): every later Begin fails with the same
// error. A failure to set up another (a server's limit on connections per
// account) is logged, and the target goes on with those it has and dials
// no more.
//
// Where the server offers MULTIAPPEND (RFC 3502) and LITERAL+ (RFC 7888),
// as Dovecot and Cyrus do, Publish sends the batch in commands of many
// messages each (see imap_multi.go): one per connection for a small
// batch, up to 64 messages or 16 MiB for a large one, up to 4 commands
// in flight per connection. The server stores each command's messages
// in one transaction, all or none; Dovecot then spends about a seventh
// of the CPU per message. Elsewhere (Gmail, Microsoft 365) Publish hands
// the batch out one message at a time, in order, to whichever connection
// has room: each pipelines up to 32 APPENDs, sending the next before the
// reply to the last (RFC 3501 §5.5). Either way a connection that breaks
// (a drop, a timeout) takes no more; the messages it had in flight are
// of unknown fate, and the other connections take the rest. The server
// may store the batch in any order. Several connections pay where a
// round trip per message cannot be avoided: go-imap v2 (beta.8) sends
// every literal over 4096 bytes as a synchronizing one even where
// LITERAL+ is offered, and offers no way to send it otherwise (its Append
// always waits for the continuation then); smaller ones go without. The
// connections append without selecting the mailbox: with it selected on
// each of them, every APPEND on one makes Dovecot bring the others up to
// date, and a batch cost it more CPU than without (measured: 81 s against
// 47 s for 10,000 messages over 4 connections).
//
// Server verdicts: NO [TRYCREATE] makes the mailbox when Create is set and
// appends again, once. [OVERQUOTA], [LIMIT], [INUSE], [UNAVAILABLE] and
// other codes about the server's state, BAD, dropped connections and
// timeouts are temporary. A message larger than APPENDLIMIT (RFC 7889:
// from CAPABILITY or, per mailbox, STATUS) is refused in Begin or Close
// with ErrAppendLimit without being sent. A NO without such a code
// ([CANNOT], [PARSE], none) is permanent for that message, like an SMTP
// 5xx.
type IMAP struct {
	opts      IMAPOptions
	name      string
	tlsConfig *tls.Config
	flags     []imap.Flag
	log       *slog.Logger
	spool     *spool

	// sessMu is held while the sessions are used. Within Publish, each
	// of its goroutines uses one slot of sess and no other.
	sessMu sync.Mutex
	// sess holds the connections, Connections slots; nil: none open.
	// Slot 0 is the first one, set up by Begin; it also serves Delivered
	// and CREATE.
	sess []*imapSession

	mu     sync.Mutex
	limit  int64 // the last APPENDLIMIT learnt; 0: none
	closed bool
	ready  bool // a session was set up once
	down   error
	noMore bool   // the server refused a connection besides slot 0's: dial no more of those
	secret string // the secret the last login was accepted with (see loginSecret)
	hasSec bool
	live   map[*IMAPDelivery]struct{}
}

// NewIMAP returns a target that appends to opts.Mailbox at opts.Addr. It
// creates SpoolDir but does not connect: the first Begin does.
func NewIMAP(opts IMAPOptions) (*IMAP, error) {
	if opts.Mailbox == "" {
		opts.Mailbox = "INBOX"
	}
	name := "imap " + opts.Addr + " " + opts.Mailbox
	bad := func(format string, args ...any) (*IMAP, error) {
		return nil, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...))
	}
	host, port, err := net.SplitHostPort(opts.Addr)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 1 || n > 65535 || host == "" {
		return bad(`address must be "host:port" with a port from 1 to 65535`)
	}
	switch opts.TLS {
	case "":
		opts.TLS = TLSImplicit
	case TLSImplicit, TLSStartTLS, TLSNone:
	default:
		return bad("unknown TLS mode %q", opts.TLS)
	}
	switch opts.Auth {
	case IMAPAuthAuto, IMAPAuthPlain, IMAPAuthLogin, IMAPAuthXOAuth2, IMAPAuthOAuthBearer, IMAPAuthLoginCommand:
	default:
		return bad("unknown authentication %q", opts.Auth)
	}
	if opts.User != "" && opts.Password == nil {
		return bad("a user but no password source")
	}
	if strings.ContainsAny(opts.User, "\x00\r\n") {
		return bad("user contains a NUL or a line break")
	}
	switch opts.InternalDate {
	case "":
		opts.InternalDate = IMAPDateReceived
	case IMAPDateReceived, IMAPDateNow:
	default:
		return bad("unknown internal_date %q", opts.InternalDate)
	}
	if strings.ContainsAny(opts.Mailbox, "\x00\r\n*%") {
		return bad("mailbox name %q contains a NUL, a line break or a wildcard", opts.Mailbox)
	}
	t := &IMAP{opts: opts, name: name, live: make(map[*IMAPDelivery]struct{})}
	for _, f := range opts.Flags {
		if !validFlag(f) {
			return bad("bad flag %q", f)
		}
		if strings.EqualFold(f, `\Recent`) {
			return bad(`flag \Recent cannot be set (RFC 3501 §2.3.2)`)
		}
		t.flags = append(t.flags, imap.Flag(f))
	}
	if opts.SpoolDir == "" {
		return bad("no spool directory")
	}
	sp, err := openSpool(opts.SpoolDir)
	if err != nil {
		return bad("%v", err)
	}
	t.spool = sp
	if t.opts.Timeout <= 0 {
		t.opts.Timeout = DefaultCommandTimeout
	}
	if t.opts.Connections <= 0 {
		t.opts.Connections = DefaultIMAPConnections
	}
	t.sess = make([]*imapSession, t.opts.Connections)
	if t.opts.Dial == nil {
		d := &net.Dialer{}
		t.opts.Dial = d.DialContext
	}
	t.log = opts.Logger
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	t.log = t.log.With("target", t.name)
	if opts.TLS != TLSNone {
		t.tlsConfig = clientTLS(opts.TLSConfig, host)
	}
	return t, nil
}

// validFlag accepts a system flag (`\Seen`) or a keyword: an atom (RFC
// 3501 §9, flag-keyword) without the characters an atom may not hold.
func validFlag(f string) bool {
	a := strings.TrimPrefix(f, `\`)
	if a == "" {
		return false
	}
	for i := 0; i < len(a); i++ {
		c := a[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`(){%*"\]`, c) >= 0 {
			return false
		}
	}
	return true
}

// SetLogger replaces the logger of IMAPOptions.Logger; call it before
// the target is used.
func (t *IMAP) SetLogger(l *slog.Logger) {
	if l != nil {
		t.log = l.With("target", t.name)
	}
}

// String names the target, e.g. "imap imap.example.net:993 INBOX".
func (t *IMAP) String() string { return t.name }

// LateCommit is how long after an APPEND whose literal the server
// received the message may still appear in the mailbox although nobody
// waits for its answer any more (the client was killed, or its
// connection broke): the server goes on storing it. Delivered answering
// "not found" within that time does not mean the message will not
// arrive. The bound is the target's Timeout, the longest this target
// ever waits for the server to answer a command: a server slower than
// that to commit an APPEND already fails the target's live deliveries.
// The fetcher leaves such a message alone until then (neither fetched
// again nor deleted) and looks again.
func (t *IMAP) LateCommit() time.Duration { return t.opts.Timeout }

// Begin connects when the target never had a connection (so a server
// that cannot be reached or logged in to fails the first message, not the
// batch's end), then opens the spool file. A Meta.Size over the server's
// APPENDLIMIT fails at once with ErrAppendLimit.
func (t *IMAP) Begin(ctx context.Context, m Meta) (Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: beginning delivery: %w", t.name, err)
	}
	t.mu.Lock()
	ready, down := t.ready, t.down
	t.mu.Unlock()
	if down != nil {
		return nil, down
	}
	if !ready {
		// Later Begins do not wait for the session: they may run
		// while another batch is being published over it.
		t.sessMu.Lock()
		_, err := t.session(ctx, 0)
		t.sessMu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	if limit := t.appendLimit(); limit > 0 && m.Size > limit {
		return nil, tooLarge(t, StageSize, m.Size, limit)
	}
	d, err := t.spool.create(t)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.name, err)
	}
	d.meta = m
	t.mu.Lock()
	closed := t.closed
	if !closed {
		t.live[d] = struct{}{}
	}
	t.mu.Unlock()
	if closed {
		d.Abort()
		return nil, fmt.Errorf("%s: beginning delivery: %w", t.name, ErrClosed)
	}
	return d, nil
}

func (t *IMAP) forget(d *IMAPDelivery) {
	t.mu.Lock()
	delete(t.live, d)
	t.mu.Unlock()
}

// own checks that every delivery of ds was begun by t and appears once.
func (t *IMAP) own(ds []Delivery, doing string) ([]*IMAPDelivery, error) {
	out := make([]*IMAPDelivery, len(ds))
	seen := make(map[*IMAPDelivery]bool, len(ds))
	for i, d := range ds {
		id, ok := d.(*IMAPDelivery)
		if !ok || id.t != t {
			return nil, fmt.Errorf("%s: %s delivery %d of the batch: %w", t.name, doing, i, ErrForeign)
		}
		if seen[id] {
			return nil, fmt.Errorf("%s: %s %s: listed twice: %w", t.name, doing, id.token, ErrState)
		}
		seen[id] = true
		out[i] = id
	}
	return out, nil
}

// Prepare checks that every delivery of ds is closed. It syncs nothing:
// the spool file only has to outlive this process until Publish, and if
// it does not, the message is still on the POP3 server (the fetcher
// records it as delivered only after Publish) and is fetched again.
func (t *IMAP) Prepare(ctx context.Context, ds []Delivery) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: preparing: %w", t.name, err)
	}
	ids, err := t.own(ds, "preparing")
	if err != nil {
		return err
	}
	for _, d := range ids {
		if d.state != stateClosed && d.state != statePrepared {
			return fmt.Errorf("%s: preparing %s: %s: %w", t.name, d.token, d.state, ErrState)
		}
	}
	for _, d := range ids {
		d.state = statePrepared
	}
	return nil
}

// Cleanup removes the spool files of these tokens.
func (t *IMAP) Cleanup(ctx context.Context, tokens []string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: cleaning up: %w", t.name, err)
	}
	for _, tok := range tokens {
		if !validIMAPToken(tok) {
			return fmt.Errorf("%s: cleaning up %q: %w", t.name, tok, ErrBadToken)
		}
	}
	var errs []error
	for _, tok := range tokens {
		if err := t.spool.remove(tok); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t.name, err))
		}
	}
	return errors.Join(errs...)
}

// RemoveStale removes spool files that a popsync process that is gone
// left behind (killed while a message streamed in, before an intent was
// recorded).
func (t *IMAP) RemoveStale(ctx context.Context) (int, error) {
	n, err := t.spool.removeStale(ctx)
	if err != nil {
		err = fmt.Errorf("%s: %w", t.name, err)
	}
	return n, err
}

// Close aborts the deliveries that were begun and not published, logs
// out of every connection and refuses further deliveries.
func (t *IMAP) Close() error {
	t.mu.Lock()
	t.closed = true
	live := make([]*IMAPDelivery, 0, len(t.live))
	for d := range t.live {
		live = append(live, d)
	}
	t.mu.Unlock()
	var errs []error
	for _, d := range live {
		if err := d.Abort(); err != nil {
			errs = append(errs, err)
		}
	}
	t.sessMu.Lock()
	sess := slices.Clone(t.sess)
	clear(t.sess)
	t.sessMu.Unlock()
	// Every connection logs out at once, each within the timeout.
	var wg sync.WaitGroup
	for i, s := range sess {
		if s == nil {
			continue
		}
		wg.Go(func() {
			if err := s.logout(); err != nil {
				t.log.Debug("LOGOUT", "connection", i+1, "error", err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
