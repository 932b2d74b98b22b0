package configs

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The value converters of the decoder: each checks one value of a key,
// reports what is wrong with it where it was written, and returns it
// converted (paths resolved against the config's folder). Values of
// password keys are never quoted back.

// typeName names the TOML type of x for messages.
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
