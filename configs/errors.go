package configs

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"popsync/internal/credential"
)

// Sentinel errors of this package.
var (
	// ErrInvalid is matched by errors.Is for every *Errors: the file was read
	// but does not describe a usable configuration.
	ErrInvalid = errors.New("invalid config")

	// ErrSecretUnavailable is wrapped by every error Account.Secret returns,
	// so that callers can tell "could not obtain the password" from a failed
	// login. It is credential.ErrUnavailable.
	ErrSecretUnavailable = credential.ErrUnavailable
)

// Problem is one thing wrong with a config file.
type Problem struct {
	Line    int    // 1-based line in the file; 0 when the problem concerns the whole file
	Account string // account name, "" outside an [[account]] table or when the name is unknown
	Key     string // key path relative to the account ("tls", "deliver.maildir"), or from the top ("daemon.max_parallel", "defaults.tls")
	Msg     string // what is wrong; never contains a secret
}

// format renders p the way compilers do: "file:line: account "x": key "y": msg".
func (p Problem) format(file string) string {
	var b strings.Builder
	b.WriteString(file)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Account != "" {
		fmt.Fprintf(&b, "account %q: ", p.Account)
	}
	if p.Key != "" {
		fmt.Fprintf(&b, "key %q: ", p.Key)
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Errors holds every problem found in one config file, ordered by line.
type Errors struct {
	File     string // the path as given to Load or Parse, used as the prefix of each line
	Problems []Problem
}

// Error prints one problem per line.
func (e *Errors) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.format(e.File)
	}
	return strings.Join(lines, "\n")
}

// Is reports whether target is ErrInvalid.
func (e *Errors) Is(target error) bool { return target == ErrInvalid }

// problems collects Problems while a file is checked. The same problem found
// twice (a bad value in [defaults] seen through several accounts) is kept once.
type problems struct {
	list []Problem
	seen map[Problem]bool
}

func (ps *problems) add(p Problem) {
	if ps.seen == nil {
		ps.seen = make(map[Problem]bool)
	}
	if ps.seen[p] {
		return
	}
	ps.seen[p] = true
	ps.list = append(ps.list, p)
}

// err returns the collected problems as *Errors, or nil when there are none.
func (ps *problems) err(file string) error {
	if len(ps.list) == 0 {
		return nil
	}
	list := append([]Problem(nil), ps.list...)
	sort.SliceStable(list, func(i, j int) bool { return list[i].Line < list[j].Line })
	return &Errors{File: file, Problems: list}
}
