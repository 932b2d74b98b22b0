package realtest

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// IMAP serving (DovecotOptions.IMAP): Dovecot's imap service on two more
// loopback ports, plain text with STARTTLS and implicit TLS, over the same
// Maildir and passwd file as POP3. The functions below read mailboxes back
// through IMAP itself, so a test sees what any IMAP client would.

// imapBinaries are where distributions install Dovecot's imap and
// imap-login programs (Debian's dovecot-imapd: /usr/lib/dovecot).
var imapBinaries = []string{"/usr/lib/dovecot", "/usr/libexec/dovecot"}

// requireIMAP skips the test, or fails it under POPSYNC_REQUIRE_REAL=1,
// when Dovecot's IMAP server is not installed.
func requireIMAP(t testing.TB) {
	t.Helper()
	for _, dir := range imapBinaries {
		if _, err := os.Stat(filepath.Join(dir, "imap-login")); err == nil {
			return
		}
	}
	unavailable(t, fmt.Sprintf("Dovecot's IMAP server (imap-login) is not in %v (install dovecot-imapd)", imapBinaries))
}

func (d *Dovecot) imapPortCount() int {
	if d.opts.IMAP {
		return 2
	}
	return 0
}

func (d *Dovecot) setIMAPAddrs(ports []int) {
	d.IMAPAddr, d.IMAPTLSAddr = "", ""
	if len(ports) == 2 {
		d.IMAPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
		d.IMAPTLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	}
}

// imapConfig writes the imap-login service with both listeners.
func (d *Dovecot) imapConfig(p func(format string, args ...any)) {
	if !d.opts.IMAP {
		return
	}
	_, imapPort, _ := net.SplitHostPort(d.IMAPAddr)
	_, imapsPort, _ := net.SplitHostPort(d.IMAPTLSAddr)
	p("service imap-login {")
	p("  chroot =")
	p("  inet_listener imap {")
	p("    address = 127.0.0.1")
	p("    port = %s", imapPort)
	p("  }")
	p("  inet_listener imaps {")
	p("    address = 127.0.0.1")
	p("    port = %s", imapsPort)
	p("    ssl = yes")
	p("  }")
	p("}")
}

// checkIMAP reads the greeting of both IMAP listeners.
func (d *Dovecot) checkIMAP(dialer *net.Dialer, greet func(c net.Conn, name, want, quit string) error) error {
	if !d.opts.IMAP {
		return nil
	}
	c, err := dialer.Dial("tcp", d.IMAPAddr)
	if err != nil {
		return fmt.Errorf("connecting to imap listener: %w", err)
	}
	if err := greet(c, "imap", "* OK", "a LOGOUT"); err != nil {
		return err
	}
	tc, err := tls.DialWithDialer(dialer, "tcp", d.IMAPTLSAddr, d.TLSConfig())
	if err != nil {
		return fmt.Errorf("connecting to imaps listener: %w", err)
	}
	return greet(tc, "imaps", "* OK", "a LOGOUT")
}

// IMAPClient returns an IMAP client logged in as the User over implicit
// TLS, logged out when the test ends. Every read of the client has a
// deadline (go-imap's own, 30 s per response).
func (d *Dovecot) IMAPClient(t testing.TB) *imapclient.Client {
	t.Helper()
	if d.IMAPTLSAddr == "" {
		t.Fatal("dovecot was started without DovecotOptions.IMAP")
	}
	c, err := imapclient.DialTLS(d.IMAPTLSAddr, &imapclient.Options{
		TLSConfig: d.TLSConfig(),
		Dialer:    &net.Dialer{Timeout: ioTimeout},
	})
	if err != nil {
		t.Fatalf("connecting to dovecot imap: %v", err)
	}
	t.Cleanup(func() {
		c.Logout().Wait()
		c.Close()
	})
	if err := c.Login(d.User, d.Password).Wait(); err != nil {
		t.Fatalf("logging in to dovecot imap: %v", err)
	}
	return c
}

// IMAPMessage is one message of a mailbox as IMAP reports it.
type IMAPMessage struct {
	UID          uint32
	Body         []byte // BODY[]: the message with CRLF line endings
	InternalDate time.Time
	Flags        []string
}

// IMAPMessages returns every message of mailbox, by UID, with
// UID FETCH 1:* (UID FLAGS INTERNALDATE BODY.PEEK[]), and the mailbox's
// UIDVALIDITY. A mailbox that does not exist gives no messages and 0.
func (d *Dovecot) IMAPMessages(t testing.TB, mailbox string) ([]IMAPMessage, uint32) {
	t.Helper()
	c := d.IMAPClient(t)
	sel, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		// Dovecot 2.3 says "NO Mailbox doesn't exist", without the
		// NONEXISTENT code of RFC 5530.
		if list, lerr := c.List("", mailbox, nil).Collect(); lerr == nil && len(list) == 0 {
			return nil, 0
		}
		t.Fatalf("examining %s: %v", mailbox, err)
	}
	if sel.NumMessages == 0 {
		return nil, sel.UIDValidity
	}
	body := &imap.FetchItemBodySection{Peek: true}
	all := imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}}
	msgs, err := c.Fetch(all, &imap.FetchOptions{UID: true, Flags: true, InternalDate: true, BodySection: []*imap.FetchItemBodySection{body}}).Collect()
	if err != nil {
		t.Fatalf("fetching from %s: %v", mailbox, err)
	}
	out := make([]IMAPMessage, 0, len(msgs))
	for _, m := range msgs {
		im := IMAPMessage{UID: uint32(m.UID), Body: m.FindBodySection(body), InternalDate: m.InternalDate}
		for _, f := range m.Flags {
			im.Flags = append(im.Flags, string(f))
		}
		out = append(out, im)
	}
	slices.SortFunc(out, func(a, b IMAPMessage) int { return int(a.UID) - int(b.UID) })
	return out, sel.UIDValidity
}

// IMAPCapabilities returns the capabilities Dovecot offers after login.
func (d *Dovecot) IMAPCapabilities(t testing.TB) []string {
	t.Helper()
	c := d.IMAPClient(t)
	var caps []string
	for cp := range c.Caps() {
		caps = append(caps, string(cp))
	}
	slices.Sort(caps)
	return caps
}
