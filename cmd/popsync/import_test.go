package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeHome writes files into a fresh home folder.
func writeHome(t *testing.T, files map[string]string) string {
	t.Helper()
	home := t.TempDir()
	for rel, data := range files {
		p := filepath.Join(home, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return home
}

const twoAccountsMpoprc = `defaults
keep on
delivery maildir ~/Maildir
account a
host pop.example.net
user alice
password "alice's secret"
account b : a
user bob
uidls_file ~/uidls-bob
`

// A truncated UIDLS file is an error naming the file and line; that
// account imports nothing and gets a TODO popsync check refuses; the
// other account is imported.
func TestImportCorruptSeenState(t *testing.T) {
	home := writeHome(t, map[string]string{
		".mpoprc":                              twoAccountsMpoprc,
		".mpop_uidls/alice_at_pop.example.net": " 2 pop.example.net alice\nu1\nu2\n",
		"uidls-bob":                            " 3 pop.example.net bob\nu1\nu2\n",
	})
	env := []string{"HOME=" + home}
	out := filepath.Join(home, "new", "config.toml")
	r := runPopsyncEnv(t, env, "import", "mpop", "-o", out, "--state", "state.db")
	if r.code != 74 || !strings.Contains(r.stderr, filepath.Join(home, "uidls-bob")+":3: truncated") {
		t.Fatalf("exit %d, want 74 and the file and line named:\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "a: 2 UIDLs from") {
		t.Errorf("the good account was not imported:\n%s", r.stdout)
	}
	cfg, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), "# TODO: seen-state unreadable") || strings.Contains(string(cfg), "alice's secret") {
		t.Errorf("config:\n%s", cfg)
	}
	pw, err := os.ReadFile(filepath.Join(home, "new", "a.password"))
	if err != nil || string(pw) != "alice's secret\n" {
		t.Errorf("password file: %q, %v", pw, err)
	}
	if fi, err := os.Stat(filepath.Join(home, "new", "a.password")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("password file mode: %v, %v", fi.Mode(), err)
	}
	r = runPopsyncEnv(t, env, "check", "-c", out)
	if r.code != 5 || !strings.Contains(r.stderr, "todo") {
		t.Errorf("check on a config with a TODO: exit %d\n%s", r.code, r.stderr)
	}
}

func TestImportReportsAndRefuses(t *testing.T) {
	home := writeHome(t, map[string]string{
		".fetchmailrc": "poll pop.example.net proto pop3 user me password p is me here ssl keep mimedecode mda \"procmail -d %T\"\n",
		".fetchids":    "me@pop.example.net 1\nme@pop.example.net 2\nstranger@pop.example.net 3\n",
	})
	env := []string{"HOME=" + home}
	out := filepath.Join(home, "popsync.toml")
	db := filepath.Join(home, "state.db")

	r := runPopsyncEnv(t, env, "import", "fetchmail", "-o", out, "--state", db, "--strict")
	if r.code != 5 || !strings.Contains(r.stderr, ".fetchmailrc:1: account pop.example.net: mimedecode") {
		t.Fatalf("--strict: exit %d\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatal("--strict wrote the config")
	}

	r = runPopsyncEnv(t, env, "import", "fetchmail", "-o", out, "--state", db, "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "2 UIDLs from") || !strings.Contains(r.stderr, "seen-state of stranger@pop.example.net matches no imported account") {
		t.Fatalf("dry run: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout, "password = ") || !strings.Contains(r.stdout, `mda = ["sh", "-c", "procmail -d me"]`) {
		t.Errorf("dry run config:\n%s", r.stdout)
	}
	for _, p := range []string{out, db, filepath.Join(home, "pop.example.net.password")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("--dry-run wrote %s", p)
		}
	}

	if r = runPopsyncEnv(t, env, "import", "fetchmail", "-o", out, "--state", db); r.code != 0 {
		t.Fatalf("import: exit %d\n%s", r.code, r.stderr)
	}
	if r = runPopsyncEnv(t, env, "check", "-c", out); r.code != 0 {
		t.Fatalf("check: exit %d\n%s", r.code, r.stderr)
	}
	// The old tool fetched one more; importing again merges.
	os.WriteFile(filepath.Join(home, ".fetchids"), []byte("me@pop.example.net 1\nme@pop.example.net 2\nme@pop.example.net 4\n"), 0o600)
	r = runPopsyncEnv(t, env, "import", "fetchmail", "-o", out, "--state", db)
	if r.code != 64 || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("import over an existing config: exit %d\n%s", r.code, r.stderr)
	}
	r = runPopsyncEnv(t, env, "import", "fetchmail", "-o", out, "--state", db, "--force")
	if r.code != 0 || !strings.Contains(r.stdout, "merged with the existing seen-set: 1 added, 2 already there") {
		t.Fatalf("merge: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}

func TestImportUsage(t *testing.T) {
	if r := runPopsync(t, "import"); r.code != 64 {
		t.Errorf("no tool: exit %d", r.code)
	}
	if r := runPopsync(t, "import", "procmail"); r.code != 64 || !strings.Contains(r.stderr, "fetchmail, getmail or mpop") {
		t.Errorf("unknown tool: exit %d %s", r.code, r.stderr)
	}
}

// getmail: --rc names the files, --from-state the data directory; an
// oldmail file there that belongs to no converted account is reported.
func TestImportGetmailFromState(t *testing.T) {
	rc := "[retriever]\ntype = SimplePOP3SSLRetriever\nserver = pop.example.net\nusername = me\npassword_command = ('pass', 'mail')\n[destination]\ntype = Maildir\npath = ~/Maildir/\n[options]\nread_all = false\n"
	home := writeHome(t, map[string]string{
		"rc/mine":                                   rc,
		"data/oldmail-pop.example.net-995-me":       "a-b\x001764750000\nc\x001764750001\n",
		"data/oldmail-pop.example.net-995-somebody": "x\x001\n",
	})
	env := []string{"HOME=" + home}
	r := runPopsyncEnv(t, env, "import", "getmail", "--rc", filepath.Join(home, "rc/mine"), "--from-state", filepath.Join(home, "data"),
		"-o", filepath.Join(home, "c.toml"), "--state", "s.db", "--dry-run")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "2 UIDLs from "+filepath.Join(home, "data/oldmail-pop.example.net-995-me")+" (3 seen-set records") {
		t.Errorf("counts:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "oldmail-pop.example.net-995-somebody: seen-state matches no imported account") {
		t.Errorf("stray oldmail not reported:\n%s", r.stderr)
	}
	if !strings.Contains(r.stdout, `password_command = ["pass", "mail"]`) {
		t.Errorf("config:\n%s", r.stdout)
	}
}
