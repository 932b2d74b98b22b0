package configs

import (
	"os"
	"path/filepath"
	"strings"
)

// SalvageState returns the [state] settings of the config file at path
// even when the rest of the file is not a usable config, so that `popsync
// status` can show what the state holds while the config is broken. ok is
// false when they cannot be told: the file cannot be read or parsed as
// TOML, or the [state] table itself has a problem. No file is written and
// no program is run.
func SalvageState(path string) (st State, ok bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return State{}, false
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return State{}, false
	}
	d := &decoder{abs: abs, dir: filepath.Dir(abs), mode: 0o600, hints: keyHints()}
	cfg := d.decode(data)
	if cfg == nil {
		return State{}, false
	}
	for _, p := range d.probs.list {
		if p.Key == "state" || strings.HasPrefix(p.Key, "state.") {
			return State{}, false
		}
	}
	return cfg.State, cfg.State.Path != ""
}
