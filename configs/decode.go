package configs

import (
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"

	"popsync/internal/osfile"
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

// metricsExposure refuses a metrics listener that others can reach unless
// metrics_public says so: /metrics names every account and its mail
// volume, and a "host:port" with an empty host, or a host that is neither
// a loopback address nor "localhost", listens beyond this machine.
func (d *decoder) metricsExposure(metrics val[string], public val[bool]) {
	if !metrics.set || metrics.bad || metrics.v == "" || public.bad || IsLoopbackListen(metrics.v) {
		return
	}
	if !public.v {
		d.problem(metrics.w, "%q listens beyond this machine (an empty host means every interface); use \"127.0.0.1:PORT\" or \"[::1]:PORT\", or set metrics_public = true in [daemon] to serve /metrics and /healthz to the network", metrics.v)
	}
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
		"state": func(x any, w where) { cfg.State = d.state(x, w) },
		"daemon": func(x any, w where) {
			dm := &cfg.Daemon
			var metrics val[string]
			var public val[bool]
			d.fields(x, w, map[string]func(any, where){
				"max_parallel":   func(x any, w where) { dm.MaxParallel = or(get(d.intMin(1), x, w), dm.MaxParallel) },
				"shutdown_grace": func(x any, w where) { dm.ShutdownGrace = or(get(d.duration(false), x, w), dm.ShutdownGrace) },
				"metrics":        func(x any, w where) { metrics = get(d.hostPort, x, w) },
				"metrics_public": func(x any, w where) { public = get(d.boolean, x, w) },
			})
			dm.Metrics, dm.MetricsPublic = or(metrics, ""), or(public, false)
			d.metricsExposure(metrics, public)
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
	cfg.ChildEnv = childEnvOf(append(raws, defaults))
	for _, a := range cfg.Accounts {
		a.ChildEnv = cfg.ChildEnv
		// No password_command sees any secret the file names.
		a.Password.CommandEnv = a.ChildEnv
		if a.OAuth2 != nil {
			a.OAuth2.ClientSecret.CommandEnv = a.ChildEnv
		}
		for _, de := range a.Deliver {
			if t, ok := de.Target.(*SMTPTarget); ok {
				t.Password.CommandEnv = a.ChildEnv
			}
		}
	}
	fillIMAPTargets(cfg)

	if d.literalPassword && d.mode.Perm()&0o077 != 0 {
		d.probs.add(Problem{Msg: fmt.Sprintf("holds a password but is readable by others (mode %04o); run: chmod 600 %s",
			d.mode.Perm(), osfile.ShellQuote(d.abs))})
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
