package importer

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"popsync/internal/realtest"
)

// The corpus is read by the real tools too, and the converter must read
// every account the way they do: fetchmail --configdump, getmail --dump
// and mpop --pretend print how each tool understood the file.

// toolHome copies a corpus file into a fresh home (mode 0600, as the
// tools demand) and makes the files the tools check for.
func toolHome(t *testing.T, src, rel string) (home, path string) {
	t.Helper()
	home = t.TempDir()
	for _, d := range []string{"Maildir/cur", "Maildir/new", "Maildir/tmp", "Mail/work/cur", "Mail/work/new", "Mail/work/tmp", "certs"} {
		os.MkdirAll(filepath.Join(home, d), 0o700)
	}
	os.WriteFile(filepath.Join(home, "certs/ca.pem"), nil, 0o600)
	os.WriteFile(filepath.Join(home, "mbox"), nil, 0o600)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(home, rel)
	os.MkdirAll(filepath.Dir(path), 0o700)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return home, path
}

func runTool(t *testing.T, home string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = []string{"HOME=" + home, "PATH=/usr/bin:/bin", "LANG=C"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

var fmDumpField = regexp.MustCompile(`^\s*['"]([a-z]+)['"]:(.*?),?$`)

// fmDumpString decodes a value of fetchmail --configdump.
func fmDumpString(v string) string {
	if v == "None" || len(v) < 2 {
		return ""
	}
	s, err := strconv.Unquote(v)
	if err != nil {
		return v
	}
	return s
}

func TestCorpusAgainstFetchmail(t *testing.T) {
	realtest.Require(t, "fetchmail")
	for _, f := range []string{"multi.fetchmailrc", "oneline.fetchmailrc", "multidrop.fetchmailrc"} {
		t.Run(f, func(t *testing.T) {
			home, rc := toolHome(t, "testdata/fetchmail/"+f, ".fetchmailrc")
			dump := runTool(t, home, "fetchmail", "--configdump", "-f", rc)
			type user map[string]string
			var users []user
			server := user{}
			for _, l := range strings.Split(dump, "\n") {
				m := fmDumpField.FindStringSubmatch(l)
				if m == nil {
					continue
				}
				k, v := m[1], m[2]
				switch {
				case k == "pollname":
					server = user{"pollname": fmDumpString(v)}
				case k == "remote":
					u := user{}
					for sk, sv := range server {
						u[sk] = sv
					}
					users = append(users, u)
					u[k] = fmDumpString(v)
				case len(users) > 0 && users[len(users)-1]["pollname"] == server["pollname"] && users[len(users)-1]["remote"] != "" && server["done"] == "":
					users[len(users)-1][k] = strings.TrimSpace(v)
				default:
					server[k] = strings.TrimSpace(v)
				}
			}
			im := convertFile2(t, Fetchmail, rc, home)
			var pop []user
			for _, u := range users {
				if p := fmDumpString(u["protocol"]); p == "POP3" || p == "APOP" {
					pop = append(pop, u)
				}
			}
			if len(pop) != len(im.Accounts) {
				t.Fatalf("fetchmail reads %d POP3 users, the converter %d accounts", len(pop), len(im.Accounts))
			}
			for i, u := range pop {
				a := im.Accounts[i]
				host := fmDumpString(u["via"])
				if host == "" {
					host = u["pollname"]
				}
				check := func(what, got, want string) {
					if got != want {
						t.Errorf("account %s: %s %q, fetchmail reads %q", a.Name, what, got, want)
					}
				}
				check("host", a.Host, host)
				check("user", a.User, fmDumpString(u["remote"]))
				check("password", a.Password, fmDumpString(u["password"]))
				check("keep", fmt.Sprint(a.Keep), fmt.Sprint(u["keep"] == "TRUE"))
				check("ssl", fmt.Sprint(a.TLS == "implicit"), fmt.Sprint(u["ssl"] == "TRUE"))
				check("limit", strconv.FormatInt(a.MaxSize, 10), u["limit"])
				check("fetchlimit", strconv.Itoa(a.FetchLimit), u["fetchlimit"])
				if s := fmDumpString(u["service"]); s != "" {
					check("port", strconv.Itoa(a.Port), s)
				}
				if mda := fmDumpString(u["mda"]); mda != "" && len(a.Deliver) == 1 {
					local := strings.Trim(strings.Trim(u["localnames"], "[]"), `"`)
					check("mda", a.Deliver[0].MDA[2], strings.ReplaceAll(mda, "%T", local))
				}
			}
		})
	}
}

func convertFile2(t *testing.T, tool, path, home string) *Import {
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
		im, err = ConvertGetmail(path, data, GetmailOptions{Home: home, DataDir: filepath.Dir(path)})
	case Mpop:
		im, err = ConvertMpop(path, data, MpopOptions{Home: home})
	}
	if err != nil {
		t.Fatal(err)
	}
	return im
}

func TestCorpusAgainstMpop(t *testing.T) {
	realtest.Require(t, "mpop")
	home, rc := toolHome(t, "testdata/mpop/mpoprc", ".mpoprc")
	out := runTool(t, home, "mpop", "-C", rc, "--pretend", "-a")
	im := convertFile2(t, Mpop, rc, home)
	blocks := strings.Split(out, "using account ")[1:]
	if len(blocks) != len(im.Accounts) {
		t.Fatalf("mpop reads %d accounts, the converter %d", len(blocks), len(im.Accounts))
	}
	for i, b := range blocks {
		a := im.Accounts[i]
		kv := map[string]string{}
		for _, l := range strings.Split(b, "\n") {
			if k, v, ok := strings.Cut(l, " = "); ok {
				kv[k] = v
			}
		}
		tls := "none"
		if kv["tls"] == "on" {
			tls = "implicit"
			if kv["tls_starttls"] == "on" {
				tls = "starttls"
			}
		}
		size := "off"
		if a.MaxSize > 0 {
			size = strconv.FormatInt(a.MaxSize, 10)
		}
		delivery := kv["delivery"]
		var conv string
		switch {
		case len(a.Deliver) == 1 && a.Deliver[0].Maildir != "":
			conv = "maildir " + a.Deliver[0].Maildir
		case len(a.Deliver) == 1 && a.Deliver[0].MDA != nil:
			conv = "mda " + strings.ReplaceAll(a.Deliver[0].MDA[2], `"$SENDER"`, "'%F'")
		default:
			conv = delivery // a TODO, checked by the corpus test
		}
		for _, c := range [][3]string{
			{"host", a.Host, kv["host"]}, {"port", strconv.Itoa(a.Port), kv["port"]}, {"user", a.User, kv["user"]},
			{"tls", tls, a.TLS}, {"keep", map[bool]string{true: "on", false: "off"}[a.Keep], kv["keep"]},
			{"skipsize", size, kv["skipsize"]}, {"uidls file", a.SeenFile, kv["uidls file"]}, {"delivery", conv, delivery},
		} {
			if c[1] != c[2] {
				t.Errorf("account %s: %s %q, mpop reads %q", a.Name, c[0], c[1], c[2])
			}
		}
	}
}

func TestCorpusAgainstGetmail(t *testing.T) {
	realtest.Require(t, "getmail")
	retr := regexp.MustCompile(`retriever:\s+(\w+)\((.*)\)`)
	attr := regexp.MustCompile(`(\w+)="([^"]*)"`)
	for _, f := range []string{"getmailrc", "getmailrc-work", "getmailrc-mbox"} {
		t.Run(f, func(t *testing.T) {
			home, rc := toolHome(t, "testdata/getmail/"+f, ".getmail/"+f)
			out := runTool(t, home, "getmail", "--getmaildir", filepath.Dir(rc), "--rcfile", f, "--dump")
			m := retr.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no retriever in\n%s", out)
			}
			kv := map[string]string{}
			for _, a := range attr.FindAllStringSubmatch(m[2], -1) {
				kv[a[1]] = a[2]
			}
			opts := map[string]string{}
			for _, l := range strings.Split(out, "\n") {
				if k, v, ok := strings.Cut(strings.TrimSpace(l), " : "); ok {
					opts[k] = v
				}
			}
			a := convertFile2(t, Getmail, rc, home).Accounts[0]
			for _, c := range [][3]string{
				{"server", a.Host, kv["server"]}, {"port", strconv.Itoa(a.Port), kv["port"]}, {"username", a.User, kv["username"]},
				{"delete", map[bool]string{true: "False", false: "True"}[a.Keep], opts["delete"]},
				{"delete_after", strconv.Itoa(a.DeleteAfter), opts["delete_after"]},
				{"max_message_size", strconv.FormatInt(a.MaxSize, 10), opts["max_message_size"]},
				{"max_messages_per_session", strconv.Itoa(a.FetchLimit), opts["max_messages_per_session"]},
				{"tls", fmt.Sprint(a.TLS == "implicit"), fmt.Sprint(strings.Contains(m[1], "SSL"))},
			} {
				if c[1] != c[2] {
					t.Errorf("%s: %s %q, getmail reads %q", f, c[0], c[1], c[2])
				}
			}
			if a.Password == "" && a.PasswordCommand == nil {
				return
			}
			if len(a.PasswordCommand) > 0 {
				want := "('" + strings.Join(a.PasswordCommand, "', '") + "')"
				if kv["password_command"] != want {
					t.Errorf("%s: password_command %s, getmail reads %s", f, want, kv["password_command"])
				}
			}
		})
	}
}
