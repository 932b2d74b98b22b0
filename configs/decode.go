package configs

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// The file is decoded by BurntSushi/toml into a generic tree and then walked
// here, key by key, rather than decoded into structs: struct decoding stops
// at the first value of the wrong type, and the promise is to report every
// problem at once. Walking the tree also finds unknown keys directly.

// decoder turns the text of one config file into a Config, collecting every
// problem on the way.
type decoder struct {
	abs  string      // absolute path of the file
	dir  string      // its folder, against which relative paths resolve
	mode fs.FileMode // its permissions

	pos   positions
	probs problems

	literalPassword bool              // a password or smtp_password is written in the file
	hints           map[string]string // key -> the table it belongs in, for unknown keys
}

// where is the place of a value: its path for looking up the line, and how a
// Problem names it.
type where struct {
	path    []string
	account string
	key     string
}

func (w where) sub(k string) where {
	key := k
	if w.key != "" {
		key = w.key + "." + k
	}
	return where{path: append(append([]string(nil), w.path...), k), account: w.account, key: key}
}

func (w where) elem(i int) where {
	return where{path: append(append([]string(nil), w.path...), index(i)), account: w.account, key: w.key}
}

// inDefaults reports whether w is inside the [defaults] table.
func (w where) inDefaults() bool { return len(w.path) > 0 && w.path[0] == "defaults" }

func (d *decoder) problem(w where, format string, args ...any) {
	d.probs.add(Problem{Line: d.pos.line(w.path), Account: w.account, Key: w.key, Msg: fmt.Sprintf(format, args...)})
}

// val is a value read from one table: set when the key was given, bad when
// its value was refused (and the problem already reported).
type val[T any] struct {
	v   T
	set bool
	bad bool
	w   where
}

func get[T any](conv func(any, where) (T, bool), x any, w where) val[T] {
	v, ok := conv(x, w)
	return val[T]{v: v, set: true, bad: !ok, w: w}
}

// pick layers an account's value over the [defaults] one.
func pick[T any](account, defaults val[T]) val[T] {
	if account.set {
		return account
	}
	return defaults
}

// or returns v's value, or builtin when v is unset or was refused.
func or[T any](v val[T], builtin T) T {
	if v.set && !v.bad {
		return v.v
	}
	return builtin
}

// blame picks where a problem that involves several values is reported: the
// first of them written in the account itself, else the first one given.
func blame(fallback where, vals ...where) where {
	for _, w := range vals {
		if w.path != nil && !w.inDefaults() {
			return w
		}
	}
	for _, w := range vals {
		if w.path != nil {
			return w
		}
	}
	return fallback
}

func (d *decoder) decode(data []byte) *Config {
	src := string(data)
	var tree map[string]any
	if _, err := toml.Decode(src, &tree); err != nil {
		d.syntax(src, err)
		return nil
	}
	d.pos = scanPositions(src)

	var root where
	cfg := &Config{
		Path:   d.abs,
		State:  sqliteState(DefaultStatePath()),
		Daemon: Daemon{MaxParallel: DefaultMaxParallel, ShutdownGrace: DefaultShutdownGrace},
	}
	d.fields(tree, root, map[string]func(any, where){
		"state": func(x any, w where) {
			d.fields(x, w, map[string]func(any, where){
				"path": func(x any, w where) { cfg.State.Path = or(get(d.path, x, w), cfg.State.Path) },
			})
			cfg.State = sqliteState(cfg.State.Path)
		},
		"daemon": func(x any, w where) {
			dm := &cfg.Daemon
			d.fields(x, w, map[string]func(any, where){
				"max_parallel":   func(x any, w where) { dm.MaxParallel = or(get(d.intMin(1), x, w), dm.MaxParallel) },
				"shutdown_grace": func(x any, w where) { dm.ShutdownGrace = or(get(d.duration(false), x, w), dm.ShutdownGrace) },
				"metrics":        func(x any, w where) { dm.Metrics = or(get(d.hostPort, x, w), "") },
			})
		},
		// Known here, read below: accounts are layered over [defaults].
		"defaults": func(any, where) {},
		"account":  func(any, where) {},
	})

	defaults := &rawAccount{}
	if x, ok := tree["defaults"]; ok {
		defaults = d.rawAccount(x, root.sub("defaults"))
	}
	var raws []*rawAccount
	if x, ok := tree["account"]; ok {
		w := root.sub("account")
		tables, _ := d.tables(x, w, "account")
		for i, m := range tables {
			raws = append(raws, d.rawAccount(m, w.elem(i)))
		}
	} else {
		d.problem(root, "no [[account]] table: nothing to fetch")
	}
	cfg.Accounts = d.accounts(raws, defaults)

	if d.literalPassword && d.mode.Perm()&0o077 != 0 {
		d.probs.add(Problem{Msg: fmt.Sprintf("holds a password but is readable by others (mode %04o); run: chmod 600 %s",
			d.mode.Perm(), shellQuote(d.abs))})
	}
	return cfg
}

// syntax reports a TOML syntax error. The parser quotes bits of the text it
// choked on, so its words are withheld when that text may be a password.
func (d *decoder) syntax(src string, err error) {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		d.probs.add(Problem{Msg: fmt.Sprintf("invalid TOML: %v", err)})
		return
	}
	msg := pe.Message
	lines := strings.Split(src, "\n")
	l := pe.Position.Line
	if strings.Contains(strings.ToLower(pe.LastKey), "password") ||
		(l >= 1 && l <= len(lines) && strings.Contains(strings.ToLower(lines[l-1]), "password")) {
		msg = "syntax error (details withheld: the line may hold a password)"
	}
	d.probs.add(Problem{Line: l, Msg: "invalid TOML: " + msg})
}

// fields walks the table x, calling the handler of each key in order of
// name, and reports keys without a handler as unknown.
func (d *decoder) fields(x any, w where, handlers map[string]func(any, where)) {
	m, ok := x.(map[string]any)
	if !ok {
		d.problem(w, "must be a table, not %s", typeName(x))
		return
	}
	for _, k := range sortedKeys(m) {
		kw := w.sub(k)
		h, ok := handlers[k]
		if !ok {
			d.unknown(kw, k, handlers)
			continue
		}
		h(m[k], kw)
	}
}

func sortedKeys[T any](m map[string]T) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// unknown reports an unknown key, with a hint when it looks like a typo or
// belongs in another table.
func (d *decoder) unknown(w where, k string, known map[string]func(any, where)) {
	hint := ""
	best := 3
	for _, cand := range sortedKeys(known) {
		if dist := editDistance(k, cand); dist < best && dist < len(k) {
			best, hint = dist, fmt.Sprintf(" (did you mean %q?)", cand)
		}
	}
	if table, ok := d.hints[k]; ok && hint == "" {
		hint = "; it belongs in " + table
	}
	d.problem(w, "unknown key%s", hint)
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// tables accepts an array of tables, written [[name]] or as an array of
// inline tables.
func (d *decoder) tables(x any, w where, header string) ([]map[string]any, bool) {
	switch v := x.(type) {
	case []map[string]any:
		return v, true
	case []any:
		out := make([]map[string]any, 0, len(v))
		for i, e := range v {
			m, ok := e.(map[string]any)
			if !ok {
				d.problem(w.elem(i), "must be a table, not %s", typeName(e))
				return nil, false
			}
			out = append(out, m)
		}
		return out, true
	case map[string]any:
		d.problem(w, "must be an array of tables: write [[%s]], not [%s]", header, header)
	default:
		d.problem(w, "must be an array of tables ([[%s]]), not %s", header, typeName(x))
	}
	return nil, false
}

func typeName(x any) string {
	switch x.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a date-time"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("a %T", x)
}

// Converters: each checks one value and reports what is wrong with it.
// Values of password keys are never quoted back.

func (d *decoder) str(x any, w where) (string, bool) {
	s, ok := x.(string)
	if !ok {
		d.problem(w, "must be a string, not %s", typeName(x))
	}
	return s, ok
}

func (d *decoder) nonEmpty(x any, w where) (string, bool) {
	s, ok := d.str(x, w)
	if ok && strings.TrimSpace(s) == "" {
		d.problem(w, "must not be empty")
		return "", false
	}
	return s, ok
}

func (d *decoder) boolean(x any, w where) (bool, bool) {
	b, ok := x.(bool)
	if !ok {
		d.problem(w, "must be true or false, not %s", typeName(x))
	}
	return b, ok
}

// intRange reads an integer from lo to hi.
func (d *decoder) intRange(lo, hi int64) func(any, where) (int, bool) {
	return d.integer(lo, hi, fmt.Sprintf("must be between %d and %d", lo, hi))
}

// intMin reads an integer of at least lo.
func (d *decoder) intMin(lo int64) func(any, where) (int, bool) {
	return d.integer(lo, math.MaxInt32, fmt.Sprintf("must be at least %d", lo))
}

func (d *decoder) integer(lo, hi int64, outside string) func(any, where) (int, bool) {
	return func(x any, w where) (int, bool) {
		n, ok := x.(int64)
		if !ok {
			d.problem(w, "must be an integer, not %s", typeName(x))
			return 0, false
		}
		if n < lo || n > hi {
			d.problem(w, "%s, not %d", outside, n)
			return 0, false
		}
		return int(n), true
	}
}

// duration reads a Duration; positive refuses zero.
func (d *decoder) duration(positive bool) func(any, where) (Duration, bool) {
	return func(x any, w where) (Duration, bool) {
		switch v := x.(type) {
		case int64, float64:
			d.problem(w, `must be a string with a unit, not a bare number; use a unit, e.g. "30s"`)
			return 0, false
		case string:
			dur, err := ParseDuration(v)
			if err != nil {
				d.problem(w, "%v", err)
				return 0, false
			}
			if positive && dur == 0 {
				d.problem(w, "must be longer than 0")
				return 0, false
			}
			return dur, true
		}
		d.problem(w, `must be a duration such as "30s", not %s`, typeName(x))
		return 0, false
	}
}

func (d *decoder) size(x any, w where) (Size, bool) {
	switch v := x.(type) {
	case int64:
		if v < 0 {
			d.problem(w, "must not be negative, not %d", v)
			return 0, false
		}
		return Size(v), true
	case string:
		s, err := ParseSize(v)
		if err != nil {
			d.problem(w, "%v", err)
			return 0, false
		}
		return s, true
	}
	d.problem(w, `must be a size such as "50MiB", not %s`, typeName(x))
	return 0, false
}

// enum accepts one of allowed, in any case, and returns it in lower case.
func (d *decoder) enum(allowed ...string) func(any, where) (string, bool) {
	return func(x any, w where) (string, bool) {
		s, ok := d.str(x, w)
		if !ok {
			return "", false
		}
		l := strings.ToLower(strings.TrimSpace(s))
		for _, a := range allowed {
			if l == a {
				return l, true
			}
		}
		list := strings.Join(allowed[:len(allowed)-1], ", ") + " or " + allowed[len(allowed)-1]
		d.problem(w, "must be %s, not %q", list, s)
		return "", false
	}
}

func (d *decoder) name(x any, w where) (string, bool) {
	s, ok := d.nonEmpty(x, w)
	if !ok {
		return "", false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.@", r)) {
			d.problem(w, "may hold only letters, digits and - _ . @, not %q", s)
			return "", false
		}
	}
	return s, true
}

// host accepts a DNS name or an IP address, and returns it in lower case:
// DNS names are case-insensitive (RFC 4343), and the account's seen-set is
// keyed by host, so one spelling must not look like a second server.
func (d *decoder) host(x any, w where) (string, bool) {
	s, ok := d.nonEmpty(x, w)
	if !ok {
		return "", false
	}
	if strings.Contains(s, "://") {
		d.problem(w, "must be a host name or IP address, not a URL (%q)", s)
		return "", false
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") && net.ParseIP(s[1:len(s)-1]) != nil {
		d.problem(w, "write an IPv6 address without brackets, not %q", s)
		return "", false
	}
	if h, p, err := net.SplitHostPort(s); err == nil && net.ParseIP(s) == nil {
		d.problem(w, "must not include a port: write host = %q and port = %s", h, p)
		return "", false
	}
	if net.ParseIP(s) == nil && !validHostname(s) {
		d.problem(w, "must be a host name or IP address, not %q", s)
		return "", false
	}
	return strings.ToLower(s), true
}

// validHostname checks the letters-digits-hyphen form of RFC 1123 §2.1,
// allowing underscores, which some internal names have.
func validHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// hostPort accepts "host:port" with a numeric port; host may be empty
// (all interfaces, for metrics).
func (d *decoder) hostPort(x any, w where) (string, bool) {
	s, ok := d.nonEmpty(x, w)
	if !ok {
		return "", false
	}
	_, p, err := net.SplitHostPort(s)
	if err == nil {
		if n, perr := strconv.Atoi(p); perr == nil && n >= 1 && n <= 65535 {
			return s, true
		}
	}
	d.problem(w, `must be "host:port" with a port from 1 to 65535, not %q`, s)
	return "", false
}

// lmtpAddr accepts "host:port" or "unix:/path/to/socket".
func (d *decoder) lmtpAddr(x any, w where) (string, bool) {
	s, ok := d.nonEmpty(x, w)
	if !ok {
		return "", false
	}
	if p, isUnix := strings.CutPrefix(s, "unix:"); isUnix {
		r, err := d.resolve(p)
		if err != nil {
			d.problem(w, "%v", err)
			return "", false
		}
		return "unix:" + r, true
	}
	return d.hostPort(x, w)
}

func (d *decoder) fingerprint(x any, w where) (string, bool) {
	s, ok := d.str(x, w)
	if !ok {
		return "", false
	}
	h := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		d.problem(w, "must be the certificate's SHA-256 as 64 hex digits (colons allowed), not %q", s)
		return "", false
	}
	return h, true
}

func (d *decoder) secret(x any, w where) (Secret, bool) {
	d.literalPassword = true
	s, ok := x.(string)
	if !ok {
		d.problem(w, "must be a string, not %s", typeName(x))
		return "", false
	}
	if s == "" {
		d.problem(w, "must not be empty")
		return "", false
	}
	return Secret(s), true
}

func (d *decoder) envName(x any, w where) (string, bool) {
	s, ok := d.str(x, w)
	if !ok {
		return "", false
	}
	for i, r := range s {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			// Not quoted back: a password pasted here by mistake stays hidden.
			d.problem(w, "must be the name of an environment variable (letters, digits, _)")
			return "", false
		}
	}
	if s == "" {
		d.problem(w, "must not be empty")
		return "", false
	}
	return s, true
}

func (d *decoder) schedule(x any, w where) (string, bool) {
	s, ok := d.nonEmpty(x, w)
	if !ok {
		return "", false
	}
	if _, err := ParseSchedule(s); err != nil {
		d.problem(w, "%v", err)
		return "", false
	}
	return strings.TrimSpace(s), true
}

func (d *decoder) address(x any, w where) (string, bool) {
	s, ok := d.str(x, w)
	if ok && strings.ContainsAny(s, " \t\r\n<>") {
		d.problem(w, "must be a bare mail address without spaces or <>, not %q", s)
		return "", false
	}
	return s, ok
}

func (d *decoder) addresses(x any, w where) ([]string, bool) {
	arr, ok := x.([]any)
	if !ok || len(arr) == 0 {
		if ok {
			d.problem(w, "must list at least one address")
		} else {
			d.problem(w, `must be an array of addresses, e.g. ["me@localhost"], not %s`, typeName(x))
		}
		return nil, false
	}
	out := make([]string, 0, len(arr))
	for i, e := range arr {
		s, ok := d.address(e, w)
		if !ok {
			return nil, false
		}
		if s == "" {
			d.problem(w.elem(i), "must not be empty")
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// path reads a file path and makes it absolute (see resolve).
func (d *decoder) path(x any, w where) (string, bool) {
	s, ok := d.str(x, w)
	if !ok {
		return "", false
	}
	if s == "" {
		d.problem(w, "must not be empty")
		return "", false
	}
	p, err := d.resolve(s)
	if err != nil {
		d.problem(w, "%v", err)
		return "", false
	}
	return p, true
}

// command reads a program and its arguments, run without a shell. A program
// named with a '/' resolves like a path; a bare name is found in $PATH when
// it runs.
func (d *decoder) command(x any, w where) ([]string, bool) {
	arr, ok := x.([]any)
	if !ok {
		d.problem(w, `must be an array: the program and its arguments, e.g. ["pass", "show", "mail/home"], not %s`, typeName(x))
		return nil, false
	}
	if len(arr) == 0 {
		d.problem(w, "must name a program")
		return nil, false
	}
	argv := make([]string, len(arr))
	for i, e := range arr {
		s, ok := e.(string)
		if !ok {
			d.problem(w.elem(i), "must be a string, not %s", typeName(e))
			return nil, false
		}
		argv[i] = s
	}
	if argv[0] == "" {
		d.problem(w, "must name a program: its first element is empty")
		return nil, false
	}
	if strings.Contains(argv[0], "/") {
		p, err := d.resolve(argv[0])
		if err != nil {
			d.problem(w, "%v", err)
			return nil, false
		}
		argv[0] = p
	}
	return argv, true
}

// resolve makes p absolute: "~" and "~/..." against $HOME, a relative path
// against the config file's folder. Its errors do not quote p.
func (d *decoder) resolve(p string) (string, error) {
	if p == "~" || strings.HasPrefix(p, "~/") {
		home, err := os.UserHomeDir()
		if err != nil || home == "" {
			return "", errors.New(`cannot expand "~": $HOME is not set`)
		}
		return filepath.Join(home, p[1:]), nil
	}
	if strings.HasPrefix(p, "~") {
		return "", errors.New(`"~user/" paths are not supported; write the full path`)
	}
	if filepath.IsAbs(p) {
		return filepath.Clean(p), nil
	}
	return filepath.Join(d.dir, p), nil
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+,:@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
