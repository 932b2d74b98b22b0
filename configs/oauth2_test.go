package configs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"popsync/internal/credential/oauth"
)

const oauthHead = "[[account]]\nname = \"work\"\nhost = \"outlook.office365.com\"\nuser = \"me@example.com\"\n"
const oauthDeliver = "[[account.deliver]]\nmaildir = \"/m\"\n"

func TestOAuth2Decode(t *testing.T) {
	c := mustParse(t, oauthHead+`
  [account.oauth2]
  provider = "microsoft"
  client_id = "11111111-2222-3333-4444-555555555555"
  tenant = "organizations"
  client_secret_env = "POPSYNC_TEST_SECRET"
`+oauthDeliver)
	a := c.Accounts[0]
	if a.OAuth2 == nil {
		t.Fatal("no OAuth2")
	}
	if a.Auth != AuthXOAuth2 {
		t.Errorf("auth = %q, want xoauth2 for auto with oauth2", a.Auth)
	}
	o := a.OAuth2
	if o.Line != 6 || o.Provider != "microsoft" || o.Tenant != "organizations" || o.Service != oauth.ServicePOP3 || o.ClientSecret.Env != "POPSYNC_TEST_SECRET" {
		t.Errorf("OAuth2 = %+v", o)
	}
	cfg := o.Config(a.Name)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	t.Setenv("POPSYNC_TEST_SECRET", "s3cret")
	if s, err := cfg.ClientSecret(t.Context()); err != nil || s != "s3cret" {
		t.Errorf("client secret = %q, %v", s, err)
	}
	os.Unsetenv("POPSYNC_TEST_SECRET")
	if _, err := cfg.ClientSecret(t.Context()); err == nil || !strings.Contains(err.Error(), "client_secret_env") || !strings.Contains(err.Error(), `"work"`) {
		t.Errorf("unset env: %v", err)
	}
	if !cfg.DeviceFlowAllowed() {
		t.Error("microsoft: device flow not allowed")
	}
	if k := a.TokenKey(); k != "pop3 me@example.com@outlook.office365.com:995" {
		t.Errorf("TokenKey = %q", k)
	}

	// oauthbearer stays; a public client has no secret function.
	c = mustParse(t, oauthHead+"auth = \"oauthbearer\"\n[account.oauth2]\nprovider = \"google\"\nclient_id = \"x.apps.googleusercontent.com\"\n"+oauthDeliver)
	if a := c.Accounts[0]; a.Auth != AuthOAuthBearer || a.OAuth2.Config(a.Name).ClientSecret != nil || a.OAuth2.Config(a.Name).DeviceFlowAllowed() {
		t.Errorf("google: auth %q, %+v", a.Auth, a.OAuth2)
	}
}

func TestOAuth2ClientSecretSources(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "secret")
	if err := os.WriteFile(f, []byte("from-file\nignored\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ line, want string }{
		{`client_secret = "literal"`, "literal"},
		{`client_secret_file = "` + f + `"`, "from-file"},
		{`client_secret_command = ["echo", "from-command"]`, "from-command"},
	} {
		c := mustParse(t, oauthHead+"[account.oauth2]\nprovider = \"microsoft\"\nclient_id = \"id\"\n"+tc.line+"\n"+oauthDeliver)
		a := c.Accounts[0]
		got, err := a.OAuth2.Config(a.Name).ClientSecret(context.Background())
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v", tc.line, got, err)
		}
	}
}

func TestOAuth2Validation(t *testing.T) {
	const tbl = "[account.oauth2]\n"
	cases := []struct {
		name  string
		src   string
		wants []want
	}{
		{"client_id missing", oauthHead + tbl + "provider = \"microsoft\"\n" + oauthDeliver,
			[]want{{5, "work", "account.oauth2.client_id", "missing"}}},
		{"provider missing", oauthHead + tbl + "client_id = \"id\"\n" + oauthDeliver,
			[]want{{5, "work", "account.oauth2.provider", "missing"}}},
		{"unknown key", oauthHead + tbl + "provider = \"microsoft\"\nclient_id = \"id\"\nclientid = \"x\"\n" + oauthDeliver,
			[]want{{8, "work", "account.oauth2.clientid", `did you mean "client_id"`}}},
		{"bad provider", oauthHead + tbl + "provider = \"yahoo\"\nclient_id = \"id\"\n" + oauthDeliver,
			[]want{{6, "work", "account.oauth2.provider", "must be microsoft, google or custom"}}},
		{"tenant for google", oauthHead + tbl + "provider = \"google\"\nclient_id = \"id\"\ntenant = \"common\"\n" + oauthDeliver,
			[]want{{8, "work", "account.oauth2.tenant", "only for provider = \"microsoft\""}}},
		{"bad tenant", oauthHead + tbl + "provider = \"microsoft\"\nclient_id = \"id\"\ntenant = \"../x\"\n" + oauthDeliver,
			[]want{{8, "work", "account.oauth2.tenant", "is not common"}}},
		{"custom needs token_url and scopes", oauthHead + tbl + "provider = \"custom\"\nclient_id = \"id\"\nauth_url = \"https://a.example/auth\"\n" + oauthDeliver,
			[]want{{5, "work", "account.oauth2.token_url", "missing"}, {5, "work", "account.oauth2.scopes", "missing"}}},
		{"custom http off loopback", oauthHead + tbl + "provider = \"custom\"\nclient_id = \"id\"\nscopes = [\"s\"]\ntoken_url = \"http://tokens.example/t\"\ndevice_auth_url = \"https://a.example/d\"\n" + oauthDeliver,
			[]want{{9, "work", "account.oauth2.token_url", "only on a loopback address"}}},
		{"bad scope", oauthHead + tbl + "provider = \"google\"\nclient_id = \"id\"\nscopes = [\"a b\"]\n" + oauthDeliver,
			[]want{{8, "work", "account.oauth2.scopes", "not a valid scope token"}}},
		{"two secrets", oauthHead + tbl + "provider = \"microsoft\"\nclient_id = \"id\"\nclient_secret = \"x\"\nclient_secret_env = \"E\"\n" + oauthDeliver,
			[]want{{9, "work", "account.oauth2.client_secret_env", "only one client secret source"}}},
		{"password with oauth2", oauthHead + "password = \"x\"\n" + tbl + "provider = \"microsoft\"\nclient_id = \"id\"\n" + oauthDeliver,
			[]want{{5, "work", "password", "cannot be combined with [account.oauth2]"}}},
		{"password_command with oauth2", oauthHead + "password_command = [\"pw\"]\n" + tbl + "provider = \"microsoft\"\nclient_id = \"id\"\n" + oauthDeliver,
			[]want{{5, "work", "password_command", "cannot be combined with [account.oauth2]"}}},
		{"plain with oauth2", oauthHead + "auth = \"plain\"\n" + tbl + "provider = \"microsoft\"\nclient_id = \"id\"\n" + oauthDeliver,
			[]want{{5, "work", "auth", `"plain" cannot carry an OAuth 2.0 token`}}},
		{"user with oauth2", oauthHead + "auth = \"user\"\n" + tbl + "provider = \"microsoft\"\nclient_id = \"id\"\n" + oauthDeliver,
			[]want{{5, "work", "auth", `"user" cannot carry`}}},
		{"oauth2 not a table", oauthHead + "oauth2 = \"microsoft\"\n" + oauthDeliver,
			[]want{{5, "work", "oauth2", "must be a table ([account.oauth2])"}}},
		{"oauth2 in defaults", "[defaults.oauth2]\nprovider = \"microsoft\"\n" + oauthHead + "password = \"x\"\n" + oauthDeliver,
			[]want{{1, "", "defaults.oauth2", "cannot be set in [defaults]"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.src)
			checkProblems(t, problemsOf(t, err), tc.wants)
		})
	}
}

// A literal client secret in a file others can read is refused like a
// literal password, and never quoted.
func TestOAuth2LiteralSecretNeedsPrivateFile(t *testing.T) {
	src := oauthHead + "[account.oauth2]\nprovider = \"microsoft\"\nclient_id = \"id\"\nclient_secret = \"hunter2-client\"\n" + oauthDeliver
	_, err := Parse([]byte(src), "/etc/popsync/config.toml", 0o644)
	if err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "hunter2-client") {
		t.Error("secret quoted in the error")
	}
}

// The table reader serves the IMAP target too: its header names the keys,
// and its service picks IMAP's default scopes.
func TestOAuth2TableForIMAP(t *testing.T) {
	d := &decoder{pos: positions{}}
	w := where{path: []string{"account", index(0), "deliver", index(0), "oauth2"}, account: "gmail"}
	o, ok := d.oauth2("account.deliver.oauth2", oauth.ServiceIMAP)(map[string]any{"provider": "microsoft", "client_id": "id", "tenat": "x"}, w)
	if ok {
		t.Fatal("an unknown key passed")
	}
	if len(d.probs.list) != 1 || d.probs.list[0].Key != "account.deliver.oauth2.tenat" {
		t.Fatalf("problems: %+v", d.probs.list)
	}
	c, err := oauth.New(o.Config("gmail"), oauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Scopes(); len(s) != 2 || s[0] != "https://outlook.office.com/IMAP.AccessAsUser.All" {
		t.Errorf("IMAP scopes: %q", s)
	}
}
