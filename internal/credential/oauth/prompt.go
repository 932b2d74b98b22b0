package oauth

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"time"
)

// WriteDevicePrompt returns a DeviceLogin prompt that tells the user, on w,
// where to go and which code to enter.
func WriteDevicePrompt(w io.Writer) func(DevicePrompt) error {
	return func(p DevicePrompt) error {
		_, err := fmt.Fprintf(w, "To sign in, open %s and enter the code %s", p.VerificationURI, p.UserCode)
		if err == nil && !p.Expiry.IsZero() {
			_, err = fmt.Fprintf(w, " (valid for %s)", time.Until(p.Expiry).Round(time.Minute))
		}
		if err == nil {
			_, err = fmt.Fprintln(w, ".")
		}
		return err
	}
}

// WriteAuthURL returns a BrowserLogin prompt that prints the URL on w, with
// the ssh -L recipe for a machine without a browser.
func WriteAuthURL(w io.Writer) func(string) error {
	return func(authURL string) error {
		port := ""
		if u, err := url.Parse(authURL); err == nil {
			if r, err := url.Parse(u.Query().Get("redirect_uri")); err == nil {
				port = r.Port()
			}
		}
		if _, err := fmt.Fprintf(w, "To sign in, open this URL in a browser:\n\n  %s\n\n", authURL); err != nil {
			return err
		}
		if port == "" {
			return nil
		}
		_, err := fmt.Fprintf(w, "The browser must reach %s on this machine. From another machine, forward it first:\n  ssh -L %s:127.0.0.1:%s THIS-HOST\nthen open the URL there.\n", net.JoinHostPort("127.0.0.1", port), port, port)
		return err
	}
}
