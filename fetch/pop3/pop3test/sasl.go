package pop3test

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// auth runs the AUTH command (RFC 5034 §4).
func (ss *session) auth(arg string) error {
	c := ss.cfg.Caps
	if c.NoSASL {
		return ss.fail("", "AUTH is not supported")
	}
	if !ss.authAllowed() {
		return ss.refusePlaintext()
	}
	if arg == "" {
		// The RFC 1734 listing form, which many servers still answer.
		return ss.multiline("+OK SASL mechanisms follow", c.SASL)
	}
	mech, initial, hasInitial := strings.Cut(arg, " ")
	mech = strings.ToUpper(mech)
	offered := false
	for _, m := range c.SASL {
		offered = offered || strings.EqualFold(m, mech)
	}
	if !offered {
		return ss.fail("", "unsupported authentication mechanism")
	}
	var ir []byte
	if hasInitial {
		// RFC 5034 §4: "=" is an empty initial response.
		if initial != "=" {
			var err error
			if ir, err = base64.StdEncoding.DecodeString(initial); err != nil {
				return ss.fail("", "invalid base64 in initial response")
			}
		}
	}
	var ok bool
	var err error
	switch mech {
	case "PLAIN":
		ok, err = ss.plain(ir, hasInitial)
	case "LOGIN":
		ok, err = ss.loginMech(ir, hasInitial)
	case "CRAM-MD5":
		if hasInitial {
			return ss.fail("", "CRAM-MD5 takes no initial response")
		}
		ok, err = ss.cramMD5()
	case "XOAUTH2":
		ok, err = ss.xoauth2(ir, hasInitial)
	case "OAUTHBEARER":
		ok, err = ss.oauthBearer(ir, hasInitial)
	default:
		return ss.fail("", "authentication mechanism not implemented")
	}
	switch {
	case errors.Is(err, errAuthCanceled):
		// RFC 5034 §4: a "*" response cancels; the server answers -ERR.
		return ss.fail("", "authentication canceled")
	case errors.Is(err, errBadResponse):
		return ss.fail("", "invalid base64 in response")
	case errors.Is(err, errLineTooLong):
		return ss.fail("", "response too long")
	case err != nil:
		return err
	case !ok:
		return ss.authFailed()
	}
	return ss.login(mech)
}

// challenge sends a server challenge ("+ " and base64, RFC 5034 §4) and
// returns the client's decoded response.
func (ss *session) challenge(data []byte) ([]byte, error) {
	status := "+ "
	if len(data) > 0 {
		status += base64.StdEncoding.EncodeToString(data)
	}
	if err := ss.reply(status); err != nil {
		return nil, err
	}
	line, _, err := ss.readLine()
	if err != nil && !errors.Is(err, errLineTooLong) {
		return nil, err
	}
	ss.record(line)
	switch {
	case err != nil:
		return nil, err
	case line == "*":
		return nil, errAuthCanceled
	case line == "" || line == "=":
		return nil, nil
	}
	dec, err := base64.StdEncoding.DecodeString(line)
	if err != nil {
		return nil, errBadResponse
	}
	return dec, nil
}

// response is the initial response if one was given, or the answer to an
// empty challenge.
func (ss *session) response(ir []byte, hasInitial bool) ([]byte, error) {
	if hasInitial {
		return ir, nil
	}
	return ss.challenge(nil)
}

// plain checks RFC 4616 authzid NUL authcid NUL passwd.
func (ss *session) plain(ir []byte, hasInitial bool) (bool, error) {
	resp, err := ss.response(ir, hasInitial)
	if err != nil {
		return false, err
	}
	parts := bytes.Split(resp, []byte{0})
	if len(parts) != 3 {
		return false, nil
	}
	authz, user, pass := string(parts[0]), string(parts[1]), string(parts[2])
	if authz != "" && authz != user {
		return false, nil
	}
	return ss.passwordOK(user, pass), nil
}

// loginMech runs the LOGIN mechanism (draft-murchison-sasl-login): the
// user name (possibly as initial response), then the password.
func (ss *session) loginMech(ir []byte, hasInitial bool) (bool, error) {
	user := ir
	if !hasInitial {
		var err error
		if user, err = ss.challenge([]byte("Username:")); err != nil {
			return false, err
		}
	}
	pass, err := ss.challenge([]byte("Password:"))
	if err != nil {
		return false, err
	}
	return ss.passwordOK(string(user), string(pass)), nil
}

// cramMD5 runs RFC 2195: the response is "user hexdigest" with the digest
// HMAC-MD5(password, challenge) in lower-case hex.
func (ss *session) cramMD5() (bool, error) {
	ch := fmt.Sprintf("<%d.%d@pop3test.invalid>", rand.Uint32(), time.Now().UnixNano())
	resp, err := ss.challenge([]byte(ch))
	if err != nil {
		return false, err
	}
	i := bytes.LastIndexByte(resp, ' ')
	if i < 0 || ss.cfg.Password == "" {
		return false, nil
	}
	user, digest := string(resp[:i]), resp[i+1:]
	mac := hmac.New(md5.New, []byte(ss.cfg.Password))
	mac.Write([]byte(ch))
	want := hex.EncodeToString(mac.Sum(nil))
	return user == ss.cfg.User && hmac.Equal(digest, []byte(want)), nil
}

// xoauth2 checks "user=U ^A auth=Bearer T ^A ^A". The client may send it
// as the initial response or, as Exchange Online wants, after an empty
// "+ " challenge.
func (ss *session) xoauth2(ir []byte, hasInitial bool) (bool, error) {
	resp, err := ss.response(ir, hasInitial)
	if err != nil {
		return false, err
	}
	var user, token string
	for _, f := range strings.Split(string(resp), "\x01") {
		if v, ok := strings.CutPrefix(f, "user="); ok {
			user = v
		} else if v, ok := strings.CutPrefix(f, "auth="); ok {
			token = bearer(v)
		}
	}
	if ss.tokenOK(user, token, false) {
		return true, nil
	}
	if ss.cfg.XOAUTH2ErrorChallenge {
		// Google's form: the error as a JSON challenge; the client
		// answers with an empty response and then gets -ERR.
		if _, err := ss.challenge([]byte(`{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`)); err != nil && !errors.Is(err, errBadResponse) && !errors.Is(err, errAuthCanceled) {
			return false, err
		}
	}
	return false, nil
}

// oauthBearer checks RFC 7628: a GS2 header "n,a=user," then
// ^A-separated key=value pairs with "auth=Bearer T", ending in ^A^A.
func (ss *session) oauthBearer(ir []byte, hasInitial bool) (bool, error) {
	resp, err := ss.response(ir, hasInitial)
	if err != nil {
		return false, err
	}
	gs2, rest, found := strings.Cut(string(resp), "\x01")
	var user, token string
	ok := found && (strings.HasPrefix(gs2, "n,") || strings.HasPrefix(gs2, "y,"))
	if ok {
		for _, f := range strings.Split(gs2, ",")[1:] {
			if v, isUser := strings.CutPrefix(f, "a="); isUser {
				user = v
			}
		}
		for _, f := range strings.Split(rest, "\x01") {
			if v, isAuth := strings.CutPrefix(f, "auth="); isAuth {
				token = bearer(v)
			}
		}
		// The authzid is optional: without it the token names the user.
		if ss.tokenOK(user, token, true) {
			return true, nil
		}
	}
	// RFC 7628 §3.2.3: a failure is an error challenge, which the client
	// answers with a single ^A, before the final -ERR.
	if _, err := ss.challenge([]byte(`{"status":"invalid_token","schemes":"bearer"}`)); err != nil && !errors.Is(err, errBadResponse) && !errors.Is(err, errAuthCanceled) {
		return false, err
	}
	return false, nil
}

// bearer returns the token of an "auth=" value "Bearer <token>".
func bearer(v string) string {
	scheme, token, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return token
}

// tokenOK checks a bearer token for user; anyUser accepts it without a
// user name.
func (ss *session) tokenOK(user, token string, anyUser bool) bool {
	if ss.cfg.Token == "" || token != ss.cfg.Token {
		return false
	}
	return user == ss.cfg.User || (anyUser && user == "")
}
