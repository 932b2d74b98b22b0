package importer

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"popsync/configs"
)

// fetchmail's run control file (fetchmail(1), "THE RUN CONTROL FILE"):
// free-form tokens; '#' starts a comment; ':', ';' and ',' are
// whitespace; the noise words and, with, has, wants and options are
// ignored; strings are bare words or quoted with " or ', with C escapes.
// Statements are `set ...`, `defaults ...`, and `poll NAME ...` or `skip
// NAME ...`: server options, then one or more `user` blocks of user
// options. Every user block is one popsync account.

type fmToken struct {
	s      string
	quoted bool
	line   int
}

// fmLex splits an rc file into tokens.
func fmLex(name string, data []byte) ([]fmToken, error) {
	var toks []fmToken
	line := 1
	s := string(data)
	if !utf8.ValidString(s) {
		// fetchmail reads octets; popsync's config is UTF-8, so refuse
		// early with a line rather than writing a broken config.
		for i, l := range strings.Split(s, "\n") {
			if !utf8.ValidString(l) {
				return nil, errorf(Pos{name, i + 1}, "not valid UTF-8")
			}
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\n':
			line++
			i++
		case c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v' || c == ':' || c == ';' || c == ',':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '=':
			toks = append(toks, fmToken{s: "=", line: line})
			i++
		case c == '"' || c == '\'':
			// fetchmail's lexer is flex: at a quote, a quoted string
			// (up to the next same quote, no escaped quotes) and a bare
			// word both match, and the longer wins, the quoted string on a
			// tie. So "x"y is the bare word "x"y, quotes included.
			k := strings.IndexByte(s[i+1:], c)
			bare := bareEnd(s, i) - i
			if k < 0 && bare <= 1 {
				return nil, errorf(Pos{name, line}, "string starting here is not closed with %c", c)
			}
			if k < 0 || bare > k+2 {
				toks = append(toks, fmToken{s: fmUnescape(s[i : i+bare]), line: line})
				i += bare
				continue
			}
			body := s[i+1 : i+1+k]
			toks = append(toks, fmToken{s: fmUnescape(body), quoted: true, line: line})
			line += strings.Count(body, "\n")
			i += k + 2
		default:
			j := bareEnd(s, i)
			toks = append(toks, fmToken{s: fmUnescape(s[i:j]), line: line})
			i = j
		}
	}
	return toks, nil
}

// bareEnd returns the end of the bare word starting at i: fetchmail's
// [^=;:, \t\r\n]+.
func bareEnd(s string, i int) int {
	j := i
	for j < len(s) && !strings.ContainsRune(" \t\r\n:;,=", rune(s[j])) {
		j++
	}
	return j
}

// fmUnescape applies fetchmail's escapes to a token.
func fmUnescape(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			r, n := fmEscape(s[i+1:])
			b.WriteString(r)
			i += n
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// fmEscape decodes the escape after a backslash: \n \t \r \b \f \a, \xHH,
// \ooo, or the character itself (\" \\ \'). It returns the decoded text
// and how many octets it consumed.
func fmEscape(s string) (string, int) {
	switch s[0] {
	case 'n':
		return "\n", 1
	case 't':
		return "\t", 1
	case 'r':
		return "\r", 1
	case 'b':
		return "\b", 1
	case 'f':
		return "\f", 1
	case 'a':
		return "\a", 1
	case 'x', 'X':
		n := 1
		for n < len(s) && n < 3 && isHex(s[n]) {
			n++
		}
		if n == 1 {
			return s[:1], 1
		}
		v, _ := strconv.ParseUint(s[1:n], 16, 8)
		return string(rune(v)), n
	case '0', '1', '2', '3', '4', '5', '6', '7':
		n := 0
		for n < len(s) && n < 3 && s[n] >= '0' && s[n] <= '7' {
			n++
		}
		v, _ := strconv.ParseUint(s[:n], 8, 16)
		return string(rune(v & 0xff)), n
	}
	_, n := utf8.DecodeRuneInString(s)
	return s[:n], n
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// fmArgs is how many arguments a keyword takes.
type fmArgs int

const (
	fmFlag     fmArgs = iota // none; may be negated with "no"
	fmOne                    // one string
	fmNum                    // one number
	fmList                   // one or more strings
	fmEnvelope               // an optional number, then a string
)

type fmKeyword struct {
	canon  string
	args   fmArgs
	server bool // a server option (applies to every user of the poll)
}

// fmKeywords are the keywords of the rc grammar, by every spelling.
var fmKeywords = map[string]fmKeyword{}

func init() {
	add := func(args fmArgs, server bool, canon string, aliases ...string) {
		for _, n := range append([]string{canon}, aliases...) {
			fmKeywords[n] = fmKeyword{canon: canon, args: args, server: server}
		}
	}
	// server options
	add(fmOne, true, "via")
	add(fmOne, true, "protocol", "proto")
	add(fmOne, true, "service", "port")
	add(fmOne, true, "auth", "authenticate")
	add(fmNum, true, "timeout")
	add(fmEnvelope, true, "envelope")
	add(fmOne, true, "qvirtual")
	add(fmList, true, "aka")
	add(fmList, true, "localdomains", "local")
	add(fmOne, true, "interface")
	add(fmOne, true, "monitor")
	add(fmOne, true, "plugin")
	add(fmOne, true, "plugout")
	add(fmFlag, true, "dns")
	add(fmFlag, true, "checkalias")
	add(fmFlag, true, "uidl")
	add(fmNum, true, "interval")
	add(fmFlag, true, "tracepolls")
	add(fmOne, true, "principal")
	add(fmOne, true, "esmtpname")
	add(fmOne, true, "esmtppassword")
	add(fmOne, true, "bad-header")
	// user options
	add(fmOne, false, "password", "pass")
	add(fmFlag, false, "ssl")
	add(fmOne, false, "sslcert")
	add(fmFlag, false, "sslcertck")
	add(fmOne, false, "sslcertfile")
	add(fmOne, false, "sslcertpath")
	add(fmOne, false, "sslfingerprint")
	add(fmOne, false, "sslcommonname")
	add(fmOne, false, "sslkey")
	add(fmOne, false, "sslproto")
	add(fmList, false, "folder")
	add(fmList, false, "smtphost", "smtphosts")
	add(fmList, false, "fetchdomains")
	add(fmOne, false, "smtpaddress")
	add(fmOne, false, "smtpname")
	add(fmList, false, "antispam")
	add(fmOne, false, "mda")
	add(fmOne, false, "bsmtp")
	add(fmFlag, false, "lmtp")
	add(fmOne, false, "preconnect")
	add(fmOne, false, "postconnect")
	add(fmFlag, false, "keep")
	add(fmFlag, false, "flush")
	add(fmFlag, false, "limitflush")
	add(fmFlag, false, "fetchall")
	add(fmFlag, false, "rewrite")
	add(fmFlag, false, "stripcr")
	add(fmFlag, false, "forcecr")
	add(fmFlag, false, "pass8bits")
	add(fmFlag, false, "dropstatus")
	add(fmFlag, false, "dropdelivered")
	add(fmFlag, false, "mimedecode")
	add(fmFlag, false, "idle")
	add(fmNum, false, "limit")
	add(fmNum, false, "warnings")
	add(fmNum, false, "batchlimit")
	add(fmNum, false, "fetchlimit")
	add(fmNum, false, "fetchsizelimit")
	add(fmNum, false, "fastuidl")
	add(fmNum, false, "expunge")
	add(fmOne, false, "properties")
	add(fmFlag, false, "showdots")
}

// fmNoise are ignored wherever they appear.
var fmNoise = map[string]bool{"and": true, "with": true, "has": true, "wants": true, "options": true}

// fmOpt is one option as written.
type fmOpt struct {
	vals []string
	neg  bool
	pos  Pos
}

type fmOpts map[string]fmOpt

func (o fmOpts) has(k string) bool { _, ok := o[k]; return ok && !o[k].neg }

func (o fmOpts) str(k string) (string, bool) {
	v, ok := o[k]
	if !ok || v.neg || len(v.vals) == 0 {
		return "", false
	}
	return v.vals[0], true
}

// fmUser is one user block: the remote user, local names and options.
type fmUser struct {
	pos    Pos
	remote string
	locals []string
	multi  Pos // a mapping or "*" in the local names (multidrop)
	opts   fmOpts
}

type fmPoll struct {
	pos   Pos
	name  string
	skip  bool
	opts  fmOpts // server options, over the defaults
	users []*fmUser
}

type fmRC struct {
	name     string
	set      map[string]fmOpt
	defaults fmOpts
	polls    []*fmPoll
}

type fmParser struct {
	name string
	toks []fmToken
	i    int
	rc   *fmRC
}

func (p *fmParser) pos(t fmToken) Pos { return Pos{p.name, t.line} }

// next returns the next token that is not a noise word.
func (p *fmParser) peek() (fmToken, bool) {
	for p.i < len(p.toks) {
		t := p.toks[p.i]
		if !t.quoted && fmNoise[strings.ToLower(t.s)] {
			p.i++
			continue
		}
		return t, true
	}
	return fmToken{}, false
}

func (p *fmParser) next() (fmToken, bool) {
	t, ok := p.peek()
	if ok {
		p.i++
	}
	return t, ok
}

// word reports whether t is the bare keyword w.
func word(t fmToken, w ...string) bool {
	if t.quoted {
		return false
	}
	l := strings.ToLower(t.s)
	for _, x := range w {
		if l == x {
			return true
		}
	}
	return false
}

// isKeyword reports whether t is a bare word the grammar gives a meaning.
func isKeyword(t fmToken) bool {
	if t.quoted {
		return false
	}
	l := strings.ToLower(t.s)
	if _, ok := fmKeywords[l]; ok {
		return true
	}
	if strings.HasPrefix(l, "no") {
		if k, ok := fmKeywords[l[2:]]; ok && k.args == fmFlag || l[2:] == "envelope" {
			return true
		}
	}
	switch l {
	case "poll", "skip", "defaults", "set", "user", "username", "is", "to", "here", "there", "no", "=":
		return true
	}
	return false
}

// parseFetchmailrc parses an rc file.
func parseFetchmailrc(name string, data []byte) (*fmRC, error) {
	toks, err := fmLex(name, data)
	if err != nil {
		return nil, err
	}
	p := &fmParser{name: name, toks: toks, rc: &fmRC{name: name, set: map[string]fmOpt{}, defaults: fmOpts{}}}
	for {
		t, ok := p.next()
		if !ok {
			return p.rc, nil
		}
		switch {
		case word(t, "set"):
			if err := p.set(t); err != nil {
				return nil, err
			}
		case word(t, "defaults"):
			if err := p.options(p.rc.defaults, nil, true); err != nil {
				return nil, err
			}
		case word(t, "poll", "skip"):
			n, ok := p.next()
			if !ok || isKeyword(n) {
				return nil, errorf(p.pos(t), "%s needs a server name", t.s)
			}
			pl := &fmPoll{pos: p.pos(t), name: n.s, skip: word(t, "skip"), opts: fmOpts{}}
			p.rc.polls = append(p.rc.polls, pl)
			if err := p.options(pl.opts, pl, false); err != nil {
				return nil, err
			}
		default:
			return nil, errorf(p.pos(t), "unexpected %q: a statement starts with poll, skip, defaults or set", t.s)
		}
	}
}

// set parses a global option after "set".
func (p *fmParser) set(st fmToken) error {
	t, ok := p.next()
	if !ok {
		return errorf(p.pos(st), "set needs an option")
	}
	neg := false
	if word(t, "no") {
		neg = true
		if t, ok = p.next(); !ok {
			return errorf(p.pos(st), "set no needs an option")
		}
	}
	k := strings.ToLower(t.s)
	o := fmOpt{neg: neg, pos: p.pos(t)}
	switch k {
	case "daemon", "postmaster", "logfile", "idfile", "pidfile", "properties":
		if neg {
			return errorf(p.pos(t), "set no %s is not an option", k)
		}
		v, ok := p.next()
		if !ok {
			return errorf(p.pos(t), "set %s needs a value", k)
		}
		o.vals = []string{v.s}
	case "bouncemail", "spambounce", "softbounce", "syslog", "invisible", "showdots":
	default:
		return errorf(p.pos(t), "unknown global option set %s", t.s)
	}
	p.rc.set[k] = o
	return nil
}

// options reads server and user options until the next statement. In a
// defaults section (pl == nil) every option goes into opts.
func (p *fmParser) options(opts fmOpts, pl *fmPoll, defaults bool) error {
	var u *fmUser
	for {
		t, ok := p.peek()
		if !ok || word(t, "poll", "skip", "defaults", "set") {
			return nil
		}
		p.i++
		if word(t, "user", "username") {
			if defaults {
				// fetchmail allows it, but a user in defaults would give
				// every poll the same login; rare enough to refuse.
				return errorf(p.pos(t), "user in a defaults section is not supported by popsync import")
			}
			n, ok := p.next()
			if !ok || isKeyword(n) {
				return errorf(p.pos(t), "user needs a name")
			}
			u = &fmUser{pos: p.pos(t), opts: fmOpts{}}
			pl.users = append(pl.users, u)
			if nt, ok := p.peek(); ok && word(nt, "here") {
				p.i++
				u.locals = append(u.locals, n.s)
			} else {
				if ok && word(nt, "there") {
					p.i++
				}
				u.remote = n.s
			}
			continue
		}
		if word(t, "is", "to") {
			if u == nil {
				return errorf(p.pos(t), "%s must follow a user", t.s)
			}
			if err := p.localNames(t, u); err != nil {
				return err
			}
			continue
		}
		neg := false
		k := strings.ToLower(t.s)
		if t.quoted {
			return errorf(p.pos(t), "unexpected string %q where an option keyword belongs", t.s)
		}
		if k == "no" {
			n, ok := p.next()
			if !ok {
				return errorf(p.pos(t), "no needs an option")
			}
			neg, k = true, strings.ToLower(n.s)
		} else if _, known := fmKeywords[k]; !known && strings.HasPrefix(k, "no") {
			neg, k = true, k[2:]
		}
		kw, known := fmKeywords[k]
		if !known {
			return errorf(p.pos(t), "unknown keyword %q", t.s)
		}
		o := fmOpt{neg: neg, pos: p.pos(t)}
		if neg && kw.args != fmFlag && kw.canon != "envelope" {
			return errorf(p.pos(t), "%s cannot be negated with no", k)
		}
		if !neg {
			switch kw.args {
			case fmOne, fmNum:
				v, ok := p.next()
				if !ok || word(v, "poll", "skip", "defaults", "set") {
					return errorf(p.pos(t), "%s needs a value", k)
				}
				if kw.args == fmNum {
					if _, err := strconv.Atoi(v.s); err != nil {
						return errorf(p.pos(v), "%s needs a number, not %q", k, v.s)
					}
				}
				o.vals = []string{v.s}
			case fmEnvelope:
				v, ok := p.next()
				if !ok {
					return errorf(p.pos(t), "envelope needs a header name")
				}
				if _, err := strconv.Atoi(v.s); err == nil && !v.quoted {
					if v, ok = p.next(); !ok {
						return errorf(p.pos(t), "envelope needs a header name")
					}
				}
				o.vals = []string{v.s}
			case fmList:
				for {
					v, ok := p.peek()
					if !ok || isKeyword(v) {
						break
					}
					p.i++
					o.vals = append(o.vals, v.s)
				}
				if len(o.vals) == 0 {
					return errorf(p.pos(t), "%s needs a value", k)
				}
			}
		}
		switch {
		case defaults:
			opts[kw.canon] = o
		case kw.server && u == nil:
			opts[kw.canon] = o
		case kw.server:
			// fetchmail refuses this too ("server option after user
			// options").
			return errorf(p.pos(t), "server option %s after user options", k)
		default:
			if u == nil {
				// User options before any user: fetchmail's implicit
				// user, the one running it.
				u = &fmUser{pos: p.pos(t), opts: fmOpts{}}
				pl.users = append(pl.users, u)
			}
			u.opts[kw.canon] = o
		}
	}
}

// localNames reads the names after is/to: local names, "remote = local"
// mappings and "*" (both multidrop), ended by here; "is NAME there" names
// the remote user instead.
func (p *fmParser) localNames(kw fmToken, u *fmUser) error {
	var names []fmToken
	for {
		t, ok := p.peek()
		if !ok {
			break
		}
		if word(t, "=") {
			p.i++
			if u.multi.Line == 0 {
				u.multi = p.pos(t)
			}
			continue
		}
		if isKeyword(t) {
			break
		}
		p.i++
		names = append(names, t)
	}
	if len(names) == 0 {
		return errorf(p.pos(kw), "%s needs a name", kw.s)
	}
	if t, ok := p.peek(); ok && word(t, "here", "there") {
		p.i++
		if word(t, "there") {
			if len(names) != 1 {
				return errorf(p.pos(kw), "%s ... there names one remote user", kw.s)
			}
			u.remote = names[0].s
			return nil
		}
	}
	for _, n := range names {
		if n.s == "*" && !n.quoted && u.multi.Line == 0 {
			u.multi = p.pos(n)
		}
		u.locals = append(u.locals, n.s)
	}
	return nil
}

// FetchmailOptions are what a fetchmail conversion needs to know about the
// user who ran fetchmail.
type FetchmailOptions struct {
	// LocalUser is the login name fetchmail ran as: its default local
	// name and remote user.
	LocalUser string
	// Home expands ~ and is the default folder of .fetchids.
	Home string
}

// ConvertFetchmail converts one .fetchmailrc.
func ConvertFetchmail(name string, data []byte, opt FetchmailOptions) (*Import, error) {
	rc, err := parseFetchmailrc(name, data)
	if err != nil {
		return nil, err
	}
	im := &Import{Tool: Fetchmail, Files: []string{name}}
	idfile := joinHome(opt.Home, ".fetchids")
	for _, k := range sortedKeys(rc.set) {
		o := rc.set[k]
		v := ""
		if len(o.vals) > 0 {
			v = o.vals[0]
		}
		switch k {
		case "daemon":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return nil, errorf(o.pos, "set daemon needs a number of seconds, not %q", v)
			}
			if n > 0 {
				im.Global.Schedule = fmt.Sprintf("@every %ds", n)
				im.Global.Comments = append(im.Global.Comments, fmt.Sprintf("schedule from set daemon %d (%s); run popsync run instead of fetchmail -d", n, o.pos))
			}
		case "idfile":
			idfile = expandHome(opt.Home, v)
		case "postmaster", "bouncemail", "spambounce", "softbounce":
			im.harmless(o.pos, "", "set "+k, "popsync never bounces: a message a target refuses is quarantined and reported (on_reject)")
		case "logfile", "syslog", "pidfile", "invisible", "showdots", "properties":
			im.harmless(o.pos, "", "set "+k, "popsync logs to stderr and keeps no pid file; not needed")
		}
	}
	names := map[string]int{}
	for _, pl := range rc.polls {
		if len(pl.users) == 0 {
			// A poll without user options: fetchmail's implicit user.
			pl.users = append(pl.users, &fmUser{pos: pl.pos, opts: fmOpts{}})
		}
		for _, u := range pl.users {
			a := convertFetchmailUser(im, rc, pl, u, opt)
			if a == nil {
				continue
			}
			a.SeenFile = idfile
			a.Name = uniqueName(names, a.Name)
			im.Accounts = append(im.Accounts, a)
		}
	}
	return im, nil
}

// merged returns the options of one user block over the poll's server
// options over the defaults.
func merged(rc *fmRC, pl *fmPoll, u *fmUser) fmOpts {
	o := fmOpts{}
	for k, v := range rc.defaults {
		o[k] = v
	}
	for k, v := range pl.opts {
		o[k] = v
	}
	for k, v := range u.opts {
		o[k] = v
	}
	return o
}

func convertFetchmailUser(im *Import, rc *fmRC, pl *fmPoll, u *fmUser, opt FetchmailOptions) *Account {
	o := merged(rc, pl, u)
	remote := u.remote
	if remote == "" {
		remote = opt.LocalUser
	}
	host := pl.name
	if v, ok := o.str("via"); ok {
		host = v
	}
	a := &Account{Name: accountName(pl.name, remote, len(pl.users) > 1), Pos: u.pos, Host: host, User: remote}
	if u.remote == "" {
		a.Comments = append(a.Comments, fmt.Sprintf("no user given: fetchmail logs in as the user running it, %q", opt.LocalUser))
	}
	if pl.skip {
		a.Comments = append(a.Comments, "this was a skip entry: fetchmail polled it only when named on its command line")
	}
	a.seenHost, a.seenUser = host, remote

	proto := "auto"
	if v, ok := o.str("protocol"); ok {
		proto = strings.ToLower(v)
	}
	switch proto {
	case "pop3":
	case "apop":
		a.Auth = configs.AuthAPOP
	case "auto":
		a.Comments = append(a.Comments, "no protocol given: fetchmail tried IMAP first, then POP3; popsync speaks POP3")
		im.issue(pl.pos, a.Name, "protocol (none)", "fetchmail tries IMAP before POP3; popsync speaks only POP3: check that this account was polled over POP3")
	default:
		im.issue(o["protocol"].pos, a.Name, "protocol "+proto, "popsync speaks only POP3; this account is not imported")
		return nil
	}

	// TLS (fetchmail(1), --ssl and --sslproto): ssl means TLS from the
	// first octet; otherwise a non-empty sslproto demands STLS, an empty
	// one turns it off, and neither means STLS when the server offers it.
	switch {
	case o.has("ssl"):
		a.TLS = configs.TLSImplicit
	case o["sslproto"].pos.Line > 0 && !o["sslproto"].neg:
		if v, _ := o.str("sslproto"); v == "" {
			a.TLS = configs.TLSNone
		} else {
			a.TLS = configs.TLSStartTLS
		}
	default:
		a.TLS = configs.TLSStartTLS
		im.issue(u.pos, a.Name, "ssl/sslproto (none)", `fetchmail upgrades with STLS only when the server offers it; popsync requires STLS (tls = "starttls"): if this server offers no TLS, set tls = "none" yourself`)
	}
	if v, ok := o.str("service"); ok {
		port, err := servicePort(v)
		if err != nil {
			im.issue(o["service"].pos, a.Name, "service "+v, err.Error()+"; popsync's default port is used")
		} else {
			a.Port = port
		}
	}
	if v, ok := o["sslcertck"]; ok && v.neg && !o.has("sslfingerprint") {
		im.issue(v.pos, a.Name, "no sslcertck", "popsync always verifies the server's certificate: give tls_ca_file or tls_fingerprint if it is not signed by a trusted CA")
	}
	if v, ok := o.str("sslcertfile"); ok {
		a.CAFile = expandHome(opt.Home, v)
	}
	if v, ok := o.str("sslcommonname"); ok {
		a.ServerName = v
	}
	if v, ok := o.str("sslfingerprint"); ok {
		if fp, ok := sha256Fingerprint(v); ok {
			a.Print = fp
		} else {
			im.issue(o["sslfingerprint"].pos, a.Name, "sslfingerprint", "fetchmail pins an MD5 fingerprint; popsync pins SHA-256: `popsync check --connect` shows the server's SHA-256 fingerprint to put in tls_fingerprint (until then the certificate is verified normally)")
		}
	}
	for _, k := range []string{"sslcertpath", "sslcert", "sslkey"} {
		if v, ok := o[k]; ok && !v.neg {
			im.issue(v.pos, a.Name, k, "not supported by popsync (no CA directories, no client certificates)")
		}
	}
	if v, ok := o.str("auth"); ok {
		switch strings.ToLower(v) {
		case "any":
		case "password":
			a.Auth = configs.AuthUser
		case "cram-md5":
			a.Auth = configs.AuthCRAMMD5
		default:
			im.issue(o["auth"].pos, a.Name, "auth "+v, "popsync has no such POP3 authentication; auth = \"auto\" is used")
		}
	}
	if v, ok := o.str("password"); ok {
		a.Password = v
	} else {
		a.TODO = append(a.TODO, "no password in .fetchmailrc (fetchmail asked for it or read ~/.netrc): give password_command, password_file or password_env")
	}
	a.Keep = o.has("keep")
	if v, ok := o.str("limit"); ok {
		n, _ := strconv.ParseInt(v, 10, 64)
		a.MaxSize = n
	}
	if v, ok := o.str("fetchlimit"); ok {
		a.FetchLimit, _ = strconv.Atoi(v)
	}
	if v, ok := o.str("timeout"); ok {
		n, _ := strconv.Atoi(v)
		a.Timeout = secondsDuration(n)
	}
	if o.has("fetchall") {
		im.issue(o["fetchall"].pos, a.Name, "fetchall", "popsync fetches only messages it has not seen; there is no fetch-everything-again mode")
	}
	if v, ok := o["uidl"]; ok && v.neg {
		im.harmless(v.pos, a.Name, "no uidl", "popsync always tracks messages by UIDL")
	}

	unsupported := map[string]string{
		"preconnect":    "popsync runs no command before a poll: run it from a wrapper or a systemd ExecStartPre",
		"postconnect":   "popsync runs no command after a poll",
		"plugin":        "popsync connects by TCP only; tunnel with a local port forward instead",
		"plugout":       "popsync delivers without plugout commands",
		"mimedecode":    "popsync never rewrites messages",
		"dropstatus":    "popsync never rewrites messages",
		"dropdelivered": "popsync never rewrites messages",
		"forcecr":       "popsync's Maildir and MDA targets get LF line endings, SMTP and LMTP CRLF",
		"flush":         "popsync never deletes a message it has not delivered",
		"limitflush":    "popsync never deletes a message it has not delivered; larger ones are left and reported",
		"idle":          "IMAP only",
		"folder":        "IMAP only",
		"envelope":      "multidrop: popsync delivers every message of an account to its targets",
		"qvirtual":      "multidrop: popsync delivers every message of an account to its targets",
		"aka":           "multidrop: popsync delivers every message of an account to its targets",
		"localdomains":  "multidrop: popsync delivers every message of an account to its targets",
		"fetchdomains":  "multidrop: popsync delivers every message of an account to its targets",
		"dns":           "multidrop: popsync does no DNS lookups for recipients",
		"checkalias":    "multidrop: popsync does no DNS lookups for recipients",
		"interface":     "popsync does not check network interfaces before a poll",
		"monitor":       "popsync does not watch interfaces for activity",
		"interval":      "give the account its own schedule instead",
		"principal":     "Kerberos is not supported",
		"esmtpname":     "SMTP AUTH: use the target's smtp_user and smtp_password",
		"esmtppassword": "SMTP AUTH: use the target's smtp_user and smtp_password",
		"antispam":      "popsync never drops a message an MTA refuses: it is quarantined (on_reject)",
		"properties":    "",
		"bad-header":    "popsync delivers messages as the server sent them",
	}
	harmlessOpts := map[string]string{
		"rewrite":        "fetchmail's default; popsync never rewrites addresses in headers",
		"stripcr":        "popsync's Maildir and MDA targets get LF line endings anyway",
		"pass8bits":      "popsync uses 8BITMIME when the MTA offers it",
		"warnings":       "popsync reports an oversized message once",
		"batchlimit":     "popsync uses one SMTP session per poll",
		"fetchsizelimit": "popsync asks for every size at once",
		"fastuidl":       "popsync reads the whole UIDL list",
		"expunge":        "popsync commits deletions at the end of each poll",
		"tracepolls":     "popsync's Received: header names the account",
		"showdots":       "progress display",
	}
	for _, k := range sortedKeys(o) {
		v := o[k]
		if v.neg {
			continue
		}
		if r, ok := unsupported[k]; ok {
			if k == "properties" {
				im.harmless(v.pos, a.Name, k, "fetchmail ignores it too")
				continue
			}
			im.issue(v.pos, a.Name, k, r)
		}
		if r, ok := harmlessOpts[k]; ok {
			im.harmless(v.pos, a.Name, k, r)
		}
	}

	locals := u.locals
	if len(locals) == 0 {
		locals = []string{opt.LocalUser}
	}
	if u.multi.Line > 0 || len(locals) > 1 {
		p := u.multi
		if p.Line == 0 {
			p = u.pos
		}
		im.issue(p, a.Name, "is/to (several local names)", "multidrop: popsync delivers every message of an account to the same targets")
		a.TODO = append(a.TODO, "multidrop account (several local names): choose the targets; popsync does not sort by recipient")
		return a
	}
	convertFetchmailDelivery(im, a, o, locals[0])
	return a
}

// convertFetchmailDelivery sets the targets: mda, else smtphost (SMTP or,
// with lmtp, LMTP), else fetchmail's default, SMTP to localhost:25.
func convertFetchmailDelivery(im *Import, a *Account, o fmOpts, local string) {
	if v, ok := o.str("bsmtp"); ok {
		im.issue(o["bsmtp"].pos, a.Name, "bsmtp", "batch SMTP files are not a popsync target")
		a.TODO = append(a.TODO, fmt.Sprintf("delivery was bsmtp %q: choose a target", v))
		return
	}
	if v, ok := o.str("mda"); ok {
		a.Deliver = append(a.Deliver, Target{MDA: shellMDA(v, map[string]string{"%T": local, "%F": ""})})
		return
	}
	rcpt := local + "@localhost"
	if v, ok := o.str("smtpaddress"); ok {
		rcpt = local + "@" + v
	}
	if v, ok := o.str("smtpname"); ok {
		rcpt = v
	}
	hosts := []string{"localhost"}
	if v, ok := o["smtphost"]; ok && !v.neg && len(v.vals) > 0 {
		hosts = v.vals
		if len(hosts) > 1 {
			im.issue(v.pos, a.Name, "smtphost "+strings.Join(hosts[1:], " "), "popsync delivers to one MTA per target, with no fallback host: only the first is used")
		}
	}
	h := hosts[0]
	lmtp := o.has("lmtp")
	port := "25"
	if lmtp {
		port = ""
	}
	if i := strings.LastIndexByte(h, '/'); i > 0 && !strings.HasPrefix(h, "/") {
		h, port = h[:i], h[i+1:]
	}
	switch {
	case lmtp && strings.HasPrefix(h, "/"):
		a.Deliver = append(a.Deliver, Target{LMTP: "unix:" + h, Rcpt: []string{rcpt}})
	case lmtp && port == "":
		// fetchmail(1), lmtp: "you must give a port ... or a socket path".
		im.issue(o["lmtp"].pos, a.Name, "lmtp", "LMTP needs a port or a socket path in smtphost")
		a.TODO = append(a.TODO, "lmtp without a port or socket: give lmtp = \"unix:/path\" or \"host:port\"")
	case lmtp:
		a.Deliver = append(a.Deliver, Target{LMTP: joinHostPort(h, port), Rcpt: []string{rcpt}})
	case strings.HasPrefix(h, "/"):
		im.issue(o["smtphost"].pos, a.Name, "smtphost "+h, "SMTP over a Unix socket is not supported")
		a.TODO = append(a.TODO, "SMTP to a Unix socket: choose a target")
	default:
		if _, ok := o["smtphost"]; !ok {
			a.Comments = append(a.Comments, "no mda or smtphost: fetchmail's default, SMTP to localhost port 25")
		}
		a.Deliver = append(a.Deliver, Target{SMTP: joinHostPort(h, port), Rcpt: []string{rcpt}})
	}
}

// servicePort turns fetchmail's service into a port.
func servicePort(v string) (int, error) {
	switch strings.ToLower(v) {
	case "pop3", "pop-3":
		return 110, nil
	case "pop3s":
		return 995, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("not a port number or a known POP3 service name")
	}
	return n, nil
}
