package importer

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"popsync/configs"
)

const home = "/home/u"

func convertFile(t *testing.T, tool, path string) *Import {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var im *Import
	switch tool {
	case Fetchmail:
		im, err = ConvertFetchmail(path, data, FetchmailOptions{LocalUser: "u", Home: home})
	case Getmail:
		im, err = ConvertGetmail(path, data, GetmailOptions{Home: home, DataDir: home + "/.getmail"})
	case Mpop:
		im, err = ConvertMpop(path, data, MpopOptions{Home: home})
	}
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return im
}

func account(t *testing.T, im *Import, name string) *Account {
	t.Helper()
	for _, a := range im.Accounts {
		if a.Name == name {
			return a
		}
	}
	var names []string
	for _, a := range im.Accounts {
		names = append(names, a.Name)
	}
	t.Fatalf("no account %q in %v", name, names)
	return nil
}

func hasIssue(im *Import, option string, harmless bool) bool {
	for _, i := range im.Issues {
		if strings.HasPrefix(i.Option, option) && i.Harmless == harmless {
			return true
		}
	}
	return false
}

// checkLoads emits im and loads it with popsync's own config loader:
// accounts without a TODO must load; each account with one must be
// refused on its todo line.
func checkLoads(t *testing.T, im *Import) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	var good, bad []*Account
	for _, a := range im.Accounts {
		if len(a.TODO) == 0 {
			good = append(good, a)
		} else {
			bad = append(bad, a)
		}
	}
	if len(good) > 0 {
		g := *im
		g.Accounts = good
		out := Emit(&g, EmitOptions{StatePath: "state.db"})
		cfg, err := configs.Parse(out, path, 0o600)
		if err != nil {
			t.Fatalf("converted config does not load: %v\n%s", err, out)
		}
		if len(cfg.Accounts) != len(good) {
			t.Fatalf("loaded %d accounts, want %d", len(cfg.Accounts), len(good))
		}
		for i, a := range cfg.Accounts {
			if got, want := Identity(good[i]), (struct {
				Host string
				Port int
				User string
			}{strings.ToLower(a.Host), a.Port, a.User}); got.Host != want.Host || got.Port != want.Port || got.User != want.User {
				t.Errorf("identity %v, popsync loads %v", got, want)
			}
		}
	}
	for _, a := range bad {
		b := *im
		b.Accounts = []*Account{a}
		out := Emit(&b, EmitOptions{StatePath: "state.db"})
		_, err := configs.Parse(out, path, 0o600)
		if err == nil || !strings.Contains(err.Error(), TODOKey) {
			t.Errorf("account %s with TODO %q: load error %v, want one naming %q", a.Name, a.TODO, err, TODOKey)
		}
	}
}

func TestFetchmailCorpus(t *testing.T) {
	im := convertFile(t, Fetchmail, "testdata/fetchmail/multi.fetchmailrc")
	checkLoads(t, im)
	if im.Global.Schedule != "@every 300s" {
		t.Errorf("schedule %q", im.Global.Schedule)
	}
	j := account(t, im, "pop.example.net-jdoe")
	want := &Account{Name: "pop.example.net-jdoe", Host: "pop.example.net", Port: 995, TLS: "implicit",
		CAFile: "/etc/ssl/certs/ca-certificates.crt", User: "jdoe", Password: `"se"cr\et"`, Keep: true, // as fetchmail --configdump reads it
		Deliver: []Target{{MDA: []string{"sh", "-c", "/usr/bin/procmail -d john"}}}}
	compare(t, j, want)
	if j.SeenFile != "/home/u/.fetchmail/ids" {
		t.Errorf("idfile %q", j.SeenFile)
	}
	m := account(t, im, "pop.example.net-mary@example.net")
	compare(t, m, &Account{Name: m.Name, Host: "pop.example.net", Port: 995, TLS: "implicit", User: "mary@example.net",
		Password: "x y", Keep: false, FetchLimit: 50, MaxSize: 1048576,
		Deliver: []Target{{SMTP: "localhost:2525", Rcpt: []string{"mary@localhost"}}}})
	w := account(t, im, "work")
	compare(t, w, &Account{Name: "work", Host: "mail.example.com", Port: 110, TLS: "starttls", User: "jd", Password: "pw",
		Auth: "user", Keep: true, Timeout: 90e9, Deliver: []Target{{LMTP: "unix:/run/dovecot/lmtp", Rcpt: []string{"jd@localhost"}}}})
	for _, o := range []string{"mimedecode", "dropstatus"} {
		if !hasIssue(im, o, false) {
			t.Errorf("no issue for %s: %v", o, im.Issues)
		}
	}
	if !hasIssue(im, "set postmaster", true) || !hasIssue(im, "set bouncemail", true) {
		t.Errorf("set options not listed: %v", im.Issues)
	}

	im = convertFile(t, Fetchmail, "testdata/fetchmail/oneline.fetchmailrc")
	checkLoads(t, im)
	if len(im.Accounts) != 1 || !hasIssue(im, "protocol imap", false) {
		t.Fatalf("IMAP poll: accounts %d, issues %v", len(im.Accounts), im.Issues)
	}
	compare(t, im.Accounts[0], &Account{Name: "127.0.0.1", Host: "127.0.0.1", Port: 1110, TLS: "none", User: "me", Password: "p",
		Keep: true, Deliver: []Target{{MDA: []string{"sh", "-c", "cat > /dev/null"}}}})

	im = convertFile(t, Fetchmail, "testdata/fetchmail/multidrop.fetchmailrc")
	checkLoads(t, im)
	a := im.Accounts[0]
	if len(a.TODO) == 0 || len(a.Deliver) != 0 {
		t.Errorf("multidrop: TODO %v, targets %v; want a TODO and no guessed target", a.TODO, a.Deliver)
	}
	for _, o := range []string{"localdomains", "envelope", "plugin", "preconnect", "is/to"} {
		if !hasIssue(im, o, false) {
			t.Errorf("no issue for %s: %v", o, im.Issues)
		}
	}
	for _, i := range im.Issues {
		if i.File != "testdata/fetchmail/multidrop.fetchmailrc" || i.Line < 1 || i.Line > 4 {
			t.Errorf("issue without its place: %+v", i)
		}
	}
}

// compare checks the fields a conversion sets (not Pos, comments, seen
// bookkeeping).
func compare(t *testing.T, got, want *Account) {
	t.Helper()
	g := *got
	g.Pos, g.Comments, g.SeenFile, g.TODO = Pos{}, nil, "", nil
	g.seenHost, g.seenPort, g.seenUser, g.slashAsDash = "", 0, "", false
	if !reflect.DeepEqual(&g, want) {
		t.Errorf("account %s:\n got %+v\nwant %+v", got.Name, g, *want)
	}
	if len(got.TODO) > 0 {
		t.Errorf("account %s has TODOs: %v", got.Name, got.TODO)
	}
}

func TestGetmailCorpus(t *testing.T) {
	im := convertFile(t, Getmail, "testdata/getmail/getmailrc")
	checkLoads(t, im)
	compare(t, im.Accounts[0], &Account{Name: "jdoe@example.net", Host: "pop.example.net", Port: 995, TLS: "implicit",
		CAFile: "/home/u/certs/ca.pem", User: "jdoe@example.net", PasswordCommand: []string{"/usr/bin/pass", "show", "mail/jdoe"},
		Keep: true, DeleteAfter: 30, MaxSize: 10000000, FetchLimit: 200, Deliver: []Target{{Maildir: "/home/u/Maildir"}}})
	if bad := im.Strict(); len(bad) != 0 {
		t.Errorf("a plain getmailrc has options listed as not converted: %v", bad)
	}
	if got := im.Accounts[0].SeenFile; got != "/home/u/.getmail/oldmail-pop.example.net-995-jdoe@example.net" {
		t.Errorf("oldmail file %q", got)
	}

	im = convertFile(t, Getmail, "testdata/getmail/getmailrc-work")
	checkLoads(t, im)
	compare(t, im.Accounts[0], &Account{Name: "work", Host: "pop.example.com", Port: 1110, TLS: "none", User: "jd",
		Password: "pa:ss = word", Auth: "apop", Keep: false, Deliver: []Target{{Maildir: "/home/u/Mail/work"},
			{MDA: []string{"sh", "-c", `/bin/cat -f ''"$SENDER"''`}}}})
	if !hasIssue(im, "[filter-spam]", false) {
		t.Errorf("filter not listed: %v", im.Issues)
	}

	im = convertFile(t, Getmail, "testdata/getmail/getmailrc-mbox")
	checkLoads(t, im)
	if a := im.Accounts[0]; len(a.TODO) == 0 || len(a.Deliver) != 0 || !hasIssue(im, "type = Mboxrd", false) || !hasIssue(im, "read_all", false) {
		t.Errorf("mbox: TODO %v, targets %v, issues %v", a.TODO, a.Deliver, im.Issues)
	}

	im = convertFile(t, Getmail, "testdata/getmail/getmailrc-imap")
	if len(im.Accounts) != 0 || !hasIssue(im, "type = SimpleIMAPSSLRetriever", false) {
		t.Errorf("IMAP: %d accounts, issues %v", len(im.Accounts), im.Issues)
	}
}

func TestMpopCorpus(t *testing.T) {
	im := convertFile(t, Mpop, "testdata/mpop/mpoprc")
	checkLoads(t, im)
	compare(t, account(t, im, "home"), &Account{Name: "home", Host: "pop.example.net", Port: 995, TLS: "implicit", User: "jdoe",
		PasswordCommand: []string{"sh", "-c", "echo s3cret | head -n 1"}, Keep: true, Deliver: []Target{{Maildir: "/home/u/Maildir"}}})
	w := account(t, im, "work")
	compare(t, w, &Account{Name: "work", Host: "mail.example.com", Port: 1110, TLS: "starttls", User: "jd", Password: `p\"w`,
		Auth: "cram-md5", Keep: true, MaxSize: 10 << 20, Deliver: []Target{{MDA: []string{"sh", "-c", `/usr/bin/procmail -f "$SENDER" -d jd`}}}})
	if w.SeenFile != "/home/u/.mpop/jd@mail.example.com" {
		t.Errorf("uidls file %q", w.SeenFile)
	}
	if a := account(t, im, "home"); a.SeenFile != "/home/u/.mpop_uidls/jdoe_at_pop.example.net" {
		t.Errorf("default uidls file %q", a.SeenFile)
	}
	old := account(t, im, "old")
	if old.TLS != "none" || old.Port != 1110 || old.Keep || len(old.TODO) == 0 || len(old.Deliver) != 0 {
		t.Errorf("old: %+v", old)
	}
	if !hasIssue(im, "delivery mbox", false) || !hasIssue(im, "filter", false) {
		t.Errorf("issues %v", im.Issues)
	}
}

func TestTableOfEquivalentsKnownKeys(t *testing.T) {
	for _, e := range Equivalents {
		for _, k := range e.FetchmailKeys {
			if _, ok := fmKeywords[k]; !ok {
				t.Errorf("fetchmail keyword %q of the table is not parsed", k)
			}
		}
		for _, k := range e.MpopKeys {
			if _, ok := mpCommands[k]; !ok {
				t.Errorf("mpop command %q of the table is not parsed", k)
			}
		}
		for _, k := range e.GetmailKeys {
			if !getmailKeys[k] {
				t.Errorf("getmail key %q of the table is not converted", k)
			}
		}
	}
}

// The README's table of equivalents is Table(), byte for byte.
func TestReadmeTable(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\n"+Table()) {
		t.Errorf("README.md's table of equivalents differs from importer.Table(); replace it with:\n%s", Table())
	}
}
