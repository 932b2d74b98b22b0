package pop3

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Mechanism names accepted by Auth (case-insensitive).
const (
	MechAuto        = "auto"
	MechUser        = "user"
	MechAPOP        = "apop"
	MechPlain       = "plain"
	MechLogin       = "login"
	MechCRAMMD5     = "cram-md5"
	MechXOAUTH2     = "xoauth2"
	MechOAUTHBEARER = "oauthbearer"
)

// Auth logs in. mech is one of the Mech constants; secret is the password,
// or the OAuth 2.0 access token for xoauth2 and oauthbearer.
//
// "auto" (or "") chooses a password mechanism from what the server offers
// (see AutoMechanism). Explicitly named SASL mechanisms are tried even when
// CAPA does not list them. user and secret must not contain CR, LF or NUL.
// Unless the caller chose SecurityNone, Auth refuses to run on a link that
// is not encrypted (ErrPlaintextAuth).
//
// A rejected login is a *Error with Command "USER", "PASS", "APOP" or
// "AUTH" and the server's response code (RFC 3206 "AUTH", "SYS/TEMP",
// "IN-USE", "LOGIN-DELAY", ...). After a successful login, CAPA is asked
// again when the server supports it, since RFC 2449 §5 lets capabilities
// such as PIPELINING or per-user EXPIRE appear only in the TRANSACTION
// state.
func (c *Client) Auth(ctx context.Context, mech, user, secret string) error {
	if err := checkArg("user name", user); err != nil {
		return err
	}
	if err := checkArg("secret", secret); err != nil {
		return err
	}
	m := strings.ToLower(strings.TrimSpace(mech))
	if m == "" || m == MechAuto {
		var err error
		if m, err = c.AutoMechanism(); err != nil {
			return err
		}
	}
	if c.tls == nil && c.opts.Security != SecurityNone {
		return ErrPlaintextAuth
	}
	if err := c.begin(ctx); err != nil {
		return err
	}
	defer c.end()
	var err error
	switch m {
	case MechUser:
		err = c.authUser(ctx, user, secret)
	case MechAPOP:
		err = c.authAPOP(ctx, user, secret)
	case MechPlain:
		err = c.sasl(ctx, "PLAIN", []byte("\x00"+user+"\x00"+secret), true, func([]byte) ([]byte, error) {
			return nil, errUnexpectedChallenge
		})
	case MechLogin:
		// LOGIN (draft-murchison-sasl-login) has no initial response: the
		// server asks for the user name, then the password.
		step := 0
		err = c.sasl(ctx, "LOGIN", nil, false, func([]byte) ([]byte, error) {
			step++
			switch step {
			case 1:
				return []byte(user), nil
			case 2:
				return []byte(secret), nil
			}
			return nil, errUnexpectedChallenge
		})
	case MechCRAMMD5:
		// RFC 2195: the response is the user name, a space and the hex
		// HMAC-MD5 of the challenge keyed with the password.
		done := false
		err = c.sasl(ctx, "CRAM-MD5", nil, false, func(chal []byte) ([]byte, error) {
			if done || len(chal) == 0 {
				return nil, errUnexpectedChallenge
			}
			done = true
			h := hmac.New(md5.New, []byte(secret))
			h.Write(chal)
			return []byte(user + " " + hex.EncodeToString(h.Sum(nil))), nil
		})
	case MechXOAUTH2:
		// Google's and Microsoft's XOAUTH2. On failure the server sends a
		// challenge holding a JSON error, the client answers with an
		// empty line and gets -ERR.
		err = c.sasl(ctx, "XOAUTH2", []byte("user="+user+"\x01auth=Bearer "+secret+"\x01\x01"), true, oauthErrorStep(nil))
	case MechOAUTHBEARER:
		// RFC 7628 §3.1: GS2 header with the authorization identity, then
		// key/value pairs; on failure (§3.2.3) the client answers the
		// error challenge with a single %x01.
		ir := "n,a=" + saslName(user) + ",\x01auth=Bearer " + secret + "\x01\x01"
		err = c.sasl(ctx, "OAUTHBEARER", []byte(ir), true, oauthErrorStep([]byte{1}))
	default:
		return fmt.Errorf("%w: unknown mechanism %q", ErrNoMechanism, mech)
	}
	if err != nil {
		return err
	}
	if c.capaOK {
		return c.capa(ctx)
	}
	return nil
}

var errUnexpectedChallenge = fmt.Errorf("%w: unexpected SASL challenge", ErrProtocol)

// oauthErrorStep answers the one error challenge an OAuth mechanism may
// send after the initial response.
func oauthErrorStep(resp []byte) func([]byte) ([]byte, error) {
	done := false
	return func([]byte) ([]byte, error) {
		if done {
			return nil, errUnexpectedChallenge
		}
		done = true
		return resp, nil
	}
}

// saslName escapes a user name for a GS2 header (RFC 5801 §4).
func saslName(s string) string {
	return strings.NewReplacer("=", "=3D", ",", "=2C").Replace(s)
}

// AutoMechanism returns the mechanism Auth uses for "auto", for a password.
//
// Over TLS the password is protected by the channel, and what matters is
// that the server can check it whatever its password storage: PLAIN, then
// LOGIN, then USER/PASS, then CRAM-MD5 (needs plaintext-equivalent storage
// on the server and adds nothing over TLS). APOP comes last, only when
// nothing else is offered: it is MD5 of a server-chosen challenge and an
// active attacker can recover the password (CVE-2007-1558).
//
// On a plaintext link (SecurityNone only) mechanisms that do not reveal the
// password come first: CRAM-MD5, then APOP, then PLAIN, LOGIN, USER.
//
// A SASL mechanism counts as offered when CAPA lists it under SASL, USER
// when CAPA lists USER or the server does not support CAPA at all (RFC
// 1939 servers), APOP when the greeting carries a timestamp.
func (c *Client) AutoMechanism() (string, error) {
	offered := func(m string) bool {
		switch m {
		case MechUser:
			return !c.capaOK || c.caps.Has("USER")
		case MechAPOP:
			return c.timestamp != ""
		}
		return c.caps.HasSASL(m)
	}
	order := []string{MechPlain, MechLogin, MechUser, MechCRAMMD5, MechAPOP}
	if c.tls == nil {
		order = []string{MechCRAMMD5, MechAPOP, MechPlain, MechLogin, MechUser}
	}
	for _, m := range order {
		if offered(m) {
			return m, nil
		}
	}
	return "", fmt.Errorf("%w: server offers no password mechanism (SASL %v, USER %v, APOP %v)",
		ErrNoMechanism, c.caps.SASL(), c.caps.Has("USER"), c.timestamp != "")
}

func (c *Client) authUser(ctx context.Context, user, secret string) error {
	cmd := newCmd("USER")
	cmd.arg = user
	_, serr, err := c.roundTrip(ctx, cmd)
	if err != nil {
		return err
	}
	if serr != nil {
		return serr
	}
	cmd = newCmd("PASS")
	cmd.arg, cmd.secret, cmd.public = secret, true, redacted
	_, serr, err = c.roundTrip(ctx, cmd)
	if err != nil {
		return err
	}
	if serr != nil {
		return serr
	}
	return nil
}

// authAPOP logs in with APOP (RFC 1939 §7): the MD5 of the greeting's
// timestamp followed by the secret.
func (c *Client) authAPOP(ctx context.Context, user, secret string) error {
	if c.timestamp == "" {
		return fmt.Errorf("%w: APOP needs a timestamp in the greeting and there is none", ErrNoMechanism)
	}
	if strings.ContainsAny(user, " \t") {
		return fmt.Errorf("%w: APOP user name contains a space", ErrBadArgument)
	}
	sum := md5.Sum([]byte(c.timestamp + secret))
	cmd := newCmd("APOP")
	cmd.arg = user + " " + hex.EncodeToString(sum[:])
	cmd.secret, cmd.public = true, user+" "+redacted
	_, serr, err := c.roundTrip(ctx, cmd)
	if err != nil {
		return err
	}
	if serr != nil {
		return serr
	}
	return nil
}

// sasl runs an AUTH exchange (RFC 5034 §4). ir is the client-first
// initial response when hasIR. It goes on the AUTH line ("=" when empty)
// if the server announced the SASL capability (RFC 5034 support; RFC 1734
// servers do not take one) and the line fits in 255 octets; otherwise the
// client sends "AUTH MECH" alone and answers the server's first "+" with it
// on its own line, which is also the form Exchange Online wants for
// XOAUTH2. step answers every further challenge; its error cancels the
// exchange with "*".
func (c *Client) sasl(ctx context.Context, mech string, ir []byte, hasIR bool, step func(chal []byte) ([]byte, error)) error {
	enc := base64.StdEncoding
	cmd := newCmd("AUTH")
	cmd.arg, cmd.secret, cmd.public = mech, true, mech
	irPending := hasIR
	if hasIR && c.caps.Has("SASL") {
		s := "="
		if len(ir) > 0 {
			s = enc.EncodeToString(ir)
		}
		if len("AUTH ")+len(mech)+1+len(s)+len("\r\n") <= maxCommandLength {
			cmd.arg, cmd.public = mech+" "+s, mech+" "+redacted
			irPending = false
		}
	}
	c.send(ctx, cmd)
	if err := c.flush(); err != nil {
		return err
	}
	var lastChallenge []byte
	for round := 0; ; round++ {
		line, err := c.readLine(ctx)
		if err != nil {
			return c.fail(fmt.Errorf("reading reply to AUTH: %w", err))
		}
		kind, rest, err := parseStatus(line)
		if err != nil {
			return c.fail(fmt.Errorf("reading reply to AUTH: %w", err))
		}
		switch kind {
		case statusOK:
			return nil
		case statusErr:
			e := newError(cmd, rest)
			if len(lastChallenge) > 0 && (mech == "XOAUTH2" || mech == "OAUTHBEARER") {
				e.Text += " (" + sanitize(lastChallenge) + ")"
			}
			return e
		}
		if round >= maxSASLRounds {
			return c.cancelSASL(ctx, cmd, fmt.Errorf("%w: more than %d SASL challenges", ErrProtocol, maxSASLRounds))
		}
		chal, err := enc.DecodeString(string(trimSpace(rest)))
		if err != nil {
			return c.cancelSASL(ctx, cmd, fmt.Errorf("%w: challenge is not base64", ErrProtocol))
		}
		var resp []byte
		if irPending {
			resp, irPending = ir, false
		} else {
			lastChallenge = chal
			if resp, err = step(chal); err != nil {
				return c.cancelSASL(ctx, cmd, err)
			}
		}
		cont := newCmd("")
		cont.arg, cont.secret, cont.public = enc.EncodeToString(resp), true, redacted
		c.send(ctx, cont)
		if err := c.flush(); err != nil {
			return err
		}
	}
}

// cancelSASL aborts an exchange with "*" (RFC 5034 §4); the server must
// answer -ERR. cause is returned; the client stays usable if the server
// answered as it should.
func (c *Client) cancelSASL(ctx context.Context, auth command, cause error) error {
	cancel := newCmd("*")
	c.send(ctx, cancel)
	if err := c.flush(); err != nil {
		return err
	}
	_, serr, err := c.reply(ctx, auth)
	if err != nil {
		return err
	}
	if serr == nil {
		return c.fail(fmt.Errorf("%w: server accepted a cancelled AUTH", ErrProtocol))
	}
	return fmt.Errorf("AUTH %s: %w", auth.public, errors.Join(cause, serr))
}
