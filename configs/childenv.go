package configs

import (
	"os"
	"sort"
	"strings"
)

// ChildEnv is the environment popsync hands to the programs it starts (an
// MDA, a password_command): popsync's own environment without the
// variables that hold secrets. Load computes it once from the whole config
// and sets it on the Config and on every Account; it is a value, never
// changed after that, so it can be handed to any goroutine.
//
// Removed are every variable named by a password_env key anywhere in the
// file (every account and [defaults], whether the account uses it or not),
// every inherited POPSYNC_* variable (popsync's own, including those its
// tests use; the MDA gets the POPSYNC_* variables popsync sets for it, never
// inherited ones) and an inherited SENDER (the MDA's SENDER comes from the
// message or the config, never from popsync's caller). The zero value
// removes only the POPSYNC_* and SENDER variables.
type ChildEnv struct {
	drop map[string]struct{}
}

// childEnvPrefix marks popsync's own variables.
const childEnvPrefix = "POPSYNC_"

// NewChildEnv returns a ChildEnv that also removes the variables named.
func NewChildEnv(names ...string) ChildEnv {
	var e ChildEnv
	for _, n := range names {
		if n != "" {
			if e.drop == nil {
				e.drop = make(map[string]struct{}, len(names))
			}
			e.drop[n] = struct{}{}
		}
	}
	return e
}

// Removes reports whether the variable name is withheld from children.
func (e ChildEnv) Removes(name string) bool {
	if strings.HasPrefix(name, childEnvPrefix) || name == "SENDER" {
		return true
	}
	_, ok := e.drop[name]
	return ok
}

// Names lists the variables named in the config that are withheld, sorted
// (the POPSYNC_* and SENDER rule is not listed).
func (e ChildEnv) Names() []string {
	out := make([]string, 0, len(e.drop))
	for n := range e.drop {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Filter returns env ("NAME=value" entries) without the withheld variables,
// in a new slice.
func (e ChildEnv) Filter(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if !e.Removes(name) {
			out = append(out, kv)
		}
	}
	return out
}

// Environ returns os.Environ() without the withheld variables.
func (e ChildEnv) Environ() []string { return e.Filter(os.Environ()) }
