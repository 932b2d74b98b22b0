package configs

import (
	"strings"
	"testing"
	"time"
)

func TestStateURL(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", "/var/lib/me")
	c := mustParse(t, `[state]
url = "postgres://popsync:s3cret@db.example.net/popsync?sslmode=verify-full"
lease_ttl = "90s"
`+validAccount)
	want := State{URL: "postgres://popsync:s3cret@db.example.net/popsync?sslmode=verify-full",
		LeaseTTL: Duration(90 * time.Second), Dir: "/var/lib/me/popsync", Name: "fleet"}
	if c.State != want {
		t.Errorf("State = %+v, want %+v", c.State, want)
	}
	if !c.State.Fleet() {
		t.Error("Fleet() = false with url")
	}
	if w := c.State.Where(); strings.Contains(w, "s3cret") || !strings.Contains(w, "db.example.net") {
		t.Errorf("Where() = %q: want the host and no password", w)
	}

	c = mustParse(t, `[state]
url = "host=/run/postgresql dbname=popsync"
dir = "local"
`+validAccount)
	if c.State.Dir != "/etc/popsync/local" || c.State.LeaseTTL != 0 || c.State.Path != "" {
		t.Errorf("State = %+v", c.State)
	}
	if c.State.LocalFile(".x") != "/etc/popsync/local/fleet.x" {
		t.Errorf("LocalFile = %q", c.State.LocalFile(".x"))
	}
}

func TestStateURLProblems(t *testing.T) {
	for _, tc := range []struct {
		src       string
		line      int
		key, text string
	}{
		{"[state]\npath = \"s.db\"\nurl = \"host=/tmp dbname=p\"\n", 3, "url", "url and path exclude each other"},
		{"[state]\npath = \"s.db\"\nlease_ttl = \"10s\"\n", 3, "lease_ttl", "lease_ttl needs url"},
		{"[state]\nlease_ttl = \"10s\"\n", 2, "lease_ttl", "lease_ttl needs url"},
		{"[state]\ndir = \"x\"\n", 2, "dir", "dir needs url"},
		{"[state]\nurl = \"\"\n", 2, "url", "must not be empty"},
		{"[state]\nurl = \"postgres://me:pw%zz@h/db\"\n", 2, "url", "is not a libpq URL"},
		{"[state]\nurl = \"host=/tmp password='unterminated\"\n", 2, "url", "is not a libpq URL"},
		{"[state]\nurl = \"host=/tmp\"\nlease_ttl = \"0s\"\n", 3, "lease_ttl", "longer than 0"},
		{"[state]\nurl = \"host=/tmp\"\nlease_ttl = \"100ms\"\n", 3, "lease_ttl", "at least 300ms"},
	} {
		probs := problemsOf(t, func() error { _, err := parse(t, tc.src+validAccount); return err }())
		found := false
		for _, p := range probs {
			if p.Line == tc.line && p.Key == "state."+tc.key && strings.Contains(p.Msg, tc.text) {
				found = true
			}
			if strings.Contains(p.Msg, "pw") || strings.Contains(p.Msg, "unterminated") {
				t.Errorf("%q: problem quotes the connection string: %s", tc.src, p.Msg)
			}
		}
		if !found {
			t.Errorf("%q: problems %+v, want line %d key %s: %q", tc.src, probs, tc.line, tc.key, tc.text)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:secret@h:5432/db?sslmode=disable": "postgres://u:xxxxx@h:5432/db?sslmode=disable",
		"postgresql://u@h/db":                           "postgresql://u@h/db",
		"postgres://u@h/db?password=secret":             "postgres://u@h/db?password=xxxxx",
		"host=/tmp password=secret dbname=p":            "host=/tmp password=xxxxx dbname=p",
		"host=/tmp password = 'se cret' dbname=p":       "host=/tmp password = xxxxx dbname=p",
		"host=/tmp dbname=p":                            "host=/tmp dbname=p",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
