package configs

import (
	"strings"
	"testing"
)

// TestConfirmingDefaults: SMTP, LMTP and MDA entries are accepted, with
// on_reject and smtp_tls filled in.
func TestConfirmingDefaults(t *testing.T) {
	const head = "[[account]]\nname = \"home\"\nhost = \"pop.example.net\"\nuser = \"me\"\npassword_command = [\"pw\"]\n"
	c := mustParse(t, head+`
[[account.deliver]]
smtp = "127.0.0.1:25"
rcpt = ["me@localhost"]

[[account.deliver]]
smtp = "mail.example.net:587"
rcpt = ["me@example.net"]
smtp_user = "me"
smtp_password = "p"

[[account.deliver]]
smtp = "localhost:2525"
rcpt = ["me@localhost"]
smtp_tls = "implicit"
on_reject = "keep"

[[account.deliver]]
lmtp = "unix:/run/dovecot/lmtp"
rcpt = ["me"]
on_reject = "delete"

[[account.deliver]]
mda = ["/usr/bin/procmail", "-d", "me"]
quarantine = "/var/quarantine"

[[account.deliver]]
maildir = "/m"
`)
	ds := c.Accounts[0].Deliver
	want := []struct{ kind, tls, onReject string }{
		{KindSMTP, TLSNone, OnRejectQuarantine},
		{KindSMTP, TLSStartTLS, OnRejectQuarantine},
		{KindSMTP, TLSImplicit, OnRejectKeep},
		{KindLMTP, "", OnRejectDelete},
		{KindMDA, "", OnRejectQuarantine},
		{KindMaildir, "", ""},
	}
	if len(ds) != len(want) {
		t.Fatalf("%d deliver entries", len(ds))
	}
	for i, w := range want {
		tls := ""
		if st, ok := ds[i].Target.(*SMTPTarget); ok {
			tls = st.TLS
		}
		if ds[i].Kind() != w.kind || tls != w.tls || ds[i].OnReject != w.onReject {
			t.Errorf("entry %d: kind %s smtp_tls %q on_reject %q; want %s %q %q", i, ds[i].Kind(), tls, ds[i].OnReject, w.kind, w.tls, w.onReject)
		}
		if ds[i].Confirming() != (w.kind != KindMaildir) {
			t.Errorf("entry %d: Confirming() = %v", i, ds[i].Confirming())
		}
	}
	if l, ok := ds[3].Target.(*LMTPTarget); !ok || l.Addr != "unix:/run/dovecot/lmtp" || ds[4].Quarantine != "/var/quarantine" {
		t.Errorf("lmtp %+v quarantine %q", ds[3].Target, ds[4].Quarantine)
	}
	if s := ds[1].Target.(*SMTPTarget); s.User != "me" || s.Password.Literal.Reveal() != "p" || s.Rcpt[0] != "me@example.net" {
		t.Errorf("smtp with auth: %+v", s)
	}
	if m := ds[4].Target.(*MDATarget); len(m.Command) != 3 || m.Command[2] != "me" {
		t.Errorf("mda: %+v", m)
	}
}

// TestTargetIDs: a target's ID follows where it delivers, not its place
// in the config nor keys that do not say where mail goes; two entries
// into one place are refused.
func TestTargetIDs(t *testing.T) {
	const head = "[[account]]\nname = \"home\"\nhost = \"pop.example.net\"\nuser = \"me\"\npassword_command = [\"pw\"]\n"
	a := mustParse(t, head+"[[account.deliver]]\nmaildir = \"/m\"\n[[account.deliver]]\nsmtp = \"127.0.0.1:25\"\nrcpt = [\"me\"]\n").Accounts[0]
	b := mustParse(t, head+"[[account.deliver]]\nsmtp = \"127.0.0.1:25\"\nrcpt = [\"me\"]\nhelo = \"x.example\"\non_reject = \"keep\"\n[[account.deliver]]\nmaildir = \"/m\"\n").Accounts[0]
	if a.Deliver[0].ID() != b.Deliver[1].ID() || a.Deliver[1].ID() != b.Deliver[0].ID() {
		t.Errorf("IDs moved with the entries: %q %q / %q %q", a.Deliver[0].ID(), a.Deliver[1].ID(), b.Deliver[0].ID(), b.Deliver[1].ID())
	}
	if !strings.HasPrefix(a.Deliver[0].ID(), "maildir:") || !strings.HasPrefix(a.Deliver[1].ID(), "smtp:") {
		t.Errorf("IDs %q %q do not name their kinds", a.Deliver[0].ID(), a.Deliver[1].ID())
	}
	c := mustParse(t, head+"[[account.deliver]]\nsmtp = \"127.0.0.1:25\"\nrcpt = [\"you\"]\n").Accounts[0]
	if c.Deliver[0].ID() == a.Deliver[1].ID() {
		t.Error("other recipients, same ID")
	}
	_, err := Parse([]byte(head+"[[account.deliver]]\nmaildir = \"/m\"\n[[account.deliver]]\nmaildir = \"/m/\"\n"), "/etc/popsync/config.toml", 0o600)
	if err == nil || !strings.Contains(err.Error(), ":8: account \"home\": key \"deliver\": delivers into the same maildir target as the entry on line 6") {
		t.Errorf("two entries into one Maildir: %v", err)
	}
}

func TestIsLoopbackHostPort(t *testing.T) {
	for hp, want := range map[string]bool{
		"127.0.0.1:25": true, "127.1.2.3:25": true, "[::1]:25": true, "localhost:25": true, "LocalHost:25": true,
		"mail.example.net:25": false, "10.0.0.1:25": false, "[::2]:25": false, "nonsense": false,
	} {
		if got := isLoopbackHostPort(hp); got != want {
			t.Errorf("isLoopbackHostPort(%q) = %v, want %v", hp, got, want)
		}
	}
}

// TestSMTPPasswordSources: smtp_password has the password family of an
// account: one of a literal, a file, a command or an environment variable,
// and only with smtp_user.
func TestSMTPPasswordSources(t *testing.T) {
	const head = "[[account]]\nname = \"home\"\nhost = \"pop.example.net\"\nuser = \"me\"\npassword_command = [\"pw\"]\n[[account.deliver]]\nsmtp = \"127.0.0.1:25\"\nrcpt = [\"me\"]\n"
	c := mustParse(t, head+"smtp_user = \"relay\"\nsmtp_password_command = [\"pass\", \"relay\"]\n")
	s := c.Accounts[0].Deliver[0].Target.(*SMTPTarget)
	if s.Password.Key != "smtp_password" || len(s.Password.Command) != 2 || s.Password.Command[1] != "relay" {
		t.Errorf("smtp_password_command: %+v", s.Password)
	}
	c = mustParse(t, head+"smtp_user = \"relay\"\nsmtp_password_file = \"pw\"\n")
	if f := c.Accounts[0].Deliver[0].Target.(*SMTPTarget).Password.File; f != "/etc/popsync/pw" {
		t.Errorf("smtp_password_file resolved to %q", f)
	}
	for src, want := range map[string]string{
		"smtp_user = \"relay\"\nsmtp_password = \"x\"\nsmtp_password_env = \"PW\"\n": ":11: account \"home\": key \"deliver.smtp_password_env\": only one AUTH password source may be given, and smtp_password is set on line 10",
		"smtp_password_env = \"PW\"\n": ":9: account \"home\": key \"deliver.smtp_password_env\": needs smtp_user too",
		"smtp_user = \"relay\"\n":      ":9: account \"home\": key \"deliver.smtp_user\": needs smtp_password too",
	} {
		_, err := Parse([]byte(head+src), "/etc/popsync/config.toml", 0o600)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v\nwant %s", src, err, want)
		}
	}
}

// TestSMTPPasswordEnvWithheldFromChildren: a variable smtp_password_env
// names is a secret like an account's password_env: no password_command
// or MDA sees it, and the SMTP target's own password_command gets the
// same cleaned environment.
func TestSMTPPasswordEnvWithheldFromChildren(t *testing.T) {
	c := mustParse(t, `[[account]]
name = "home"
host = "pop.example.net"
user = "me"
password_env = "POP_PW"
[[account.deliver]]
smtp = "127.0.0.1:25"
rcpt = ["me"]
smtp_user = "relay"
smtp_password_env = "RELAY_PW"
[[account]]
name = "work"
host = "pop.example.com"
user = "me"
password_command = ["pw"]
[[account.deliver]]
smtp = "127.0.0.1:25"
rcpt = ["me"]
smtp_user = "relay"
smtp_password_command = ["relay-pw"]
`)
	for _, name := range []string{"POP_PW", "RELAY_PW"} {
		if !c.ChildEnv.Removes(name) {
			t.Errorf("%s reaches children", name)
		}
	}
	work := c.Accounts[1]
	if env, ok := work.Password.CommandEnv.(ChildEnv); !ok || !env.Removes("RELAY_PW") {
		t.Errorf("password_command environment %v", work.Password.CommandEnv)
	}
	if env, ok := work.Deliver[0].Target.(*SMTPTarget).Password.CommandEnv.(ChildEnv); !ok || !env.Removes("POP_PW") || !env.Removes("RELAY_PW") {
		t.Errorf("smtp_password_command environment %v", work.Deliver[0].Target.(*SMTPTarget).Password.CommandEnv)
	}
}

// TestSMTPConnections: connections applies to smtp and lmtp entries, from
// 1 to 64; left out it is 0 (the target's default).
func TestSMTPConnections(t *testing.T) {
	const head = "[[account]]\nname = \"home\"\nhost = \"pop.example.net\"\nuser = \"me\"\npassword_command = [\"pw\"]\n"
	c := mustParse(t, head+`
[[account.deliver]]
smtp = "127.0.0.1:25"
rcpt = ["me@localhost"]
connections = 8

[[account.deliver]]
lmtp = "unix:/run/dovecot/lmtp"
rcpt = ["me"]
connections = 1

[[account.deliver]]
smtp = "127.0.0.1:2525"
rcpt = ["me@localhost"]
`)
	ds := c.Accounts[0].Deliver
	if n := ds[0].Target.(*SMTPTarget).Connections; n != 8 {
		t.Errorf("smtp connections %d, want 8", n)
	}
	if n := ds[1].Target.(*LMTPTarget).Connections; n != 1 {
		t.Errorf("lmtp connections %d, want 1", n)
	}
	if n := ds[2].Target.(*SMTPTarget).Connections; n != 0 {
		t.Errorf("smtp connections left out: %d, want 0", n)
	}
	for _, tc := range []struct{ entry, msg string }{
		{"smtp = \"127.0.0.1:25\"\nrcpt = [\"a@b\"]\nconnections = 0\n", "must be between 1 and 64, not 0"},
		{"smtp = \"127.0.0.1:25\"\nrcpt = [\"a@b\"]\nconnections = 65\n", "must be between 1 and 64, not 65"},
		{"lmtp = \"127.0.0.1:24\"\nrcpt = [\"a\"]\nconnections = \"4\"\n", "must be an integer"},
		{"maildir = \"/m\"\nconnections = 2\n", "does not apply to maildir delivery"},
		{"mda = [\"/bin/cat\"]\nconnections = 2\n", "does not apply to mda delivery"},
	} {
		_, err := parse(t, head+"\n[[account.deliver]]\n"+tc.entry)
		ps := problemsOf(t, err)
		if len(ps) != 1 || ps[0].Key != "deliver.connections" || !strings.Contains(ps[0].Msg, tc.msg) {
			t.Errorf("%q: problems %+v, want one on deliver.connections saying %q", tc.entry, ps, tc.msg)
		}
	}
}
