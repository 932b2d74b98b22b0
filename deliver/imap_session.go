package deliver

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
)

// imapSession is one connection, authenticated.
type imapSession struct {
	c       *imapclient.Client
	conn    *imapConn
	mux     *imapMux // the target's own commands' replies (see imap_multi.go)
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
	mux := newIMAPMux(nc)
	c := imapclient.New(mux, &imapclient.Options{TLSConfig: t.tlsConfig})
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
	s := &imapSession{c: c, conn: conn, mux: mux, caps: caps, uidPlus: caps.Has(imap.CapUIDPlus)}
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
