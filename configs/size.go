package configs

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Size is a number of bytes, written "50MiB", "10MB", "512KiB", "1GiB", or a
// bare integer meaning bytes. KB, MB, GB and TB count in 1000s, KiB, MiB,
// GiB and TiB in 1024s (IEC 80000-13); units are matched without regard to
// case, and a decimal fraction ("1.5GiB") is rounded down to whole bytes.
type Size int64

var sizeUnits = []struct {
	name string
	mult int64
}{
	{"TiB", 1 << 40}, {"TB", 1e12},
	{"GiB", 1 << 30}, {"GB", 1e9},
	{"MiB", 1 << 20}, {"MB", 1e6},
	{"KiB", 1 << 10}, {"KB", 1e3},
	{"B", 1},
}

// ParseSize parses s as described on Size.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf(`empty size; write e.g. "50MiB"`)
	}
	num, mult := t, int64(1)
	for _, u := range sizeUnits {
		if len(t) > len(u.name) && strings.EqualFold(t[len(t)-len(u.name):], u.name) {
			num, mult = strings.TrimSpace(t[:len(t)-len(u.name)]), u.mult
			break
		}
	}
	if num == "" || num[0] == '-' || num[0] == '+' {
		return 0, fmt.Errorf("%q is not a size (e.g. \"50MiB\", \"10MB\", \"1000\")", s)
	}
	if isDigits(num) {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n > math.MaxInt64/mult {
			return 0, fmt.Errorf("%q is too large", s)
		}
		return Size(n * mult), nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || strings.ContainsAny(num, "eExXpP_") {
		return 0, fmt.Errorf("%q is not a size (e.g. \"50MiB\", \"10MB\", \"1000\")", s)
	}
	v := f * float64(mult)
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Size(v), nil
}

// String formats s with the largest unit that divides it exactly.
func (s Size) String() string {
	if s > 0 {
		for _, u := range sizeUnits[:len(sizeUnits)-1] {
			if int64(s)%u.mult == 0 {
				return fmt.Sprintf("%d%s", int64(s)/u.mult, u.name)
			}
		}
	}
	return fmt.Sprintf("%dB", int64(s))
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
