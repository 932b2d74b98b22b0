package configs

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"popsync/internal/credential"
)

// hostMaybePort is the value of the imap key: a host, and the port when
// one was written (0 otherwise: it follows from tls).
type hostMaybePort struct {
	host string
	port int
}

// hostMaybePort accepts "host" or "host:port" ("[v6]:port" for an IPv6
// address with a port).
func (d *decoder) hostMaybePort(x any, w where) (hostMaybePort, bool) {
	s, ok := d.nonEmpty(x, w)
	if !ok {
		return hostMaybePort{}, false
	}
	if h, p, err := net.SplitHostPort(s); err == nil {
		n, perr := strconv.Atoi(p)
		if perr != nil || n < 1 || n > 65535 {
			d.problem(w, `must be "host" or "host:port" with a port from 1 to 65535, not %q`, s)
			return hostMaybePort{}, false
		}
		host, ok := d.host(h, w)
		return hostMaybePort{host: host, port: n}, ok
	}
	host, ok := d.host(s, w)
	return hostMaybePort{host: host}, ok
}

// mailboxName accepts an IMAP mailbox name in UTF-8 (the target encodes
// it for the wire, RFC 3501 §5.1.3); "/" or "." separates levels as the
// server says. No wildcard: it would make the LIST that looks for the
// mailbox match others.
func (d *decoder) mailboxName(x any, w where) (string, bool) {
	s, ok := d.nonEmpty(x, w)
	if ok && strings.ContainsAny(s, "\x00\r\n*%") {
		d.problem(w, "must not contain a NUL, a line break, * or %% (IMAP wildcards), not %q", s)
		return "", false
	}
	return s, ok
}

// imapFlags accepts a list of IMAP flags: system flags such as `\Seen`
// (written "\\Seen" in TOML) or keywords (RFC 3501 §2.3.2, flag-keyword).
func (d *decoder) imapFlags(x any, w where) ([]string, bool) {
	arr, ok := x.([]any)
	if !ok {
		d.problem(w, `must be an array of IMAP flags, e.g. ["\\Seen"], not %s`, typeName(x))
		return nil, false
	}
	out := make([]string, 0, len(arr))
	good := true
	for i, e := range arr {
		s, ok := e.(string)
		if !ok {
			d.problem(w.elem(i), "must be a string, not %s", typeName(e))
			good = false
			continue
		}
		switch {
		case !validIMAPFlag(s):
			d.problem(w.elem(i), `must be a system flag such as "\\Seen" or a keyword without spaces or ( ) { %% * " \ ], not %q`, s)
			good = false
		case strings.EqualFold(s, `\Recent`):
			d.problem(w.elem(i), `\Recent cannot be set by a client (RFC 3501 §2.3.2)`)
			good = false
		}
		out = append(out, s)
	}
	return out, good
}

// validIMAPFlag accepts `\Atom` or an atom (RFC 3501 §9).
func validIMAPFlag(f string) bool {
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

// buildIMAP fills in the port from tls (993 implicit, 143 otherwise), the
// mailbox (INBOX), create (true), internal_date (received) and
// connections (DefaultIMAPConnections), and checks
// the keys that go together: a user and exactly one password source,
// tls_* only over TLS.
func buildIMAP(d *decoder, r *rawDeliver, w where) (TargetConfig, bool) {
	t := &IMAPTarget{
		Host: r.imap.v.host, Port: r.imap.v.port,
		TLS:       or(r.tls, TLSImplicit),
		TLSCAFile: r.tlsCAFile.v, TLSFingerprint: r.tlsFingerprint.v, TLSServerName: r.tlsServerName.v,
		User: r.user.v,
		Password: credential.Source{Key: "password", Literal: r.password.v, File: r.passwordFile.v,
			Command: r.passwordCommand.v, Env: r.passwordEnv.v},
		Auth:         or(r.auth, IMAPAuthAuto),
		Mailbox:      or(r.mailbox, "INBOX"),
		Create:       or(r.create, true),
		Flags:        r.flags.v,
		InternalDate: or(r.internalDate, IMAPDateReceived),
		Connections:  or(r.connections, DefaultIMAPConnections),
	}
	if t.Port == 0 {
		t.Port = DefaultIMAPPortPlain
		if t.TLS == TLSImplicit {
			t.Port = DefaultIMAPPortImplicit
		}
	}
	ok := true
	if !r.user.set {
		d.problem(w.sub("user"), "is required for imap delivery: the login name at the IMAP server")
		ok = false
	}
	var sources []string
	for _, k := range []string{"password", "password_file", "password_command", "password_env"} {
		if _, set := r.set[k]; set {
			sources = append(sources, k)
		}
	}
	if r.oauth2.set {
		return t, buildIMAPOAuth2(d, r, t, sources) && ok
	}
	switch {
	case len(sources) == 0:
		d.problem(w, "needs a password source for the IMAP login: one of password, password_file, password_command or password_env")
		ok = false
	case len(sources) > 1:
		for _, k := range sources[1:] {
			d.problem(r.set[k], "only one password source may be given, and %s is set on line %d", sources[0], d.pos.line(r.set[sources[0]].path))
		}
		ok = false
	}
	if t.TLS == TLSNone {
		// Only a written tls = "none" lets the password cross the
		// network in the clear; then nothing can be verified.
		for _, k := range []string{"tls_ca_file", "tls_fingerprint", "tls_server_name"} {
			if kw, set := r.set[k]; set {
				d.problem(kw, `needs tls = "implicit" or "starttls", not "none"`)
				ok = false
			}
		}
	}
	return t, ok
}

// buildIMAPOAuth2 checks an imap entry with an [account.deliver.oauth2]
// table: no password source (the token comes from `popsync login`), and a
// mechanism that carries a bearer token; auto means xoauth2.
func buildIMAPOAuth2(d *decoder, r *rawDeliver, t *IMAPTarget, sources []string) bool {
	ok := true
	t.OAuth2 = r.oauth2.v
	t.Password = credential.Source{}
	for _, k := range sources {
		d.problem(r.set[k], "cannot be combined with [account.deliver.oauth2]: the target logs in with an OAuth 2.0 token (`popsync login`)")
		ok = false
	}
	switch t.Auth {
	case IMAPAuthAuto:
		t.Auth = IMAPAuthXOAuth2
	case IMAPAuthXOAuth2, IMAPAuthOAuthBearer:
	default:
		d.problem(r.set["auth"], `%q cannot carry an OAuth 2.0 token: with [account.deliver.oauth2] use auth = "xoauth2", "oauthbearer" or "auto"`, t.Auth)
		ok = false
	}
	return ok
}

// fillIMAPTargets gives every IMAP target of the accounts its spool
// folder, [state]'s folder + spool/<target ID>, and its password_command
// the environment without the file's secrets.
func fillIMAPTargets(cfg *Config) {
	for _, a := range cfg.Accounts {
		for _, de := range a.Deliver {
			if t, ok := de.Target.(*IMAPTarget); ok {
				t.SpoolDir = filepath.Join(cfg.State.Dir, "spool", de.ID())
				t.Password.CommandEnv = a.ChildEnv
				if t.OAuth2 != nil {
					t.OAuth2.ClientSecret.CommandEnv = a.ChildEnv
				}
			}
		}
	}
}
