package configs

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"popsync/internal/credential"
	"popsync/internal/credential/oauth"
)

// Delivery kinds, as returned by Deliver.Kind. Each is also the key that
// selects it in a [[account.deliver]] table.
const (
	KindMaildir = "maildir"
	KindSMTP    = "smtp"
	KindLMTP    = "lmtp"
	KindMDA     = "mda"
	KindIMAP    = "imap"
)

// Deliver is one [[account.deliver]] entry: one delivery target, whose
// settings are the TargetConfig of its kind, and what the fetcher does with
// a message the target refuses for good.
type Deliver struct {
	Line int // line of the [[account.deliver]] header

	// Target is *MaildirTarget, *SMTPTarget, *LMTPTarget, *MDATarget or
	// *IMAPTarget.
	Target TargetConfig

	// For targets that judge each message (SMTP, LMTP, MDA, IMAP), ""
	// for Maildir:
	Quarantine string // absolute path of a Maildir for rejected messages; "" = the default
	OnReject   string // what to do with a message the target rejects permanently
}

// TargetConfig is the settings of one kind of delivery target.
type TargetConfig interface {
	// Kind is one of the Kind* constants.
	Kind() string
	// place returns the settings that say where the target delivers:
	// two entries with the same kind and place deliver into one mailbox.
	place() []string
	clone() TargetConfig
}

// MaildirTarget delivers into a Maildir (key maildir).
type MaildirTarget struct {
	Path string // absolute path, created if missing
}

// SMTPTarget reinjects into an MTA over SMTP (key smtp).
type SMTPTarget struct {
	Addr string   // "host:port"
	Rcpt []string // envelope recipients
	From string   // envelope sender; "" = the null sender
	Helo string   // name to greet with; "" = the host name
	TLS  string   // TLSImplicit, TLSStartTLS or TLSNone
	User string   // AUTH user; "" = no AUTH
	// Password is the AUTH password: keys smtp_password, smtp_password_file,
	// smtp_password_command, smtp_password_env.
	Password credential.Source
	// Connections bounds the sessions to the MTA open at once (key
	// connections); 0 = the target's default.
	Connections int
}

// LMTPTarget hands messages to an LMTP server (key lmtp), such as Dovecot.
type LMTPTarget struct {
	Addr string   // "host:port" or "unix:/path"
	Rcpt []string // envelope recipients
	From string   // envelope sender; "" = the null sender
	Helo string   // name to greet with; "" = the host name
	// Connections bounds the sessions to the server open at once (key
	// connections); 0 = the target's default.
	Connections int
}

// MDATarget pipes each message into a program (key mda).
type MDATarget struct {
	Command []string // program and arguments; the message on stdin
	From    string   // envelope sender, in the environment; "" = none
}

// IMAPTarget appends to a mailbox of an IMAP server (key imap).
type IMAPTarget struct {
	Host string // lower case
	Port int    // default from TLS: 993 implicit, 143 otherwise
	TLS  string // TLSImplicit, TLSStartTLS or TLSNone; default TLSImplicit
	// TLSCAFile, TLSFingerprint and TLSServerName verify the server as
	// the account keys of the same names do on the POP3 side.
	TLSCAFile, TLSFingerprint, TLSServerName string

	User string
	// Password is the password (or, for auth xoauth2 and oauthbearer
	// without an oauth2 table, the access token): keys password,
	// password_file, password_command, password_env.
	Password credential.Source
	Auth     string // one of the IMAPAuth* constants
	// OAuth2 is the [account.deliver.oauth2] table: when set, the target
	// logs in with an OAuth 2.0 access token that `popsync login` obtained
	// and the state store keeps under TokenKey (Auth is xoauth2 or
	// oauthbearer, Password is empty).
	OAuth2 *OAuth2

	Mailbox      string   // default "INBOX"
	Create       bool     // create the mailbox when missing; default true
	Flags        []string // set on every appended message; none by default
	InternalDate string   // IMAPDateReceived (default) or IMAPDateNow
	// Connections is how many connections a batch is appended over at
	// once; default DefaultIMAPConnections, at most MaxConnections.
	Connections int

	// SpoolDir is not a key: the folder that holds each message while it
	// streams in, [state]'s folder + spool/<target ID>, filled in by Load.
	SpoolDir string
}

// Authentication of an IMAP target (key auth in an imap entry).
const (
	IMAPAuthAuto         = "auto"          // AUTH=PLAIN if offered, else the LOGIN command, else AUTH=LOGIN
	IMAPAuthPlain        = "plain"         // SASL PLAIN (RFC 4616)
	IMAPAuthLogin        = "login"         // SASL LOGIN
	IMAPAuthLoginCommand = "login-command" // the LOGIN command (RFC 3501 §6.2.3)
	IMAPAuthXOAuth2      = "xoauth2"       // XOAUTH2 (Google, Microsoft)
	IMAPAuthOAuthBearer  = "oauthbearer"   // SASL OAUTHBEARER (RFC 7628)
)

// Internal dates of appended messages (key internal_date).
const (
	IMAPDateReceived = "received" // the message's Date, else its first Received, else now
	IMAPDateNow      = "now"      // the time of the APPEND
)

// Connections of an IMAP target (key connections). The default is 4:
// faster against a distant server, and the APPENDs a crash leaves in
// flight on each are waited for, not appended twice (README, "Waiting
// for a late commit"). Providers limit one account's simultaneous
// connections (Gmail 15, Microsoft 365 about 20), counting every other
// client of the account too.
const (
	DefaultIMAPConnections = 4
	// MaxConnections bounds the connections key of every kind that has
	// it (smtp, lmtp, imap).
	MaxConnections = 64
)

// Default ports of an IMAP target (RFC 8314 §7.3, RFC 3501 §2.1).
const (
	DefaultIMAPPortImplicit = 993
	DefaultIMAPPortPlain    = 143
)

var imapAuths = []string{IMAPAuthAuto, IMAPAuthPlain, IMAPAuthLogin, IMAPAuthLoginCommand, IMAPAuthXOAuth2, IMAPAuthOAuthBearer}

// Addr returns "host:port", with brackets around an IPv6 host.
func (t *IMAPTarget) Addr() string { return net.JoinHostPort(t.Host, strconv.Itoa(t.Port)) }

// TokenKey is the key of the target's OAuth 2.0 tokens in the state
// store: "imap user@host:port". It never equals an account's key (those
// begin "pop3 "), and changing the server or the user asks for a new
// login, as for an account.
func (t *IMAPTarget) TokenKey() string {
	return oauth.ServiceIMAP + " " + t.User + "@" + t.Addr()
}

func (*MaildirTarget) Kind() string { return KindMaildir }
func (*IMAPTarget) Kind() string    { return KindIMAP }
func (*SMTPTarget) Kind() string    { return KindSMTP }
func (*LMTPTarget) Kind() string    { return KindLMTP }
func (*MDATarget) Kind() string     { return KindMDA }

func (t *MaildirTarget) place() []string { return []string{t.Path} }
func (t *SMTPTarget) place() []string    { return append([]string{t.Addr}, t.Rcpt...) }
func (t *LMTPTarget) place() []string    { return append([]string{t.Addr}, t.Rcpt...) }
func (t *MDATarget) place() []string     { return t.Command }
func (t *IMAPTarget) place() []string {
	return []string{t.Host, strconv.Itoa(t.Port), t.User, t.Mailbox}
}

func (t *MaildirTarget) clone() TargetConfig { c := *t; return &c }
func (t *SMTPTarget) clone() TargetConfig {
	c := *t
	c.Rcpt = slices.Clone(t.Rcpt)
	return &c
}
func (t *LMTPTarget) clone() TargetConfig {
	c := *t
	c.Rcpt = slices.Clone(t.Rcpt)
	return &c
}
func (t *IMAPTarget) clone() TargetConfig {
	c := *t
	c.Flags = slices.Clone(t.Flags)
	c.Password.Command = slices.Clone(t.Password.Command)
	if t.OAuth2 != nil {
		o := *t.OAuth2
		o.Scopes = slices.Clone(o.Scopes)
		o.ClientSecret.Command = slices.Clone(o.ClientSecret.Command)
		c.OAuth2 = &o
	}
	return &c
}
func (t *MDATarget) clone() TargetConfig {
	c := *t
	c.Command = slices.Clone(t.Command)
	return &c
}

// String names the target for messages: its kind and where it delivers.
// It never shows a secret.
func (t *MaildirTarget) String() string { return KindMaildir + " " + t.Path }
func (t *SMTPTarget) String() string    { return KindSMTP + " " + t.Addr }
func (t *LMTPTarget) String() string    { return KindLMTP + " " + t.Addr }
func (t *MDATarget) String() string     { return KindMDA + " " + strings.Join(t.Command, " ") }
func (t *IMAPTarget) String() string    { return KindIMAP + " " + t.Addr() + " " + t.Mailbox }

// Format prints the target as String does, with every verb, so that
// printing a config cannot show the AUTH password.
func (t *SMTPTarget) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte(t.String())) }

// Format prints the target as String does, with every verb, so that
// printing a config cannot show the password.
func (t *IMAPTarget) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte(t.String())) }

// Kind names the target kind of d: one of the Kind* constants, or "".
func (d Deliver) Kind() string {
	if d.Target == nil {
		return ""
	}
	return d.Target.Kind()
}

// ID is the stable name of the target in the seen-set's intents: its kind
// and a digest of where it delivers (the Maildir's path; the MTA's address
// and the recipients; the MDA's command; the IMAP server's host, port,
// user and mailbox), so that reordering the deliver
// entries, or changing a key that does not say where mail goes (helo,
// on_reject, ...), does not change it. No two entries of one account have
// the same ID (Load refuses that).
func (d Deliver) ID() string {
	if d.Target == nil {
		return ""
	}
	sum := sha256.Sum256([]byte(strings.Join(d.Target.place(), "\x00")))
	return d.Target.Kind() + ":" + hex.EncodeToString(sum[:8])
}

// Confirming reports whether d's target gives a verdict on each message
// (SMTP, LMTP and MDA as it takes it, IMAP in its reply to APPEND) rather
// than only storing it (Maildir); only those take quarantine and
// on_reject.
func (d Deliver) Confirming() bool {
	k, ok := kindOf(d.Kind())
	return ok && k.confirming
}

func cloneDelivers(ds []Deliver) []Deliver {
	out := make([]Deliver, len(ds))
	for i, d := range ds {
		if d.Target != nil {
			d.Target = d.Target.clone()
		}
		out[i] = d
	}
	return out
}

// deliverKind is one row of the kind table: a new kind of target is its
// TargetConfig, its keys in deliverFields and one row here.
type deliverKind struct {
	name       string   // the kind, and the key that selects it
	keys       []string // the other keys that apply to it
	confirming bool     // the target judges messages: quarantine and on_reject apply too
	// build makes the TargetConfig of a table that selected this kind,
	// reporting problems of keys that depend on each other.
	build func(d *decoder, r *rawDeliver, w where) (TargetConfig, bool)
}

var deliverKinds = []deliverKind{
	{KindMaildir, nil, false, buildMaildir},
	{KindSMTP, []string{"rcpt", "from", "helo", "smtp_tls", "smtp_user",
		"smtp_password", "smtp_password_file", "smtp_password_command", "smtp_password_env", "connections"}, true, buildSMTP},
	{KindLMTP, []string{"rcpt", "from", "helo", "connections"}, true, buildLMTP},
	{KindMDA, []string{"from"}, true, buildMDA},
	{KindIMAP, []string{"tls", "tls_ca_file", "tls_fingerprint", "tls_server_name", "user",
		"password", "password_file", "password_command", "password_env", "auth",
		"mailbox", "create", "flags", "internal_date", "oauth2", "connections"}, true, buildIMAP},
}

func kindOf(name string) (deliverKind, bool) {
	for _, k := range deliverKinds {
		if k.name == name {
			return k, true
		}
	}
	return deliverKind{}, false
}

// rawDeliver is one [[account.deliver]] table as written.
type rawDeliver struct {
	set map[string]where // every key given, good or bad

	maildir, smtp, lmtp val[string]
	mda                 val[[]string]

	rcpt                          val[[]string]
	from, helo, smtpTLS, smtpUser val[string]
	smtpPassword                  val[Secret]
	smtpPasswordFile              val[string]
	smtpPasswordCommand           val[[]string]
	smtpPasswordEnv               val[string]
	quarantine, onReject          val[string]
	connections                   val[int]

	imap                                          val[hostMaybePort]
	tls, tlsCAFile, tlsFingerprint, tlsServerName val[string]
	user, auth, mailbox, internalDate             val[string]
	password                                      val[Secret]
	passwordFile, passwordEnv                     val[string]
	passwordCommand, flags                        val[[]string]
	create                                        val[bool]
	oauth2                                        val[*OAuth2]
}

type deliverField func(d *decoder, r *rawDeliver, x any, w where)

// deliverFields are the keys of [[account.deliver]].
var deliverFields = map[string]deliverField{
	"maildir":       func(d *decoder, r *rawDeliver, x any, w where) { r.maildir = get(d.path, x, w) },
	"smtp":          func(d *decoder, r *rawDeliver, x any, w where) { r.smtp = get(d.hostPort, x, w) },
	"lmtp":          func(d *decoder, r *rawDeliver, x any, w where) { r.lmtp = get(d.lmtpAddr, x, w) },
	"mda":           func(d *decoder, r *rawDeliver, x any, w where) { r.mda = get(d.command, x, w) },
	"rcpt":          func(d *decoder, r *rawDeliver, x any, w where) { r.rcpt = get(d.addresses, x, w) },
	"from":          func(d *decoder, r *rawDeliver, x any, w where) { r.from = get(d.address, x, w) },
	"helo":          func(d *decoder, r *rawDeliver, x any, w where) { r.helo = get(d.host, x, w) },
	"smtp_tls":      func(d *decoder, r *rawDeliver, x any, w where) { r.smtpTLS = get(d.enum(tlsModes...), x, w) },
	"smtp_user":     func(d *decoder, r *rawDeliver, x any, w where) { r.smtpUser = get(d.nonEmpty, x, w) },
	"smtp_password": func(d *decoder, r *rawDeliver, x any, w where) { r.smtpPassword = get(d.secret, x, w) },
	"smtp_password_file": func(d *decoder, r *rawDeliver, x any, w where) {
		r.smtpPasswordFile = get(d.path, x, w)
	},
	"smtp_password_command": func(d *decoder, r *rawDeliver, x any, w where) {
		r.smtpPasswordCommand = get(d.command, x, w)
	},
	"smtp_password_env": func(d *decoder, r *rawDeliver, x any, w where) { r.smtpPasswordEnv = get(d.envName, x, w) },
	"quarantine":        func(d *decoder, r *rawDeliver, x any, w where) { r.quarantine = get(d.path, x, w) },
	"imap":              func(d *decoder, r *rawDeliver, x any, w where) { r.imap = get(d.hostMaybePort, x, w) },
	"tls":               func(d *decoder, r *rawDeliver, x any, w where) { r.tls = get(d.tlsMode, x, w) },
	"tls_ca_file":       func(d *decoder, r *rawDeliver, x any, w where) { r.tlsCAFile = get(d.path, x, w) },
	"tls_fingerprint":   func(d *decoder, r *rawDeliver, x any, w where) { r.tlsFingerprint = get(d.fingerprint, x, w) },
	"tls_server_name":   func(d *decoder, r *rawDeliver, x any, w where) { r.tlsServerName = get(d.host, x, w) },
	"user":              func(d *decoder, r *rawDeliver, x any, w where) { r.user = get(d.nonEmpty, x, w) },
	"password":          func(d *decoder, r *rawDeliver, x any, w where) { r.password = get(d.secret, x, w) },
	"password_file":     func(d *decoder, r *rawDeliver, x any, w where) { r.passwordFile = get(d.path, x, w) },
	"password_command":  func(d *decoder, r *rawDeliver, x any, w where) { r.passwordCommand = get(d.command, x, w) },
	"password_env":      func(d *decoder, r *rawDeliver, x any, w where) { r.passwordEnv = get(d.envName, x, w) },
	"auth":              func(d *decoder, r *rawDeliver, x any, w where) { r.auth = get(d.enum(imapAuths...), x, w) },
	"mailbox":           func(d *decoder, r *rawDeliver, x any, w where) { r.mailbox = get(d.mailboxName, x, w) },
	"create":            func(d *decoder, r *rawDeliver, x any, w where) { r.create = get(d.boolean, x, w) },
	"flags":             func(d *decoder, r *rawDeliver, x any, w where) { r.flags = get(d.imapFlags, x, w) },
	"internal_date": func(d *decoder, r *rawDeliver, x any, w where) {
		r.internalDate = get(d.enum(IMAPDateReceived, IMAPDateNow), x, w)
	},
	"on_reject": func(d *decoder, r *rawDeliver, x any, w where) { r.onReject = get(d.enum(onRejectModes...), x, w) },
	"oauth2": func(d *decoder, r *rawDeliver, x any, w where) {
		r.oauth2 = get(d.oauth2("account.deliver.oauth2", oauth.ServiceIMAP), x, w)
	},
	// connections: sessions at once, for the kinds whose keys list it.
	"connections": func(d *decoder, r *rawDeliver, x any, w where) {
		r.connections = get(d.intRange(1, MaxConnections), x, w)
	},
}

// delivers reads an array of deliver tables; header is how the user writes
// its table header, for messages. Two entries that deliver into the same
// place are refused: one mailbox would get every message twice, and their
// intents would share one target ID.
func (d *decoder) delivers(header string) func(any, where) ([]Deliver, bool) {
	return func(x any, w where) ([]Deliver, bool) {
		tables, ok := d.tables(x, w, header)
		if !ok {
			return nil, false
		}
		out := make([]Deliver, 0, len(tables))
		ids := make(map[string]int)
		for j, m := range tables {
			ew := w.elem(j)
			de, good := d.deliver(m, ew)
			if !good {
				ok = false
			} else if line, dup := ids[de.ID()]; dup {
				d.problem(ew, "delivers into the same %s target as the entry on line %d", de.Kind(), line)
				ok = false
			} else {
				ids[de.ID()] = de.Line
			}
			out = append(out, de)
		}
		return out, ok
	}
}

// deliver reads one deliver table and checks that it names exactly one
// target and only keys that apply to it.
func (d *decoder) deliver(m map[string]any, w where) (Deliver, bool) {
	r := &rawDeliver{set: make(map[string]where)}
	handlers := make(map[string]func(any, where), len(deliverFields))
	for k, f := range deliverFields {
		handlers[k] = func(x any, w where) {
			r.set[k] = w
			f(d, r, x, w)
		}
	}
	d.fields(m, w, handlers)
	de := Deliver{Line: d.pos.line(w.path)}

	var kinds []deliverKind
	var names []string
	for _, k := range deliverKinds {
		names = append(names, k.name)
		if _, ok := r.set[k.name]; ok {
			kinds = append(kinds, k)
		}
	}
	switch len(kinds) {
	case 0:
		d.problem(w, "needs one of %s or %s", strings.Join(names[:len(names)-1], ", "), names[len(names)-1])
		return de, false
	case 1:
	default:
		for _, k := range kinds[1:] {
			d.problem(r.set[k.name], "cannot be combined with %s: each target needs its own [[account.deliver]] table", kinds[0].name)
		}
		return de, false
	}
	kind := kinds[0]

	ok := true
	for _, v := range []bool{r.maildir.bad, r.smtp.bad, r.lmtp.bad, r.mda.bad, r.rcpt.bad, r.from.bad, r.helo.bad,
		r.smtpTLS.bad, r.smtpUser.bad, r.smtpPassword.bad, r.smtpPasswordFile.bad, r.smtpPasswordCommand.bad,
		r.smtpPasswordEnv.bad, r.quarantine.bad, r.onReject.bad, r.connections.bad,
		r.imap.bad, r.tls.bad, r.tlsCAFile.bad, r.tlsFingerprint.bad, r.tlsServerName.bad, r.user.bad,
		r.auth.bad, r.mailbox.bad, r.internalDate.bad, r.password.bad, r.passwordFile.bad, r.passwordEnv.bad,
		r.passwordCommand.bad, r.flags.bad, r.create.bad, r.oauth2.bad} {
		if v {
			ok = false
		}
	}
	applies := append([]string{kind.name}, kind.keys...)
	if kind.confirming {
		applies = append(applies, "quarantine", "on_reject")
	}
	for _, k := range sortedKeys(r.set) {
		if !slices.Contains(applies, k) {
			d.problem(r.set[k], "does not apply to %s delivery", kind.name)
			ok = false
		}
	}
	if !ok {
		return de, false
	}
	t, good := kind.build(d, r, w)
	de.Target = t
	if kind.confirming && !d.confirming(&de, r) {
		good = false
	}
	return de, good
}

func buildMaildir(d *decoder, r *rawDeliver, w where) (TargetConfig, bool) {
	return &MaildirTarget{Path: r.maildir.v}, true
}

func buildMDA(d *decoder, r *rawDeliver, w where) (TargetConfig, bool) {
	return &MDATarget{Command: r.mda.v, From: r.from.v}, true
}

func buildLMTP(d *decoder, r *rawDeliver, w where) (TargetConfig, bool) {
	t := &LMTPTarget{Addr: r.lmtp.v, Rcpt: r.rcpt.v, From: r.from.v, Helo: r.helo.v, Connections: r.connections.v}
	return t, d.needRcpt(r, w, KindLMTP)
}

// buildSMTP fills in smtp_tls: "none" for an MTA on a loopback address (a
// local Postfix rarely has a certificate for 127.0.0.1), "starttls"
// otherwise; smtp_user over "none" is refused unless the MTA is on a
// loopback address, since the password would travel in clear text.
func buildSMTP(d *decoder, r *rawDeliver, w where) (TargetConfig, bool) {
	t := &SMTPTarget{Addr: r.smtp.v, Rcpt: r.rcpt.v, From: r.from.v, Helo: r.helo.v,
		TLS: r.smtpTLS.v, User: r.smtpUser.v, Password: credential.Source{Key: "smtp_password",
			Literal: r.smtpPassword.v, File: r.smtpPasswordFile.v, Command: r.smtpPasswordCommand.v,
			Env: r.smtpPasswordEnv.v}, Connections: r.connections.v}
	ok := d.needRcpt(r, w, KindSMTP)
	var sources []string
	for _, k := range []string{"smtp_password", "smtp_password_file", "smtp_password_command", "smtp_password_env"} {
		if _, set := r.set[k]; set {
			sources = append(sources, k)
		}
	}
	switch {
	case r.smtpUser.set && len(sources) == 0:
		d.problem(r.smtpUser.w, "needs smtp_password too (or smtp_password_file, smtp_password_command or smtp_password_env)")
		ok = false
	case !r.smtpUser.set && len(sources) > 0:
		d.problem(r.set[sources[0]], "needs smtp_user too")
		ok = false
	case len(sources) > 1:
		for _, k := range sources[1:] {
			d.problem(r.set[k], "only one AUTH password source may be given, and %s is set on line %d", sources[0], d.pos.line(r.set[sources[0]].path))
		}
		ok = false
	}
	loopback := isLoopbackHostPort(t.Addr)
	if !r.smtpTLS.set {
		t.TLS = TLSStartTLS
		if loopback {
			t.TLS = TLSNone
		}
	}
	if r.smtpUser.set && t.TLS == TLSNone && !loopback {
		d.problem(r.smtpUser.w, `needs smtp_tls = "starttls" or "implicit": the MTA %s is not on a loopback address and the password would be sent in clear text`, t.Addr)
		ok = false
	}
	return t, ok
}

func (d *decoder) needRcpt(r *rawDeliver, w where, kind string) bool {
	if !r.rcpt.set {
		d.problem(w.sub("rcpt"), "is required for %s delivery: the envelope recipients", kind)
		return false
	}
	return true
}

// What the fetcher does with a message that an SMTP, LMTP or MDA target
// rejected permanently (key on_reject). It is never bounced to its sender.
const (
	OnRejectKeep       = "keep"       // leave it on the server and report it
	OnRejectQuarantine = "quarantine" // keep it, and also store it in the quarantine Maildir
	OnRejectDelete     = "delete"     // delete it from the server once reported
)

// DefaultOnReject is on_reject when not given.
const DefaultOnReject = OnRejectQuarantine

var onRejectModes = []string{OnRejectQuarantine, OnRejectKeep, OnRejectDelete}

// confirming fills in the keys every confirming target has and checks
// those that depend on each other. It reports whether the entry is good.
func (d *decoder) confirming(de *Deliver, r *rawDeliver) bool {
	de.OnReject = or(r.onReject, DefaultOnReject)
	de.Quarantine = or(r.quarantine, "")
	if r.quarantine.set && r.onReject.set && de.OnReject != OnRejectQuarantine {
		d.problem(r.quarantine.w, `needs on_reject = "quarantine", not %q`, de.OnReject)
		return false
	}
	return true
}

// isLoopbackHostPort reports whether "host:port" names this host:
// localhost or a loopback IP address.
func isLoopbackHostPort(hostPort string) bool {
	h, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return false
	}
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
