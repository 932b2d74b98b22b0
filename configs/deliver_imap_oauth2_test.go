package configs

import (
	"strings"
	"testing"

	"popsync/internal/credential/oauth"
)

// TestIMAPOAuth2: an imap entry with [account.deliver.oauth2] logs in
// with a token (auto means xoauth2), has no password source, IMAP's
// service for its default scopes, and a token key of its own.
func TestIMAPOAuth2(t *testing.T) {
	c := mustParse(t, imapHead+`
[[account.deliver]]
imap = "imap.gmail.com"
user = "me@gmail.com"
[account.deliver.oauth2]
provider = "google"
client_id = "id.apps.googleusercontent.com"
client_secret_env = "GOOGLE_SECRET"

[[account.deliver]]
imap = "imap.example.net:1993"
user = "me"
auth = "oauthbearer"
[account.deliver.oauth2]
provider = "custom"
client_id = "popsync"
token_url = "https://id.example.net/token"
device_auth_url = "https://id.example.net/device"
scopes = ["imap"]

[[account.deliver]]
imap = "imap.example.org"
user = "me"
auth = "xoauth2"
password_command = ["token-from-elsewhere"]
`)
	ds := c.Accounts[0].Deliver
	g := ds[0].Target.(*IMAPTarget)
	if g.OAuth2 == nil || g.Auth != IMAPAuthXOAuth2 || !g.Password.IsZero() {
		t.Fatalf("google target: oauth2 %v auth %q password zero %v", g.OAuth2, g.Auth, g.Password.IsZero())
	}
	if g.OAuth2.Service != oauth.ServiceIMAP || g.OAuth2.Line != 12 {
		t.Errorf("oauth2 table: service %q line %d", g.OAuth2.Service, g.OAuth2.Line)
	}
	if got := g.TokenKey(); got != "imap me@gmail.com@imap.gmail.com:993" {
		t.Errorf("TokenKey = %q", got)
	}
	if !strings.HasPrefix(c.Accounts[0].TokenKey(), "pop3 ") {
		t.Errorf("account key %q", c.Accounts[0].TokenKey())
	}
	if g.OAuth2.ClientSecret.Env != "GOOGLE_SECRET" {
		t.Errorf("client secret source %+v", g.OAuth2.ClientSecret)
	}
	b := ds[1].Target.(*IMAPTarget)
	if b.OAuth2 == nil || b.Auth != IMAPAuthOAuthBearer || b.TokenKey() != "imap me@imap.example.net:1993" {
		t.Errorf("custom target: oauth2 %v auth %q key %q", b.OAuth2, b.Auth, b.TokenKey())
	}
	// Without a table, xoauth2 keeps its meaning: the password source
	// yields the token.
	x := ds[2].Target.(*IMAPTarget)
	if x.OAuth2 != nil || x.Auth != IMAPAuthXOAuth2 || len(x.Password.Command) != 1 {
		t.Errorf("xoauth2 without a table: %+v", x)
	}
	// The copy a reload compares is deep.
	cl := g.clone().(*IMAPTarget)
	cl.OAuth2.Scopes = append(cl.OAuth2.Scopes, "x")
	if cl.OAuth2 == g.OAuth2 || len(g.OAuth2.Scopes) != 0 {
		t.Error("clone shares the oauth2 table")
	}
}

// TestIMAPOAuth2Problems: a password source or a password mechanism next
// to the table, and a bad key inside it, are errors at their lines.
func TestIMAPOAuth2Problems(t *testing.T) {
	_, err := parse(t, imapHead+`
[[account.deliver]]
imap = "imap.gmail.com"
user = "me@gmail.com"
password_file = "pw"
auth = "plain"
[account.deliver.oauth2]
provider = "google"
client_id = "id"

[[account.deliver]]
imap = "imap.example.net"
user = "me"
auth = "login-command"
[account.deliver.oauth2]
provider = "microsoft"
client_id = "id"
tenat = "x"
`)
	checkProblems(t, problemsOf(t, err), []want{
		{12, "home", "deliver.password_file", "cannot be combined with [account.deliver.oauth2]"},
		{13, "home", "deliver.auth", `"plain" cannot carry an OAuth 2.0 token`},
		{25, "home", "account.deliver.oauth2.tenat", ""},
	})
}
