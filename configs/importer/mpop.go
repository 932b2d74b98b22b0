package importer

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"popsync/configs"
)

// mpop's configuration file (mpop(1), USAGE): one command per line with an
// optional argument, which may be in double quotes (with \" and \\);
// blank lines and lines whose first non-blank character is '#' are
// ignored. `defaults` starts the defaults for every later account;
// `account NAME [: BASE[, BASE...]]` starts an account that begins with
// the current defaults and then inherits every setting of its bases. An
// argument-less on/off command means on.

type mpOpt struct {
	val string
	pos Pos
}

type mpAccount struct {
	name string
	pos  Pos
	opts map[string]mpOpt
}

// mpCommands are the commands of mpop 1.4; true: takes on/off.
var mpCommands = map[string]bool{
	"host": false, "port": false, "source_ip": false, "proxy_host": false, "proxy_port": false,
	"socket": false, "timeout": false, "pipelining": false, "received_header": true, "auth": false,
	"user": false, "password": false, "passwordeval": false, "ntlmdomain": false, "tls": true,
	"tls_starttls": true, "tls_trust_file": false, "tls_crl_file": false, "tls_fingerprint": false,
	"tls_key_file": false, "tls_cert_file": false, "tls_certcheck": true, "tls_min_dh_prime_bits": false,
	"tls_priorities": false, "tls_host_override": false, "delivery": false, "uidls_file": false,
	"only_new": true, "keep": true, "killsize": false, "skipsize": false, "filter": false, "eval": false,
	"tls_force_sslv3": true,
}

// mpArg unquotes an argument as mpop 1.4 does: an argument that starts
// and ends with a double quote loses the two; nothing else is special
// (mpop --pretend shows "x\"y" as x\"y, and "q" r as it is).
func mpArg(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// parseMpoprc parses an mpop config file into its accounts, in order,
// with defaults and inheritance applied.
func parseMpoprc(name string, data []byte) ([]*mpAccount, error) {
	ls, _ := lines(data)
	defaults := map[string]mpOpt{}
	byName := map[string]*mpAccount{}
	var accts []*mpAccount
	var cur map[string]mpOpt // the table commands go into
	for i, l := range ls {
		p := Pos{name, i + 1}
		if !utf8.ValidString(l) {
			return nil, errorf(p, "not valid UTF-8")
		}
		l = strings.TrimSpace(strings.TrimSuffix(l, "\r"))
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		var cmd, arg string
		if k := strings.IndexAny(l, " \t"); k >= 0 {
			cmd, arg = l[:k], strings.TrimSpace(l[k+1:])
		} else {
			cmd, arg = l, ""
		}
		switch cmd {
		case "defaults":
			if arg != "" {
				return nil, errorf(p, "defaults takes no argument")
			}
			cur = defaults
			continue
		case "account":
			n, bases, hasBase := strings.Cut(arg, ":")
			n = strings.TrimSpace(n)
			if n == "" {
				return nil, errorf(p, "account needs a name")
			}
			if _, dup := byName[n]; dup {
				return nil, errorf(p, "account %q is defined twice", n)
			}
			a := &mpAccount{name: n, pos: p, opts: map[string]mpOpt{}}
			for k, v := range defaults {
				a.opts[k] = v
			}
			if hasBase {
				for _, b := range strings.Split(bases, ",") {
					b = strings.TrimSpace(b)
					base, ok := byName[b]
					if !ok {
						return nil, errorf(p, "account %q inherits from %q, which is not defined above it", n, b)
					}
					for k, v := range base.opts {
						a.opts[k] = v
					}
				}
			}
			byName[n] = a
			accts = append(accts, a)
			cur = a.opts
			continue
		}
		onoff, known := mpCommands[cmd]
		if !known {
			return nil, errorf(p, "unknown command %q", cmd)
		}
		if cur == nil {
			return nil, errorf(p, "%s before the first account or defaults", cmd)
		}
		v := mpArg(arg)
		if onoff {
			switch v {
			case "", "on":
				v = "on"
			case "off":
			default:
				if cmd != "tls_certcheck" || v != "" {
					return nil, errorf(p, "%s takes on or off, not %q", cmd, v)
				}
			}
		}
		cur[cmd] = mpOpt{val: v, pos: p}
	}
	return accts, nil
}

// MpopOptions are what an mpop conversion needs to know about the user.
type MpopOptions struct {
	Home string // expands ~
}

// ConvertMpop converts an mpop config file.
func ConvertMpop(name string, data []byte, opt MpopOptions) (*Import, error) {
	accts, err := parseMpoprc(name, data)
	if err != nil {
		return nil, err
	}
	im := &Import{Tool: Mpop, Files: []string{name}}
	names := map[string]int{}
	for _, ma := range accts {
		a := convertMpopAccount(im, ma, opt)
		if a == nil {
			continue
		}
		a.Name = uniqueName(names, a.Name)
		im.Accounts = append(im.Accounts, a)
	}
	return im, nil
}

func convertMpopAccount(im *Import, ma *mpAccount, opt MpopOptions) *Account {
	o := ma.opts
	get := func(k string) (string, bool) { v, ok := o[k]; return v.val, ok }
	on := func(k string, def bool) bool {
		v, ok := o[k]
		if !ok {
			return def
		}
		return v.val == "on"
	}
	a := &Account{Name: accountName(ma.name, "", false), Pos: ma.pos}
	a.Host, _ = get("host")
	a.User, _ = get("user")
	if a.Host == "" {
		if _, ok := get("socket"); ok {
			im.issue(o["socket"].pos, a.Name, "socket", "popsync connects by TCP only; this account is not imported")
			return nil
		}
		a.TODO = append(a.TODO, "no host in the mpop account")
	}
	if a.User == "" {
		a.TODO = append(a.TODO, "no user in the mpop account")
	}
	// mpop(1), tls and tls_starttls: TLS is off by default; with tls on,
	// STARTTLS unless tls_starttls off; port 995 only for TLS without
	// STARTTLS, else 110.
	switch {
	case !on("tls", false):
		a.TLS = configs.TLSNone
	case on("tls_starttls", true):
		a.TLS = configs.TLSStartTLS
	default:
		a.TLS = configs.TLSImplicit
	}
	port := 110
	if a.TLS == configs.TLSImplicit {
		port = 995
	}
	if v, ok := get("port"); ok && v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			im.issue(o["port"].pos, a.Name, "port "+v, "not a port number; the default is used")
		} else {
			port = n
		}
	}
	a.Port = port
	a.seenHost, a.seenUser, a.seenPort = a.Host, a.User, 0
	if v, ok := get("tls_trust_file"); ok && v != "system" && v != "" {
		a.CAFile = expandHome(opt.Home, v)
	}
	if v, ok := get("tls_fingerprint"); ok && v != "" {
		if fp, ok := sha256Fingerprint(v); ok {
			a.Print = fp
		} else {
			im.issue(o["tls_fingerprint"].pos, a.Name, "tls_fingerprint", "not a SHA-256 fingerprint (mpop also takes SHA-1 and MD5); popsync pins SHA-256: `popsync check --connect` shows it (until then the certificate is verified normally)")
		}
	}
	if v, ok := get("tls_host_override"); ok && v != "" {
		a.ServerName = v
	}
	if !on("tls_certcheck", true) && a.Print == "" {
		im.issue(o["tls_certcheck"].pos, a.Name, "tls_certcheck off", "popsync always verifies the server's certificate: give tls_ca_file or tls_fingerprint")
	}
	if v, ok := get("auth"); ok {
		switch strings.ToLower(v) {
		case "", "on":
		case "user":
			a.Auth = configs.AuthUser
		case "plain":
			a.Auth = configs.AuthPlain
		case "login":
			a.Auth = configs.AuthLogin
		case "cram-md5":
			a.Auth = configs.AuthCRAMMD5
		case "apop":
			a.Auth = configs.AuthAPOP
		case "xoauth2":
			a.Auth = configs.AuthXOAuth2
		case "oauthbearer":
			a.Auth = configs.AuthOAuthBearer
		default:
			im.issue(o["auth"].pos, a.Name, "auth "+v, "popsync has no such POP3 authentication; auth = \"auto\" is used")
		}
	}
	pw, hasPW := get("password")
	eval, hasEval := get("passwordeval")
	switch {
	case hasPW && pw != "":
		a.Password = pw
	case hasEval && eval != "":
		a.PasswordCommand = []string{"sh", "-c", eval}
	default:
		a.TODO = append(a.TODO, "no password or passwordeval (mpop asked for it, or read ~/.netrc or a key ring): give password_command, password_file or password_env")
	}
	a.Keep = on("keep", false)
	if !on("only_new", true) {
		im.issue(o["only_new"].pos, a.Name, "only_new off", "popsync fetches only messages it has not seen")
	}
	if v, ok := get("skipsize"); ok && v != "off" && v != "" {
		n, err := mpSize(v)
		if err != nil {
			im.issue(o["skipsize"].pos, a.Name, "skipsize "+v, err.Error())
		} else {
			a.MaxSize = n
		}
	}
	if v, ok := get("killsize"); ok && v != "off" && v != "" {
		im.issue(o["killsize"].pos, a.Name, "killsize", "popsync never deletes a message it has not delivered; larger ones are left and reported (max_size)")
	}
	if v, ok := get("timeout"); ok && v != "off" && v != "" {
		n, err := strconv.Atoi(v)
		if err == nil {
			a.Timeout = secondsDuration(n)
		}
	}
	if !on("received_header", true) {
		a.NoReceived = true
	}
	for _, k := range []string{"filter", "eval", "source_ip", "proxy_host", "proxy_port", "ntlmdomain", "tls_key_file", "tls_cert_file", "tls_crl_file"} {
		if v, ok := o[k]; ok && v.val != "" {
			r := map[string]string{
				"filter":        "popsync has no header filter: use an MDA (procmail, maildrop) as the target",
				"eval":          "popsync import runs no commands: this line's setting is missing; add it by hand",
				"source_ip":     "popsync does not bind a source address",
				"proxy_host":    "popsync does not speak SOCKS",
				"proxy_port":    "popsync does not speak SOCKS",
				"ntlmdomain":    "NTLM is not supported",
				"tls_key_file":  "client certificates are not supported",
				"tls_cert_file": "client certificates are not supported",
				"tls_crl_file":  "certificate revocation lists are not supported",
			}[k]
			im.issue(v.pos, a.Name, k, r)
		}
	}
	for _, k := range []string{"pipelining", "tls_priorities", "tls_min_dh_prime_bits", "tls_force_sslv3"} {
		if v, ok := o[k]; ok {
			im.harmless(v.pos, a.Name, k, "popsync chooses this itself (pipelining when offered, TLS 1.2 or newer)")
		}
	}

	uidls := "~/.mpop_uidls/%U_at_%H"
	if v, ok := get("uidls_file"); ok && v != "" {
		uidls = v
	}
	uidls = strings.ReplaceAll(strings.ReplaceAll(uidls, "%U", a.User), "%H", a.Host)
	a.SeenFile = expandHome(opt.Home, uidls)

	d, ok := get("delivery")
	if !ok || d == "" {
		a.TODO = append(a.TODO, "no delivery in the mpop account")
		return a
	}
	method, arg, _ := strings.Cut(d, " ")
	arg = mpArg(strings.TrimSpace(arg))
	switch method {
	case "maildir":
		a.Deliver = append(a.Deliver, Target{Maildir: expandHome(opt.Home, arg)})
	case "mda":
		a.Deliver = append(a.Deliver, Target{MDA: shellMDA(arg, map[string]string{"%F": ""})})
	default:
		im.issue(o["delivery"].pos, a.Name, "delivery "+method, "popsync delivers to Maildir, SMTP, LMTP or an MDA, not to "+method)
		a.TODO = append(a.TODO, fmt.Sprintf("delivery %s %s cannot be converted: add a [[account.deliver]] (a Maildir, or an MDA that writes %s)", method, arg, method))
	}
	return a
}

// mpSize reads mpop's size: bytes, or a number followed by k or m
// (kibibytes, mebibytes).
func mpSize(v string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(v, "k"):
		mult, v = 1024, strings.TrimSuffix(v, "k")
	case strings.HasSuffix(v, "m"):
		mult, v = 1024*1024, strings.TrimSuffix(v, "m")
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > 1<<50 {
		return 0, fmt.Errorf("not a size")
	}
	return n * mult, nil
}
