package realtest

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// fill sets the defaults and checks what Dovecot's files cannot hold.
func (o *DovecotOptions) fill() error {
	if o.User == "" {
		o.User = "popsync@example.test"
	}
	if o.Password == "" {
		b := make([]byte, 12)
		if _, err := rand.Read(b); err != nil {
			return fmt.Errorf("making a password: %w", err)
		}
		o.Password = hex.EncodeToString(b)
	}
	if strings.ContainsAny(o.Password, ":\r\n") {
		return fmt.Errorf("password contains ':' or a line break")
	}
	for _, u := range append([]string{o.User}, o.Users...) {
		if u == "" || strings.ContainsAny(u, ":/\r\n \t") || u == "." || u == ".." {
			return fmt.Errorf("user %q is empty or contains ':', '/', a space or a line break", u)
		}
		if u != strings.ToLower(u) {
			return fmt.Errorf("user %q is not lower case", u)
		}
	}
	if err := o.fillOAuth2(); err != nil {
		return err
	}
	for _, m := range o.Mechanisms {
		if m == "" || strings.Trim(m, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
			return fmt.Errorf("bad SASL mechanism name %q", m)
		}
	}
	return nil
}

// serverUser decides who Dovecot runs as: name (default TestUser) under
// root, else the current user.
func serverUser(name string) (runAs, error) {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return runAs{}, fmt.Errorf("looking up the current user for dovecot: %w", err)
		}
		return runAsFrom(u, false)
	}
	if name == "" {
		name = TestUser
	}
	u, err := user.Lookup(name)
	if err != nil {
		return runAs{}, fmt.Errorf("running as root, but the unprivileged user %s that runs dovecot is missing (./scripts/test.sh creates %s): %w", name, TestUser, err)
	}
	return runAsFrom(u, u.Uid != "0")
}

func runAsFrom(u *user.User, switchTo bool) (runAs, error) {
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return runAs{}, fmt.Errorf("parsing uid of %s: %w", u.Username, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return runAs{}, fmt.Errorf("parsing gid of %s: %w", u.Username, err)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		return runAs{}, fmt.Errorf("looking up the group of %s: %w", u.Username, err)
	}
	return runAs{name: u.Username, group: g.Name, uid: uid, gid: gid, switchTo: switchTo}, nil
}

// prepare makes the instance directory with everything but the
// configuration: certificate, passwd file and an empty Maildir, all owned
// by the Dovecot user.
func (d *Dovecot) prepare() error {
	// A directory of its own rather than t.TempDir: the Dovecot user must
	// own it, and its Unix socket paths must stay short (108 bytes).
	parent := d.opts.Parent
	if parent == "" {
		parent = os.TempDir()
		if len(parent) > 60 {
			parent = "/tmp"
		}
	}
	dir, err := os.MkdirTemp(parent, "popsync-dovecot-")
	if err != nil {
		return fmt.Errorf("making instance directory: %w", err)
	}
	d.Dir = dir
	d.LogFile = filepath.Join(dir, "dovecot.log")
	d.CAFile = filepath.Join(dir, "cert.pem")
	d.Maildir = filepath.Join(dir, "home", "Maildir")
	if err := d.own(dir); err != nil {
		return err
	}
	// Dovecot wants its base_dir world-readable (the sockets in it have
	// their own modes); the instance directory above stays private.
	if err := d.mkdir(filepath.Join(dir, "run")); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Join(dir, "run"), 0o755); err != nil {
		return fmt.Errorf("making run directory readable: %w", err)
	}
	for _, sub := range []string{"state", "home", "home/Maildir", "home/Maildir/cur", "home/Maildir/new", "home/Maildir/tmp"} {
		if err := d.mkdir(filepath.Join(dir, sub)); err != nil {
			return err
		}
	}

	cert, err := newSelfSigned()
	if err != nil {
		return fmt.Errorf("making server certificate: %w", err)
	}
	d.CertSHA256 = cert.sha256
	d.caPool = x509.NewCertPool()
	d.caPool.AppendCertsFromPEM(cert.certPEM)
	if err := d.writeFile(d.CAFile, cert.certPEM, 0o644); err != nil {
		return err
	}
	if err := d.writeFile(filepath.Join(dir, "key.pem"), cert.keyPEM, 0o600); err != nil {
		return err
	}

	// passwd-file: user:password:uid:gid:gecos:home:shell:extra. The
	// password is stored in plain text so that APOP and the
	// challenge-response mechanisms work.
	passwd := fmt.Sprintf("%s:{PLAIN}%s:%d:%d::%s::\n", d.User, d.Password, d.who.uid, d.who.gid, filepath.Join(dir, "home"))
	if len(d.opts.Users) > 0 {
		if err := d.mkdir(filepath.Join(dir, "mail")); err != nil {
			return err
		}
	}
	for _, u := range d.opts.Users {
		home := filepath.Join(dir, "mail", u)
		for _, p := range []string{home, home + "/Maildir", home + "/Maildir/cur", home + "/Maildir/new", home + "/Maildir/tmp"} {
			if err := d.mkdir(p); err != nil {
				return err
			}
		}
		passwd += fmt.Sprintf("%s:{PLAIN}%s:%d:%d::%s::\n", u, d.Password, d.who.uid, d.who.gid, home)
	}
	return d.writeFile(filepath.Join(dir, "passwd"), []byte(passwd), 0o600)
}

// configure picks ports and writes dovecot.conf.
func (d *Dovecot) configure(pickPort func() (int, error)) error {
	n := 2
	if d.opts.LMTP {
		n = 3
	}
	n += d.imapPortCount()
	ports := make([]int, 0, n)
	for len(ports) < n {
		p, err := pickPort()
		if err != nil {
			return err
		}
		dup := false
		for _, q := range ports {
			dup = dup || q == p
		}
		if !dup {
			ports = append(ports, p)
		}
	}
	d.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	d.TLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	d.LMTPAddr = ""
	if d.opts.LMTP {
		d.LMTPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2]))
	}
	d.setIMAPAddrs(ports[n-d.imapPortCount():])
	d.configFile = filepath.Join(d.Dir, "dovecot.conf")
	if err := d.writeOAuth2Config(); err != nil {
		return err
	}
	return d.writeFile(d.configFile, []byte(d.config(ports)), 0o600)
}

// config renders dovecot.conf (Dovecot 2.3 syntax).
func (d *Dovecot) config(ports []int) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	dir := d.Dir
	protocols := "pop3"
	if d.opts.LMTP {
		protocols += " lmtp"
	}
	if d.opts.IMAP {
		protocols += " imap"
	}
	mechs := []string{"plain", "login"}
	for _, m := range d.opts.Mechanisms {
		mechs = append(mechs, strings.ToLower(m))
	}
	if d.opts.APOP {
		mechs = append(mechs, "apop")
	}

	p("# Private Dovecot for one popsync test (internal/realtest). Removed when the test ends.")
	p("instance_name = popsync-realtest")
	p("base_dir = %s/run", dir)
	p("state_dir = %s/state", dir)
	p("log_path = %s", d.LogFile)
	p("protocols = %s", protocols)
	p("listen = 127.0.0.1")
	p("")
	p("# Every process runs as %s: the master cannot change users.", d.who.name)
	p("default_login_user = %s", d.who.name)
	p("default_internal_user = %s", d.who.name)
	p("default_internal_group = %s", d.who.group)
	p("first_valid_uid = %d", d.who.uid)
	p("last_valid_uid = %d", d.who.uid)
	p("first_valid_gid = %d", d.who.gid)
	p("")
	p("ssl = yes")
	p("ssl_cert = <%s", d.CAFile)
	p("ssl_key = <%s/key.pem", dir)
	p("ssl_min_protocol = TLSv1.2")
	p("")
	p("# Plain-text logins over loopback without TLS, like a LAN server.")
	p("disable_plaintext_auth = no")
	p("auth_mechanisms = %s", strings.Join(mechs, " "))
	p("# A wrong password answers at once instead of after 2s.")
	p("auth_failure_delay = 0")
	p("auth_verbose = yes")
	d.oauth2Passdb(p)
	p("passdb {")
	p("  driver = passwd-file")
	p("  args = scheme=PLAIN username_format=%%u %s/passwd", dir)
	p("}")
	p("userdb {")
	p("  driver = passwd-file")
	p("  args = username_format=%%u %s/passwd", dir)
	p("}")
	p("")
	p("mail_location = maildir:~/Maildir")
	p("# UID and UIDVALIDITY, the Dovecot default, spelled out: tests rely on it.")
	p("pop3_uidl_format = %%08Xu%%08Xv")
	conns := 100
	if d.opts.Connections > 0 {
		conns = d.opts.Connections
	}
	p("mail_max_userip_connections = %d", conns)
	p("")
	if d.opts.Connections > 0 {
		p("service pop3 {")
		p("  process_limit = %d", d.opts.Connections)
		p("}")
	}
	p("service pop3-login {")
	p("  chroot =")
	if d.opts.Connections > 0 {
		p("  process_limit = %d", d.opts.Connections)
	}
	p("  inet_listener pop3 {")
	p("    address = 127.0.0.1")
	p("    port = %d", ports[0])
	p("  }")
	p("  inet_listener pop3s {")
	p("    address = 127.0.0.1")
	p("    port = %d", ports[1])
	p("    ssl = yes")
	p("  }")
	p("}")
	if d.opts.LMTP {
		p("service lmtp {")
		p("  inet_listener lmtp {")
		p("    address = 127.0.0.1")
		p("    port = %d", ports[2])
		p("  }")
		p("}")
	}
	d.imapConfig(p)
	p("service anvil {")
	p("  chroot =")
	p("  # No auth penalty: a failed login must not slow down the next one.")
	p("  unix_listener anvil-auth-penalty {")
	p("    mode = 0")
	p("  }")
	p("}")
	p("service auth-worker {")
	p("  user = $default_internal_user")
	p("}")
	if d.opts.Config != "" {
		p("")
		p("# DovecotOptions.Config")
		p("%s", d.opts.Config)
	}
	return b.String()
}

// own gives path to the Dovecot user when the tests run as root.
func (d *Dovecot) own(path string) error {
	if !d.who.switchTo {
		return nil
	}
	if err := os.Lchown(path, d.who.uid, d.who.gid); err != nil {
		return fmt.Errorf("handing %s to %s: %w", path, d.who.name, err)
	}
	return nil
}

func (d *Dovecot) mkdir(path string) error {
	if err := os.Mkdir(path, 0o700); err != nil {
		return fmt.Errorf("making %s: %w", path, err)
	}
	return d.own(path)
}

func (d *Dovecot) writeFile(path string, data []byte, perm os.FileMode) error {
	if err := os.WriteFile(path, data, perm); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return d.own(path)
}
