package deliver

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"

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
// each message costs a round trip (see IMAP), the rate grows with the
// connections: BenchmarkIMAPConnectionsLatency measured 35, 62 and 116
// messages/s over 1, 2 and 4 against Dovecot 10 ms away. A process
// killed in the middle of a batch leaves an APPEND being committed on
// each connection, which the server may finish after the next poll's
// Delivered looked for it; the fetcher waits LateCommit for those
// before it fetches them again, and with that the kill -9 loop found no
// message lost or appended twice in 1,200 kills over 4 connections.
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
// Publish hands the batch out one message at a time, in order, to
// whichever connection has room: each pipelines up to 32 APPENDs, sending
// the next before the reply to the last (RFC 3501 §5.5). A connection
// that breaks (a drop, a timeout) takes no more; the messages it had in
// flight are of unknown fate, and the other connections take the rest.
// The server may store the batch in any order. Several connections pay
// where a server handles one connection's commands in sequence and syncs
// each APPEND on its own (Dovecot), and where a round trip per message
// cannot be avoided: go-imap v2 (beta.8) sends every literal over 4096
// bytes as a synchronizing one even where LITERAL+ (RFC 7888) is offered,
// and offers no way to send it otherwise (its Append always waits for the
// continuation then); smaller ones go without. MULTIAPPEND (RFC 3502),
// one commit for a whole batch, is not used: the library lacks it. The
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

// imapSession is one connection, authenticated.
type imapSession struct {
	c       *imapclient.Client
	conn    *imapConn
	caps    imap.CapSet
	uidPlus bool
}

// alive reports whether the connection still stands, as far as the
// client knows without asking. (go-imap's State lags behind the replies
// it has delivered, so it is not asked.)
func (s *imapSession) alive() bool {
	select {
	case <-s.c.Closed():
		return false
	default:
		return true
	}
}

// logout ends the session politely, within the target's timeout.
func (s *imapSession) logout() error {
	s.conn.begin()
	err := s.c.Logout().Wait()
	s.conn.end()
	s.c.Close()
	return err
}

// failure wraps err at stage as a *DeliveryError: temporary unless the
// server refused the message itself (see IMAP).
func (t *IMAP) failure(stage string, err error) *DeliveryError {
	de := &DeliveryError{Target: t.name, Stage: stage, Temporary: true, Err: err}
	var ie *imap.Error
	if errors.As(err, &ie) {
		de.Text = imapErrorText(ie)
		if err == error(ie) {
			// The reply is all there is to say; Text holds it.
			de.Err = errors.New("refused")
		}
		if stage == StageAppend {
			de.Temporary = !messageVerdict(ie)
			if ie.Code == imap.ResponseCodeTooBig {
				de.Temporary = true
				de.Err = ErrAppendLimit
			}
		}
	}
	return de
}

// messageVerdict reports whether a NO to APPEND judged the message rather
// than the server's state. RFC 5530 §3 codes that name a condition of the
// server, the account or the session are not: the same message may go
// through later. BAD (RFC 3501 §7.1.3) is about the command, not the
// message.
func messageVerdict(ie *imap.Error) bool {
	if ie.Type != imap.StatusResponseTypeNo {
		return false
	}
	switch ie.Code {
	case "", imap.ResponseCodeCannot, imap.ResponseCodeParse, imap.ResponseCodeBadCharset, imap.ResponseCodeUnknownCTE:
		return true
	}
	return false
}

func imapErrorText(ie *imap.Error) string {
	var b strings.Builder
	b.WriteString(string(ie.Type))
	if ie.Code != "" {
		fmt.Fprintf(&b, " [%s]", ie.Code)
	}
	if ie.Text != "" {
		b.WriteString(" ")
		b.WriteString(clean(ie.Text))
	}
	return b.String()
}

// Check connects, authenticates, looks for the mailbox and logs out,
// without appending: `popsync check --connect`. A missing mailbox is fine
// when Create is set.
func (t *IMAP) Check(ctx context.Context) error {
	s, err := t.connect(ctx)
	if err != nil {
		return err
	}
	defer s.c.Close()
	exists, err := t.mailboxExists(ctx, s)
	if err != nil {
		return t.failure(StageLookup, err)
	}
	if !exists && !t.opts.Create {
		return t.failure(StageLookup, fmt.Errorf("mailbox %q does not exist and create is off", t.opts.Mailbox))
	}
	if err := s.logout(); err != nil {
		t.log.Debug("LOGOUT", "error", err)
	}
	return nil
}

// connect opens and sets up a new session: dial, TLS or STARTTLS,
// greeting, capabilities, authentication. Its errors are temporary
// *DeliveryErrors at the session stages. A refused token of a source that
// refreshes is tried once more with the token the refresh brings.
func (t *IMAP) connect(ctx context.Context) (*imapSession, error) {
	s, err := t.connectOnce(ctx)
	r, ok := t.opts.Password.(interface{ Refreshes() bool })
	if err == nil || !ok || !r.Refreshes() || !tokenRefused(err) {
		return s, err
	}
	t.log.Info("the IMAP server refused the oauth2 access token; refreshing it once", "error", err.Error())
	return t.connectOnce(ctx)
}

// tokenRefused reports whether err is the server refusing a bearer token
// at the login: the error challenge of XOAUTH2 or OAUTHBEARER (RFC 7628
// §3.2.3).
func tokenRefused(err error) bool {
	return errors.As(err, new(*xoauth2Error)) || errors.As(err, new(*sasl.OAuthBearerError))
}

// connectOnce is one attempt of connect.
func (t *IMAP) connectOnce(ctx context.Context) (*imapSession, error) {
	dctx, cancel := context.WithTimeout(ctx, t.opts.Timeout)
	raw, err := t.opts.Dial(dctx, "tcp", t.opts.Addr)
	cancel()
	if err != nil {
		return nil, t.failure(StageConnect, ctxErr(ctx, err))
	}
	conn := newIMAPConn(raw, t.opts.Timeout)
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	s, err := t.setup(ctx, conn)
	if !stop() && err == nil {
		s.c.Close()
		err = t.failure(StageConnect, ctx.Err())
	}
	if err != nil {
		raw.Close()
		var de *DeliveryError
		if errors.As(err, &de) {
			de.Err = ctxErr(ctx, de.Err)
		}
		return nil, err
	}
	conn.end()
	return s, nil
}

func (t *IMAP) setup(ctx context.Context, conn *imapConn) (*imapSession, error) {
	obs := &imapObserver{log: t.log}
	var nc net.Conn
	switch t.opts.TLS {
	case TLSImplicit:
		tc := tls.Client(conn, t.tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, t.failure(StageConnect, fmt.Errorf("TLS handshake: %w", err))
		}
		nc = &observedConn{Conn: tc, obs: obs}
	case TLSStartTLS:
		tc, err := startTLS(ctx, conn, t.tlsConfig)
		if err != nil {
			return nil, t.failure(StageHello, fmt.Errorf("STARTTLS: %w", err))
		}
		oc := &observedConn{Conn: tc, obs: obs}
		nc = &prefixConn{Conn: oc, r: io.MultiReader(strings.NewReader(syntheticGreeting), oc)}
	default:
		nc = &observedConn{Conn: conn, obs: obs}
	}
	c := imapclient.New(nc, &imapclient.Options{TLSConfig: t.tlsConfig})
	fail := func(stage string, err error) (*imapSession, error) {
		c.Close()
		return nil, t.failure(stage, err)
	}
	if err := c.WaitGreeting(); err != nil {
		return fail(StageConnect, fmt.Errorf("greeting: %w", err))
	}
	caps := c.Caps()
	if caps == nil {
		return fail(StageHello, errors.New("no capabilities from the server"))
	}
	if !caps.Has(imap.CapIMAP4rev1) && !caps.Has(imap.CapIMAP4rev2) {
		return fail(StageHello, errors.New("server does not speak IMAP4rev1 or IMAP4rev2"))
	}
	if c.State() == imap.ConnStateNotAuthenticated {
		if err := t.authenticate(ctx, c, caps); err != nil {
			return fail(StageAuth, err)
		}
		// RFC 3501 §6.2.2: capabilities may change with the login.
		// Asked for explicitly: go-imap's cached set may still be the
		// one from before.
		var err error
		if caps, err = c.Capability().Wait(); err != nil {
			return fail(StageHello, fmt.Errorf("CAPABILITY after logging in: %w", err))
		}
	}
	s := &imapSession{c: c, conn: conn, caps: caps, uidPlus: caps.Has(imap.CapUIDPlus)}
	if err := t.learnLimit(s); err != nil {
		return fail(StageHello, err)
	}
	return s, nil
}

// authenticate logs in with the configured mechanism.
func (t *IMAP) authenticate(ctx context.Context, c *imapclient.Client, caps imap.CapSet) error {
	if t.opts.User == "" {
		return errors.New("server wants a login and no user is configured")
	}
	mech := t.opts.Auth
	if mech == IMAPAuthAuto {
		switch {
		case caps.Has(imap.AuthCap(sasl.Plain)):
			mech = IMAPAuthPlain
		case !caps.Has(imap.CapLoginDisabled):
			mech = IMAPAuthLoginCommand
		case caps.Has(imap.AuthCap(sasl.Login)):
			mech = IMAPAuthLogin
		default:
			return errors.New("server offers neither AUTH=PLAIN, AUTH=LOGIN nor the LOGIN command")
		}
	}
	saslName := map[string]string{
		IMAPAuthPlain: sasl.Plain, IMAPAuthLogin: sasl.Login,
		IMAPAuthXOAuth2: "XOAUTH2", IMAPAuthOAuthBearer: sasl.OAuthBearer,
	}[mech]
	if mech == IMAPAuthLoginCommand && caps.Has(imap.CapLoginDisabled) {
		// RFC 3501 §6.2.3: LOGINDISABLED forbids the LOGIN command.
		return errors.New("server forbids the LOGIN command here (LOGINDISABLED)")
	}
	if saslName != "" && !caps.Has(imap.AuthCap(saslName)) {
		return fmt.Errorf("server does not offer AUTH=%s", saslName)
	}
	secret, err := t.loginSecret(ctx)
	if err != nil {
		return fmt.Errorf("getting the password: %w", err)
	}
	err = t.login(c, mech, secret)
	var ie *imap.Error
	if errors.As(err, &ie) && ie.Type == imap.StatusResponseTypeNo && !temporaryAuth(ie) || tokenRefused(err) {
		t.opts.Password.Invalidate(secret)
		t.keepSecret("", false)
	} else if err == nil {
		t.keepSecret(secret, true)
	}
	return err
}

// loginSecret returns the secret for a login: the one the last login was
// accepted with, so that a password_command runs once for all the
// connections of a target rather than once for each; but always a fresh
// one from a source that refreshes (an OAuth2 token source keeps its
// token itself and knows when it expires).
func (t *IMAP) loginSecret(ctx context.Context) (string, error) {
	if r, ok := t.opts.Password.(interface{ Refreshes() bool }); !ok || !r.Refreshes() {
		t.mu.Lock()
		secret, ok := t.secret, t.hasSec
		t.mu.Unlock()
		if ok {
			return secret, nil
		}
	}
	return t.opts.Password.Secret(ctx)
}

// keepSecret remembers the secret of an accepted login, or forgets it.
func (t *IMAP) keepSecret(secret string, ok bool) {
	t.mu.Lock()
	t.secret, t.hasSec = secret, ok
	t.mu.Unlock()
}

// temporaryAuth reports whether a NO to a login names a condition of the
// server (RFC 5530 §3: UNAVAILABLE, INUSE, ...) rather than refused
// credentials.
func temporaryAuth(ie *imap.Error) bool {
	switch ie.Code {
	case imap.ResponseCodeUnavailable, imap.ResponseCodeInUse, imap.ResponseCodeLimit, imap.ResponseCodeServerBug:
		return true
	}
	return false
}

// login runs the mechanism mech with secret.
func (t *IMAP) login(c *imapclient.Client, mech, secret string) error {
	var sc sasl.Client
	switch mech {
	case IMAPAuthPlain:
		sc = sasl.NewPlainClient("", t.opts.User, secret)
	case IMAPAuthLogin:
		sc = sasl.NewLoginClient(t.opts.User, secret)
	case IMAPAuthXOAuth2:
		sc = &xoauth2Client{user: t.opts.User, token: secret}
	case IMAPAuthOAuthBearer:
		sc = sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: t.opts.User, Token: secret})
	case IMAPAuthLoginCommand:
		return c.Login(t.opts.User, secret).Wait()
	}
	return c.Authenticate(sc)
}

// xoauth2Client is the XOAUTH2 mechanism of Google and Microsoft: one
// message, "user=U^Aauth=Bearer T^A^A". A failure comes as a challenge
// holding a JSON error. The client would answer it with an empty line,
// but the IMAP client library writes "=" there (the SASL-IR form of RFC
// 4959 §3, not a continuation's empty line of RFC 3501 §6.2.2), which
// Dovecot answers with BAD; so the exchange ends at the challenge, as
// OAUTHBEARER's does (RFC 7628 §3.2.3), with an *xoauth2Error, and the
// connection is dropped.
type xoauth2Client struct{ user, token string }

func (c *xoauth2Client) Start() (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + c.user + "\x01auth=Bearer " + c.token + "\x01\x01"), nil
}

func (c *xoauth2Client) Next(challenge []byte) ([]byte, error) {
	var m map[string]any
	if json.Unmarshal(challenge, &m) != nil || m["status"] == nil {
		return nil, &xoauth2Error{Status: "unreadable"}
	}
	return nil, &xoauth2Error{Status: fmt.Sprint(m["status"])}
}

// xoauth2Error is the server's refusal of an XOAUTH2 token: the status of
// its JSON error challenge (for example "401" or "invalid_token").
type xoauth2Error struct{ Status string }

func (e *xoauth2Error) Error() string {
	return fmt.Sprintf("the server refused the XOAUTH2 token (status %s)", e.Status)
}

// learnLimit reads the APPENDLIMIT: a number in CAPABILITY applies to
// every mailbox; a bare APPENDLIMIT means each mailbox has its own, asked
// for with STATUS (RFC 7889 §3, §4). A mailbox that does not exist yet has
// none to ask for.
func (t *IMAP) learnLimit(s *imapSession) error {
	lim, ok := s.caps.AppendLimit()
	var limit int64
	switch {
	case !ok:
	case lim != nil:
		limit = int64(*lim)
	default:
		s.conn.begin()
		data, err := s.c.Status(t.opts.Mailbox, &imap.StatusOptions{AppendLimit: true}).Wait()
		s.conn.end()
		var ie *imap.Error
		switch {
		case errors.As(err, &ie):
			// Missing mailbox: learnt again after CREATE.
		case err != nil:
			return fmt.Errorf("STATUS %s (APPENDLIMIT): %w", t.opts.Mailbox, err)
		case data.AppendLimit != nil:
			limit = int64(*data.AppendLimit)
		}
	}
	t.mu.Lock()
	t.limit = limit
	t.mu.Unlock()
	return nil
}

// session returns the live session of slot i, or dials a new one. The
// caller holds sessMu, or is the one goroutine of Publish that uses slot
// i. A failure to set up slot 0 marks the target down; a failure to set up
// another slot only makes the target dial no more of those (the server
// may limit connections per account), and the batch goes on over the
// connections it has.
func (t *IMAP) session(ctx context.Context, i int) (*imapSession, error) {
	t.mu.Lock()
	closed, down, noMore := t.closed, t.down, t.noMore
	t.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("%s: %w", t.name, ErrClosed)
	}
	if down != nil {
		return nil, down
	}
	if s := t.sess[i]; s != nil {
		if s.alive() {
			return s, nil
		}
		s.c.Close()
		t.sess[i] = nil
		t.log.Debug("connection ended between uses; reconnecting", "connection", i+1)
	}
	if i > 0 && noMore {
		return nil, errNoMoreConns
	}
	s, err := t.connect(ctx)
	if err != nil {
		if ctx.Err() == nil {
			t.mu.Lock()
			switch {
			case i > 0:
				if !t.noMore {
					t.log.Warn("the IMAP server refused one more connection; going on with those open", "connection", i+1, "error", err.Error())
				}
				t.noMore = true
			case t.down == nil:
				t.down = err
			}
			t.mu.Unlock()
		}
		return nil, err
	}
	t.sess[i] = s
	t.mu.Lock()
	t.ready = true
	t.mu.Unlock()
	return s, nil
}

// errNoMoreConns: a connection besides the first is not dialed, since the
// server refused one before.
var errNoMoreConns = errors.New("no more connections: the server refused one")

// dropSession closes the session of slot i after an error that left its
// state unknown (a timeout, a drop, a cancelled context). The caller is
// as for session.
func (t *IMAP) dropSession(i int) {
	if t.sess[i] != nil {
		t.sess[i].c.Close()
		t.sess[i] = nil
	}
}

// appendLimit returns the last APPENDLIMIT learnt; 0 means none.
func (t *IMAP) appendLimit() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.limit
}

func tooLarge(t *IMAP, stage string, size, limit int64) *DeliveryError {
	return &DeliveryError{Target: t.name, Stage: stage, Temporary: true, Err: ErrAppendLimit,
		Text: fmt.Sprintf("message of %d bytes, server's APPENDLIMIT is %d", size, limit)}
}

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

// Publish appends the prepared deliveries ds, spread over the target's
// connections and pipelined on each (see IMAP). When some fail, the error
// is a *PublishError listing those that were appended, and each
// delivery's Err says what happened to it. A delivery the server refused
// may be published again; one whose APPEND got no tagged reply (a drop, a
// timeout) is not reported as published although the server may have
// stored it, and cannot be published again (ErrState): the caller
// resolves it through Delivered, with the token it recorded. ctx is
// checked before the first APPEND; its end later drops the connections.
func (t *IMAP) Publish(ctx context.Context, ds []Delivery) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: publishing: %w", t.name, err)
	}
	ids, err := t.own(ds, "publishing")
	if err != nil {
		return err
	}
	for _, d := range ids {
		if d.state != statePrepared {
			return fmt.Errorf("%s: publishing %s: %s: %w", t.name, d.token, d.state, ErrState)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	t.sessMu.Lock()
	defer t.sessMu.Unlock()
	errs := t.appendBatch(ctx, ids)
	var retry []int
	for i, err := range errs {
		var ie *imap.Error
		if errors.As(err, &ie) && ie.Code == imap.ResponseCodeTryCreate {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 && t.opts.Create {
		if cerr := t.create(ctx); cerr != nil {
			for _, i := range retry {
				errs[i] = fmt.Errorf("creating mailbox %q after TRYCREATE: %w", t.opts.Mailbox, cerr)
			}
		} else {
			again := make([]*IMAPDelivery, len(retry))
			for k, i := range retry {
				again[k] = ids[i]
			}
			for k, err := range t.appendBatch(ctx, again) {
				errs[retry[k]] = err
			}
		}
	}
	var published []int
	var fails []error
	for i, d := range ids {
		if errs[i] == nil {
			d.published()
			published = append(published, i)
			continue
		}
		var de *DeliveryError
		if !errors.As(errs[i], &de) {
			// (A *DeliveryError already is one from setting up the
			// session, which keeps its stage.)
			de = t.failure(StageAppend, ctxErr(ctx, errs[i]))
		}
		de = &DeliveryError{Target: de.Target, Stage: de.Stage, Temporary: de.Temporary, Text: de.Text, Err: de.Err}
		what := "message"
		if d.sent && !errors.As(errs[i], new(*imap.Error)) {
			// The APPEND went out and no verdict came back: the
			// server may have stored the message. Publishing it again
			// could store it twice; only Delivered can tell.
			d.state = stateBroken
			what = "message of unknown fate"
		}
		de.Err = fmt.Errorf("%s %s (uidl %s, %d bytes): %w", what, d.token, d.meta.UIDL, d.size, de.Err)
		d.err = de
		fails = append(fails, de)
	}
	if len(fails) > 0 {
		return &PublishError{Published: published, Err: errors.Join(fails...)}
	}
	return nil
}

// create makes the mailbox after NO [TRYCREATE], over the first
// connection; one that exists already (a race with another client) is
// fine.
func (t *IMAP) create(ctx context.Context) error {
	s, err := t.session(ctx, 0)
	if err != nil {
		return err
	}
	s.conn.begin()
	stop := context.AfterFunc(ctx, func() { s.conn.Conn.Close() })
	err = s.c.Create(t.opts.Mailbox, nil).Wait()
	stop()
	s.conn.end()
	var ie *imap.Error
	if errors.As(err, &ie) && ie.Code == imap.ResponseCodeAlreadyExists {
		err = nil
	}
	if err != nil {
		if !errors.As(err, &ie) {
			t.dropSession(0)
		}
		return err
	}
	t.log.Info("created mailbox", "mailbox", t.opts.Mailbox)
	return t.learnLimit(s)
}

// copyBufPool holds the buffers that copy spool files into APPEND literals.
var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// appendQueue hands the deliveries of a batch to the connections, one at
// a time, in order.
type appendQueue struct {
	ds []*IMAPDelivery

	mu     sync.Mutex
	next   int
	halted error // set: hand out no more; the rest get this error
}

// take returns the index of the next delivery to send, or false when
// none is left or the queue was halted.
func (q *appendQueue) take() (int, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.halted != nil || q.next == len(q.ds) {
		return 0, false
	}
	q.next++
	return q.next - 1, true
}

// empty reports whether nothing more will be handed out.
func (q *appendQueue) empty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.halted != nil || q.next == len(q.ds)
}

// halt stops handing out deliveries: those not taken yet get err.
func (q *appendQueue) halt(err error) {
	q.mu.Lock()
	if q.halted == nil {
		q.halted = err
	}
	q.mu.Unlock()
}

// appendBatch appends ds over up to Connections connections at once, one
// goroutine each, and returns one error per delivery: nil for a tagged
// OK. Each connection takes the next delivery when it has room in its
// window, so a slow connection (or one syncing a large message) holds up
// no other. A connection that breaks takes no more; the others go on with
// the rest. The first NO [TRYCREATE] halts the batch: the deliveries not
// sent yet get the same error, to go again once the mailbox exists.
func (t *IMAP) appendBatch(ctx context.Context, ds []*IMAPDelivery) []error {
	errs := make([]error, len(ds))
	for _, d := range ds {
		d.sent = false
	}
	q := &appendQueue{ds: ds}
	width := min(len(t.sess), len(ds))
	stops := make([]error, width)
	var wg sync.WaitGroup
	for i := range width {
		wg.Go(func() { stops[i] = t.appendOver(ctx, i, q, errs) })
	}
	wg.Wait()
	if q.next == len(ds) && q.halted == nil {
		return errs
	}
	// Deliveries nobody took: halted by TRYCREATE, or every connection
	// broke or could not be set up.
	why := q.halted
	if why == nil {
		t.mu.Lock()
		why = t.down
		t.mu.Unlock()
	}
	if why == nil {
		why = stops[0]
		for _, err := range stops {
			if err != nil && !errors.Is(err, errNoMoreConns) {
				why = err
				break
			}
		}
		why = fmt.Errorf("not sent: every connection broke on an earlier message: %w", why)
	}
	for i := q.next; i < len(ds); i++ {
		errs[i] = why
	}
	return errs
}

// appendOver sends deliveries of q over the connection of slot i until q
// is empty or the connection breaks, reconnecting when the connection was
// lost to a refused synchronizing literal (go-imap closes the connection
// then, though the refusal was a clean answer). It returns why it stopped
// before q was empty: a session that could not be set up or a broken
// connection; nil otherwise.
func (t *IMAP) appendOver(ctx context.Context, i int, q *appendQueue, errs []error) error {
	for !q.empty() {
		s, err := t.session(ctx, i)
		if err != nil {
			return err
		}
		refused, err := t.appendOn(ctx, s, i, q, errs)
		if !refused {
			return err
		}
	}
	return nil
}

// appendOn sends one APPEND per delivery it takes from q, without waiting
// for the replies to those before (RFC 3501 §5.5 allows any commands in
// flight that do not depend on each other), up to imapWindow of them, and
// collects the replies into errs. It stops when q is empty or the
// connection is lost; then refused tells whether that was because the
// server refused a synchronizing literal (RFC 3501 §7.5), which leaves the
// rest worth sending on a new connection, and err says what broke.
func (t *IMAP) appendOn(ctx context.Context, s *imapSession, slot int, q *appendQueue, errs []error) (refused bool, broke error) {
	type inFlight struct {
		i   int
		cmd *imapclient.AppendCommand
	}
	var flight []inFlight
	s.conn.begin()
	defer s.conn.end()
	stop := context.AfterFunc(ctx, func() { s.conn.Conn.Close() })
	defer stop()
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	collect := func(f inFlight) {
		data, err := f.cmd.Wait()
		if errs[f.i] == nil {
			errs[f.i] = err
		}
		if errs[f.i] == nil {
			if data.UIDValidity != 0 && data.UID != 0 {
				q.ds[f.i].uid = IMAPUID{UIDValidity: data.UIDValidity, UID: uint32(data.UID)}
			}
			return
		}
		var ie *imap.Error
		switch {
		case !errors.As(errs[f.i], &ie):
			if broke == nil {
				broke = errs[f.i]
			}
		case ie.Code == imap.ResponseCodeTryCreate:
			q.halt(errs[f.i])
		}
	}
	for broke == nil {
		if len(flight) == imapWindow {
			collect(flight[0])
			flight = flight[1:]
			continue
		}
		k, ok := q.take()
		if !ok {
			break
		}
		d := q.ds[k]
		f, err := d.open()
		if err != nil {
			errs[k] = err
			continue
		}
		cmd := s.c.Append(t.opts.Mailbox, d.size, &imap.AppendOptions{Flags: t.flags, Time: d.date})
		d.sent = true
		n, cerr := io.CopyBuffer(cmd, onlyReader{f}, *bp)
		f.Close()
		if cerr == nil && n != d.size {
			cerr = fmt.Errorf("spool file %s holds %d bytes, not %d", d.path, n, d.size)
		}
		closeErr := cmd.Close()
		flight = append(flight, inFlight{k, cmd})
		if cerr == nil && closeErr == nil {
			continue
		}
		// Either way the connection is gone: go-imap drops it after a
		// refused literal, and a literal not sent whole leaves the
		// server waiting for octets.
		refused = errors.As(cerr, new(*imap.Error))
		if !refused {
			errs[k] = errors.Join(cerr, closeErr)
			s.conn.Conn.Close()
		}
		broke = fmt.Errorf("connection %d: APPEND: %w", slot+1, errors.Join(cerr, closeErr))
	}
	for _, f := range flight {
		collect(f)
	}
	if broke != nil {
		t.dropSession(slot)
	}
	return refused, broke
}

// onlyReader hides a file's WriterTo, so that the copy uses the pooled
// buffer.
type onlyReader struct{ io.Reader }

// Delivered reports which tokens' messages are in the mailbox (see IMAP).
// A mailbox that does not exist holds none.
func (t *IMAP) Delivered(ctx context.Context, tokens []string) (map[string]bool, error) {
	uids, err := t.DeliveredUIDs(ctx, tokens)
	if err != nil {
		return nil, err
	}
	found := make(map[string]bool, len(tokens))
	for _, tok := range tokens {
		_, found[tok] = uids[tok]
	}
	return found, nil
}

// DeliveredUIDs is Delivered with where each found message is now: its
// UID under the mailbox's current UIDVALIDITY. If the mailbox was
// recreated or renumbered since the APPEND (a UIDVALIDITY other than the
// APPENDUID's), the message is still found by its token, under its new
// UID; an APPENDUID recorded earlier no longer names it. A token with
// more than one message (a copy made by a user) reports the lowest UID.
func (t *IMAP) DeliveredUIDs(ctx context.Context, tokens []string) (map[string]IMAPUID, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: looking for delivered messages: %w", t.name, err)
	}
	for _, tok := range tokens {
		if !validIMAPToken(tok) {
			return nil, fmt.Errorf("%s: looking for %q: %w", t.name, tok, ErrBadToken)
		}
	}
	out := make(map[string]IMAPUID)
	if len(tokens) == 0 {
		return out, nil
	}
	t.sessMu.Lock()
	defer t.sessMu.Unlock()
	s, err := t.session(ctx, 0)
	if err != nil {
		return nil, err
	}
	s.conn.begin()
	defer s.conn.end()
	stop := context.AfterFunc(ctx, func() { s.conn.Conn.Close() })
	defer stop()
	err = t.lookup(s, tokens, out)
	if err != nil {
		if !errors.As(err, new(*imap.Error)) {
			t.dropSession(0)
		}
		return nil, t.failure(StageLookup, ctxErr(ctx, err))
	}
	return out, nil
}

// lookup runs EXAMINE, a FETCH of the token field of the newest
// messages, one UID SEARCH HEADER per token not found there (pipelined),
// one UID FETCH of the token field for every hit, and UNSELECT.
func (t *IMAP) lookup(s *imapSession, tokens []string, out map[string]IMAPUID) error {
	sel, err := s.c.Select(t.opts.Mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		var ie *imap.Error
		if !errors.As(err, &ie) {
			return fmt.Errorf("EXAMINE %s: %w", t.opts.Mailbox, err)
		}
		exists, lerr := t.mailboxExists(context.Background(), s)
		if lerr != nil {
			return lerr
		}
		if !exists {
			return nil
		}
		return fmt.Errorf("EXAMINE %s: %w", t.opts.Mailbox, err)
	}
	defer t.unselect(s)
	if sel.NumMessages == 0 {
		return nil
	}
	want := make(map[string]bool, len(tokens))
	for _, tok := range tokens {
		want[tok] = true
	}
	section := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{IMAPTokenHeader}, Peek: true}
	record := func(set imap.NumSet) error {
		msgs, err := s.c.Fetch(set, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{section}}).Collect()
		if err != nil {
			return fmt.Errorf("FETCH %s: %w", IMAPTokenHeader, err)
		}
		for _, m := range msgs {
			v, ok := field(m.FindBodySection(section), strings.ToLower(IMAPTokenHeader))
			tok := strings.TrimSpace(v)
			if !ok || !want[tok] || m.UID == 0 {
				continue
			}
			if prev, seen := out[tok]; !seen || uint32(m.UID) < prev.UID {
				out[tok] = IMAPUID{UIDValidity: sel.UIDValidity, UID: uint32(m.UID)}
			}
		}
		return nil
	}
	// The newest messages are read directly: an interrupted batch sits at
	// the end of the mailbox, and a server's search index may not hold a
	// message yet that it has just stored (Gmail builds it afterwards).
	if imapRecentScan > 0 {
		var recent imap.SeqSet
		recent.AddRange(sel.NumMessages-min(sel.NumMessages, uint32(imapRecentScan))+1, sel.NumMessages)
		if err := record(recent); err != nil {
			return err
		}
	}
	var missing []string
	for _, tok := range tokens {
		if _, ok := out[tok]; !ok {
			missing = append(missing, tok)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	searches := make([]*imapclient.SearchCommand, len(missing))
	for i, tok := range missing {
		searches[i] = s.c.UIDSearch(&imap.SearchCriteria{
			Header: []imap.SearchCriteriaHeaderField{{Key: IMAPTokenHeader, Value: tok}},
		}, nil)
	}
	var hits imap.UIDSet
	var serr error
	for _, sc := range searches {
		data, err := sc.Wait()
		if err != nil {
			serr = errors.Join(serr, fmt.Errorf("UID SEARCH HEADER %s: %w", IMAPTokenHeader, err))
			continue
		}
		for _, uid := range data.AllUIDs() {
			hits.AddNum(uid)
		}
	}
	if serr != nil {
		return serr
	}
	if len(hits) == 0 {
		return nil
	}
	return record(hits)
}

// imapRecentScan is how many of a mailbox's newest messages Delivered
// reads the token field of before it searches (tests change it).
var imapRecentScan = 1000

// unselect leaves the mailbox: UNSELECT (RFC 3691) where offered, else
// CLOSE, which expunges nothing in a mailbox opened with EXAMINE (RFC 3501
// §6.4.2).
func (t *IMAP) unselect(s *imapSession) {
	var err error
	if s.caps.Has(imap.CapUnselect) || s.caps.Has(imap.CapIMAP4rev2) {
		err = s.c.Unselect().Wait()
	} else {
		err = s.c.UnselectAndExpunge().Wait()
	}
	if err != nil {
		t.log.Debug("leaving the mailbox", "error", err)
	}
}

// mailboxExists asks LIST whether the mailbox exists.
func (t *IMAP) mailboxExists(ctx context.Context, s *imapSession) (bool, error) {
	s.conn.begin()
	defer s.conn.end()
	list, err := s.c.List("", t.opts.Mailbox, nil).Collect()
	if err != nil {
		return false, fmt.Errorf("LIST %s: %w", t.opts.Mailbox, err)
	}
	for _, l := range list {
		for _, a := range l.Attrs {
			if a == imap.MailboxAttrNonExistent || a == imap.MailboxAttrNoSelect {
				return false, nil
			}
		}
	}
	return len(list) > 0, nil
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
