package configs

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const imapHead = "[state]\npath = \"/var/lib/popsync/state.db\"\n[[account]]\nname = \"home\"\nhost = \"pop.example.net\"\nuser = \"me\"\npassword_command = [\"pw\"]\n"

// TestIMAPDefaults: an imap entry gets its port from tls, INBOX, create,
// internal_date received, on_reject quarantine, and a spool folder in
// the state folder named by its target ID.
func TestIMAPDefaults(t *testing.T) {
	c := mustParse(t, imapHead+`
[[account.deliver]]
imap = "IMAP.gmail.com"
user = "me@gmail.com"
password_command = ["pass", "show", "gmail"]

[[account.deliver]]
imap = "mail.example.net"
tls = "starttls"
user = "me"
password_env = "IMAP_PW"
auth = "login-command"
mailbox = "Archiv/POP"
create = false
flags = ["\\Seen", "popsync"]
internal_date = "now"
on_reject = "keep"
connections = 1

[[account.deliver]]
imap = "127.0.0.1:1143"
tls = "none"
user = "me"
password_file = "pw"
`)
	ds := c.Accounts[0].Deliver
	g := ds[0].Target.(*IMAPTarget)
	if g.Addr() != "imap.gmail.com:993" || g.TLS != TLSImplicit || g.Mailbox != "INBOX" || !g.Create ||
		g.InternalDate != IMAPDateReceived || g.Auth != IMAPAuthAuto || len(g.Flags) != 0 || ds[0].OnReject != OnRejectQuarantine ||
		g.Connections != DefaultIMAPConnections {
		t.Errorf("defaults: %#v on_reject %q", *g, ds[0].OnReject)
	}
	if want := filepath.Join("/var/lib/popsync", "spool", ds[0].ID()); g.SpoolDir != want || !strings.HasPrefix(ds[0].ID(), "imap:") {
		t.Errorf("spool %q (ID %s), want %q", g.SpoolDir, ds[0].ID(), want)
	}
	if g.Password.Command[0] != "pass" || g.Password.CommandEnv == nil {
		t.Errorf("password source %#v", g.Password)
	}
	m := ds[1].Target.(*IMAPTarget)
	if m.Addr() != "mail.example.net:143" || m.Mailbox != "Archiv/POP" || m.Create || !slices.Equal(m.Flags, []string{`\Seen`, "popsync"}) ||
		m.InternalDate != IMAPDateNow || m.Auth != IMAPAuthLoginCommand || m.Password.Env != "IMAP_PW" || ds[1].OnReject != OnRejectKeep ||
		m.Connections != 1 {
		t.Errorf("explicit: %#v", *m)
	}
	if !slices.Contains(c.ChildEnv.Environ(), "IMAP_PW") && strings.Contains(strings.Join(c.ChildEnv.Environ(), "\n"), "IMAP_PW=") {
		t.Errorf("the IMAP password_env reaches child processes")
	}
	if l := ds[2].Target.(*IMAPTarget); l.Addr() != "127.0.0.1:1143" || l.TLS != TLSNone || l.Password.File != "/etc/popsync/pw" {
		t.Errorf("plain: %#v", *l)
	}
	for _, d := range ds {
		if !d.Confirming() {
			t.Errorf("%s: Confirming() false: on_reject must apply", d.Target)
		}
	}
}

// TestIMAPID: the ID follows host, port, user and mailbox only.
func TestIMAPID(t *testing.T) {
	id := func(body string) string {
		t.Helper()
		return mustParse(t, imapHead+"[[account.deliver]]\nuser = \"me\"\npassword = \"p\"\n"+body).Accounts[0].Deliver[0].ID()
	}
	base := id("imap = \"imap.example.net\"\n")
	if same := id("imap = \"imap.example.net:993\"\nflags = [\"\\\\Seen\"]\ncreate = false\ninternal_date = \"now\"\nconnections = 8\n"); same != base {
		t.Errorf("keys that do not say where mail goes changed the ID: %s vs %s", same, base)
	}
	for _, other := range []string{"imap = \"imap.example.net\"\nmailbox = \"Other\"\n", "imap = \"imap.example.net:1993\"\n",
		"imap = \"imap2.example.net\"\n"} {
		if id(other) == base {
			t.Errorf("%q has the same ID as the base", other)
		}
	}
}

// TestIMAPProblems: every mistake names its key and line.
func TestIMAPProblems(t *testing.T) {
	src := imapHead + `[[account.deliver]]
imap = "imap.example.net:0"
user = "me"
password = "p"

[[account.deliver]]
imap = "imap.example.net"
password = "p"
mailbox = "a*"
flags = ["\\Recent", "two words"]
auth = "cram-md5"
internal_date = "later"

[[account.deliver]]
imap = "imap.example.net"
user = "me"
tls = "none"
tls_fingerprint = "00000000000000000000000000000000000000000000000000000000000000aa"

[[account.deliver]]
imap = "imap.example.net"
user = "me"
rcpt = ["x"]

[[account.deliver]]
imap = "imap.example.net"
user = "me"
password = "p"
connections = 0

[[account.deliver]]
imap = "imap.example.net"
user = "me"
password = "p"
connections = "4"

[[account.deliver]]
maildir = "/tmp/m"
connections = 2
`
	_, err := parse(t, src)
	// (The second entry's keys that depend on each other are checked
	// once its values are good.)
	checkProblems(t, problemsOf(t, err), []want{
		{9, "home", "deliver.imap", "port from 1 to 65535"},
		{16, "home", "deliver.mailbox", "wildcards"},
		{17, "home", "deliver.flags", `\Recent`},
		{17, "home", "deliver.flags", "keyword"},
		{18, "home", "deliver.auth", "login-command"},
		{19, "home", "deliver.internal_date", "received or now"},
		{21, "home", "deliver", "needs a password source"},
		{25, "home", "deliver.tls_fingerprint", `not "none"`},
		{30, "home", "deliver.rcpt", "does not apply to imap"},
		{36, "home", "deliver.connections", "between 1 and 64, not 0"},
		{42, "home", "deliver.connections", "must be an integer"},
		{46, "home", "deliver.connections", "does not apply to maildir"},
	})
}
