package importer

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	"popsync/state"
)

// Seen is one UIDL an old tool recorded as delivered.
type Seen struct {
	UIDL string
	At   time.Time // zero when the tool keeps no time
}

// SeenList is one account's UIDLs in a seen-state file, with the identity
// the file gives (fetchmail and mpop files hold no port: Port is 0).
type SeenList struct {
	Pos   Pos // the file, and the line the list starts on
	Host  string
	Port  int
	User  string
	UIDLs []Seen
}

func (l SeenList) String() string {
	if l.Port > 0 {
		return fmt.Sprintf("%s@%s:%d", l.User, l.Host, l.Port)
	}
	return l.User + "@" + l.Host
}

// validUIDL: RFC 1939 §7, a unique-id is 1 to 70 characters in the range
// 0x21 to 0x7E.
func validUIDL(s string) bool {
	if len(s) == 0 || len(s) > 70 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// lines splits data into lines and says whether the last one was cut off
// (no final newline): the old tools end every line they write, so a
// missing one means the file was truncated.
func lines(data []byte) (ls []string, truncated bool) {
	if len(data) == 0 {
		return nil, false
	}
	truncated = data[len(data)-1] != '\n'
	s := string(bytes.TrimSuffix(data, []byte("\n")))
	return strings.Split(s, "\n"), truncated
}

// ParseFetchids reads fetchmail's UID file (.fetchids or set idfile): one
// line per UIDL, "remoteuser@server UIDL", where server is the poll name
// (or via) and the user may itself contain '@'.
func ParseFetchids(name string, data []byte) ([]SeenList, error) {
	ls, truncated := lines(data)
	var out []SeenList
	idx := map[string]int{}
	for i, l := range ls {
		p := Pos{name, i + 1}
		if truncated && i == len(ls)-1 {
			return nil, errorf(p, "truncated: the last line has no newline")
		}
		l = strings.TrimSuffix(l, "\r")
		if strings.TrimSpace(l) == "" {
			continue
		}
		key, uidl, ok := strings.Cut(l, " ")
		uidl = strings.TrimSpace(uidl)
		at := strings.LastIndexByte(key, '@')
		if !ok || at <= 0 || at == len(key)-1 {
			return nil, errorf(p, "not a fetchmail UID line (want \"user@server UIDL\")")
		}
		if !validUIDL(uidl) {
			return nil, errorf(p, "UIDL %q is not 1 to 70 printable characters (RFC 1939)", uidl)
		}
		user, host := key[:at], key[at+1:]
		if len(user) >= 2 && user[0] == '"' && user[len(user)-1] == '"' {
			user = user[1 : len(user)-1]
		}
		k := strings.ToLower(host) + "\x00" + user
		j, seen := idx[k]
		if !seen {
			j = len(out)
			idx[k] = j
			out = append(out, SeenList{Pos: p, Host: host, User: user})
		}
		out[j].UIDLs = append(out[j].UIDLs, Seen{UIDL: uidl})
	}
	return out, nil
}

// ParseOldmail reads a getmail oldmail file: lines "UIDL\0timestamp", the
// time in seconds since the epoch. getmail skips malformed lines; popsync
// refuses them, since a line it cannot read is a message it would fetch
// again.
func ParseOldmail(name string, data []byte) ([]Seen, error) {
	ls, truncated := lines(data)
	var out []Seen
	for i, l := range ls {
		p := Pos{name, i + 1}
		if truncated && i == len(ls)-1 {
			return nil, errorf(p, "truncated: the last line has no newline")
		}
		l = strings.TrimSuffix(l, "\r")
		if l == "" {
			continue
		}
		uidl, ts, ok := strings.Cut(l, "\x00")
		if !ok {
			return nil, errorf(p, "not a getmail oldmail line (want UIDL, NUL, timestamp)")
		}
		if strings.Count(uidl, "/") == 1 {
			// IMAP entries are "uidvalidity/uid": not a POP3 UIDL.
			return nil, errorf(p, "%q is an IMAP entry, not a POP3 UIDL", uidl)
		}
		if !validUIDL(uidl) {
			return nil, errorf(p, "UIDL %q is not 1 to 70 printable characters (RFC 1939)", uidl)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(ts), 10, 64)
		if err != nil || n < 0 || n > 1<<40 {
			return nil, errorf(p, "timestamp %q is not a number of seconds", ts)
		}
		out = append(out, Seen{UIDL: uidl, At: time.Unix(n, 0)})
	}
	return out, nil
}

// ParseMpopUIDLs reads an mpop UIDLS file (mpop 1.4): comment lines
// starting with '#'; each list starts with " COUNT HOST USER" (a leading
// space) and is followed by exactly COUNT UIDLs, one per line.
func ParseMpopUIDLs(name string, data []byte) ([]SeenList, error) {
	ls, truncated := lines(data)
	var out []SeenList
	left := 0
	for i, l := range ls {
		p := Pos{name, i + 1}
		if truncated && i == len(ls)-1 {
			return nil, errorf(p, "truncated: the last line has no newline")
		}
		switch {
		case left > 0:
			if !validUIDL(l) {
				return nil, errorf(p, "UIDL %q is not 1 to 70 printable characters (RFC 1939)", l)
			}
			out[len(out)-1].UIDLs = append(out[len(out)-1].UIDLs, Seen{UIDL: l})
			left--
		case strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, " "):
			f := strings.Fields(l)
			if len(f) != 3 {
				return nil, errorf(p, "not an mpop UID list header (want \" COUNT HOST USER\")")
			}
			n, err := strconv.Atoi(f[0])
			if err != nil || n < 0 {
				return nil, errorf(p, "not an mpop UID list header (want \" COUNT HOST USER\")")
			}
			out = append(out, SeenList{Pos: p, Host: f[1], User: f[2], UIDLs: make([]Seen, 0, min(n, len(ls)-i))})
			left = n
		case l == "":
		default:
			return nil, errorf(p, "unexpected line outside a UID list")
		}
	}
	if left > 0 {
		return nil, errorf(Pos{name, len(ls)}, "truncated: the list of %s ends %d UIDLs short of its count", out[len(out)-1], left)
	}
	return out, nil
}

// slashVariantsMax bounds the UIDLs tried for one getmail entry: 2^n for
// n dashes.
const slashVariantsMax = 6

// slashVariants returns every UIDL getmail may have written as u:
// getmail replaces '/' in a UIDL by '-' before storing it
// (_retrieverbases.py, _getmsglist), so each '-' may have been either.
// ok is false when u has more than slashVariantsMax dashes; then only u
// itself is returned.
func slashVariants(u string) (vs []string, ok bool) {
	n := strings.Count(u, "-")
	if n == 0 {
		return []string{u}, true
	}
	if n > slashVariantsMax {
		return []string{u}, false
	}
	idx := make([]int, 0, n)
	for i := 0; i < len(u); i++ {
		if u[i] == '-' {
			idx = append(idx, i)
		}
	}
	for mask := 0; mask < 1<<n; mask++ {
		b := []byte(u)
		for k, i := range idx {
			if mask&(1<<k) != 0 {
				b[i] = '/'
			}
		}
		vs = append(vs, string(b))
	}
	return vs, true
}

// Records turns an account's seen list into seen-set records: Imported,
// with the old tool's time, and a note naming the tool. For getmail,
// every '-' may stand for '/' (see slashVariants); more says how many
// entries had too many dashes to try every spelling.
func Records(tool string, a *Account, list []Seen) (recs []state.Record, more int) {
	note := "delivered by " + tool + " before import"
	seen := make(map[string]bool, len(list))
	add := func(u string, at time.Time) {
		if !seen[u] {
			seen[u] = true
			recs = append(recs, state.Record{UIDL: u, State: state.Imported, DeliveredAt: at, Note: note})
		}
	}
	for _, s := range list {
		if !a.slashAsDash {
			add(s.UIDL, s.At)
			continue
		}
		vs, ok := slashVariants(s.UIDL)
		if !ok {
			more++
		}
		for _, v := range vs {
			add(v, s.At)
		}
	}
	return recs, more
}

// Match assigns seen lists to accounts by identity: host (case does not
// matter), user, and port where the file gives one. A list that matches
// no account, or more than one, is returned in unmatched.
func Match(accts []*Account, lists []SeenList) (matched map[*Account][]Seen, unmatched []SeenList) {
	matched = map[*Account][]Seen{}
	for _, l := range lists {
		var hit []*Account
		for _, a := range accts {
			if !strings.EqualFold(strings.TrimSuffix(a.seenHost, "."), strings.TrimSuffix(l.Host, ".")) || a.seenUser != l.User {
				continue
			}
			if l.Port != 0 && a.seenPort != 0 && l.Port != a.seenPort {
				continue
			}
			if a.SeenFile != l.Pos.File {
				continue
			}
			hit = append(hit, a)
		}
		if len(hit) != 1 {
			unmatched = append(unmatched, l)
			continue
		}
		matched[hit[0]] = append(matched[hit[0]], l.UIDLs...)
	}
	return matched, unmatched
}
