package importer

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"popsync/configs"
)

// TODOKey is the key written into an account that cannot be used as
// converted. popsync's config has no such key, so `popsync check` and
// every other command refuse the file, naming the key and its line, until
// the TODO is settled and the line removed.
const TODOKey = "todo"

// PasswordFile is the name, relative to the new config's folder, of the
// file that holds the password the old config had for account a.
func PasswordFile(a *Account) string { return a.Name + ".password" }

// EmitOptions say what the converted config refers to outside itself.
type EmitOptions struct {
	StatePath string // [state] path
}

// Emit renders the popsync config for im. Passwords are never written into
// it: an account with one gets password_file = PasswordFile(a).
func Emit(im *Import, opt EmitOptions) []byte {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# popsync config converted by `popsync import %s` from:", im.Tool)
	for _, f := range im.Files {
		p("#   %s", oneLine(f))
	}
	p("# Read it, settle every TODO, then run `popsync check -c THIS_FILE`.")
	for _, i := range im.Issues {
		if i.Account == "" {
			p("# %s: %s (%s): %s", issueKind(i), oneLine(i.Option), i.Pos, oneLine(i.Reason))
		}
	}
	p("")
	p("[state]")
	p("path = %s", tomlString(opt.StatePath))
	if im.Global.Schedule != "" || len(im.Global.Comments) > 0 {
		p("")
		p("[defaults]")
		for _, c := range im.Global.Comments {
			p("# %s", oneLine(c))
		}
		if im.Global.Schedule != "" {
			p("schedule = %s", tomlString(im.Global.Schedule))
		}
	}
	byAccount := map[string][]Issue{}
	for _, i := range im.Issues {
		byAccount[i.Account] = append(byAccount[i.Account], i)
	}
	for _, a := range im.Accounts {
		p("")
		p("# from %s", a.Pos)
		for _, c := range a.Comments {
			p("# %s", oneLine(c))
		}
		for _, i := range byAccount[a.Name] {
			p("# %s: %s (line %d): %s", issueKind(i), oneLine(i.Option), i.Line, oneLine(i.Reason))
		}
		for _, t := range a.TODO {
			p("# TODO: %s", oneLine(t))
		}
		p("[[account]]")
		p("name = %s", tomlString(a.Name))
		if len(a.TODO) > 0 {
			p("%s = %s   # remove this line once the TODO above is done", TODOKey, tomlString("settle the TODO above"))
		}
		p("host = %s", tomlString(a.Host))
		if a.Port != 0 {
			p("port = %d", a.Port)
		}
		p("tls = %s", tomlString(a.TLS))
		if a.TLS != configs.TLSNone {
			if a.CAFile != "" {
				p("tls_ca_file = %s", tomlString(a.CAFile))
			}
			if a.Print != "" {
				p("tls_fingerprint = %s", tomlString(a.Print))
			}
			if a.ServerName != "" {
				p("tls_server_name = %s", tomlString(a.ServerName))
			}
		} else if a.CAFile != "" || a.Print != "" || a.ServerName != "" {
			p("# the old config named a CA file, fingerprint or server name, but no TLS")
		}
		p("user = %s", tomlString(a.User))
		switch {
		case a.Password != "":
			p("password_file = %s   # chmod 600, written by popsync import", tomlString(PasswordFile(a)))
		case a.PasswordCommand != nil:
			p("password_command = %s", tomlArray(a.PasswordCommand))
		}
		if a.Auth != "" {
			p("auth = %s", tomlString(a.Auth))
		}
		p("keep = %v", a.Keep)
		if a.DeleteAfter > 0 {
			p("delete_after = %s", tomlString(strconv.Itoa(a.DeleteAfter)+"d"))
		}
		if a.MaxSize > 0 {
			p("max_size = %s", tomlString(configs.Size(a.MaxSize).String()))
		}
		if a.FetchLimit > 0 {
			p("fetch_limit = %d", a.FetchLimit)
		}
		if a.Timeout > 0 {
			p("timeout = %s", tomlString(configs.Duration(a.Timeout).String()))
		}
		if a.NoReceived {
			p("add_received = false")
		}
		for _, t := range a.Deliver {
			p("")
			p("  [[account.deliver]]")
			switch {
			case t.Maildir != "":
				p("  maildir = %s", tomlString(t.Maildir))
			case t.MDA != nil:
				p("  mda = %s", tomlArray(t.MDA))
			case t.SMTP != "":
				p("  smtp = %s", tomlString(t.SMTP))
			case t.LMTP != "":
				p("  lmtp = %s", tomlString(t.LMTP))
			}
			if t.Rcpt != nil {
				p("  rcpt = %s", tomlArray(t.Rcpt))
			}
		}
	}
	return []byte(b.String())
}

func issueKind(i Issue) string {
	if i.Harmless {
		return "ignored"
	}
	return "not converted"
}

// oneLine keeps a comment on one line.
func oneLine(s string) string {
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}

// tomlString quotes s as a TOML basic string (TOML 1.0, "Basic strings":
// escape ", \ and control characters).
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		case r == utf8.RuneError:
			b.WriteString(`\uFFFD`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func tomlArray(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = tomlString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
