package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"popsync/configs"
)

// preset is what popsync init knows of a mail provider. Host names and
// ports are the providers' own published POP3 settings.
type preset struct {
	id, name string
	domains  []string
	host     string
	port     int
	tls      string
	// enable says what to switch on at the provider first, if anything.
	enable string
	// appPassword says where to make an app password; "" when the
	// provider has none that works for POP3.
	appPassword string
	// oauth2 is the provider of the [account.oauth2] table: when set the
	// account uses XOAUTH2 (Microsoft: the only way in).
	oauth2 string
	// noPOP3 is set for a provider without POP3: init refuses.
	noPOP3 string
	// guess marks the fallback for an unknown domain.
	guess bool
}

var presets = []preset{
	{id: "gmail", name: "Gmail", domains: []string{"gmail.com", "googlemail.com"},
		host: "pop.gmail.com", port: 995, tls: configs.TLSImplicit,
		enable:      "turn POP on in Gmail: Settings, See all settings, Forwarding and POP/IMAP",
		appPassword: "with 2-Step Verification on, make an app password at https://myaccount.google.com/apppasswords"},
	{id: "microsoft", name: "Outlook.com / Microsoft 365",
		domains: []string{"outlook.com", "hotmail.com", "live.com", "msn.com", "outlook.de", "hotmail.de", "hotmail.co.uk", "hotmail.fr", "live.de"},
		host:    "outlook.office365.com", port: 995, tls: configs.TLSImplicit,
		enable: "turn POP on in Outlook: Settings, Mail, Forwarding and IMAP, Let devices and apps use POP",
		oauth2: "microsoft"},
	{id: "yahoo", name: "Yahoo Mail", domains: []string{"yahoo.com", "yahoo.de", "yahoo.co.uk", "yahoo.fr", "ymail.com", "rocketmail.com"},
		host: "pop.mail.yahoo.com", port: 995, tls: configs.TLSImplicit,
		appPassword: "make an app password in your Yahoo account: Account security, Generate app password"},
	{id: "icloud", name: "iCloud Mail", domains: []string{"icloud.com", "me.com", "mac.com"},
		noPOP3: "iCloud Mail offers IMAP only, no POP3, so popsync cannot fetch it"},
	{id: "gmx", name: "GMX", domains: []string{"gmx.net", "gmx.de", "gmx.at", "gmx.ch"},
		host: "pop.gmx.net", port: 995, tls: configs.TLSImplicit,
		enable: "allow POP3 in the GMX web mail: E-Mail settings, POP3/IMAP access"},
	{id: "gmx-com", name: "GMX (international)", domains: []string{"gmx.com", "gmx.us", "gmx.co.uk", "gmx.fr"},
		host: "pop.gmx.com", port: 995, tls: configs.TLSImplicit,
		enable: "allow POP3 in the GMX web mail: E-Mail settings, POP3/IMAP access"},
	{id: "webde", name: "WEB.DE", domains: []string{"web.de"},
		host: "pop3.web.de", port: 995, tls: configs.TLSImplicit,
		enable: "allow POP3 in the WEB.DE web mail: E-Mail settings, POP3/IMAP"},
	{id: "fastmail", name: "Fastmail", domains: []string{"fastmail.com", "fastmail.fm", "fastmail.net", "fastmail.org", "fastmail.de", "messagingengine.com"},
		host: "pop.fastmail.com", port: 995, tls: configs.TLSImplicit,
		appPassword: "make an app password (access: Mail) in Fastmail: Settings, Privacy & Security, App passwords"},
}

// presetFor returns the preset for an address: by --provider when given,
// else by the address's domain, else a guess of pop.DOMAIN.
func presetFor(domain, provider string) (preset, error) {
	if provider != "" {
		for _, p := range presets {
			if p.id == provider {
				return p, nil
			}
		}
		if provider == "isp" {
			return ispPreset(domain), nil
		}
		return preset{}, usageErrorf("unknown --provider %q (known: %s, isp)", provider, strings.Join(presetIDs(), ", "))
	}
	for _, p := range presets {
		for _, d := range p.domains {
			if d == domain {
				return p, nil
			}
		}
	}
	return ispPreset(domain), nil
}

func ispPreset(domain string) preset {
	return preset{id: "isp", name: domain, host: "pop." + domain, port: 995, tls: configs.TLSImplicit, guess: true}
}

func presetIDs() []string {
	ids := make([]string, len(presets))
	for i, p := range presets {
		ids[i] = p.id
	}
	return ids
}

func setupInit(f *flags, g *common) runFunc {
	f.String(&g.config, configDef)
	var provider string
	f.String(&provider, flagDef{long: "provider", arg: "NAME", values: append(presetIDs(), "isp"),
		help: "use this provider's settings whatever the address's domain (for a custom domain at Microsoft 365, Gmail or Fastmail)"})
	return func(ctx context.Context, e *env, args []string) error {
		if len(args) != 1 {
			return usageErrorf("init takes one address: popsync init you@example.net")
		}
		addr := args[0]
		local, domain, ok := strings.Cut(addr, "@")
		domain = strings.ToLower(strings.TrimSuffix(domain, "."))
		if !ok || local == "" || !validDomain(domain) || strings.ContainsAny(addr, " \t\"\\") {
			return usageErrorf("%q is not a mail address such as you@example.net", addr)
		}
		p, err := presetFor(domain, provider)
		if err != nil {
			return err
		}
		if p.noPOP3 != "" {
			return usageErrorf("%s: %s", addr, p.noPOP3)
		}
		path := g.config
		text := starterConfig(p, addr, accountName(p, domain))
		if err := writeNew(path, text); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "wrote %s for %s (%s: %s port %d, tls %s)\n\nnext:\n", path, addr, p.name, p.host, p.port, p.tls)
		step := 1
		next := func(format string, args ...any) {
			fmt.Fprintf(e.stdout, "  %d. %s\n", step, fmt.Sprintf(format, args...))
			step++
		}
		if p.guess {
			next("check the server name: %s is a guess; your provider's help pages name its POP3 server", p.host)
		}
		if p.enable != "" {
			next("%s", p.enable)
		}
		cflag := ""
		if path != configs.DefaultPath() {
			cflag = " -c " + shellQuote(path)
		}
		if p.oauth2 != "" {
			next("%s requires OAuth2: see the [account.oauth2] notes in the file and set password_command to a program that prints an access token", p.name)
		} else {
			if p.appPassword != "" {
				next("%s", p.appPassword)
			}
			pw := filepath.Join(filepath.Dir(path), passwordFile(accountName(p, domain)))
			next("put the password on the first line of %s, readable by you only: install -m 600 /dev/null %s && ${EDITOR:-vi} %s",
				pw, shellQuote(pw), shellQuote(pw))
		}
		next("check the account: popsync%s check --connect", cflag)
		next("fetch: popsync%s fetch   (keep = true leaves the mail on the server)", cflag)
		return nil
	}
}

func validDomain(d string) bool {
	if !strings.Contains(d, ".") || strings.HasPrefix(d, ".") || strings.Contains(d, "..") {
		return false
	}
	for _, r := range d {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r > 0x7f) {
			return false
		}
	}
	return true
}

// accountName is the [[account]] name: the preset's, or the domain's
// first label for an ISP.
func accountName(p preset, domain string) string {
	if !p.guess {
		return p.id
	}
	name, _, _ := strings.Cut(domain, ".")
	name = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, name)
	if name == "" {
		return "mail"
	}
	return name
}

func passwordFile(name string) string { return name + ".password" }

// starterConfig is the commented file popsync init writes.
func starterConfig(p preset, addr, name string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# popsync config for %s, written by `popsync init` (%s).\n", addr, p.name)
	w("# Every key is explained in popsync's README (configuration reference)\n")
	w("# and in configs/example.toml. Check this file: popsync check --connect\n\n")
	w("# [state]\n# path = \"~/.local/state/popsync/state.db\"   # the seen-set: what was fetched already\n\n")
	w("[[account]]\nname = %q\n", name)
	if p.guess {
		w("# A guess from the address: your provider's help pages name its POP3\n")
		w("# server. If it speaks only STARTTLS on port 110, write tls = \"starttls\"\n")
		w("# and port = 110.\n")
	}
	w("host = %q\nport = %d\ntls = %q                # TLS from the first byte; \"starttls\" is STLS on port 110\n", p.host, p.port, p.tls)
	w("user = %q\n", addr)
	if p.enable != "" {
		w("# First %s.\n", p.enable)
	}
	if p.oauth2 != "" {
		w("\n# %s accepts OAuth2 only: no password, and no app password, works.\n", p.name)
		w("auth = \"xoauth2\"\n")
		w("# The password is then an OAuth2 access token. Until popsync can get and\n")
		w("# refresh tokens itself (the [account.oauth2] table below, with `popsync\n")
		w("# login %s`), name a program that prints a current access token:\n", name)
		w("password_command = [\"oauth2-token\", %q]   # replace with your token program\n", addr)
	} else {
		if p.appPassword != "" {
			w("# Your normal password is refused here: %s.\n", p.appPassword)
		}
		w("auth = \"auto\"               # the strongest mechanism the server offers\n")
		w("password_file = %q   # its first line; chmod 600\n", passwordFile(name))
		w("# password_command = [\"pass\", \"show\", \"mail/%s\"]   # or from a password manager\n", name)
		w("# password_env = \"POPSYNC_PASSWORD\"                 # or from the environment\n")
	}
	w("keep = true                 # leave mail on the server; false deletes what was delivered\n")
	w("# delete_after = \"30d\"      # with keep: delete from the server 30 days after delivery\n\n")
	if p.oauth2 != "" {
		w("# [account.oauth2]            # for `popsync login %s`, once popsync has it\n", name)
		w("#   provider = %q\n#   client_id = \"...\"          # an application registered for POP access\n\n", p.oauth2)
	}
	w("  [[account.deliver]]\n  maildir = \"~/Maildir\"      # created if missing\n")
	return b.String()
}

// writeNew writes a new file with mode 0600, durably, and never replaces
// one that exists.
func writeNew(path, text string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating the config folder: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return usageErrorf("%s exists already and is left as it is; give another file with -c FILE, or move it away first", path)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	_, err = f.WriteString(text)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
