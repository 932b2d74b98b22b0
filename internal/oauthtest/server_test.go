package oauthtest

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

const secret = "test-secret"

// post sends a form to path and decodes the JSON answer.
func post(t *testing.T, s *Server, path string, form url.Values, basic bool) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic {
		req.SetBasicAuth(s.opts.ClientID, secret)
	}
	resp, err := s.Client(5 * time.Second).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if resp.Header.Get("Content-Type") == "application/json" {
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("answer is not JSON: %v", err)
		}
		if resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s answer without Cache-Control: no-store", path)
		}
	}
	return resp.StatusCode, body
}

func client(extra url.Values) url.Values {
	v := url.Values{"client_id": {DefaultClientID}, "client_secret": {secret}}
	for k, x := range extra {
		v[k] = x
	}
	return v
}

func wantError(t *testing.T, status int, body map[string]any, wantStatus int, code string) {
	t.Helper()
	if status != wantStatus || body["error"] != code {
		t.Errorf("got %d %v, want %d %s", status, body, wantStatus, code)
	}
}

func TestTokenEndpointRequestRules(t *testing.T) {
	s := New(Options{ClientSecret: secret})
	hc := s.Client(time.Second)
	resp, err := hc.Get(s.TokenURL())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
	resp, err = hc.Post(s.TokenURL(), "application/json", strings.NewReader(`{"grant_type":"refresh_token"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("JSON body: %d", resp.StatusCode)
	}
	st, body := post(t, s, PathToken, url.Values{"client_id": {DefaultClientID}, "client_secret": {"wrong"}, "grant_type": {"refresh_token"}}, false)
	wantError(t, st, body, 401, "invalid_client")
	st, body = post(t, s, PathToken, client(url.Values{"grant_type": {"refresh_token"}}), true)
	wantError(t, st, body, 400, "invalid_request") // two authentication methods
	st, body = post(t, s, PathToken, url.Values{"grant_type": {"password"}}, true)
	wantError(t, st, body, 400, "unsupported_grant_type")
	st, body = post(t, s, PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"rt-nope"}}, true)
	wantError(t, st, body, 400, "invalid_grant")
	s.FailTokenRequests(1, 503)
	st, body = post(t, s, PathToken, url.Values{"grant_type": {"refresh_token"}}, true)
	wantError(t, st, body, 503, "temporarily_unavailable")
	if got := s.Stats().Errors["invalid_client"]; got != 1 {
		t.Errorf("invalid_client counted %d times", got)
	}
}

// authorizeCode runs the authorization endpoint by hand and returns the
// redirect's query.
func authorizeCode(t *testing.T, s *Server, q url.Values, decision string) url.Values {
	t.Helper()
	hc := s.Client(time.Second)
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := hc.Get(s.AuthURL() + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusFound {
		u, _ := url.Parse(resp.Header.Get("Location"))
		return u.Query()
	}
	id := resp.Header.Get("X-Oauthtest-Request")
	if id == "" {
		t.Fatalf("authorization page: %d", resp.StatusCode)
	}
	resp, err = hc.PostForm(s.AuthURL(), url.Values{"request": {id}, "decision": {decision}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	u, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("decision: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if !strings.HasPrefix(u.String(), q.Get("redirect_uri")) {
		t.Errorf("redirected to %s, not the redirect_uri", u)
	}
	return u.Query()
}

func TestAuthorizationCodeWithPKCE(t *testing.T) {
	s := New(Options{ClientSecret: secret})
	verifier := strings.Repeat("v", 50)
	sum := sha256.Sum256([]byte(verifier))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	redirect := "http://127.0.0.1:4711/"
	q := url.Values{"response_type": {"code"}, "client_id": {DefaultClientID}, "redirect_uri": {redirect},
		"scope": {"mail"}, "state": {"st"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"}}

	// Refusals the user never sees as a redirect (RFC 6749 §4.1.2.1).
	hc := s.Client(time.Second)
	for _, bad := range []string{"https://evil.example/cb", "http://10.0.0.1/cb"} {
		bq := url.Values{}
		for k, v := range q {
			bq[k] = v
		}
		bq.Set("redirect_uri", bad)
		resp, err := hc.Get(s.AuthURL() + "?" + bq.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("redirect_uri %s: %d, want 400", bad, resp.StatusCode)
		}
	}
	// No PKCE: an error redirect.
	noPKCE := url.Values{}
	for k, v := range q {
		noPKCE[k] = v
	}
	noPKCE.Del("code_challenge")
	if got := authorizeCode(t, s, noPKCE, "approve"); got.Get("error") != "invalid_request" || got.Get("state") != "st" {
		t.Errorf("no PKCE: %v", got)
	}
	if got := authorizeCode(t, s, q, "deny"); got.Get("error") != "access_denied" || got.Get("code") != "" {
		t.Errorf("deny: %v", got)
	}

	exchange := func(code, verifier, redirect string) (int, map[string]any) {
		return post(t, s, PathToken, client(url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier}, "redirect_uri": {redirect}}), false)
	}
	got := authorizeCode(t, s, q, "approve")
	if got.Get("state") != "st" || got.Get("code") == "" {
		t.Fatalf("approve: %v", got)
	}
	st, body := exchange(got.Get("code"), strings.Repeat("w", 50), redirect)
	wantError(t, st, body, 400, "invalid_grant") // wrong verifier; the code is spent
	st, body = exchange(got.Get("code"), verifier, redirect)
	wantError(t, st, body, 400, "invalid_grant")

	got = authorizeCode(t, s, q, "approve")
	st, body = exchange(got.Get("code"), verifier, "http://127.0.0.1:4712/")
	wantError(t, st, body, 400, "invalid_grant") // redirect_uri differs

	got = authorizeCode(t, s, q, "approve")
	st, body = exchange(got.Get("code"), verifier, redirect)
	if st != 200 || body["token_type"] != "Bearer" || body["refresh_token"] == nil || body["expires_in"] != float64(3600) {
		t.Fatalf("exchange: %d %v", st, body)
	}
	at, rt := body["access_token"].(string), body["refresh_token"].(string)
	// Using the code again revokes what it gave (RFC 6749 §4.1.2).
	st, body = exchange(got.Get("code"), verifier, redirect)
	wantError(t, st, body, 400, "invalid_grant")
	if s.AccessTokenActive(at) || s.RefreshTokenValid(rt) {
		t.Error("a replayed code did not revoke its tokens")
	}
}

// deviceToken gets a token pair through the device grant.
func deviceToken(t *testing.T, s *Server) (at, rt string) {
	t.Helper()
	st, body := post(t, s, PathDevice, client(url.Values{"scope": {"mail offline_access"}}), false)
	if st != 200 {
		t.Fatalf("device authorization: %d %v", st, body)
	}
	if err := s.ApproveDevice(body["user_code"].(string)); err != nil {
		t.Fatal(err)
	}
	st, body = post(t, s, PathToken, client(url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "device_code": {body["device_code"].(string)}}), false)
	if st != 200 {
		t.Fatalf("device token: %d %v", st, body)
	}
	return body["access_token"].(string), body["refresh_token"].(string)
}

func TestDeviceGrantSlowsDownFastPollers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := New(Options{ClientSecret: secret, DeviceInterval: 5 * time.Second})
		_, body := post(t, s, PathDevice, client(nil), false)
		if body["interval"] != float64(5) || body["expires_in"] != float64(600) || !strings.HasPrefix(body["verification_uri"].(string), s.URL) {
			t.Errorf("device authorization %v", body)
		}
		poll := client(url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "device_code": {body["device_code"].(string)}})
		st, b := post(t, s, PathToken, poll, false)
		wantError(t, st, b, 400, "authorization_pending")
		time.Sleep(4 * time.Second)
		st, b = post(t, s, PathToken, poll, false)
		wantError(t, st, b, 400, "slow_down") // 4 s < 5 s; the interval is 10 s now
		time.Sleep(9 * time.Second)
		st, b = post(t, s, PathToken, poll, false)
		wantError(t, st, b, 400, "slow_down")
		time.Sleep(15 * time.Second)
		st, b = post(t, s, PathToken, poll, false)
		wantError(t, st, b, 400, "authorization_pending")
		time.Sleep(10 * time.Minute)
		st, b = post(t, s, PathToken, poll, false)
		wantError(t, st, b, 400, "expired_token")
	})
}

func TestRefreshRotation(t *testing.T) {
	for _, strict := range []bool{false, true} {
		s := New(Options{ClientSecret: secret, StrictRotation: strict})
		_, rt1 := deviceToken(t, s)
		refresh := func(rt string, extra url.Values) (int, map[string]any) {
			v := client(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
			for k, x := range extra {
				v[k] = x
			}
			return post(t, s, PathToken, v, false)
		}
		st, body := refresh(rt1, url.Values{"scope": {"mail admin"}})
		wantError(t, st, body, 400, "invalid_scope") // more than granted
		st, body = refresh(rt1, nil)
		if st != 200 {
			t.Fatalf("refresh: %d %v", st, body)
		}
		rt2 := body["refresh_token"].(string)
		if rt2 == rt1 {
			t.Fatal("no rotation")
		}
		if s.RefreshTokenValid(rt1) == strict {
			t.Errorf("strict=%v: old token valid=%v after rotation", strict, !strict)
		}
		st, body = refresh(rt2, url.Values{"scope": {"mail"}})
		if st != 200 || body["scope"] != "mail" {
			t.Fatalf("refresh with a narrower scope: %d %v", st, body)
		}
		// Once the successor is used, the old one is retired in both modes.
		st, body = refresh(rt1, nil)
		wantError(t, st, body, 400, "invalid_grant")
	}
}

func TestIntrospectionAndRevocation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := New(Options{ClientSecret: secret, AccessTTL: 10 * time.Second, Username: "me@example.test"})
		at, rt := deviceToken(t, s)
		st, body := post(t, s, PathIntrospect, url.Values{"token": {at}}, false)
		if st != 200 || body["active"] != true || body["username"] != "me@example.test" || body["client_id"] != DefaultClientID {
			t.Fatalf("active token: %d %v", st, body)
		}
		time.Sleep(11 * time.Second)
		if _, body := post(t, s, PathIntrospect, url.Values{"token": {at}}, false); len(body) != 1 || body["active"] != false {
			t.Errorf("expired token: %v", body)
		}
		if _, body := post(t, s, PathIntrospect, url.Values{"token": {"at-unknown"}}, false); body["active"] != false {
			t.Errorf("unknown token: %v", body)
		}
		st, _ = post(t, s, PathRevoke, url.Values{"token": {rt}}, true)
		if st != 200 || s.RefreshTokenValid(rt) {
			t.Errorf("revocation: %d, still valid %v", st, s.RefreshTokenValid(rt))
		}
		if got := s.Stats(); got.Introspections != 3 || got.ActiveIntrospections != 1 || got.Revocations != 1 {
			t.Errorf("stats %+v", got)
		}
	})
}
