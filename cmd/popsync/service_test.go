package main_test

import (
	"bufio"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"popsync/internal/realtest"
)

// The service files: the binary they run is the README's install path,
// and the documented install steps give a config holding a password that
// the service user can use.

const installedBinary = "/usr/local/bin/popsync"

func unitFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "configs", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// unitValue returns the value of the first "Key=" line.
func unitValue(unit, key string) string {
	sc := bufio.NewScanner(strings.NewReader(unit))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+"="); ok {
			return v
		}
	}
	return ""
}

func TestServiceFilesMatchInstall(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "install -m 0755 popsync "+installedBinary) {
		t.Fatalf("the README's install section does not install to %s", installedBinary)
	}
	for _, name := range []string{"popsync.service", "popsync-user.service"} {
		unit := unitFile(t, name)
		if bin, _, _ := strings.Cut(unitValue(unit, "ExecStart"), " "); bin != installedBinary {
			t.Errorf("%s: ExecStart runs %q, the README installs %s", name, bin, installedBinary)
		}
		if !strings.Contains(unit, "install -m 0755 popsync "+installedBinary) {
			t.Errorf("%s: its install steps do not install the binary to %s", name, installedBinary)
		}
	}
}

// TestServiceUnitsVerify: systemd accepts both units (with the binary at
// the path they name replaced by the one just built).
func TestServiceUnitsVerify(t *testing.T) {
	realtest.Require(t, "systemd-analyze")
	bin := popsyncBinary(t)
	for _, name := range []string{"popsync.service", "popsync-user.service"} {
		path := filepath.Join(t.TempDir(), name)
		unit := strings.ReplaceAll(unitFile(t, name), installedBinary, bin)
		if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
		}
	}
}

// TestServiceConfigInstallSteps follows the system unit's documented step
// for the config with a config that holds a password, for the test user
// instead of popsync: the service user can read it and popsync accepts it.
func TestServiceConfigInstallSteps(t *testing.T) {
	unit := unitFile(t, "popsync.service")
	svcUser := unitValue(unit, "User")
	re := regexp.MustCompile(`(?m)^#\s+(install -m (\d+) -o (\S+) -g (\S+) config\.toml (\S+))$`)
	m := re.FindStringSubmatch(unit)
	if m == nil {
		t.Fatal("the unit's header has no install step for config.toml")
	}
	if m[2] != "0600" || m[3] != svcUser {
		t.Fatalf("the config is installed mode %s owned by %s; a config with a password must be 0600 and owned by the service user %s", m[2], m[3], svcUser)
	}
	if os.Geteuid() != 0 {
		if realtest.RequireReal() {
			t.Fatal("needs root to install a file for another user")
		}
		t.Skip("needs root to install a file for another user")
	}
	u, err := user.Lookup("popsynctest")
	if err != nil {
		if realtest.RequireReal() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	dir, err := os.MkdirTemp("", "popsync-svc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	etc := filepath.Join(dir, "etc")
	state := filepath.Join(dir, "state")
	for _, d := range []string{etc, state} {
		if err := os.Mkdir(d, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, 0, gid); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(dir, 0o755)
	os.Chown(state, uid, gid)
	src := filepath.Join(dir, "config.toml")
	conf := "[state]\npath = \"" + filepath.Join(state, "state.db") + "\"\n\n[[account]]\nname = \"home\"\nhost = \"pop.example.net\"\nuser = \"me\"\npassword = \"a-secret\"\n  [[account.deliver]]\n  maildir = \"" + filepath.Join(state, "Maildir") + "\"\n"
	if err := os.WriteFile(src, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	step := strings.NewReplacer(" -o "+svcUser, " -o "+u.Username, " -g "+m[4], " -g "+g.Name,
		"config.toml /etc/popsync/", src+" "+etc+"/").Replace(m[1])
	if out, err := exec.Command("sh", "-c", step).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", step, err, out)
	}
	// The built binary sits in a folder only root may enter: a copy.
	bin := filepath.Join(dir, "popsync")
	if out, err := exec.Command("install", "-m", "0755", popsyncBinary(t), bin).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	cmd := exec.Command(bin, "check", "-c", filepath.Join(etc, "config.toml"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": ok, 1 account(s)") {
		t.Fatalf("popsync check as %s after %q: %v\n%s", u.Username, step, err, out)
	}
}
