package configs

import "testing"

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
