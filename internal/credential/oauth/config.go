package oauth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Provider names accepted in Config.Provider.
const (
	ProviderMicrosoft = "microsoft"
	ProviderGoogle    = "google"
	ProviderCustom    = "custom"
)

// Service names accepted in Config.Service: they pick the default scopes.
const (
	ServicePOP3 = "pop3"
	ServiceIMAP = "imap"
)

// Microsoft identity platform facts, from "Authenticate an IMAP, POP or
// SMTP connection using OAuth" (learn.microsoft.com, Exchange legacy
// protocols) and "OAuth 2.0 device authorization grant" (Microsoft
// identity platform): the endpoints live under
// https://login.microsoftonline.com/{tenant}/oauth2/v2.0/, tenant is
// common, consumers, organizations or a directory tenant (GUID or domain
// name), the scopes are full URLs on the Outlook resource, and
// offline_access must be asked for to get a refresh token.
const (
	microsoftBase        = "https://login.microsoftonline.com/"
	microsoftScopePOP    = "https://outlook.office.com/POP.AccessAsUser.All"
	microsoftScopeIMAP   = "https://outlook.office.com/IMAP.AccessAsUser.All"
	microsoftScopeOnline = "offline_access"
	defaultTenant        = "common"
)

// Google facts, from "OAuth 2.0 for Mobile & Desktop Apps" and "OAuth 2.0
// Mechanism" (XOAUTH2) on developers.google.com: the authorization
// endpoint, the token endpoint, the one scope for IMAP, POP and SMTP, and
// that a desktop client uses a loopback redirect with PKCE. The device
// flow ("OAuth 2.0 for TV and Limited-Input Device Applications") accepts
// only a short list of scopes, and https://mail.google.com/ is not on it.
const (
	googleAuthURL  = "https://accounts.google.com/o/oauth2/v2/auth"
	googleTokenURL = "https://oauth2.googleapis.com/token"
	googleScope    = "https://mail.google.com/"
)

// Config describes one OAuth 2.0 client registration and what it asks for.
// The field comments name the config keys they come from.
type Config struct {
	// Provider is "microsoft", "google" or "custom" (provider).
	Provider string
	// ClientID is the registered application's id (client_id).
	ClientID string
	// ClientSecret returns the client secret, or "" for a public client
	// (client_secret, _file, _command, _env). It is called before each
	// exchange, so a rotated secret is picked up; nil means no secret.
	ClientSecret func(ctx context.Context) (string, error)
	// Tenant is Microsoft's tenant: common (the default), consumers,
	// organizations, or a tenant id or domain (tenant).
	Tenant string
	// Scopes replace the provider's default scopes (scopes). Custom
	// providers need them.
	Scopes []string
	// Service picks the default Microsoft scope: "pop3" (the default) or
	// "imap".
	Service string
	// AuthURL, TokenURL and DeviceAuthURL are a custom provider's
	// endpoints (auth_url, token_url, device_auth_url): https, or http on a
	// loopback address. TokenURL is required; AuthURL is needed for the
	// browser login, DeviceAuthURL for the device login.
	AuthURL, TokenURL, DeviceAuthURL string
}

// FieldError is one problem with a Config, named by its config key.
type FieldError struct {
	Key     string // config key: "client_id", "tenant", "token_url", ...
	Problem string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Problem }

// Validate reports every problem with c at once, as an errors.Join of
// *FieldError (nil when there is none).
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &FieldError{Key: key, Problem: fmt.Sprintf(format, args...)})
	}
	if strings.TrimSpace(c.ClientID) == "" {
		bad("client_id", "missing")
	} else if strings.ContainsAny(c.ClientID, " \t\r\n") {
		bad("client_id", "contains white space")
	}
	switch c.Service {
	case "", ServicePOP3, ServiceIMAP:
	default:
		bad("service", "%q is not pop3 or imap", c.Service)
	}
	for i, s := range c.Scopes {
		// RFC 6749 §3.3: scope tokens are %x21 / %x23-5B / %x5D-7E.
		if s == "" || strings.ContainsFunc(s, func(r rune) bool { return r < 0x21 || r > 0x7e || r == '"' || r == '\\' }) {
			bad("scopes", "entry %d (%q) is not a valid scope token", i+1, s)
		}
	}
	urls := []struct{ key, val string }{{"auth_url", c.AuthURL}, {"token_url", c.TokenURL}, {"device_auth_url", c.DeviceAuthURL}}
	switch c.Provider {
	case ProviderMicrosoft:
		if c.Tenant != "" && !validTenant(c.Tenant) {
			bad("tenant", "%q is not common, consumers, organizations, a tenant id or a domain name", c.Tenant)
		}
		for _, u := range urls {
			if u.val != "" {
				bad(u.key, "only for provider = \"custom\"")
			}
		}
	case ProviderGoogle:
		if c.Tenant != "" {
			bad("tenant", "only for provider = \"microsoft\"")
		}
		for _, u := range urls {
			if u.val != "" {
				bad(u.key, "only for provider = \"custom\"")
			}
		}
	case ProviderCustom:
		if c.Tenant != "" {
			bad("tenant", "only for provider = \"microsoft\"")
		}
		if c.TokenURL == "" {
			bad("token_url", "missing (provider = \"custom\" needs it)")
		}
		if c.AuthURL == "" && c.DeviceAuthURL == "" {
			bad("auth_url", "missing: provider = \"custom\" needs auth_url or device_auth_url to log in")
		}
		for _, u := range urls {
			if u.val == "" {
				continue
			}
			if err := checkEndpointURL(u.val); err != nil {
				bad(u.key, "%v", err)
			}
		}
		if len(c.Scopes) == 0 {
			bad("scopes", "missing (provider = \"custom\" has no default)")
		}
	case "":
		bad("provider", "missing (microsoft, google or custom)")
	default:
		bad("provider", "%q is not microsoft, google or custom", c.Provider)
	}
	return errors.Join(errs...)
}

// validTenant accepts Microsoft's tenant names: the three aliases, a GUID
// or a domain name. It stops path tricks ("../", "?") in the endpoint URL.
func validTenant(t string) bool {
	if len(t) > 253 {
		return false
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return !strings.HasPrefix(t, ".") && !strings.Contains(t, "..")
}

// checkEndpointURL allows https, and http only on a loopback address
// (RFC 6749 §3.1 and §3.2 require TLS for the endpoints; a loopback
// server, as in tests or a local proxy, never leaves the host).
func checkEndpointURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a URL: %v", err)
	}
	if u.Host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if u.User != nil {
		return fmt.Errorf("must not contain a user name or password")
	}
	if u.Fragment != "" {
		// RFC 6749 §3.1: the endpoint URI MUST NOT include a fragment.
		return fmt.Errorf("must not contain a fragment")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("http is allowed only on a loopback address (127.0.0.1, ::1, localhost); use https")
	default:
		return fmt.Errorf("scheme %q is not https", u.Scheme)
	}
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// endpoint is a Config resolved to URLs and scopes.
type endpoint struct {
	authURL, tokenURL, deviceAuthURL string
	scopes                           []string
	// authParams are extra authorization request parameters the provider
	// needs to issue a refresh token.
	authParams map[string]string
}

// resolve turns a valid Config into its endpoints.
func (c Config) resolve() endpoint {
	var e endpoint
	switch c.Provider {
	case ProviderMicrosoft:
		tenant := c.Tenant
		if tenant == "" {
			tenant = defaultTenant
		}
		base := microsoftBase + url.PathEscape(tenant) + "/oauth2/v2.0/"
		e.authURL, e.tokenURL, e.deviceAuthURL = base+"authorize", base+"token", base+"devicecode"
		scope := microsoftScopePOP
		if c.Service == ServiceIMAP {
			scope = microsoftScopeIMAP
		}
		e.scopes = []string{scope, microsoftScopeOnline}
	case ProviderGoogle:
		e.authURL, e.tokenURL = googleAuthURL, googleTokenURL
		e.scopes = []string{googleScope}
		// Google issues a refresh token only for access_type=offline, and
		// on a repeated login only when consent is asked again.
		e.authParams = map[string]string{"access_type": "offline", "prompt": "consent"}
	case ProviderCustom:
		e.authURL, e.tokenURL, e.deviceAuthURL = c.AuthURL, c.TokenURL, c.DeviceAuthURL
	}
	if len(c.Scopes) > 0 {
		e.scopes = append([]string(nil), c.Scopes...)
	}
	return e
}

// DeviceFlowAllowed reports whether the device login can be used with c:
// Microsoft, and a custom provider with a device_auth_url. Google's device
// flow does not accept the mail scope.
func (c Config) DeviceFlowAllowed() bool { return c.resolve().deviceAuthURL != "" }

// BrowserFlowAllowed reports whether the browser login can be used with c.
func (c Config) BrowserFlowAllowed() bool { return c.resolve().authURL != "" }
