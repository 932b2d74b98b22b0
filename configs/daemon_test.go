package configs

import (
	"strings"
	"testing"
)

func TestRunAtStart(t *testing.T) {
	account := func(name, extra string) string {
		return `
[[account]]
name = "` + name + `"
host = "pop.example.net"
user = "` + name + `"
password_env = "PW"
` + extra + `
  [[account.deliver]]
  maildir = "/var/mail/x"
`
	}
	for _, tc := range []struct {
		name     string
		src      string
		want     map[string]bool
		problems []want
	}{
		{name: "default true", src: account("a", ""), want: map[string]bool{"a": true}},
		{
			name: "defaults table, account wins",
			src:  "[defaults]\nrun_at_start = false\n" + account("a", "") + account("b", "run_at_start = true"),
			want: map[string]bool{"a": false, "b": true},
		},
		{name: "account only", src: account("a", "run_at_start = false"), want: map[string]bool{"a": false}},
		{
			name:     "not a boolean",
			src:      account("a", `run_at_start = "yes"`),
			problems: []want{{line: 7, account: "a", key: "run_at_start", msg: "must be true or false"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parse(t, tc.src)
			if tc.problems != nil {
				checkProblems(t, problemsOf(t, err), tc.problems)
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			for _, a := range c.Accounts {
				if a.RunAtStart != tc.want[a.Name] {
					t.Errorf("account %s: RunAtStart = %v, want %v", a.Name, a.RunAtStart, tc.want[a.Name])
				}
			}
		})
	}
}

// TestMetricsExposure: a metrics address others can reach (an empty host,
// another interface, a host name) needs metrics_public = true; loopback
// needs nothing. The problem names the key and its line.
func TestMetricsExposure(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		public string // "" = not given
		ok     bool
	}{
		{"127.0.0.1:9465", "", true},
		{"127.9.9.9:9465", "", true},
		{"[::1]:9465", "", true},
		{"localhost:9465", "", true},
		{"LocalHost:9465", "", true},
		{":9465", "", false},
		{"0.0.0.0:9465", "", false},
		{"[::]:9465", "", false},
		{"192.0.2.7:9465", "", false},
		{"metrics.example.net:9465", "", false},
		{":9465", "false", false},
		{":9465", "true", true},
		{"192.0.2.7:9465", "true", true},
		{"127.0.0.1:9465", "false", true},
	} {
		src := "[daemon]\nmetrics = \"" + tc.addr + "\"\n"
		if tc.public != "" {
			src += "metrics_public = " + tc.public + "\n"
		}
		c, err := parse(t, src+validAccount)
		if tc.ok {
			if err != nil {
				t.Errorf("%s public=%q: %v", tc.addr, tc.public, err)
			} else if c.Daemon.Metrics != tc.addr || c.Daemon.MetricsPublic != (tc.public == "true") {
				t.Errorf("%s public=%q: Daemon = %+v", tc.addr, tc.public, c.Daemon)
			}
			continue
		}
		checkProblems(t, problemsOf(t, err), []want{{line: 2, key: "daemon.metrics", msg: "listens beyond this machine"}})
		if err != nil && !strings.Contains(err.Error(), "metrics_public = true") {
			t.Errorf("%s: the problem does not name metrics_public: %v", tc.addr, err)
		}
	}
	// Not a boolean: its own problem, and no second one about exposure.
	_, err := parse(t, "[daemon]\nmetrics = \":9465\"\nmetrics_public = \"yes\"\n"+validAccount)
	checkProblems(t, problemsOf(t, err), []want{{line: 3, key: "daemon.metrics_public", msg: "must be true or false"}})
}
