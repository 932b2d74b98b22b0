package configs

import (
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	good := []struct {
		in   string
		want time.Duration
	}{
		{"90s", 90 * time.Second},
		{"5m", 5 * time.Minute},
		{"1h30m", 90 * time.Minute},
		{"30d", 30 * 24 * time.Hour},
		{"2w", 14 * 24 * time.Hour},
		{"1w2d3h4m", (9*24+3)*time.Hour + 4*time.Minute},
		{"1.5d", 36 * time.Hour},
		{"0.5w", 84 * time.Hour},
		{"250ms", 250 * time.Millisecond},
		{"0", 0},
		{"0s", 0},
		{" 5m ", 5 * time.Minute},
		{"+5m", 5 * time.Minute},
	}
	for _, tc := range good {
		d, err := ParseDuration(tc.in)
		if err != nil || d.D() != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tc.in, d.D(), err, tc.want)
		}
	}
	bad := []struct{ in, msg string }{
		{"", `use a unit, e.g. "30s"`},
		{"30", `use a unit, e.g. "30s"`},
		{"-5m", "negative"},
		{"5 m", "unknown unit"},
		{"5min", "unknown unit"},
		{"5y", "unknown unit"},
		{"d", "not a duration"},
		{"1..5d", "not a duration"},
		{"5m30", "has no unit"},
		{"100000000w", "too long"},
		{"9999999999h", "too long"},
		{"1000000w", "too long"},
		{"1.2.3s", "not a duration"},
		{"2562047h2562047h", "too long"},
	}
	for _, tc := range bad {
		d, err := ParseDuration(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("ParseDuration(%q) = %v, %v; want error with %q", tc.in, d, err, tc.msg)
		}
	}
}

func TestDurationString(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{90 * time.Second, "1m30s"},
		{24 * time.Hour, "1d"},
		{30 * 24 * time.Hour, "30d"},
		{14 * 24 * time.Hour, "2w"},
		{36 * time.Hour, "36h0m0s"},
	} {
		if got := Duration(tc.d).String(); got != tc.want {
			t.Errorf("Duration(%v).String() = %q, want %q", tc.d, got, tc.want)
		}
	}
	var d Duration
	if err := d.UnmarshalText([]byte("2w")); err != nil || d.D() != 14*24*time.Hour {
		t.Errorf("UnmarshalText: %v %v", d, err)
	}
	if b, _ := d.MarshalText(); string(b) != "2w" {
		t.Errorf("MarshalText = %s", b)
	}
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"90s", "1h30m", "30d", "2w", "1.5d", "0", "-1s", "5m30", "1w2d3h4m5s6ms7us8ns", "µs"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		if d < 0 {
			t.Fatalf("ParseDuration(%q) = %v, negative", s, d.D())
		}
		back, err := ParseDuration(d.String())
		if err != nil || back != d {
			t.Fatalf("round trip of %q: %q -> %v, %v", s, d.String(), back.D(), err)
		}
	})
}

func TestParseSize(t *testing.T) {
	good := []struct {
		in   string
		want int64
	}{
		{"1000", 1000},
		{"0", 0},
		{"512B", 512},
		{"10KB", 10_000},
		{"10MB", 10_000_000},
		{"2GB", 2_000_000_000},
		{"1TB", 1_000_000_000_000},
		{"512KiB", 512 << 10},
		{"50MiB", 50 << 20},
		{"1GiB", 1 << 30},
		{"2TiB", 2 << 40},
		{"50 MiB", 50 << 20},
		{"50mib", 50 << 20},
		{"1.5GiB", 3 << 29},
		{"0.5KB", 500},
	}
	for _, tc := range good {
		s, err := ParseSize(tc.in)
		if err != nil || int64(s) != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, s, err, tc.want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "-1MiB", "+5", "50 MiBs", "100k", "1e6", "0x10", "1_000", "ten", "NaN", "Inf", "9223372036854775808", "10000000TB", "1.5.1KB"} {
		if s, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, s)
		}
	}
}

func TestSizeString(t *testing.T) {
	for _, tc := range []struct {
		s    Size
		want string
	}{
		{0, "0B"}, {1, "1B"}, {1000, "1KB"}, {1024, "1KiB"}, {50 << 20, "50MiB"}, {10_000_000, "10MB"}, {1 << 30, "1GiB"}, {1001, "1001B"},
	} {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("Size(%d).String() = %q, want %q", tc.s, got, tc.want)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1000", "50MiB", "1.5GiB", "10 MB", "-1", "1e3", "9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d, negative", s, n)
		}
		back, err := ParseSize(n.String())
		if err != nil || back != n {
			t.Fatalf("round trip of %q: %q -> %d, %v", s, n.String(), back, err)
		}
	})
}

func TestParseSchedule(t *testing.T) {
	for _, spec := range []string{"@every 5m", "@every 1s", "@hourly", "@daily", "*/10 * * * *", "0 6-22 * * 1-5", "CRON_TZ=UTC 30 7 * * *", " @every 1h "} {
		if _, err := ParseSchedule(spec); err != nil {
			t.Errorf("ParseSchedule(%q): %v", spec, err)
		}
	}
	for _, spec := range []string{"", "@every", "@every 5", "@every 0s", "@every -5m", "@every 1d", "@fortnightly", "* * * *", "0 0 * * * *", "61 * * * *", "TZ=UTC", "CRON_TZ=", "TZ=Nowhere/Atlantis * * * * *"} {
		if _, err := ParseSchedule(spec); err == nil {
			t.Errorf("ParseSchedule(%q): no error", spec)
		}
	}
	s, err := ParseSchedule("@every 5m")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	if next := s.Next(start); next != start.Add(5*time.Minute) {
		t.Errorf("Next = %v", next)
	}
}

func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"@every 5m", "*/10 * * * *", "TZ=UTC", "CRON_TZ=UTC 0 6 * * *", "0-70/0 * * * *"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = ParseSchedule(s) // must not panic
	})
}
