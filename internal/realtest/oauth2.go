package realtest

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
)

// OAuth2Passdb makes Dovecot accept OAuth 2.0 bearer tokens (SASL XOAUTH2
// and OAUTHBEARER, RFC 7628) by asking an authorization server's token
// introspection endpoint (RFC 7662) about each one, with Dovecot 2.3's
// oauth2 passdb ("Open Authentication v2.0 database",
// doc.dovecot.org/2.3/configuration_manual/authentication/oauth2):
// introspection_mode = post sends token=<token> as a form, and the login
// succeeds when the answer has "active": true and its username attribute
// equals the login name. Password logins keep working through the
// passwd-file passdb behind it.
type OAuth2Passdb struct {
	// IntrospectionURL is the RFC 7662 endpoint, for example
	// oauthtest.Server.IntrospectionURL(). Plain http on 127.0.0.1 is
	// fine: it never leaves the host.
	IntrospectionURL string
	// UsernameAttribute names the answer's field that holds the user.
	// Default "username" (RFC 7662 §2.2).
	UsernameAttribute string
}

// oauth2ConfFile is the passdb's own configuration, in the instance
// directory.
const oauth2ConfFile = "dovecot-oauth2.conf.ext"

// StartDovecotOAuth2 is StartDovecot with the oauth2 passdb in front of the
// password one.
func StartDovecotOAuth2(t testing.TB, opts DovecotOptions, passdb OAuth2Passdb) *Dovecot {
	t.Helper()
	opts.OAuth2 = &passdb
	return StartDovecot(t, opts)
}

// fillOAuth2 checks the passdb options and offers the two mechanisms.
func (o *DovecotOptions) fillOAuth2() error {
	p := o.OAuth2
	if p == nil {
		return nil
	}
	u, err := url.Parse(p.IntrospectionURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("oauth2 passdb: introspection URL %q is not an http(s) URL", p.IntrospectionURL)
	}
	if strings.ContainsAny(p.IntrospectionURL, " \t\r\n\"") {
		return fmt.Errorf("oauth2 passdb: introspection URL %q contains white space or quotes", p.IntrospectionURL)
	}
	if p.UsernameAttribute == "" {
		p.UsernameAttribute = "username"
	}
	if strings.Trim(p.UsernameAttribute, "abcdefghijklmnopqrstuvwxyz_") != "" {
		return fmt.Errorf("oauth2 passdb: bad username attribute %q", p.UsernameAttribute)
	}
	for _, m := range []string{"XOAUTH2", "OAUTHBEARER"} {
		have := false
		for _, x := range o.Mechanisms {
			have = have || strings.EqualFold(x, m)
		}
		if !have {
			o.Mechanisms = append(o.Mechanisms, m)
		}
	}
	return nil
}

// writeOAuth2Config writes the passdb's configuration file.
func (d *Dovecot) writeOAuth2Config() error {
	p := d.opts.OAuth2
	if p == nil {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# oauth2 passdb of a popsync test (internal/realtest/oauth2.go)\n")
	fmt.Fprintf(&b, "introspection_mode = post\n")
	fmt.Fprintf(&b, "introspection_url = %s\n", p.IntrospectionURL)
	// No tokeninfo_url: every token is introspected.
	fmt.Fprintf(&b, "force_introspection = yes\n")
	fmt.Fprintf(&b, "username_attribute = %s\n", p.UsernameAttribute)
	// RFC 7662 §2.2: "active" is the one required field; an inactive or
	// unknown token answers {"active": false}.
	fmt.Fprintf(&b, "active_attribute = active\n")
	fmt.Fprintf(&b, "active_value = true\n")
	fmt.Fprintf(&b, "timeout_msecs = %d\n", ioTimeout.Milliseconds())
	return d.writeFile(filepath.Join(d.Dir, oauth2ConfFile), []byte(b.String()), 0o600)
}

// oauth2Passdb renders the passdb block; it comes first, so tokens are
// checked by introspection and passwords fall through to passwd-file.
func (d *Dovecot) oauth2Passdb(p func(string, ...any)) {
	if d.opts.OAuth2 == nil {
		return
	}
	p("passdb {")
	p("  driver = oauth2")
	p("  mechanisms = xoauth2 oauthbearer")
	p("  args = %s", filepath.Join(d.Dir, oauth2ConfFile))
	p("}")
}
