package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// flagDef describes one flag once, for parsing, for `-h`, for the man page
// and for shell completion.
type flagDef struct {
	short, long string   // "c", "config"; either may be empty
	arg         string   // the value's placeholder ("FILE"); "" for a switch
	help        string   // one sentence, lower case
	values      []string // the fixed choices of the value, for completion
	file        bool     // the value is a file name, for completion
	hidden      bool     // an old spelling: accepted, never listed
}

// names renders the flag as help lists it: "-c, --config FILE".
func (d flagDef) names() string {
	var b strings.Builder
	switch {
	case d.short != "" && d.long != "":
		b.WriteString("-" + d.short + ", --" + d.long)
	case d.short != "":
		b.WriteString("-" + d.short)
	default:
		b.WriteString("    --" + d.long)
	}
	if d.arg != "" {
		if !strings.HasPrefix(d.arg, "[") {
			b.WriteByte(' ')
		}
		b.WriteString(d.arg)
	}
	return b.String()
}

// flags is a command's flag set together with the definitions it was
// built from. Every flag is registered under its short and long name on
// the same variable; Go's flag package accepts -name and --name alike.
type flags struct {
	fs   *flag.FlagSet
	defs []flagDef
}

func newFlags(name string) *flags {
	fs := flag.NewFlagSet("popsync "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by the caller, once
	fs.Usage = func() {}
	return &flags{fs: fs}
}

func (f *flags) each(d flagDef, reg func(name string)) {
	f.defs = append(f.defs, d)
	for _, n := range []string{d.short, d.long} {
		if n != "" {
			reg(n)
		}
	}
}

// The value a variable holds when its flag is registered is its default:
// global flags parsed before the command stay in force.

func (f *flags) String(p *string, d flagDef) {
	f.each(d, func(n string) { f.fs.StringVar(p, n, *p, d.help) })
}

func (f *flags) Bool(p *bool, d flagDef) {
	f.each(d, func(n string) { f.fs.BoolVar(p, n, *p, d.help) })
}

func (f *flags) Int(p *int, d flagDef) {
	f.each(d, func(n string) { f.fs.IntVar(p, n, *p, d.help) })
}

func (f *flags) Var(v flag.Value, d flagDef) {
	f.each(d, func(n string) { f.fs.Var(v, n, d.help) })
}

// parse parses args and returns the arguments that are not flags. Flags
// and arguments may be mixed (`popsync fetch home -v`); after "--" every
// word is an argument.
func (f *flags) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := f.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageErrorf("%v", err)
		}
		rest := f.fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if i := len(args) - len(rest); i > 0 && args[i-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usageError is a bad command line: exit status exitUsage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// names is a repeatable string flag.
type names []string

func (n *names) String() string     { return strings.Join(*n, ",") }
func (n *names) Set(v string) error { *n = append(*n, v); return nil }

// traceLevel is the --trace flag: a switch that also takes a level name.
type traceLevel int

const (
	traceOff traceLevel = iota
	traceProtocol
	traceAuth
)

// traceNames are the words --trace takes, in order of verbosity.
var traceNames = []string{"protocol", "auth"}

func (t *traceLevel) String() string {
	switch *t {
	case traceProtocol:
		return "protocol"
	case traceAuth:
		return "auth"
	}
	return "off"
}

func (t *traceLevel) Set(s string) error {
	switch strings.ToLower(s) {
	case "true", "protocol":
		*t = traceProtocol
	case "auth":
		*t = traceAuth
	case "false", "off":
		*t = traceOff
	default:
		return fmt.Errorf("--trace takes %s, not %q", strings.Join(traceNames, " or "), s)
	}
	return nil
}

func (t *traceLevel) IsBoolFlag() bool { return true }

// traceAuthAlias is the old --trace-auth switch: --trace=auth.
type traceAuthAlias struct{ t *traceLevel }

func (a traceAuthAlias) String() string { return "false" }
func (a traceAuthAlias) Set(s string) error {
	if on, err := strconv.ParseBool(s); err != nil || on {
		*a.t = traceAuth
	}
	return nil
}
func (a traceAuthAlias) IsBoolFlag() bool { return true }
