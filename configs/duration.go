package configs

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written the way people write spans of time in a
// config file: "90s", "5m", "1h30m", and, on top of what time.ParseDuration
// takes, days and weeks: "30d", "2w", "1w3d12h". A day is 24 hours.
//
// A bare number is refused (except "0"): TOML integers given to a plain
// time.Duration would mean nanoseconds, which is never what the user meant.
type Duration time.Duration

const (
	day  = 24 * time.Hour
	week = 7 * day
)

// unitHours lists the units a Duration takes: for d and w the number of
// hours they stand for, 0 for the units time.ParseDuration knows itself.
var unitHours = map[string]time.Duration{
	"ns": 0, "us": 0, "µs": 0, "μs": 0, "ms": 0, "s": 0, "m": 0, "h": 0,
	"d": 24, "w": 24 * 7,
}

// ParseDuration parses s as described on Duration. Negative durations are
// refused: every duration in the config is a length of time.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New(`empty duration; use a unit, e.g. "30s"`)
	}
	if s == "0" {
		return 0, nil
	}
	if strings.HasPrefix(s, "-") {
		return 0, fmt.Errorf("%q is negative", s)
	}
	s = strings.TrimPrefix(s, "+")
	if isDigits(s) {
		return 0, fmt.Errorf(`%q has no unit; use a unit, e.g. "30s"`, s)
	}

	// Split into number+unit segments; d and w are converted here, the rest
	// is left to time.ParseDuration one segment at a time.
	var total time.Duration
	rest := s
	for rest != "" {
		n := 0
		for n < len(rest) && (rest[n] == '.' || (rest[n] >= '0' && rest[n] <= '9')) {
			n++
		}
		if n == 0 {
			return 0, fmt.Errorf("%q is not a duration (e.g. \"90s\", \"5m\", \"1h30m\", \"30d\", \"2w\")", s)
		}
		u := n
		for u < len(rest) && !(rest[u] == '.' || (rest[u] >= '0' && rest[u] <= '9')) {
			u++
		}
		num, unit := rest[:n], rest[n:u]
		rest = rest[u:]
		if unit == "" {
			return 0, fmt.Errorf("%q: %q has no unit", s, num)
		}

		mult, known := unitHours[unit]
		if !known {
			return 0, fmt.Errorf("%q is not a duration: unknown unit %q (use ms, s, m, h, d or w)", s, unit)
		}
		if _, err := strconv.ParseFloat(num, 64); err != nil {
			return 0, fmt.Errorf("%q is not a duration: %q", s, num+unit)
		}
		var seg time.Duration
		var err error
		if mult > 0 {
			// Days and weeks: parse as hours, then scale.
			seg, err = time.ParseDuration(num + "h")
			if err == nil && seg > time.Duration(math.MaxInt64)/mult {
				err = errors.New("overflow")
			}
			seg *= mult
		} else {
			seg, err = time.ParseDuration(num + unit)
		}
		if err != nil {
			return 0, fmt.Errorf("%q is too long", s)
		}
		if total > time.Duration(math.MaxInt64)-seg {
			return 0, fmt.Errorf("%q is too long", s)
		}
		total += seg
	}
	return Duration(total), nil
}

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d so that ParseDuration reads it back: whole weeks and days
// as "2w" and "30d", anything else as time.Duration does.
func (d Duration) String() string {
	td := time.Duration(d)
	switch {
	case td > 0 && td%week == 0:
		return fmt.Sprintf("%dw", td/week)
	case td > 0 && td%day == 0:
		return fmt.Sprintf("%dd", td/day)
	}
	return td.String()
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
