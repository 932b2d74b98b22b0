package importer

import (
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// expandHome expands a leading ~ or ~/ as the old tools do.
func expandHome(home, p string) string {
	if p == "~" {
		return home
	}
	if strings.HasPrefix(p, "~/") {
		return filepath.Join(home, p[2:])
	}
	return p
}

func joinHome(home, name string) string { return filepath.Join(home, name) }

func sortedKeys[T any](m map[string]T) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// accountName makes a popsync account name (letters, digits, -_.@) from
// the old tool's name for the account.
func accountName(base, user string, withUser bool) string {
	s := base
	if withUser {
		s = base + "-" + user
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.', r == '@':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "account"
	}
	return b.String()
}

// uniqueName returns name, or name-2, name-3, ... if it is taken.
func uniqueName(used map[string]int, name string) string {
	used[name]++
	if used[name] == 1 {
		return name
	}
	for i := used[name]; ; i++ {
		n := fmt.Sprintf("%s-%d", name, i)
		if used[n] == 0 {
			used[n] = 1
			return n
		}
	}
}

// sha256Fingerprint accepts a hex SHA-256 fingerprint, with or without
// colons, and returns it lower case with colons removed.
func sha256Fingerprint(s string) (string, bool) {
	h := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	h = strings.TrimPrefix(h, "sha256")
	if len(h) != 64 {
		return "", false
	}
	for i := 0; i < len(h); i++ {
		if !isHex(h[i]) {
			return "", false
		}
	}
	return h, true
}

func secondsDuration(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

func joinHostPort(h, port string) string { return net.JoinHostPort(h, port) }

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// shellMDA turns an old tool's MDA command line, which it ran through
// /bin/sh, into popsync's argv: sh -c CMD. The placeholders in subst are
// replaced: "%F" (the envelope sender) by "$SENDER", which popsync sets
// in the MDA's environment, and any other by its value, shell-quoted. A
// placeholder the old tool's documentation tells users to put in single
// quotes ('%F') is replaced together with its quotes.
func shellMDA(cmd string, subst map[string]string) []string {
	for _, k := range sortedKeys(subst) {
		v := `"$SENDER"`
		if k != "%F" {
			v = shellQuote(subst[k])
		}
		for _, q := range []string{"'" + k + "'", `"` + k + `"`, k} {
			cmd = strings.ReplaceAll(cmd, q, v)
		}
	}
	return []string{"sh", "-c", cmd}
}
