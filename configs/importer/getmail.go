package importer

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"popsync/configs"
)

// getmail6's getmailrc is read by Python's RawConfigParser: [section]
// headers; "key = value" or "key: value" (keys are case-insensitive);
// whole-line comments starting with '#' or ';'; an indented line
// continues the value above it; a section or key given twice is an error.
// getmail then reads tuple values such as ("a", "b") as Python literals.

type iniValue struct {
	val string
	pos Pos
}

type iniSection struct {
	name string
	pos  Pos
	keys map[string]iniValue
}

type iniFile struct {
	sections map[string]*iniSection
	order    []string
}

func parseINI(name string, data []byte) (*iniFile, error) {
	ls, _ := lines(data)
	f := &iniFile{sections: map[string]*iniSection{}}
	var cur *iniSection
	var last string // key a continuation line extends
	for i, l := range ls {
		p := Pos{name, i + 1}
		if !utf8.ValidString(l) {
			return nil, errorf(p, "not valid UTF-8")
		}
		l = strings.TrimSuffix(l, "\r")
		t := strings.TrimSpace(l)
		if t == "" {
			last = ""
			continue
		}
		if strings.HasPrefix(t, "#") || strings.HasPrefix(t, ";") {
			continue
		}
		if l[0] == ' ' || l[0] == '\t' {
			if cur == nil || last == "" {
				return nil, errorf(p, "indented line continues no value")
			}
			v := cur.keys[last]
			v.val += "\n" + t
			cur.keys[last] = v
			continue
		}
		if strings.HasPrefix(t, "[") {
			end := strings.IndexByte(t, ']')
			if end < 0 {
				return nil, errorf(p, "section header without ]")
			}
			n := t[1:end]
			if _, dup := f.sections[n]; dup {
				return nil, errorf(p, "section [%s] given twice", n)
			}
			cur = &iniSection{name: n, pos: p, keys: map[string]iniValue{}}
			f.sections[n] = cur
			f.order = append(f.order, n)
			last = ""
			continue
		}
		if cur == nil {
			return nil, errorf(p, "key before the first [section]")
		}
		k := strings.IndexAny(t, "=:")
		if k <= 0 {
			return nil, errorf(p, "want key = value")
		}
		key := strings.ToLower(strings.TrimSpace(t[:k]))
		if _, dup := cur.keys[key]; dup {
			return nil, errorf(p, "%s given twice in [%s]", key, cur.name)
		}
		cur.keys[key] = iniValue{val: strings.TrimSpace(t[k+1:]), pos: p}
		last = key
	}
	return f, nil
}

// pyStrings reads a Python tuple or list of string literals, as getmail
// takes for arguments, password_command and destinations; a bare value
// is one string.
func pyStrings(p Pos, s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	open := s[0]
	if open != '(' && open != '[' {
		return []string{s}, nil
	}
	closer := byte(')')
	if open == '[' {
		closer = ']'
	}
	var out []string
	i := 1
	for {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n') {
			i++
		}
		if i >= len(s) {
			return nil, errorf(p, "tuple is not closed")
		}
		if s[i] == closer {
			if strings.TrimSpace(s[i+1:]) != "" {
				return nil, errorf(p, "text after the tuple")
			}
			return out, nil
		}
		q := s[i]
		if q != '"' && q != '\'' {
			return nil, errorf(p, "tuple items must be quoted strings")
		}
		var b strings.Builder
		i++
		closed := false
		for i < len(s) {
			c := s[i]
			if c == q {
				closed = true
				i++
				break
			}
			if c == '\\' && i+1 < len(s) {
				r, n := fmEscape(s[i+1:])
				b.WriteString(r)
				i += 1 + n
				continue
			}
			b.WriteByte(c)
			i++
		}
		if !closed {
			return nil, errorf(p, "string in tuple is not closed")
		}
		out = append(out, b.String())
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n') {
			i++
		}
		if i < len(s) && s[i] == ',' {
			i++
		} else if i < len(s) && s[i] != closer {
			return nil, errorf(p, "want , between tuple items")
		}
	}
}

func pyBool(p Pos, s string) (bool, error) {
	switch strings.ToLower(s) {
	case "1", "yes", "true", "on":
		return true, nil
	case "0", "no", "false", "off":
		return false, nil
	}
	return false, errorf(p, "%q is not a boolean", s)
}

// GetmailOptions are what a getmail conversion needs to know.
type GetmailOptions struct {
	Home string
	// DataDir is getmail's data directory (--getmaildir), where the
	// oldmail files live.
	DataDir string
	// Env expands $VARIABLE in paths, as getmail does; nil: none.
	Env func(string) string
}

// getmailKeys are the getmailrc keys the converter reads.
var getmailKeys = map[string]bool{
	"type": true, "server": true, "port": true, "username": true, "password": true, "password_command": true,
	"use_apop": true, "ca_certs": true, "ssl_fingerprints": true, "ssl_cert_hostname": true, "timeout": true,
	"delete": true, "read_all": true, "delete_after": true, "max_message_size": true,
	"max_messages_per_session": true, "received": true, "path": true, "arguments": true, "host": true,
	"override": true, "destinations": true,
}

// oldmailStrip is getmail's STRIP_CHAR_RE (_retrieverbases.py): runs of
// these characters become '-' in the oldmail file name.
var oldmailStrip = regexp.MustCompile(`[/\\:;<>|]+`)

// OldmailName is the name of the oldmail file getmail keeps for a POP3
// account.
func OldmailName(server string, port int, user string) string {
	return oldmailStrip.ReplaceAllString(fmt.Sprintf("oldmail-%s-%d-%s", server, port, user), "-")
}

// ConvertGetmail converts one getmailrc into one account.
func ConvertGetmail(name string, data []byte, opt GetmailOptions) (*Import, error) {
	f, err := parseINI(name, data)
	if err != nil {
		return nil, err
	}
	im := &Import{Tool: Getmail, Files: []string{name}}
	r, ok := f.sections["retriever"]
	if !ok {
		return nil, errorf(Pos{name, 1}, "no [retriever] section")
	}
	if _, ok := f.sections["destination"]; !ok {
		return nil, errorf(Pos{name, 1}, "no [destination] section")
	}
	get := func(s *iniSection, k string) (string, Pos, bool) {
		v, ok := s.keys[k]
		return v.val, v.pos, ok
	}
	typ, tpos, _ := get(r, "type")
	base := strings.TrimSuffix(filepath.Base(name), ".rc")
	base = strings.TrimPrefix(strings.TrimPrefix(base, "getmailrc"), "-")
	base = strings.TrimPrefix(base, ".")
	a := &Account{Pos: r.pos}
	a.Host, _, _ = get(r, "server")
	a.User, _, _ = get(r, "username")
	if base == "" {
		base = a.User
	}
	a.Name = accountName(base, "", false)
	port := 110
	switch typ {
	case "SimplePOP3Retriever":
		a.TLS = configs.TLSNone
	case "SimplePOP3SSLRetriever":
		a.TLS, port = configs.TLSImplicit, 995
	case "BrokenUIDLPOP3Retriever", "BrokenUIDLPOP3SSLRetriever":
		a.TLS = configs.TLSNone
		if typ == "BrokenUIDLPOP3SSLRetriever" {
			a.TLS, port = configs.TLSImplicit, 995
		}
		im.issue(tpos, a.Name, "type = "+typ, "getmail identified messages by number and size, not UIDL: its seen-state cannot be imported")
		a.TODO = append(a.TODO, "the oldmail file of a BrokenUIDL retriever holds no UIDLs: popsync would fetch every message on the server again; empty the mailbox (or accept the copies) and delete this line")
	case "MultidropPOP3Retriever", "MultidropPOP3SSLRetriever", "MultidropSDPSRetriever":
		if typ == "MultidropPOP3SSLRetriever" {
			a.TLS, port = configs.TLSImplicit, 995
		} else {
			a.TLS = configs.TLSNone
		}
		im.issue(tpos, a.Name, "type = "+typ, "multidrop: popsync delivers every message of an account to the same targets")
		a.TODO = append(a.TODO, "multidrop retriever: choose the targets; popsync does not sort by envelope recipient")
	case "":
		return nil, errorf(r.pos, "[retriever] has no type")
	default:
		im.issue(tpos, "", "type = "+typ, "popsync speaks only POP3: this account is not imported")
		return im, nil
	}
	if v, p, ok := get(r, "port"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			return nil, errorf(p, "port %q is not a port number", v)
		}
		port = n
	}
	a.Port = port
	if a.Host == "" {
		return nil, errorf(r.pos, "[retriever] has no server")
	}
	if a.User == "" {
		return nil, errorf(r.pos, "[retriever] has no username")
	}
	a.seenHost, a.seenPort, a.seenUser = a.Host, a.Port, a.User
	a.slashAsDash = true
	a.SeenFile = filepath.Join(opt.DataDir, OldmailName(a.Host, a.Port, a.User))
	if a.TLS == configs.TLSImplicit {
		a.Comments = append(a.Comments, "getmail checks the certificate only with ca_certs or ssl_fingerprints; popsync always does")
	}
	expand := func(s string) string {
		s = expandHome(opt.Home, s)
		if opt.Env != nil {
			s = expandVars(s, opt.Env)
		}
		return s
	}
	if v, _, ok := get(r, "password"); ok {
		a.Password = v
	}
	if v, p, ok := get(r, "password_command"); ok {
		argv, err := pyStrings(p, v)
		if err != nil {
			return nil, err
		}
		if len(argv) > 0 {
			argv[0] = expand(argv[0])
		}
		a.PasswordCommand = argv
	}
	if a.Password == "" && a.PasswordCommand == nil {
		a.TODO = append(a.TODO, "no password or password_command (getmail asked, or used a key ring or .netrc): give password_command, password_file or password_env")
	}
	if v, p, ok := get(r, "use_apop"); ok {
		b, err := pyBool(p, v)
		if err != nil {
			return nil, err
		}
		if b {
			a.Auth = configs.AuthAPOP
		}
	}
	if v, _, ok := get(r, "ca_certs"); ok && v != "" {
		a.CAFile = expand(v)
	}
	if v, p, ok := get(r, "ssl_fingerprints"); ok {
		fps, err := pyStrings(p, v)
		if err != nil {
			return nil, err
		}
		if len(fps) > 0 {
			if fp, ok := sha256Fingerprint(fps[0]); ok {
				a.Print = fp
			} else {
				im.issue(p, a.Name, "ssl_fingerprints", "not a SHA-256 fingerprint")
			}
		}
		if len(fps) > 1 {
			im.issue(p, a.Name, "ssl_fingerprints", "popsync pins one fingerprint: only the first is used")
		}
	}
	if v, _, ok := get(r, "ssl_cert_hostname"); ok && v != "" {
		a.ServerName = v
	}
	if v, _, ok := get(r, "timeout"); ok {
		if n, err := strconv.Atoi(v); err == nil {
			a.Timeout = secondsDuration(n)
		}
	}
	for _, k := range sortedKeys(r.keys) {
		v := r.keys[k]
		switch {
		case getmailKeys[k]:
		case k == "ssl_version" || k == "ssl_ciphers":
			im.harmless(v.pos, a.Name, k, "popsync negotiates TLS 1.2 or newer itself")
		case k == "envelope_recipient":
			// reported with the multidrop type
		default:
			im.issue(v.pos, a.Name, k, "not supported by popsync")
		}
	}

	// [options] (getmail's defaults: read_all and delete are checked
	// against the values getmail uses when they are absent).
	readAll, del := true, false
	if o, ok := f.sections["options"]; ok {
		for _, k := range sortedKeys(o.keys) {
			v := o.keys[k]
			switch k {
			case "delete":
				b, err := pyBool(v.pos, v.val)
				if err != nil {
					return nil, err
				}
				del = b
			case "read_all":
				b, err := pyBool(v.pos, v.val)
				if err != nil {
					return nil, err
				}
				readAll = b
			case "delete_after":
				n, err := strconv.Atoi(v.val)
				if err != nil || n < 0 {
					return nil, errorf(v.pos, "delete_after %q is not a number of days", v.val)
				}
				a.DeleteAfter = n
			case "max_message_size":
				n, err := strconv.ParseInt(v.val, 10, 64)
				if err != nil || n < 0 {
					return nil, errorf(v.pos, "max_message_size %q is not a number of octets", v.val)
				}
				a.MaxSize = n
			case "max_messages_per_session":
				n, err := strconv.Atoi(v.val)
				if err != nil || n < 0 {
					return nil, errorf(v.pos, "max_messages_per_session %q is not a number", v.val)
				}
				a.FetchLimit = n
			case "received":
				if b, err := pyBool(v.pos, v.val); err == nil && !b {
					a.NoReceived = true
				}
			case "delete_bigger_than":
				if v.val != "0" {
					im.issue(v.pos, a.Name, k, "popsync never deletes a message it has not delivered")
				}
			case "max_bytes_per_session":
				if v.val != "0" {
					im.issue(v.pos, a.Name, k, "popsync limits messages per poll (fetch_limit), not octets")
				}
			case "delivered_to":
				if b, err := pyBool(v.pos, v.val); err != nil || b {
					im.harmless(v.pos, a.Name, k, "popsync adds no Delivered-To: header, only Received:")
				}
			case "verbose", "message_log", "message_log_verbose", "message_log_syslog", "logfile", "to_oldmail_on_each_mail", "fingerprint":
				im.harmless(v.pos, a.Name, k, "popsync logs every poll to stderr and records every delivery at once")
			default:
				im.issue(v.pos, a.Name, k, "not supported by popsync")
			}
		}
	}
	a.Keep = !del
	if readAll && !del {
		im.issue(Pos{name, f.sections["retriever"].pos.Line}, a.Name, "read_all (default true)", "getmail fetched every message again at each run; popsync fetches only messages it has not seen")
	}
	if a.DeleteAfter > 0 && !a.Keep {
		a.DeleteAfter = 0
	}
	for _, n := range f.order {
		if strings.HasPrefix(n, "filter") {
			im.issue(f.sections[n].pos, a.Name, "["+n+"]", "getmail filters are not supported: filter in the delivery (an MDA such as procmail or maildrop)")
		}
	}
	getmailDestination(im, a, f, "destination", expand, 0)
	im.Accounts = append(im.Accounts, a)
	return im, nil
}

// getmailDestination converts a destination section (for
// MultiDestination, recursively).
func getmailDestination(im *Import, a *Account, f *iniFile, section string, expand func(string) string, depth int) {
	d, ok := f.sections[section]
	if !ok {
		a.TODO = append(a.TODO, fmt.Sprintf("destination [%s] is not in the file", section))
		return
	}
	if depth > 8 {
		a.TODO = append(a.TODO, "MultiDestination nests too deep")
		return
	}
	val := func(k string) string { return d.keys[k].val }
	typ := val("type")
	for _, k := range []string{"user", "group"} {
		if v, ok := d.keys[k]; ok {
			im.issue(v.pos, a.Name, k, "popsync delivers as the user it runs as")
		}
	}
	switch typ {
	case "Maildir":
		p := expand(val("path"))
		if p == "" {
			a.TODO = append(a.TODO, fmt.Sprintf("[%s] Maildir has no path", section))
			return
		}
		a.Deliver = append(a.Deliver, Target{Maildir: strings.TrimSuffix(p, "/")})
	case "MDA_external":
		path := expand(val("path"))
		args, err := pyStrings(d.keys["arguments"].pos, val("arguments"))
		if err != nil || path == "" {
			a.TODO = append(a.TODO, fmt.Sprintf("[%s] MDA_external: no path, or arguments that are not a tuple of strings", section))
			return
		}
		argv := append([]string{path}, args...)
		placeholder := false
		for _, s := range argv {
			if strings.Contains(s, "%(") {
				placeholder = true
			}
		}
		if placeholder {
			// getmail substitutes %(sender) and friends itself; popsync
			// puts the sender in $SENDER, so the command runs through sh.
			quoted := make([]string, len(argv))
			for i, s := range argv {
				quoted[i] = shellQuote(s)
			}
			cmd := strings.Join(quoted, " ")
			cmd = strings.ReplaceAll(cmd, "%(sender)", `'"$SENDER"'`)
			if strings.Contains(cmd, "%(") {
				im.issue(d.keys["arguments"].pos, a.Name, "arguments", "only %(sender) can be passed on (as $SENDER); recipient, domain, local and mailbox are not known to popsync")
				a.TODO = append(a.TODO, fmt.Sprintf("[%s] MDA_external arguments use placeholders popsync cannot fill", section))
				return
			}
			argv = []string{"sh", "-c", cmd}
		}
		if v, ok := d.keys["unixfrom"]; ok {
			if b, _ := pyBool(v.pos, v.val); b {
				im.issue(v.pos, a.Name, "unixfrom", "popsync does not prepend a From_ line")
			}
		}
		a.Deliver = append(a.Deliver, Target{MDA: argv})
	case "MDA_lmtp":
		host := val("host")
		port := val("port")
		if port == "" {
			port = "2003" // smtplib.LMTP_PORT, getmail's default
		}
		rcpt := val("override")
		if rcpt == "" {
			im.issue(d.pos, a.Name, "MDA_lmtp without override", "popsync needs the LMTP recipient: getmail took it from the envelope")
			a.TODO = append(a.TODO, fmt.Sprintf("[%s] MDA_lmtp: give rcpt = [\"...\"] for the LMTP target", section))
			return
		}
		t := Target{Rcpt: []string{rcpt}}
		if strings.HasPrefix(host, "/") {
			t.LMTP = "unix:" + host
		} else {
			t.LMTP = joinHostPort(host, port)
		}
		a.Deliver = append(a.Deliver, t)
	case "MultiDestination":
		ds, err := pyStrings(d.keys["destinations"].pos, val("destinations"))
		if err != nil || len(ds) == 0 {
			a.TODO = append(a.TODO, fmt.Sprintf("[%s] MultiDestination: destinations is not a tuple of strings", section))
			return
		}
		for _, x := range ds {
			switch {
			case strings.HasPrefix(x, "[") && strings.HasSuffix(x, "]"):
				getmailDestination(im, a, f, x[1:len(x)-1], expand, depth+1)
			case strings.HasSuffix(x, "/"):
				a.Deliver = append(a.Deliver, Target{Maildir: strings.TrimSuffix(expand(x), "/")})
			case strings.HasPrefix(x, "|"):
				im.issue(d.keys["destinations"].pos, a.Name, "destinations "+x, "a pipe in MultiDestination is not converted")
				a.TODO = append(a.TODO, fmt.Sprintf("MultiDestination pipe %q: add an mda target", x))
			default:
				im.issue(d.keys["destinations"].pos, a.Name, "destinations "+x, "mbox delivery is not supported")
				a.TODO = append(a.TODO, fmt.Sprintf("MultiDestination mbox %q: choose a Maildir or an MDA", x))
			}
		}
	default:
		what := "mbox delivery is not supported"
		if typ == "MultiSorter" || typ == "MultiGuesser" {
			what = "popsync does not sort by recipient"
		}
		im.issue(d.keys["type"].pos, a.Name, "type = "+typ, what)
		a.TODO = append(a.TODO, fmt.Sprintf("[%s] type = %s cannot be converted: add a [[account.deliver]]", section, typ))
	}
}

// expandVars expands $NAME and ${NAME}.
func expandVars(s string, env func(string) string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		j := i + 1
		brace := s[j] == '{'
		if brace {
			j++
		}
		k := j
		for k < len(s) && (s[k] == '_' || s[k] >= 'a' && s[k] <= 'z' || s[k] >= 'A' && s[k] <= 'Z' || s[k] >= '0' && s[k] <= '9') {
			k++
		}
		if k == j || brace && (k >= len(s) || s[k] != '}') {
			b.WriteByte(s[i])
			continue
		}
		b.WriteString(env(s[j:k]))
		if brace {
			k++
		}
		i = k - 1
	}
	return b.String()
}
