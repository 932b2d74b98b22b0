package configs

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"popsync/internal/credential"
	"popsync/internal/credential/oauth"
)

// OAuth2 is an [account.oauth2] table: the OAuth 2.0 client registration an
// account logs in with instead of a password. The tokens themselves are not
// in the config: `popsync login` obtains them and the state store keeps
// them. The same table serves the IMAP target ([account.deliver.oauth2]),
// with Service "imap".
type OAuth2 struct {
	Line int // line of the table header

	Provider string   // oauth.ProviderMicrosoft, oauth.ProviderGoogle or oauth.ProviderCustom
	ClientID string   // client_id
	Tenant   string   // Microsoft only; "" means common
	Scopes   []string // nil means the provider's default for Service
	Service  string   // oauth.ServicePOP3 or oauth.ServiceIMAP: picks the default scopes

	// Custom endpoints (provider = "custom" only).
	AuthURL, TokenURL, DeviceAuthURL string

	// ClientSecret is where a confidential client's secret comes from
	// (keys client_secret, _file, _command, _env); the zero value is a
	// public client (no secret), which is what Microsoft's and Google's
	// desktop registrations are.
	ClientSecret credential.Source
}

// Config returns the oauth.Config of o. Its ClientSecret reads the secret
// source at each use (nil for a public client); errors name the account.
func (o *OAuth2) Config(account string) oauth.Config {
	c := oauth.Config{
		Provider: o.Provider, ClientID: o.ClientID, Tenant: o.Tenant,
		Scopes: append([]string(nil), o.Scopes...), Service: o.Service,
		AuthURL: o.AuthURL, TokenURL: o.TokenURL, DeviceAuthURL: o.DeviceAuthURL,
	}
	if !o.ClientSecret.IsZero() {
		src := o.ClientSecret
		c.ClientSecret = func(ctx context.Context) (string, error) {
			v, err := src.Secret(ctx)
			if err != nil {
				return "", fmt.Errorf("account %q: %w", account, err)
			}
			return v, nil
		}
	}
	return c
}

// TokenKey is the key of the account's OAuth 2.0 tokens in the state
// store: the service and the account's identity, so that renaming the
// account keeps its login and changing host, port or user asks for a new
// one, like the seen-set.
func (a *Account) TokenKey() string { return oauth.ServicePOP3 + " " + a.Identity().String() }

// oauthServicePOP3 is the service of an account's own oauth2 table.
const oauthServicePOP3 = oauth.ServicePOP3

var oauth2Providers = []string{oauth.ProviderMicrosoft, oauth.ProviderGoogle, oauth.ProviderCustom}

// rawOAuth2 is one oauth2 table as written.
type rawOAuth2 struct {
	provider, clientID, tenant     val[string]
	authURL, tokenURL, deviceURL   val[string]
	scopes                         val[[]string]
	secret                         val[Secret]
	secretFile, secretEnv          val[string]
	secretCommand                  val[[]string]
	secretCommandTimeout           val[Duration]
	w                              where
	header, service, secretKeyName string
}

// oauth2Fields are the keys of an oauth2 table.
var oauth2Fields = map[string]func(d *decoder, r *rawOAuth2, x any, w where){
	"provider":        func(d *decoder, r *rawOAuth2, x any, w where) { r.provider = get(d.enum(oauth2Providers...), x, w) },
	"client_id":       func(d *decoder, r *rawOAuth2, x any, w where) { r.clientID = get(d.nonEmpty, x, w) },
	"tenant":          func(d *decoder, r *rawOAuth2, x any, w where) { r.tenant = get(d.nonEmpty, x, w) },
	"scopes":          func(d *decoder, r *rawOAuth2, x any, w where) { r.scopes = get(d.strings, x, w) },
	"auth_url":        func(d *decoder, r *rawOAuth2, x any, w where) { r.authURL = get(d.nonEmpty, x, w) },
	"token_url":       func(d *decoder, r *rawOAuth2, x any, w where) { r.tokenURL = get(d.nonEmpty, x, w) },
	"device_auth_url": func(d *decoder, r *rawOAuth2, x any, w where) { r.deviceURL = get(d.nonEmpty, x, w) },
	"client_secret":   func(d *decoder, r *rawOAuth2, x any, w where) { r.secret = get(d.secret, x, w) },
	"client_secret_file": func(d *decoder, r *rawOAuth2, x any, w where) {
		r.secretFile = get(d.path, x, w)
	},
	"client_secret_command": func(d *decoder, r *rawOAuth2, x any, w where) {
		r.secretCommand = get(d.command, x, w)
	},
	"client_secret_env": func(d *decoder, r *rawOAuth2, x any, w where) { r.secretEnv = get(d.envName, x, w) },
	"client_secret_command_timeout": func(d *decoder, r *rawOAuth2, x any, w where) {
		r.secretCommandTimeout = get(d.duration(true), x, w)
	},
}

// oauth2 returns the converter of an oauth2 table whose header the user
// writes as header ("account.oauth2", "account.deliver.oauth2") and whose
// tokens are for service (oauth.ServicePOP3, oauth.ServiceIMAP). Problems
// name the keys as header.key, for example "account.oauth2.client_id".
func (d *decoder) oauth2(header, service string) func(any, where) (*OAuth2, bool) {
	return func(x any, w where) (*OAuth2, bool) {
		if _, ok := x.(map[string]any); !ok {
			d.problem(w, "must be a table ([%s]), not %s", header, typeName(x))
			return nil, false
		}
		r := &rawOAuth2{w: w, header: header, service: service}
		// Keys inside are named from the top, as the user writes the table.
		tw := where{path: w.path, account: w.account, key: header}
		handlers := make(map[string]func(any, where), len(oauth2Fields))
		for k, f := range oauth2Fields {
			handlers[k] = func(x any, w where) { f(d, r, x, w) }
		}
		probs := len(d.probs.list)
		d.fields(x, tw, handlers)
		o := r.build(d, tw)
		return o, len(d.probs.list) == probs
	}
}

// build checks the table as a whole: one client secret source at most, and
// what oauth.Config.Validate says, each problem at its key's line.
func (r *rawOAuth2) build(d *decoder, tw where) *OAuth2 {
	o := &OAuth2{
		Line:          d.pos.line(tw.path),
		Provider:      or(r.provider, ""),
		ClientID:      or(r.clientID, ""),
		Tenant:        or(r.tenant, ""),
		Scopes:        or(r.scopes, nil),
		Service:       r.service,
		AuthURL:       or(r.authURL, ""),
		TokenURL:      or(r.tokenURL, ""),
		DeviceAuthURL: or(r.deviceURL, ""),
		ClientSecret: credential.Source{
			Key:     "client_secret",
			Literal: or(r.secret, ""),
			File:    or(r.secretFile, ""),
			Command: or(r.secretCommand, nil),
			Env:     or(r.secretEnv, ""),
			Timeout: or(r.secretCommandTimeout, 0).D(),
		},
	}
	type given struct {
		key string
		w   where
	}
	var gs []given
	for _, g := range []struct {
		key string
		set bool
		w   where
	}{{"client_secret", r.secret.set, r.secret.w}, {"client_secret_file", r.secretFile.set, r.secretFile.w},
		{"client_secret_command", r.secretCommand.set, r.secretCommand.w}, {"client_secret_env", r.secretEnv.set, r.secretEnv.w}} {
		if g.set {
			gs = append(gs, given{g.key, g.w})
		}
	}
	sort.SliceStable(gs, func(i, j int) bool { return d.pos.line(gs[i].w.path) < d.pos.line(gs[j].w.path) })
	for _, g := range gs[min(1, len(gs)):] {
		d.problem(g.w, "only one client secret source may be given, and %s is set on line %d", gs[0].key, d.pos.line(gs[0].w.path))
	}
	if r.secretCommandTimeout.set && !r.secretCommand.set {
		d.problem(r.secretCommandTimeout.w, "needs client_secret_command")
	}

	// The package's own rules (provider, tenant, endpoints, scopes), each
	// reported at the key it names, or at the table when it is missing.
	// Keys whose value was refused above are not judged again.
	refused := map[string]bool{
		"provider": r.provider.bad, "client_id": r.clientID.bad, "tenant": r.tenant.bad, "scopes": r.scopes.bad,
		"auth_url": r.authURL.bad, "token_url": r.tokenURL.bad, "device_auth_url": r.deviceURL.bad,
	}
	keyAt := map[string]val[string]{"provider": r.provider, "client_id": r.clientID, "tenant": r.tenant,
		"auth_url": r.authURL, "token_url": r.tokenURL, "device_auth_url": r.deviceURL}
	err := o.Config("").Validate()
	var fes []*oauth.FieldError
	for _, e := range unjoin(err) {
		var fe *oauth.FieldError
		if errors.As(e, &fe) {
			fes = append(fes, fe)
		}
	}
	for _, fe := range fes {
		if refused[fe.Key] {
			continue
		}
		w := tw.sub(fe.Key)
		if v, ok := keyAt[fe.Key]; ok && v.set {
			w = v.w
		} else if fe.Key == "scopes" && r.scopes.set {
			w = r.scopes.w
		}
		d.problem(w, "%s", fe.Problem)
	}
	return o
}

// unjoin flattens an errors.Join.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// strings reads an array of strings.
func (d *decoder) strings(x any, w where) ([]string, bool) {
	arr, ok := x.([]any)
	if !ok {
		d.problem(w, `must be an array of strings, e.g. ["a", "b"], not %s`, typeName(x))
		return nil, false
	}
	out := make([]string, 0, len(arr))
	for i, e := range arr {
		s, ok := e.(string)
		if !ok {
			d.problem(w.elem(i), "must be a string, not %s", typeName(e))
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// oauth2Auth checks the account's auth and password keys against its
// oauth2 table: the token replaces the password, and only the two bearer
// mechanisms can carry it. "auto" means xoauth2, which Microsoft and
// Google both take.
func (d *decoder) oauth2Auth(a *Account, r, def *rawAccount) {
	if !r.oauth2.set {
		return
	}
	a.OAuth2 = or(r.oauth2, nil)
	for _, p := range []struct {
		key string
		set bool
		w   where
	}{{"password", r.password.set, r.password.w}, {"password_file", r.passwordFile.set, r.passwordFile.w},
		{"password_command", r.passwordCommand.set, r.passwordCommand.w}, {"password_env", r.passwordEnv.set, r.passwordEnv.w},
		{"password_command_timeout", r.passwordCommandTimeout.set, r.passwordCommandTimeout.w}} {
		if p.set {
			d.problem(p.w, "cannot be combined with [account.oauth2]: the account logs in with an OAuth 2.0 token (`popsync login %s`)", a.Name)
		}
	}
	a.Password = credential.Source{}
	auth := pick(r.auth, def.auth)
	switch a.Auth {
	case AuthAuto:
		a.Auth = AuthXOAuth2
	case AuthXOAuth2, AuthOAuthBearer:
	default:
		d.problem(blame(r.w.sub("auth"), auth.w), "%q cannot carry an OAuth 2.0 token: with [account.oauth2] use auth = \"xoauth2\", \"oauthbearer\" or \"auto\"", a.Auth)
	}
}
