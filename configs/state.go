package configs

import (
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// minLeaseTTL is the shortest lease_ttl the PostgreSQL store takes.
const minLeaseTTL = 300 * time.Millisecond

// state reads [state]: path (SQLite) or url (PostgreSQL, with lease_ttl
// and dir), exactly one of them; neither means the default SQLite file.
func (d *decoder) state(x any, w where) State {
	var path, dbURL, dir val[string]
	var ttl val[Duration]
	d.fields(x, w, map[string]func(any, where){
		"path":      func(x any, w where) { path = get(d.path, x, w) },
		"url":       func(x any, w where) { dbURL = get(d.dbURL, x, w) },
		"lease_ttl": func(x any, w where) { ttl = get(d.duration(true), x, w) },
		"dir":       func(x any, w where) { dir = get(d.path, x, w) },
	})
	if path.set && dbURL.set {
		d.problem(dbURL.w, "url and path exclude each other: the state is either a PostgreSQL database (url) or an SQLite file (path); remove one (path is on line %d)", d.pos.line(path.w.path))
	}
	if !dbURL.set && !dbURL.bad {
		if ttl.set {
			d.problem(ttl.w, "lease_ttl needs url: only a PostgreSQL state has leases that expire")
		}
		if dir.set {
			d.problem(dir.w, "dir needs url: an SQLite state keeps its files next to path")
		}
		return sqliteState(or(path, DefaultStatePath()))
	}
	if ttl.set && !ttl.bad && ttl.v.D() < minLeaseTTL {
		d.problem(ttl.w, "must be at least %v: leases are renewed every third of it", minLeaseTTL)
	}
	return State{URL: or(dbURL, ""), LeaseTTL: or(ttl, 0), Dir: or(dir, DefaultStateDir()), Name: fleetStateName}
}

// dbURL reads a libpq connection string (URL or key=value). The problem
// never quotes it: it may hold a password.
func (d *decoder) dbURL(x any, w where) (string, bool) {
	s, ok := d.nonEmpty(x, w)
	if !ok {
		return "", false
	}
	if _, err := pgconn.ParseConfig(s); err != nil {
		d.problem(w, "is not a libpq URL (postgres://user@host/db) or key=value string (host=/run/postgresql dbname=popsync)")
		return "", false
	}
	return s, true
}

// kvPassword matches the password of a key=value connection string.
var kvPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// RedactURL returns a libpq connection string with its password, if any,
// replaced by "xxxxx": the form that may appear in errors, logs and
// status.
func RedactURL(s string) string {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		u, err := url.Parse(s)
		if err != nil {
			return "(a PostgreSQL URL that does not parse)"
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.Redacted()
	}
	return kvPassword.ReplaceAllString(s, "${1}xxxxx")
}
