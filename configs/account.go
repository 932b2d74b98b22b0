package configs

import (
	"sort"
	"strings"

	"popsync/internal/credential"
	"popsync/state"
)

var (
	tlsModes    = []string{TLSImplicit, TLSStartTLS, TLSNone}
	authMethods = []string{AuthAuto, AuthUser, AuthAPOP, AuthPlain, AuthLogin, AuthCRAMMD5, AuthXOAuth2, AuthOAuthBearer}
)

// rawAccount is one [[account]] table, or the [defaults] table, as written,
// before layering.
type rawAccount struct {
	w where

	name, host, user                         val[string]
	port                                     val[int]
	tls, tlsCAFile, tlsFingerprint, tlsSName val[string]

	password               val[Secret]
	passwordFile           val[string]
	passwordCommand        val[[]string]
	passwordEnv            val[string]
	passwordCommandTimeout val[Duration]
	auth                   val[string]

	keep, addReceived    val[bool]
	deleteAfter, timeout val[Duration]
	maxSize              val[Size]
	fetchLimit           val[int]
	schedule             val[string]
	runAtStart           val[bool]
	newIdentity          val[bool]
	deliver              val[[]Deliver]
	oauth2               val[*OAuth2]
}

type accountField func(d *decoder, r *rawAccount, x any, w where)

// accountFields are the keys of [[account]] and [defaults].
var accountFields = map[string]accountField{
	"name": func(d *decoder, r *rawAccount, x any, w where) {
		if r.w.inDefaults() {
			d.problem(w, "cannot be set in [defaults]: every account needs a name of its own")
			return
		}
		r.name = get(d.name, x, w)
	},
	"host":            func(d *decoder, r *rawAccount, x any, w where) { r.host = get(d.host, x, w) },
	"port":            func(d *decoder, r *rawAccount, x any, w where) { r.port = get(d.intRange(1, 65535), x, w) },
	"tls":             func(d *decoder, r *rawAccount, x any, w where) { r.tls = get(d.tlsMode, x, w) },
	"tls_ca_file":     func(d *decoder, r *rawAccount, x any, w where) { r.tlsCAFile = get(d.path, x, w) },
	"tls_fingerprint": func(d *decoder, r *rawAccount, x any, w where) { r.tlsFingerprint = get(d.fingerprint, x, w) },
	"tls_server_name": func(d *decoder, r *rawAccount, x any, w where) { r.tlsSName = get(d.host, x, w) },
	"user":            func(d *decoder, r *rawAccount, x any, w where) { r.user = get(d.nonEmpty, x, w) },
	"password":        func(d *decoder, r *rawAccount, x any, w where) { r.password = get(d.secret, x, w) },
	"password_file":   func(d *decoder, r *rawAccount, x any, w where) { r.passwordFile = get(d.path, x, w) },
	"password_command": func(d *decoder, r *rawAccount, x any, w where) {
		r.passwordCommand = get(d.command, x, w)
	},
	"password_env": func(d *decoder, r *rawAccount, x any, w where) { r.passwordEnv = get(d.envName, x, w) },
	"password_command_timeout": func(d *decoder, r *rawAccount, x any, w where) {
		r.passwordCommandTimeout = get(d.duration(true), x, w)
	},
	"auth":         func(d *decoder, r *rawAccount, x any, w where) { r.auth = get(d.enum(authMethods...), x, w) },
	"keep":         func(d *decoder, r *rawAccount, x any, w where) { r.keep = get(d.boolean, x, w) },
	"delete_after": func(d *decoder, r *rawAccount, x any, w where) { r.deleteAfter = get(d.duration(false), x, w) },
	"max_size":     func(d *decoder, r *rawAccount, x any, w where) { r.maxSize = get(d.size, x, w) },
	"fetch_limit": func(d *decoder, r *rawAccount, x any, w where) {
		r.fetchLimit = get(d.intMin(0), x, w)
	},
	"timeout":      func(d *decoder, r *rawAccount, x any, w where) { r.timeout = get(d.duration(true), x, w) },
	"add_received": func(d *decoder, r *rawAccount, x any, w where) { r.addReceived = get(d.boolean, x, w) },
	"schedule":     func(d *decoder, r *rawAccount, x any, w where) { r.schedule = get(d.schedule, x, w) },
	"run_at_start": func(d *decoder, r *rawAccount, x any, w where) { r.runAtStart = get(d.boolean, x, w) },
	"oauth2": func(d *decoder, r *rawAccount, x any, w where) {
		if r.w.inDefaults() {
			d.problem(w, "cannot be set in [defaults]: each account logs in with `popsync login` on its own")
			return
		}
		r.oauth2 = get(d.oauth2("account.oauth2", oauthServicePOP3), x, w)
	},
	"new_identity": func(d *decoder, r *rawAccount, x any, w where) {
		if r.w.inDefaults() {
			d.problem(w, "cannot be set in [defaults]: it says of one account that it is another mailbox than the one its name had")
			return
		}
		r.newIdentity = get(d.boolean, x, w)
	},
	"deliver": func(d *decoder, r *rawAccount, x any, w where) {
		header := "account.deliver"
		if r.w.inDefaults() {
			header = "defaults.deliver"
		}
		r.deliver = get(d.delivers(header), x, w)
	},
}

// rawAccount reads one [[account]] or the [defaults] table.
func (d *decoder) rawAccount(x any, w where) *rawAccount {
	if !w.inDefaults() {
		// Keys of an account are named relative to it.
		w.key = ""
		if m, ok := x.(map[string]any); ok {
			if n, ok := m["name"].(string); ok {
				w.account = n
			}
		}
	}
	r := &rawAccount{w: w}
	handlers := make(map[string]func(any, where), len(accountFields))
	for k, f := range accountFields {
		handlers[k] = func(x any, w where) { f(d, r, x, w) }
	}
	d.fields(x, w, handlers)
	return r
}

// accounts layers each account over [defaults], fills in built-in defaults
// and checks what involves more than one key or more than one account.
func (d *decoder) accounts(raws []*rawAccount, def *rawAccount) []*Account {
	out := make([]*Account, 0, len(raws))
	names := make(map[string]*Account)
	idents := make(map[state.Account]*Account)
	for _, r := range raws {
		a, identOK := d.merge(r, def)
		if r.name.set && !r.name.bad {
			if prev, dup := names[a.Name]; dup {
				d.problem(r.name.w, "is already used by the account on line %d", prev.Line)
			} else {
				names[a.Name] = a
			}
		}
		// The seen-set is keyed by the identity: two accounts with the same
		// one would each think the other's mail was theirs.
		if identOK {
			id := a.Identity()
			if prev, dup := idents[id]; dup {
				d.problem(r.w, "has the same host, port and user as account %q (line %d), %s: the two would share one seen-set", prev.Name, prev.Line, id)
			} else {
				idents[id] = a
			}
		}
		out = append(out, a)
	}
	return out
}

// merge builds the Account of r over def. identOK is false when host, port
// or user could not be established (the problem is already reported).
func (d *decoder) merge(r, def *rawAccount) (a *Account, identOK bool) {
	w := r.w
	a = &Account{Line: d.pos.line(w.path)}
	identOK = true

	if !r.name.set {
		d.problem(w.sub("name"), "is required")
	}
	a.Name = or(r.name, "")

	required := func(v val[string], key string) string {
		if !v.set {
			d.problem(w.sub(key), "is required")
		}
		if !v.set || v.bad {
			identOK = false
		}
		return or(v, "")
	}
	a.Host = required(pick(r.host, def.host), "host")
	a.User = required(pick(r.user, def.user), "user")

	tls := pick(r.tls, def.tls)
	a.TLS = or(tls, DefaultTLS)
	port := pick(r.port, def.port)
	if port.bad || (!port.set && tls.bad) {
		identOK = false
	}
	a.Port = or(port, DefaultPort(a.TLS))

	caFile, fpr, sname := pick(r.tlsCAFile, def.tlsCAFile), pick(r.tlsFingerprint, def.tlsFingerprint), pick(r.tlsSName, def.tlsSName)
	a.TLSCAFile, a.TLSFingerprint, a.TLSServerName = or(caFile, ""), or(fpr, ""), or(sname, "")
	if a.TLS == TLSNone && !tls.bad {
		for _, v := range []struct {
			key string
			v   val[string]
		}{{"tls_ca_file", caFile}, {"tls_fingerprint", fpr}, {"tls_server_name", sname}} {
			if v.v.set {
				d.problem(blame(w, v.v.w, tls.w), `%s needs tls = "implicit" or "starttls", not "none"`, v.key)
			}
		}
	}

	if !r.oauth2.set {
		d.passwords(a, r, def)
	}
	a.Password.Timeout = or(pick(r.passwordCommandTimeout, def.passwordCommandTimeout), Duration(DefaultPasswordCommandTimeout)).D()
	a.Auth = or(pick(r.auth, def.auth), DefaultAuth)
	d.oauth2Auth(a, r, def) // with [account.oauth2]: no password, a bearer mechanism

	keep, deleteAfter := pick(r.keep, def.keep), pick(r.deleteAfter, def.deleteAfter)
	a.Keep = or(keep, true)
	a.DeleteAfter = or(deleteAfter, 0)
	if a.DeleteAfter > 0 && !a.Keep && !keep.bad {
		d.problem(blame(w, deleteAfter.w, keep.w), "delete_after needs keep = true (with keep = false mail is deleted as soon as it is delivered)")
	}
	a.MaxSize = or(pick(r.maxSize, def.maxSize), 0)
	a.FetchLimit = or(pick(r.fetchLimit, def.fetchLimit), 0)
	a.Timeout = or(pick(r.timeout, def.timeout), DefaultTimeout)
	a.AddReceived = or(pick(r.addReceived, def.addReceived), true)
	a.Schedule = or(pick(r.schedule, def.schedule), DefaultSchedule)
	a.RunAtStart = or(pick(r.runAtStart, def.runAtStart), true)
	a.NewIdentity = or(r.newIdentity, false)

	dl := pick(r.deliver, def.deliver)
	switch {
	case dl.bad:
	case len(dl.v) == 0:
		d.problem(w, "needs at least one [[account.deliver]] table")
	default:
		a.Deliver = cloneDelivers(dl.v)
	}
	return a, identOK
}

// passwords takes the password source group from the account when it names
// any source, else from [defaults], and checks that exactly one is given.
func (d *decoder) passwords(a *Account, r, def *rawAccount) {
	src := def
	if r.password.set || r.passwordFile.set || r.passwordCommand.set || r.passwordEnv.set {
		src = r
	}
	type given struct {
		key string
		w   where
	}
	var gs []given
	if src.password.set {
		gs = append(gs, given{"password", src.password.w})
	}
	if src.passwordFile.set {
		gs = append(gs, given{"password_file", src.passwordFile.w})
	}
	if src.passwordCommand.set {
		gs = append(gs, given{"password_command", src.passwordCommand.w})
	}
	if src.passwordEnv.set {
		gs = append(gs, given{"password_env", src.passwordEnv.w})
	}
	sort.SliceStable(gs, func(i, j int) bool { return d.pos.line(gs[i].w.path) < d.pos.line(gs[j].w.path) })
	switch len(gs) {
	case 0:
		d.problem(r.w, "needs a password source: one of password, password_file, password_command or password_env")
	case 1:
	default:
		for _, g := range gs[1:] {
			d.problem(g.w, "only one password source may be given, and %s is set on line %d", gs[0].key, d.pos.line(gs[0].w.path))
		}
	}
	a.Password = credential.Source{Key: "password", Literal: or(src.password, ""), File: or(src.passwordFile, ""),
		Command: append([]string(nil), or(src.passwordCommand, nil)...), Env: or(src.passwordEnv, "")}
}

// childEnvOf collects every environment variable the tables name as a
// secret source, used or shadowed, into the ChildEnv of the file: the
// accounts' password_env and the SMTP targets' smtp_password_env.
func childEnvOf(raws []*rawAccount) ChildEnv {
	var names []string
	for _, r := range raws {
		if r.passwordEnv.set && !r.passwordEnv.bad {
			names = append(names, r.passwordEnv.v)
		}
		if o := r.oauth2.v; o != nil && o.ClientSecret.Env != "" {
			names = append(names, o.ClientSecret.Env)
		}
		for _, de := range r.deliver.v {
			if t, ok := de.Target.(*SMTPTarget); ok && t.Password.Env != "" {
				names = append(names, t.Password.Env)
			}
			if t, ok := de.Target.(*IMAPTarget); ok && t.Password.Env != "" {
				names = append(names, t.Password.Env)
			}
			if t, ok := de.Target.(*IMAPTarget); ok && t.OAuth2 != nil && t.OAuth2.ClientSecret.Env != "" {
				names = append(names, t.OAuth2.ClientSecret.Env)
			}
		}
	}
	return NewChildEnv(names...)
}

// keyHints says, for a key that is unknown where it was written, where it
// belongs.
func keyHints() map[string]string {
	h := map[string]string{
		"path":           "[state]",
		"max_parallel":   "[daemon]",
		"shutdown_grace": "[daemon]",
		"metrics":        "[daemon]",
		"metrics_public": "[daemon]",
	}
	for k := range deliverFields {
		h[k] = "[[account.deliver]]"
	}
	for k := range accountFields {
		h[k] = "[[account]] or [defaults]"
	}
	for k := range oauth2Fields {
		h[k] = "[account.oauth2]"
	}
	return h
}

// tlsMode is the enum of "tls", with a way out for the names other tools
// use: fetchmail's "ssl" is implicit TLS, and "tls" means either.
func (d *decoder) tlsMode(x any, w where) (string, bool) {
	if s, ok := x.(string); ok {
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "ssl", "tls", "on", "yes", "true":
			d.problem(w, `must be implicit, starttls or none, not %q: use "implicit" for TLS from the first byte (port 995, fetchmail's ssl), "starttls" for STLS on port 110`, s)
			return "", false
		}
	}
	return d.enum(tlsModes...)(x, w)
}
