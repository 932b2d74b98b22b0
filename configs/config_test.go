package configs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"popsync/internal/credential"
)

// validAccount is an account with every required key, for cases that test
// something else.
const validAccount = `[[account]]
name = "home"
host = "pop.example.net"
user = "me"
password_command = ["pass", "show", "home"]

  [[account.deliver]]
  maildir = "/var/mail/home"
`

func parse(t *testing.T, src string) (*Config, error) {
	t.Helper()
	return Parse([]byte(src), "/etc/popsync/config.toml", 0o600)
}

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := parse(t, src)
	if err != nil {
		t.Fatalf("Parse: unexpected error:\n%v", err)
	}
	return c
}

func problemsOf(t *testing.T, err error) []Problem {
	t.Helper()
	if err == nil {
		t.Fatal("Parse: no error, want problems")
	}
	var e *Errors
	if !errors.As(err, &e) {
		t.Fatalf("error %T %v is not *Errors", err, err)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("errors.Is(err, ErrInvalid) = false")
	}
	return e.Problems
}

// want is an expected problem: Line, Account and Key exactly, Msg contains
// the text.
type want struct {
	line    int
	account string
	key     string
	msg     string
}

func checkProblems(t *testing.T, got []Problem, wants []want) {
	t.Helper()
	ok := len(got) == len(wants)
	for i := 0; ok && i < len(got); i++ {
		w := wants[i]
		ok = got[i].Line == w.line && got[i].Account == w.account && got[i].Key == w.key && strings.Contains(got[i].Msg, w.msg)
	}
	if !ok {
		var b strings.Builder
		for _, p := range got {
			b.WriteString("\n  " + p.format("config.toml"))
		}
		t.Errorf("problems:%s\nwant %d: %+v", b.String(), len(wants), wants)
	}
}

func TestDefaults(t *testing.T) {
	t.Setenv("HOME", "/home/me")
	t.Setenv("XDG_STATE_HOME", "")
	c := mustParse(t, validAccount)

	if c.Path != "/etc/popsync/config.toml" {
		t.Errorf("Path = %q", c.Path)
	}
	if want := (State{Path: "/home/me/.local/state/popsync/state.db", Dir: "/home/me/.local/state/popsync", Name: "state.db"}); c.State != want {
		t.Errorf("State = %+v, want %+v", c.State, want)
	}
	wantDaemon := Daemon{MaxParallel: 8, ShutdownGrace: Duration(30 * time.Second)}
	if c.Daemon != wantDaemon {
		t.Errorf("Daemon = %+v, want %+v", c.Daemon, wantDaemon)
	}
	if len(c.Accounts) != 1 {
		t.Fatalf("%d accounts", len(c.Accounts))
	}
	got := c.Accounts[0]
	want := &Account{
		Name: "home", Line: 1,
		Host: "pop.example.net", Port: 995, TLS: "implicit",
		User: "me", Password: credential.Source{Key: "password", Command: []string{"pass", "show", "home"}, Timeout: 10 * time.Second,
			CommandEnv: ChildEnv{}},
		Auth:        "auto",
		Keep:        true,
		Timeout:     Duration(60 * time.Second),
		AddReceived: true,
		Schedule:    "@every 5m",
		RunAtStart:  true,
		Deliver:     []Deliver{{Line: 7, Target: &MaildirTarget{Path: "/var/mail/home"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("account:\n got %+v\nwant %+v", got, want)
	}
	if got.Addr() != "pop.example.net:995" {
		t.Errorf("Addr = %q", got.Addr())
	}
	if k := got.Deliver[0].Kind(); k != KindMaildir {
		t.Errorf("Kind = %q", k)
	}
}

func TestPortFollowsTLS(t *testing.T) {
	for _, tc := range []struct {
		tls  string
		port int
	}{{"implicit", 995}, {"starttls", 110}, {"none", 110}, {"STARTTLS", 110}} {
		src := strings.Replace(validAccount, `user = "me"`, `user = "me"`+"\ntls = \""+tc.tls+"\"", 1)
		a := mustParse(t, src).Accounts[0]
		if a.Port != tc.port || a.TLS != strings.ToLower(tc.tls) {
			t.Errorf("tls %q: port %d, TLS %q; want %d", tc.tls, a.Port, a.TLS, tc.port)
		}
	}
	// tls from [defaults] moves the default port as well.
	a := mustParse(t, "[defaults]\ntls = \"starttls\"\n"+validAccount).Accounts[0]
	if a.Port != 110 {
		t.Errorf("tls from defaults: port %d, want 110", a.Port)
	}
}

func TestLayering(t *testing.T) {
	src := `[defaults]
tls = "starttls"
timeout = "2m"
keep = false
add_received = false
max_size = "10MB"
password_env = "POP_PW"
schedule = "@hourly"

  [[defaults.deliver]]
  maildir = "/srv/mail/all"

[[account]]
name = "a"            # everything from defaults
host = "a.example"
user = "u"

[[account]]
name = "b"            # its own values win, key by key
host = "b.example"
user = "u"
timeout = "10s"
keep = true
delete_after = "2w"
password_file = "/run/secrets/b"   # replaces the defaults' password_env
  [[account.deliver]]
  maildir = "/srv/mail/b"
`
	c := mustParse(t, src)
	a, b := c.Accounts[0], c.Accounts[1]
	if a.TLS != "starttls" || a.Port != 110 || a.Timeout.D() != 2*time.Minute || a.Keep || a.AddReceived ||
		a.MaxSize != 10_000_000 || a.Password.Env != "POP_PW" || a.Schedule != "@hourly" {
		t.Errorf("account a did not take the defaults: %+v", a)
	}
	if len(a.Deliver) != 1 || a.Deliver[0].Target.(*MaildirTarget).Path != "/srv/mail/all" || a.Deliver[0].Line != 10 {
		t.Errorf("account a deliver = %+v", a.Deliver)
	}
	if b.Timeout.D() != 10*time.Second || !b.Keep || b.DeleteAfter.D() != 14*24*time.Hour || b.TLS != "starttls" {
		t.Errorf("account b: %+v", b)
	}
	if b.Password.Env != "" || b.Password.File != "/run/secrets/b" {
		t.Errorf("account b password sources: env %q file %q", b.Password.Env, b.Password.File)
	}
	if len(b.Deliver) != 1 || b.Deliver[0].Target.(*MaildirTarget).Path != "/srv/mail/b" {
		t.Errorf("account b deliver = %+v", b.Deliver)
	}
	// Accounts do not share the defaults' slices.
	a.Deliver[0].Target.(*MaildirTarget).Path = "changed"
	if c2 := mustParse(t, src); c2.Accounts[0].Deliver[0].Target.(*MaildirTarget).Path != "/srv/mail/all" {
		t.Error("deliver entries are shared")
	}
}

func TestDaemonAndState(t *testing.T) {
	c := mustParse(t, `[state]
path = "db/state.db"
[daemon]
max_parallel = 2
shutdown_grace = "0"
metrics = ":9465"
metrics_public = true
`+validAccount)
	if want := (State{Path: "/etc/popsync/db/state.db", Dir: "/etc/popsync/db", Name: "state.db"}); c.State != want {
		t.Errorf("State = %+v, want %+v", c.State, want)
	}
	if got := c.State.LocalFile(".daemon.lock"); got != "/etc/popsync/db/state.db.daemon.lock" {
		t.Errorf("LocalFile = %q", got)
	}
	if c.Daemon != (Daemon{MaxParallel: 2, ShutdownGrace: 0, Metrics: ":9465", MetricsPublic: true}) {
		t.Errorf("Daemon = %+v", c.Daemon)
	}
}

func TestPaths(t *testing.T) {
	t.Setenv("HOME", "/home/me")
	src := `[state]
path = "~/state.db"
[[account]]
name = "a"
host = "h"
user = "u"
tls_ca_file = "certs/ca.pem"
password_command = ["bin/getpw", "~/not-a-path", "rel/arg"]
  [[account.deliver]]
  maildir = "~"
[[account]]
name = "b"
host = "h2"
user = "u"
password_file = "/abs/../abs/pw"
  [[account.deliver]]
  maildir = "../Maildir"
[[account]]
name = "c"
host = "h3"
user = "u"
password_command = ["pass", "show", "x"]
  [[account.deliver]]
  maildir = "~/Maildir/"
`
	c := mustParse(t, src)
	checks := []struct{ got, want string }{
		{c.State.Path, "/home/me/state.db"},
		{c.Accounts[0].TLSCAFile, "/etc/popsync/certs/ca.pem"},
		{c.Accounts[0].Password.Command[0], "/etc/popsync/bin/getpw"},
		{c.Accounts[0].Password.Command[1], "~/not-a-path"}, // arguments are left alone
		{c.Accounts[0].Password.Command[2], "rel/arg"},
		{c.Accounts[0].Deliver[0].Target.(*MaildirTarget).Path, "/home/me"},
		{c.Accounts[1].Password.File, "/abs/pw"},
		{c.Accounts[1].Deliver[0].Target.(*MaildirTarget).Path, "/etc/Maildir"},
		{c.Accounts[2].Password.Command[0], "pass"}, // found in $PATH when run
		{c.Accounts[2].Deliver[0].Target.(*MaildirTarget).Path, "/home/me/Maildir"},
	}
	for i, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("check %d: got %q, want %q", i, ch.got, ch.want)
		}
	}

	// A relative config path resolves against the working directory.
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	c, err = Parse([]byte(validAccount+"[state]\npath = \"s.db\"\n"), "sub/config.toml", 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(wd, "sub", "s.db"); c.State.Path != want {
		t.Errorf("State.Path = %q, want %q", c.State.Path, want)
	}
}

func TestValidation(t *testing.T) {
	t.Setenv("HOME", "/home/me")
	const head = "[[account]]\nname = \"home\"\nhost = \"pop.example.net\"\nuser = \"me\"\n"
	const pw = "password_command = [\"pw\"]\n"
	const dl = "[[account.deliver]]\nmaildir = \"/m\"\n"
	const other = "[[account]]\nname = \"other\"\nhost = \"pop.example.net\"\nuser = \"someone\"\n"

	cases := []struct {
		name  string
		src   string
		wants []want
	}{
		{"name required", "[[account]]\nhost = \"h\"\nuser = \"u\"\n" + pw + dl,
			[]want{{1, "", "name", "is required"}}},
		{"name empty", "[[account]]\nname = \"\"\nhost = \"h\"\nuser = \"u\"\n" + pw + dl,
			[]want{{2, "", "name", "must not be empty"}}},
		{"name characters", "[[account]]\nname = \"my home\"\nhost = \"h\"\nuser = \"u\"\n" + pw + dl,
			[]want{{2, "my home", "name", `letters, digits and - _ . @, not "my home"`}}},
		{"name unique", head + pw + dl + "[[account]]\nname = \"home\"\nhost = \"other\"\nuser = \"u\"\n" + pw + dl,
			[]want{{9, "home", "name", "already used by the account on line 1"}}},
		{"name in defaults", "[defaults]\nname = \"x\"\n" + head + pw + dl,
			[]want{{2, "", "defaults.name", "cannot be set in [defaults]"}}},

		{"host required", "[[account]]\nname = \"a\"\nuser = \"u\"\n" + pw + dl,
			[]want{{1, "a", "host", "is required"}}},
		{"host with port", "[[account]]\nname = \"a\"\nhost = \"pop.x:995\"\nuser = \"u\"\n" + pw + dl,
			[]want{{3, "a", "host", `must not include a port: write host = "pop.x" and port = 995`}}},
		{"host URL", "[[account]]\nname = \"a\"\nhost = \"pop3s://pop.x\"\nuser = \"u\"\n" + pw + dl,
			[]want{{3, "a", "host", "not a URL"}}},
		{"host bracketed IPv6", "[[account]]\nname = \"a\"\nhost = \"[::1]\"\nuser = \"u\"\n" + pw + dl,
			[]want{{3, "a", "host", "without brackets"}}},
		{"host junk", "[[account]]\nname = \"a\"\nhost = \"pop example\"\nuser = \"u\"\n" + pw + dl,
			[]want{{3, "a", "host", `must be a host name or IP address, not "pop example"`}}},
		{"user required", "[[account]]\nname = \"a\"\nhost = \"h\"\n" + pw + dl,
			[]want{{1, "a", "user", "is required"}}},
		{"user empty", "[[account]]\nname = \"a\"\nhost = \"h\"\nuser = \" \"\n" + pw + dl,
			[]want{{4, "a", "user", "must not be empty"}}},

		{"no password source", head + dl,
			[]want{{1, "home", "", "needs a password source: one of password, password_file, password_command or password_env"}}},
		{"two password sources", head + pw + "password_env = \"PW\"\npassword_file = \"/pw\"\n" + dl,
			[]want{
				{6, "home", "password_env", "only one password source may be given, and password_command is set on line 5"},
				{7, "home", "password_file", "only one password source may be given"},
			}},
		{"two password sources in defaults", "[defaults]\npassword_env = \"A\"\npassword_file = \"/b\"\n" + head + dl + other + dl,
			[]want{{3, "", "defaults.password_file", "only one password source may be given, and password_env is set on line 2"}}},
		{"password empty", head + "password = \"\"\n" + dl,
			[]want{{5, "home", "password", "must not be empty"}}},
		{"password_env name", head + "password_env = \"not a name\"\n" + dl,
			[]want{{5, "home", "password_env", "must be the name of an environment variable"}}},
		{"password_command string", head + "password_command = \"pass show x\"\n" + dl,
			[]want{{5, "home", "password_command", "must be an array"}}},
		{"password_command empty", head + "password_command = []\n" + dl,
			[]want{{5, "home", "password_command", "must name a program"}}},
		{"password_command element type", head + "password_command = [\"pw\", 3]\n" + dl,
			[]want{{5, "home", "password_command", "must be a string, not an integer"}}},
		{"password_file ~user", head + "password_file = \"~bob/pw\"\n" + dl,
			[]want{{5, "home", "password_file", `"~user/" paths are not supported`}}},

		{"tls enum", head + pw + "tls = \"tsl\"\n" + dl,
			[]want{{6, "home", "tls", `must be implicit, starttls or none, not "tsl"`}}},
		{"auth enum", head + pw + "auth = \"scram-sha-1\"\n" + dl,
			[]want{{6, "home", "auth", `must be auto, user, apop, plain, login, cram-md5, xoauth2 or oauthbearer, not "scram-sha-1"`}}},
		{"port zero", head + pw + "port = 0\n" + dl,
			[]want{{6, "home", "port", "must be between 1 and 65535, not 0"}}},
		{"port high", head + pw + "port = 65536\n" + dl,
			[]want{{6, "home", "port", "must be between 1 and 65535, not 65536"}}},
		{"port string", head + pw + "port = \"995\"\n" + dl,
			[]want{{6, "home", "port", "must be an integer, not a string"}}},
		{"fingerprint length", head + pw + "tls_fingerprint = \"abcd\"\n" + dl,
			[]want{{6, "home", "tls_fingerprint", "64 hex digits"}}},
		{"fingerprint not hex", head + pw + "tls_fingerprint = \"" + strings.Repeat("g", 64) + "\"\n" + dl,
			[]want{{6, "home", "tls_fingerprint", "64 hex digits"}}},
		{"tls options with tls none", head + pw + "tls = \"none\"\ntls_fingerprint = \"" + strings.Repeat("ab", 32) + "\"\ntls_ca_file = \"/ca\"\n" + dl,
			[]want{
				{7, "home", "tls_fingerprint", `tls_fingerprint needs tls = "implicit" or "starttls", not "none"`},
				{8, "home", "tls_ca_file", `tls_ca_file needs tls = "implicit"`},
			}},
		{"tls none in account, server name in defaults", "[defaults]\ntls_server_name = \"x.example\"\n" + head + pw + "tls = \"none\"\n" + dl,
			[]want{{8, "home", "tls", "tls_server_name needs tls"}}},

		{"keep type", head + pw + "keep = \"yes\"\n" + dl,
			[]want{{6, "home", "keep", "must be true or false, not a string"}}},
		{"delete_after needs keep", head + pw + "keep = false\ndelete_after = \"30d\"\n" + dl,
			[]want{{7, "home", "delete_after", "delete_after needs keep = true"}}},
		{"delete_after from defaults, keep false in account", "[defaults]\ndelete_after = \"30d\"\n" + head + pw + "keep = false\n" + dl,
			[]want{{8, "home", "keep", "delete_after needs keep = true"}}},
		{"delete_after zero with keep false is fine", head + pw + "keep = false\ndelete_after = \"0\"\n" + dl, nil},
		{"timeout bare integer", head + pw + "timeout = 60\n" + dl,
			[]want{{6, "home", "timeout", `use a unit, e.g. "30s"`}}},
		{"timeout bare integer string", head + pw + "timeout = \"60\"\n" + dl,
			[]want{{6, "home", "timeout", `use a unit, e.g. "30s"`}}},
		{"timeout zero", head + pw + "timeout = \"0s\"\n" + dl,
			[]want{{6, "home", "timeout", "must be longer than 0"}}},
		{"timeout unit", head + pw + "timeout = \"5 min\"\n" + dl,
			[]want{{6, "home", "timeout", "not a duration"}}},
		{"delete_after negative", head + pw + "delete_after = \"-1d\"\n" + dl,
			[]want{{6, "home", "delete_after", "negative"}}},
		{"max_size unit", head + pw + "max_size = \"50 MiBs\"\n" + dl,
			[]want{{6, "home", "max_size", "not a size"}}},
		{"max_size negative", head + pw + "max_size = -1\n" + dl,
			[]want{{6, "home", "max_size", "must not be negative"}}},
		{"fetch_limit negative", head + pw + "fetch_limit = -1\n" + dl,
			[]want{{6, "home", "fetch_limit", "must be at least 0, not -1"}}},
		{"schedule syntax", head + pw + "schedule = \"every 5m\"\n" + dl,
			[]want{{6, "home", "schedule", `"every 5m" is not a valid schedule`}}},
		{"schedule field range", head + pw + "schedule = \"61 * * * *\"\n" + dl,
			[]want{{6, "home", "schedule", "is not a valid schedule"}}},
		{"schedule that panics the cron parser", head + pw + "schedule = \"TZ=UTC\"\n" + dl,
			[]want{{6, "home", "schedule", `"TZ=UTC" is not a valid schedule`}}},
		{"schedule every too short", head + pw + "schedule = \"@every 500ms\"\n" + dl,
			[]want{{6, "home", "schedule", `needs at least "1s"`}}},
		{"schedule seconds field", head + pw + "schedule = \"0 */5 * * * *\"\n" + dl,
			[]want{{6, "home", "schedule", "is not a valid schedule"}}},

		{"no deliver", head + pw,
			[]want{{1, "home", "", "needs at least one [[account.deliver]] table"}}},
		{"deliver empty array", head + pw + "deliver = []\n",
			[]want{{1, "home", "", "needs at least one [[account.deliver]] table"}}},
		{"deliver as a table", head + pw + "[account.deliver]\nmaildir = \"/m\"\n",
			[]want{{6, "home", "deliver", "write [[account.deliver]], not [account.deliver]"}}},
		{"deliver without kind", head + pw + "[[account.deliver]]\nrcpt = [\"me\"]\n",
			[]want{{6, "home", "deliver", "needs one of maildir, smtp, lmtp, mda or imap"}}},
		{"deliver with two kinds", head + pw + "[[account.deliver]]\nmaildir = \"/m\"\nmda = [\"/usr/bin/procmail\"]\n",
			[]want{{8, "home", "deliver.mda", "cannot be combined with maildir"}}},
		{"deliver key for another kind", head + pw + "[[account.deliver]]\nmaildir = \"/m\"\nrcpt = [\"me\"]\nhelo = \"x\"\n",
			[]want{
				{8, "home", "deliver.rcpt", "does not apply to maildir delivery"},
				{9, "home", "deliver.helo", "does not apply to maildir delivery"},
			}},
		{"smtp rcpt required", head + pw + "[[account.deliver]]\nsmtp = \"127.0.0.1:25\"\n",
			[]want{{6, "home", "deliver.rcpt", "is required for smtp delivery"}}},
		{"lmtp rcpt required", head + pw + "[[account.deliver]]\nlmtp = \"unix:/run/dovecot/lmtp\"\n",
			[]want{{6, "home", "deliver.rcpt", "is required for lmtp delivery"}}},
		{"smtp address", head + pw + "[[account.deliver]]\nsmtp = \"localhost\"\nrcpt = [\"me\"]\n",
			[]want{{7, "home", "deliver.smtp", `must be "host:port"`}}},
		{"smtp user without password", head + pw + "[[account.deliver]]\nsmtp = \"h:25\"\nrcpt = [\"me\"]\nsmtp_user = \"u\"\n",
			[]want{{9, "home", "deliver.smtp_user", "needs smtp_password too"}}},
		{"rcpt empty", head + pw + "[[account.deliver]]\nsmtp = \"h:25\"\nrcpt = []\n",
			[]want{{8, "home", "deliver.rcpt", "at least one address"}}},
		{"smtp_tls mode", head + pw + "[[account.deliver]]\nsmtp = \"h:25\"\nrcpt = [\"me\"]\nsmtp_tls = \"ssl\"\n",
			[]want{{9, "home", "deliver.smtp_tls", "must be implicit, starttls or none"}}},
		{"smtp password in clear text", head + pw + "[[account.deliver]]\nsmtp = \"mail.example.net:25\"\nrcpt = [\"me\"]\nsmtp_tls = \"none\"\nsmtp_user = \"u\"\nsmtp_password = \"p\"\n",
			[]want{{10, "home", "deliver.smtp_user", "password would be sent in clear text"}}},
		{"on_reject mode", head + pw + "[[account.deliver]]\nmda = [\"/usr/bin/procmail\"]\non_reject = \"bounce\"\n",
			[]want{{8, "home", "deliver.on_reject", `must be quarantine, keep or delete, not "bounce"`}}},
		{"quarantine without on_reject quarantine", head + pw + "[[account.deliver]]\nlmtp = \"h:24\"\nrcpt = [\"me\"]\non_reject = \"delete\"\nquarantine = \"/q\"\n",
			[]want{{10, "home", "deliver.quarantine", `needs on_reject = "quarantine", not "delete"`}}},
		{"on_reject for maildir", head + pw + "[[account.deliver]]\nmaildir = \"/m\"\non_reject = \"keep\"\n",
			[]want{{8, "home", "deliver.on_reject", "does not apply to maildir delivery"}}},
		{"maildir empty", head + pw + "[[account.deliver]]\nmaildir = \"\"\n",
			[]want{{7, "home", "deliver.maildir", "must not be empty"}}},

		{"identity shared", head + pw + dl + "[[account]]\nname = \"again\"\nhost = \"POP.example.net\"\nport = 995\nuser = \"me\"\n" + pw + dl,
			[]want{{8, "again", "", `same host, port and user as account "home" (line 1)`}}},
		{"identity shared through a trailing dot", head + pw + dl + "[[account]]\nname = \"again\"\nhost = \"pop.example.net.\"\nuser = \"me\"\n" + pw + dl,
			[]want{{8, "again", "", `same host, port and user as account "home" (line 1), me@pop.example.net:995`}}},
		{"same host and user, other port", head + pw + dl + "[[account]]\nname = \"again\"\nhost = \"pop.example.net\"\nport = 110\ntls = \"starttls\"\nuser = \"me\"\n" + pw + dl, nil},

		{"unknown top-level key", "max_parallel = 3\n" + head + pw + dl,
			[]want{{1, "", "max_parallel", "unknown key; it belongs in [daemon]"}}},
		{"unknown table", "[deamon]\nmax_parallel = 3\n" + head + pw + dl,
			[]want{{1, "", "deamon", `unknown key (did you mean "daemon"?)`}}},
		{"unknown state key", "[state]\npth = \"x\"\n" + head + pw + dl,
			[]want{{2, "", "state.pth", `unknown key (did you mean "path"?)`}}},
		{"unknown daemon key", "[daemon]\nworkers = 3\n" + head + pw + dl,
			[]want{{2, "", "daemon.workers", "unknown key"}}},
		{"unknown account key", head + pw + "pasword = \"x\"\n" + dl,
			[]want{{6, "home", "pasword", `unknown key (did you mean "password"?)`}}},
		{"deliver key in account", head + pw + "maildir = \"/m\"\n" + dl,
			[]want{{6, "home", "maildir", "unknown key; it belongs in [[account.deliver]]"}}},
		{"unknown deliver key", head + pw + "[[account.deliver]]\nmaildir = \"/m\"\ncreat = true\n",
			[]want{{8, "home", "deliver.creat", "unknown key"}}},
		{"unknown defaults key", "[defaults]\nintervall = \"5m\"\n" + head + pw + dl,
			[]want{{2, "", "defaults.intervall", "unknown key"}}},

		{"no account", "[daemon]\nmax_parallel = 2\n",
			[]want{{0, "", "", "no [[account]] table"}}},
		{"account as a table", "[account]\nname = \"a\"\n",
			[]want{{1, "", "account", "write [[account]], not [account]"}}},
		{"max_parallel zero", "[daemon]\nmax_parallel = 0\n" + head + pw + dl,
			[]want{{2, "", "daemon.max_parallel", "must be at least 1, not 0"}}},
		{"metrics without port", "[daemon]\nmetrics = \"localhost\"\n" + head + pw + dl,
			[]want{{2, "", "daemon.metrics", `must be "host:port"`}}},
		{"shutdown_grace bare number", "[daemon]\nshutdown_grace = 30\n" + head + pw + dl,
			[]want{{2, "", "daemon.shutdown_grace", `use a unit, e.g. "30s"`}}},
		{"state path type", "[state]\npath = 1\n" + head + pw + dl,
			[]want{{2, "", "state.path", "must be a string, not an integer"}}},
		{"state not a table", "state = \"x\"\n" + head + pw + dl,
			[]want{{1, "", "state", "must be a table, not a string"}}},

		{"bad value in defaults is reported once", "[defaults]\ntls = \"tsl\"\n" + head + pw + dl + other + pw + dl,
			[]want{{2, "", "defaults.tls", `not "tsl"`}}},
		{"inline deliver", head + pw + "deliver = [{maildir = \"/m\"}, {maildir = \"\"}]\n",
			[]want{{6, "home", "deliver.maildir", "must not be empty"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.src)
			if tc.wants == nil {
				if err != nil {
					t.Fatalf("unexpected error:\n%v", err)
				}
				return
			}
			checkProblems(t, problemsOf(t, err), tc.wants)
		})
	}
}

func TestValidValues(t *testing.T) {
	src := `[[account]]
name = "Work_1.b@x-y"
host = "2001:db8::1"
user = "me"
auth = "XOAUTH2"
password_env = "OAUTH_TOKEN"      # the token, for xoauth2
tls = "starttls"
tls_fingerprint = "AB:CD:EF:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89"
tls_server_name = "Mail.Example.COM"
max_size = "1.5KiB"
fetch_limit = 100
schedule = "CRON_TZ=UTC 0 6 * * 1-5"
delete_after = "1w2d3h"
  [[account.deliver]]
  maildir = "/m"
`
	a := mustParse(t, src).Accounts[0]
	if a.Addr() != "[2001:db8::1]:110" {
		t.Errorf("Addr = %q", a.Addr())
	}
	if a.Auth != "xoauth2" || a.Password.Env != "OAUTH_TOKEN" {
		t.Errorf("auth %q env %q", a.Auth, a.Password.Env)
	}
	if a.TLSFingerprint != strings.Repeat("abcdef0123456789", 4) {
		t.Errorf("fingerprint = %q", a.TLSFingerprint)
	}
	if a.TLSServerName != "mail.example.com" {
		t.Errorf("server name = %q", a.TLSServerName)
	}
	if a.MaxSize != 1536 || a.FetchLimit != 100 {
		t.Errorf("max_size %d fetch_limit %d", a.MaxSize, a.FetchLimit)
	}
	if a.DeleteAfter.D() != 9*24*time.Hour+3*time.Hour {
		t.Errorf("delete_after = %v", a.DeleteAfter)
	}
}

// TestAllProblemsAtOnce checks the whole report of a file with many
// mistakes: every one is there, once, in line order, with its line.
func TestAllProblemsAtOnce(t *testing.T) {
	src := `[state]
path = 42

[daemon]
max_parallel = 0
shutdown_grace = 30
metrics = "9465"

[defaults]
tls = "tsl"
keep = false

[[account]]
name = "home"
host = "pop.example.net"
port = 99999
user = "me"
password_command = ["pass", "show", "home"]
password_env = "HOME_PW"
delete_after = "30d"
schedule = "@every 5 minutes"
  [[account.deliver]]
  maildir = "~/Maildir"
  rcpt = ["me"]

[[account]]
name = "home"
host = "other.example.net"
auth = "kerberos"
password_file = "pw"
timeout = "1 minute"
mailbox = "INBOX"
  [[account.deliver]]
  smtp = "127.0.0.1:25"
  rcpt = ["me@localhost"]
  on_reject = "bounce"
`
	_, err := parse(t, src)
	wantText := `/etc/popsync/config.toml:2: key "state.path": must be a string, not an integer
/etc/popsync/config.toml:5: key "daemon.max_parallel": must be at least 1, not 0
/etc/popsync/config.toml:6: key "daemon.shutdown_grace": must be a string with a unit, not a bare number; use a unit, e.g. "30s"
/etc/popsync/config.toml:7: key "daemon.metrics": must be "host:port" with a port from 1 to 65535, not "9465"
/etc/popsync/config.toml:10: key "defaults.tls": must be implicit, starttls or none, not "tsl"
/etc/popsync/config.toml:16: account "home": key "port": must be between 1 and 65535, not 99999
/etc/popsync/config.toml:19: account "home": key "password_env": only one password source may be given, and password_command is set on line 18
/etc/popsync/config.toml:20: account "home": key "delete_after": delete_after needs keep = true (with keep = false mail is deleted as soon as it is delivered)
/etc/popsync/config.toml:21: account "home": key "schedule": "@every" needs a duration such as "5m" or "1h30m", not "5 minutes"
/etc/popsync/config.toml:24: account "home": key "deliver.rcpt": does not apply to maildir delivery
/etc/popsync/config.toml:26: account "home": key "user": is required
/etc/popsync/config.toml:27: account "home": key "name": is already used by the account on line 13
/etc/popsync/config.toml:29: account "home": key "auth": must be auto, user, apop, plain, login, cram-md5, xoauth2 or oauthbearer, not "kerberos"
/etc/popsync/config.toml:31: account "home": key "timeout": "1 minute" is not a duration: unknown unit " minute" (use ms, s, m, h, d or w)
/etc/popsync/config.toml:32: account "home": key "mailbox": unknown key; it belongs in [[account.deliver]]
/etc/popsync/config.toml:36: account "home": key "deliver.on_reject": must be quarantine, keep or delete, not "bounce"`
	if err == nil || err.Error() != wantText {
		t.Errorf("got:\n%v\n\nwant:\n%s", err, wantText)
	}
}

func TestSyntaxError(t *testing.T) {
	_, err := parse(t, validAccount+"keep = tru\n")
	checkProblems(t, problemsOf(t, err), []want{{9, "", "", "invalid TOML"}})

	// Duplicate keys are the parser's to find; the line is still given.
	_, err = parse(t, "[[account]]\nname = \"a\"\nname = \"b\"\n")
	checkProblems(t, problemsOf(t, err), []want{{3, "", "", "already been defined"}})

	// The parser quotes what it choked on; on a password line that is withheld.
	for _, src := range []string{
		"[[account]]\npassword = hunter2\n",
		"[[account]]\npassword = \"hunter2\" and more\n",
		"[[account]]\npassword = \"\"\"hunter2\n",
		"[[account.deliver]]\nsmtp_password = hunter2\n",
	} {
		_, err := parse(t, src)
		ps := problemsOf(t, err)
		if strings.Contains(err.Error(), "hunter") || len(ps) != 1 || ps[0].Line == 0 {
			t.Errorf("%q: %v", src, err)
		}
	}
}

func TestPasswordInReadableFile(t *testing.T) {
	withPassword := strings.Replace(validAccount, `password_command = ["pass", "show", "home"]`, `password = "hunter2"`, 1)
	withSMTPPassword := validAccount + "  [[account.deliver]]\n  smtp = \"h:25\"\n  rcpt = [\"me\"]\n  smtp_user = \"u\"\n  smtp_password = \"hunter2\"\n"
	inDefaults := "[defaults]\npassword = \"hunter2\"\n" + strings.Replace(validAccount, "password_command = [\"pass\", \"show\", \"home\"]\n", "", 1)
	for _, tc := range []struct {
		name    string
		src     string
		mode    fs.FileMode
		refused bool
	}{
		{"0600 with password", withPassword, 0o600, false},
		{"0400 with password", withPassword, 0o400, false},
		{"0644 with password", withPassword, 0o644, true},
		{"0640 with password", withPassword, 0o640, true},
		{"0604 with password", withPassword, 0o604, true},
		{"0620 with password", withPassword, 0o620, true},
		{"0644 with password in defaults", inDefaults, 0o644, true},
		{"0644 without password", validAccount, 0o644, false},
		{"0644 with smtp_password", withSMTPPassword, 0o644, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.src), "/etc/my files/config.toml", tc.mode)
			var modeProblem *Problem
			if err != nil {
				for _, p := range problemsOf(t, err) {
					if strings.Contains(p.Msg, "readable by others") {
						modeProblem = &p
					}
				}
			}
			if (modeProblem != nil) != tc.refused {
				t.Fatalf("refused = %v, want %v (err: %v)", modeProblem != nil, tc.refused, err)
			}
			if modeProblem != nil {
				want := "holds a password but is readable by others (mode 0" + octal(tc.mode) + "); run: chmod 600 '/etc/my files/config.toml'"
				if modeProblem.Msg != want || modeProblem.Line != 0 {
					t.Errorf("got %q line %d, want %q", modeProblem.Msg, modeProblem.Line, want)
				}
				if !strings.HasPrefix(err.Error(), "/etc/my files/config.toml: holds a password") {
					t.Errorf("the file-wide problem comes first: %v", err)
				}
			}
		})
	}
}

func octal(m fs.FileMode) string {
	const digits = "01234567"
	p := uint32(m.Perm())
	return string([]byte{digits[p>>6&7], digits[p>>3&7], digits[p&7]})
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	withPassword := strings.Replace(validAccount, `password_command = ["pass", "show", "home"]`, `password = "hunter2"`, 1)
	if err := os.WriteFile(path, []byte(withPassword), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Path != path || c.Accounts[0].Password.Literal.Reveal() != "hunter2" {
		t.Errorf("Path %q password %q", c.Path, c.Accounts[0].Password.Literal.Reveal())
	}

	// Load checks the file's real mode.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path)
	if err == nil || !strings.Contains(err.Error(), "run: chmod 600 "+path) {
		t.Errorf("Load of a 0644 file with a password: %v", err)
	}

	_, err = Load(filepath.Join(dir, "missing.toml"))
	if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrInvalid) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("directory: %v", err)
	}
}

// TestExampleFiles loads every config shipped in this folder, so that the
// examples cannot rot, and checks that example.toml shows every key.
func TestExampleFiles(t *testing.T) {
	t.Setenv("HOME", "/home/me")
	files, err := filepath.Glob("*.toml")
	if err != nil || len(files) < 2 {
		t.Fatalf("example files: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			// Copied with mode 0600, as a user would keep it.
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), f)
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(path)
			if err != nil {
				t.Fatalf("%s:\n%v", f, err)
			}
			if len(c.Accounts) == 0 {
				t.Errorf("%s has no account", f)
			}
			// Shipped files are world-readable, so they must not hold a password.
			if _, err := Parse(data, f, 0o644); err != nil {
				t.Errorf("%s as shipped (0644):\n%v", f, err)
			}
		})
	}

	data, err := os.ReadFile("example.toml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	var keys []string
	for k := range accountFields {
		if k != "deliver" && k != "oauth2" { // tables, checked below
			keys = append(keys, k)
		}
	}
	for k := range deliverFields {
		if k != "oauth2" { // [account.deliver.oauth2], checked below
			keys = append(keys, k)
		}
	}
	for k := range oauth2Fields {
		keys = append(keys, k)
	}
	keys = append(keys, "max_parallel", "shutdown_grace", "metrics", "path")
	sort.Strings(keys)
	for _, k := range keys {
		// Set, or shown commented out: "key = ..." or "# key = ...".
		re := regexp.MustCompile(`(?m)^[ \t]*(# )?` + regexp.QuoteMeta(k) + `[ \t]*=`)
		if !re.MatchString(text) {
			t.Errorf("example.toml does not show key %q", k)
		}
	}
	if !strings.Contains(text, "# [account.deliver.oauth2]") {
		t.Errorf("example.toml does not show table [account.deliver.oauth2]")
	}
	for _, table := range []string{"[state]", "[daemon]", "[defaults]", "[[account]]", "[[account.deliver]]", "[account.oauth2]"} {
		if !strings.Contains(text, "\n"+table+"\n") && !strings.Contains(text, "  "+table+"\n") {
			t.Errorf("example.toml does not show table %s", table)
		}
	}
}

func TestDefaultPaths(t *testing.T) {
	t.Setenv("HOME", "/home/me")
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("XDG_STATE_HOME", "")
	if got := DefaultPath(); got != "/home/me/.config/popsync/config.toml" {
		t.Errorf("DefaultPath = %q", got)
	}
	if got := DefaultStatePath(); got != "/home/me/.local/state/popsync/state.db" {
		t.Errorf("DefaultStatePath = %q", got)
	}
	t.Setenv("XDG_CONFIG_HOME", "/xdg/config")
	t.Setenv("XDG_STATE_HOME", "/xdg/state")
	if got := DefaultPath(); got != "/xdg/config/popsync/config.toml" {
		t.Errorf("DefaultPath = %q", got)
	}
	if got := DefaultStatePath(); got != "/xdg/state/popsync/state.db" {
		t.Errorf("DefaultStatePath = %q", got)
	}
	// The XDG spec says relative values are invalid and to be ignored.
	t.Setenv("XDG_CONFIG_HOME", "relative")
	if got := DefaultPath(); got != "/home/me/.config/popsync/config.toml" {
		t.Errorf("DefaultPath with relative XDG_CONFIG_HOME = %q", got)
	}
}

func TestLookup(t *testing.T) {
	c := mustParse(t, validAccount)
	if a, ok := c.Lookup("home"); !ok || a != c.Accounts[0] {
		t.Errorf("Lookup(home) = %v, %v", a, ok)
	}
	if _, ok := c.Lookup("nope"); ok {
		t.Error("Lookup(nope) found something")
	}
}

// FuzzParse checks that no input makes Parse panic, and that every problem
// it reports points into the file.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"example.toml", "minimal.toml"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
	f.Add(validAccount + "[[account]]\nname = 1\n[[account.deliver]]\nsmtp = 2\n")
	f.Add("[defaults]\ndeliver = [{maildir = \"x\"}]\n[[account]]\ndeliver = 3\n")
	f.Fuzz(func(t *testing.T, src string) {
		c, err := Parse([]byte(src), "/c/config.toml", 0o600)
		if err == nil {
			if c == nil || len(c.Accounts) == 0 {
				t.Fatalf("no error and no accounts")
			}
			return
		}
		var e *Errors
		if !errors.As(err, &e) || len(e.Problems) == 0 {
			t.Fatalf("error %T %v", err, err)
		}
		lines := strings.Count(src, "\n") + 1
		for _, p := range e.Problems {
			if p.Line < 0 || p.Line > lines {
				t.Fatalf("problem on line %d of %d: %+v", p.Line, lines, p)
			}
		}
	})
}
