package pop3_test

// Integration tests of the client against a real Dovecot POP3 server, started
// by internal/realtest as an unprivileged process on 127.0.0.1 with a
// self-signed certificate. They skip without Dovecot and fail instead under
// POPSYNC_REQUIRE_REAL=1.
//
// One Dovecot instance serves every subtest of TestDovecot. The subtests that
// only read the mailbox run in parallel; the ones that change it run one
// after another in the order written, each stating what it leaves behind.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"popsync/fetch/pop3"
	"popsync/fetch/pop3/pop3test"
	"popsync/internal/realtest"
)

const (
	// dovecotTimeout is Options.Timeout in these tests: generous, since
	// it only bounds a hang.
	dovecotTimeout = 15 * time.Second
	// dovecotLogWait bounds the wait for a line in Dovecot's log. A
	// session process on a loaded machine may take a while to notice a
	// dropped connection; the wait costs nothing when the line comes.
	dovecotLogWait = 30 * time.Second
	// bulkMessages is the size of the pipelined RETR run.
	bulkMessages = 1000
)

// dovecotLoginLog adds the client's port to Dovecot's login log line, so a
// test can find the line (and the session id) of its own connection.
const dovecotLoginLog = "login_log_format_elements = user=<%u> method=%m rip=%r rport=%{rport} lip=%l mpid=%e %c session=<%{session}>"

func TestDovecot(t *testing.T) {
	d := realtest.StartDovecot(t, realtest.DovecotOptions{
		APOP:       true,
		Mechanisms: []string{"CRAM-MD5"},
		Config:     dovecotLoginLog,
	})
	// A small mailbox for everything but the bulk run: realistic CRLF mail
	// of every sample kind (dot lines, a long line, no final CRLF, ...)
	// and messages stored the Maildir way, with bare LF.
	small := [][]byte{}
	for _, m := range pop3test.SampleMessages(7, 1) {
		small = append(small, m.Data)
	}
	small = append(small, lfMessages()...)
	d.Deliver(t, small...)

	t.Run("TLS", func(t *testing.T) { testDovecotTLS(t, d, len(small)) })
	t.Run("Auth", func(t *testing.T) { testDovecotAuth(t, d, len(small)) })
	// Leaves the mailbox as it found it.
	t.Run("Commands", func(t *testing.T) { testDovecotCommands(t, d, small) })
	// Leaves the mailbox as it found it.
	t.Run("DeleWithoutQuit", func(t *testing.T) { testDovecotDeleWithoutQuit(t, d, small) })
	// Deletes the first and the last message.
	t.Run("DeleQuit", func(t *testing.T) { testDovecotDeleQuit(t, d) })
	// Adds a thousand messages and a few large ones, then deletes all.
	t.Run("Bulk", func(t *testing.T) { testDovecotBulk(t, d) })
}

// lfMessages are stored with bare LF line endings, as Maildir usually holds
// mail, including one that ends without a newline and lines that start
// with dots.
func lfMessages() [][]byte {
	return [][]byte{
		[]byte("From: Alice <alice@example.org>\nTo: me@example.net\nSubject: LF line endings\n" +
			"Date: Mon, 6 Jan 2025 09:00:00 +0000\n\nStored with LF.\n.\n..two dots\n.\n"),
		[]byte("From: Bob <bob@example.org>\nTo: me@example.net\nSubject: LF, no final newline\n" +
			"\nfirst line\n.last line, no newline"),
		[]byte("From: Carol <carol@example.org>\r\nSubject: mixed endings\r\n\nCRLF header, LF body\nline\r\nend\n"),
	}
}

// crlf turns every bare LF into CRLF, as Dovecot does on the POP3 wire
// (RFC 1939 §3: lines end with CRLF).
func crlf(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/16)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// onWire is a stored message as the body of Dovecot's RETR reply, after
// dot-unstuffing: bare LF sent as CRLF, and a message that does not end
// with a line ending gets a CRLF before the terminating "." line, since
// RFC 1939 §3 ends a multi-line reply with CRLF "." CRLF and the "." must
// start a line. The scan listing does not count that added CRLF (see
// listSize).
func onWire(stored []byte) []byte {
	out := crlf(stored)
	if !bytes.HasSuffix(out, []byte("\n")) {
		out = append(out, '\r', '\n')
	}
	return out
}

// listSize is the size Dovecot reports for a stored message in LIST and
// STAT: the CRLF form (its "virtual size"), without the CRLF added before
// the terminator to a message that lacks a final line ending.
func listSize(stored []byte) int64 { return int64(len(crlf(stored))) }

// top is what TOP n sends for a message whose RETR body is wire: the
// header, the blank line and the first n lines of the body.
func top(wire []byte, n int) []byte {
	i := bytes.Index(wire, []byte("\r\n\r\n"))
	if i < 0 {
		return wire
	}
	end := i + 4
	for ; n > 0 && end < len(wire); n-- {
		j := bytes.IndexByte(wire[end:], '\n')
		if j < 0 {
			return wire
		}
		end += j + 1
	}
	return wire[:end]
}

// countingConn counts the Write calls that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// connect dials addr and starts a client on the connection. It returns the
// connection too: its local port names the session in Dovecot's log.
func connect(t *testing.T, addr string, opts pop3.Options) (*pop3.Client, *countingConn, error) {
	t.Helper()
	if opts.Timeout == 0 {
		opts.Timeout = dovecotTimeout
	}
	var dialer net.Dialer
	raw, err := dialer.DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatalf("connecting to dovecot: %v", err)
	}
	conn := &countingConn{Conn: raw}
	c, err := pop3.NewClient(t.Context(), conn, opts)
	if err != nil {
		return nil, conn, err
	}
	t.Cleanup(func() { c.Close() })
	return c, conn, nil
}

// mustConnect is connect for a connection that must work.
func mustConnect(t *testing.T, addr string, opts pop3.Options) (*pop3.Client, *countingConn) {
	t.Helper()
	c, conn, err := connect(t, addr, opts)
	if err != nil {
		t.Fatalf("connecting to %s with security %v: %v", addr, opts.Security, err)
	}
	return c, conn
}

// login opens an implicit TLS session verified with the CA file and logs in
// with PLAIN.
func login(t *testing.T, d *realtest.Dovecot) (*pop3.Client, *countingConn) {
	t.Helper()
	c, conn := mustConnect(t, d.TLSAddr, pop3.Options{CAFile: d.CAFile})
	if err := c.Auth(t.Context(), pop3.MechPlain, d.User, d.Password); err != nil {
		t.Fatalf("logging in: %v", err)
	}
	return c, conn
}

func certSHA256(t *testing.T, c *pop3.Client) string {
	t.Helper()
	st, ok := c.TLSState()
	if !ok || len(st.PeerCertificates) == 0 {
		t.Fatalf("no TLS state or no peer certificate (TLS %v)", c.TLS())
	}
	sum := sha256.Sum256(st.PeerCertificates[0].Raw)
	return hex.EncodeToString(sum[:])
}

// formatPin is the server's fingerprint in the form the client's errors
// print it.
func formatPin(t *testing.T, d *realtest.Dovecot) string {
	t.Helper()
	sum, err := hex.DecodeString(d.CertSHA256)
	if err != nil {
		t.Fatal(err)
	}
	return pop3.FormatFingerprint(sum)
}

// checkSession logs in unless mech is "", runs STAT and QUIT, and checks
// the message count.
func checkSession(t *testing.T, c *pop3.Client, d *realtest.Dovecot, mech string, want int) {
	t.Helper()
	ctx := t.Context()
	if mech != "" {
		if err := c.Auth(ctx, mech, d.User, d.Password); err != nil {
			t.Fatalf("Auth(%s): %v", mech, err)
		}
	}
	n, _, err := c.Stat(ctx)
	if err != nil || n != want {
		t.Errorf("STAT = %d, %v; want %d messages", n, err, want)
	}
	if err := c.Quit(ctx); err != nil {
		t.Errorf("QUIT: %v", err)
	}
}

func testDovecotTLS(t *testing.T, d *realtest.Dovecot, count int) {
	t.Run("ImplicitCAFile", func(t *testing.T) {
		t.Parallel()
		c, _ := mustConnect(t, d.TLSAddr, pop3.Options{CAFile: d.CAFile})
		if !c.TLS() {
			t.Fatal("TLS() = false on implicit TLS")
		}
		st, _ := c.TLSState()
		if st.Version < tls.VersionTLS12 {
			t.Errorf("TLS version %#x, want 1.2 or later", st.Version)
		}
		if got := certSHA256(t, c); got != d.CertSHA256 {
			t.Errorf("peer certificate %s, want %s", got, d.CertSHA256)
		}
		if !strings.Contains(c.Greeting(), "Dovecot") {
			t.Errorf("greeting %q", c.Greeting())
		}
		checkSession(t, c, d, pop3.MechPlain, count)
	})
	t.Run("ImplicitCAFileServerName", func(t *testing.T) {
		t.Parallel()
		c, _ := mustConnect(t, d.TLSAddr, pop3.Options{CAFile: d.CAFile, ServerName: "localhost"})
		checkSession(t, c, d, pop3.MechPlain, count)
	})
	t.Run("ImplicitCAFileWrongHost", func(t *testing.T) {
		t.Parallel()
		_, _, err := connect(t, d.TLSAddr, pop3.Options{CAFile: d.CAFile, ServerName: "pop.example.org"})
		if !errors.Is(err, pop3.ErrCertificate) {
			t.Fatalf("err = %v, want ErrCertificate", err)
		}
		for _, want := range []string{`not valid for host "pop.example.org"`, formatPin(t, d)} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %s", err, want)
			}
		}
	})
	t.Run("ImplicitFingerprint", func(t *testing.T) {
		t.Parallel()
		pins := []string{d.CertSHA256, formatPin(t, d), "sha256:" + strings.ToUpper(d.CertSHA256)}
		for _, pin := range pins {
			// A pin replaces host name verification: any name works.
			c, _ := mustConnect(t, d.TLSAddr, pop3.Options{Fingerprint: pin, ServerName: "pop.example.org"})
			if got := certSHA256(t, c); got != d.CertSHA256 {
				t.Errorf("pin %s: peer certificate %s", pin, got)
			}
			checkSession(t, c, d, pop3.MechPlain, count)
		}
	})
	t.Run("ImplicitFingerprintMismatch", func(t *testing.T) {
		t.Parallel()
		wrong := []byte(d.CertSHA256)
		// Another first digit (the certificate is new every run).
		if wrong[0] == '0' {
			wrong[0] = '1'
		} else {
			wrong[0] = '0'
		}
		_, _, err := connect(t, d.TLSAddr, pop3.Options{Fingerprint: string(wrong), CAFile: d.CAFile})
		if !errors.Is(err, pop3.ErrFingerprintMismatch) {
			t.Fatalf("err = %v, want ErrFingerprintMismatch", err)
		}
		if !strings.Contains(err.Error(), formatPin(t, d)) {
			t.Errorf("error %q does not name the presented fingerprint %s", err, formatPin(t, d))
		}
	})
	t.Run("SystemRootsRefused", func(t *testing.T) {
		t.Parallel()
		// The zero Options: implicit TLS verified against the system
		// roots, which do not hold the self-signed certificate.
		_, _, err := connect(t, d.TLSAddr, pop3.Options{})
		if !errors.Is(err, pop3.ErrCertificate) || errors.Is(err, pop3.ErrFingerprintMismatch) {
			t.Fatalf("err = %v, want ErrCertificate", err)
		}
		pin := formatPin(t, d)
		if !strings.Contains(err.Error(), pin) || !strings.Contains(err.Error(), "unknown authority") {
			t.Fatalf("error %q does not say unknown authority and name the fingerprint %s", err, pin)
		}
		// What the error tells the user to pin works.
		c, _ := mustConnect(t, d.TLSAddr, pop3.Options{Fingerprint: err.Error()[strings.LastIndex(err.Error(), " ")+1:]})
		checkSession(t, c, d, pop3.MechPlain, count)
	})
	t.Run("STLS", func(t *testing.T) {
		t.Parallel()
		// Before the upgrade Dovecot offers STLS (seen here without TLS).
		plain, _ := mustConnect(t, d.Addr, pop3.Options{Security: pop3.SecurityNone})
		if !plain.Caps().Has("STLS") {
			t.Fatalf("plaintext CAPA lacks STLS: %v", plain.Caps().Names())
		}
		plain.Close()

		c, _ := mustConnect(t, d.Addr, pop3.Options{Security: pop3.SecuritySTARTTLS, CAFile: d.CAFile})
		if !c.TLS() {
			t.Fatal("TLS() = false after STLS")
		}
		if got := certSHA256(t, c); got != d.CertSHA256 {
			t.Errorf("peer certificate %s, want %s", got, d.CertSHA256)
		}
		// RFC 2595 §4: CAPA read again over TLS; STLS is gone from it.
		caps := c.Caps()
		if caps.Has("STLS") || !caps.Has("USER") || !caps.HasSASL("PLAIN") {
			t.Errorf("CAPA after STLS: %v, want USER and SASL PLAIN, no STLS", caps.Names())
		}
		checkSession(t, c, d, pop3.MechAuto, count)
	})
	t.Run("STLSFingerprintMismatch", func(t *testing.T) {
		t.Parallel()
		_, _, err := connect(t, d.Addr, pop3.Options{Security: pop3.SecuritySTARTTLS, Fingerprint: strings.Repeat("ab", 32)})
		if !errors.Is(err, pop3.ErrFingerprintMismatch) {
			t.Fatalf("err = %v, want ErrFingerprintMismatch", err)
		}
	})
	t.Run("None", func(t *testing.T) {
		t.Parallel()
		c, _ := mustConnect(t, d.Addr, pop3.Options{Security: pop3.SecurityNone})
		if c.TLS() {
			t.Error("TLS() = true with SecurityNone")
		}
		if _, ok := c.TLSState(); ok {
			t.Error("TLSState reports a TLS connection with SecurityNone")
		}
		checkSession(t, c, d, pop3.MechUser, count)
	})
	t.Run("NoPlaintextUnlessAsked", func(t *testing.T) {
		t.Parallel()
		// Implicit TLS (the default) against the plaintext port fails
		// in the handshake, on Dovecot's plaintext greeting; it never
		// falls back to plaintext.
		for _, opts := range []pop3.Options{{}, {CAFile: d.CAFile}, {Fingerprint: d.CertSHA256}} {
			c, _, err := connect(t, d.Addr, opts)
			var rhe tls.RecordHeaderError
			if err == nil {
				c.Close()
				t.Errorf("options %+v: connected to the plaintext port", opts)
			} else if !errors.As(err, &rhe) {
				t.Errorf("options %+v: %v, want a TLS record header error", opts, err)
			}
		}
	})
}

// loginRE matches Dovecot's login line (see dovecotLoginLog).
var loginRE = regexp.MustCompile(`Login: user=<[^>]*>, method=([A-Za-z0-9-]+), rip=[^,]*, rport=(\d+),.* session=<([^>]+)>`)

// dovecotLogin waits for the log line of the login from local port and
// returns the mechanism Dovecot saw and the session id.
func dovecotLogin(t *testing.T, d *realtest.Dovecot, conn net.Conn) (method, session string) {
	t.Helper()
	port := strconv.Itoa(conn.LocalAddr().(*net.TCPAddr).Port)
	waitLog(t, d, "the login from port "+port, func(log string) bool {
		// The last login from the port: a later connection could only
		// reuse the port after this one ended.
		for _, m := range loginRE.FindAllStringSubmatch(log, -1) {
			if m[2] == port {
				method, session = m[1], m[3]
			}
		}
		return session != ""
	})
	return method, session
}

// dovecotLogout waits for the end of the mail session and returns how
// Dovecot reports it: "Logged out ..." after QUIT, "Connection closed ..."
// when the client went away without it.
func dovecotLogout(t *testing.T, d *realtest.Dovecot, session string) string {
	t.Helper()
	re := regexp.MustCompile(`<` + regexp.QuoteMeta(session) + `>: Info: Disconnected: (.*)`)
	var end string
	waitLog(t, d, "the end of session "+session, func(log string) bool {
		if m := re.FindStringSubmatch(log); m != nil {
			end = m[1]
			return true
		}
		return false
	})
	return end
}

// waitLog polls Dovecot's log until found accepts it. Dovecot's log is the
// only place that says when a session it serves has ended (its processes
// write it asynchronously), so this is a bounded wait for that event.
func waitLog(t *testing.T, d *realtest.Dovecot, what string, found func(log string) bool) {
	t.Helper()
	deadline := time.Now().Add(dovecotLogWait)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if found(d.Log(t)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line for %s within %v", what, dovecotLogWait)
		}
		select {
		case <-tick.C:
		case <-t.Context().Done():
			t.Fatalf("waiting for %s: %v", what, t.Context().Err())
		}
	}
}

func testDovecotAuth(t *testing.T, d *realtest.Dovecot, count int) {
	// The mechanism as Dovecot logs it: USER/PASS is PLAIN inside
	// Dovecot, and auto over TLS prefers PLAIN.
	mechs := []struct{ mech, method, failCmd string }{
		{pop3.MechUser, "PLAIN", "PASS"},
		{pop3.MechAPOP, "APOP", "APOP"},
		{pop3.MechPlain, "PLAIN", "AUTH"},
		{pop3.MechLogin, "LOGIN", "AUTH"},
		{pop3.MechCRAMMD5, "CRAM-MD5", "AUTH"},
		{pop3.MechAuto, "PLAIN", "AUTH"},
	}
	for _, m := range mechs {
		t.Run(m.mech, func(t *testing.T) {
			t.Parallel()
			c, conn := mustConnect(t, d.TLSAddr, pop3.Options{CAFile: d.CAFile})
			if err := c.Auth(t.Context(), m.mech, d.User, d.Password); err != nil {
				t.Fatalf("Auth(%s): %v", m.mech, err)
			}
			// RFC 2449 §5: CAPA asked again in the TRANSACTION state.
			if caps := c.Caps(); !caps.Pipelining() || caps.Has("USER") || caps.Has("SASL") {
				t.Errorf("CAPA after login: %v, want PIPELINING and no USER or SASL", caps.Names())
			}
			checkSession(t, c, d, "", count)
			if method, _ := dovecotLogin(t, d, conn); method != m.method {
				t.Errorf("Dovecot logged method %s, want %s", method, m.method)
			}
		})
	}
	t.Run("auto-plaintext", func(t *testing.T) {
		t.Parallel()
		// Without TLS, auto prefers a mechanism that does not reveal
		// the password.
		c, conn := mustConnect(t, d.Addr, pop3.Options{Security: pop3.SecurityNone})
		if m, err := c.AutoMechanism(); m != pop3.MechCRAMMD5 || err != nil {
			t.Errorf("AutoMechanism() = %q, %v; want cram-md5", m, err)
		}
		checkSession(t, c, d, pop3.MechAuto, count)
		if method, _ := dovecotLogin(t, d, conn); method != "CRAM-MD5" {
			t.Errorf("Dovecot logged method %s, want CRAM-MD5", method)
		}
	})

	// Dovecot answers a failed login only on a 500 ms timer, whatever
	// auth_failure_delay says: these run in parallel.
	for _, m := range mechs {
		t.Run("wrong-password/"+m.mech, func(t *testing.T) {
			t.Parallel()
			wrong := "wrong-" + strings.Repeat("x", 8) + "-" + m.mech
			// The client logs from the calling goroutine only.
			var trace bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&trace, &slog.HandlerOptions{Level: pop3.LevelTraceAuth}))
			c, _ := mustConnect(t, d.TLSAddr, pop3.Options{CAFile: d.CAFile, Logger: logger})
			err := c.Auth(t.Context(), m.mech, d.User, wrong)
			var perr *pop3.Error
			if !errors.As(err, &perr) {
				t.Fatalf("Auth with a wrong password: %v, want *pop3.Error", err)
			}
			if perr.Code != "AUTH" || perr.Command != m.failCmd || perr.Temporary() {
				t.Errorf("error %#v, want Command %s, Code AUTH, not temporary", perr, m.failCmd)
			}
			secrets := []string{wrong, d.Password,
				base64.StdEncoding.EncodeToString([]byte(wrong)),
				base64.StdEncoding.EncodeToString([]byte(d.Password)),
				base64.StdEncoding.EncodeToString([]byte("\x00" + d.User + "\x00" + wrong)),
				base64.StdEncoding.EncodeToString([]byte("\x00" + d.User + "\x00" + d.Password)),
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error text %q contains the secret", err)
				}
			}
			// A -ERR leaves the session usable: log in properly now.
			checkSession(t, c, d, m.mech, count)
			out := trace.String()
			for _, s := range secrets {
				if strings.Contains(out, s) {
					t.Errorf("protocol trace contains a secret (%s):\n%s", s, out)
				}
			}
			if !strings.Contains(out, "<redacted>") {
				t.Errorf("protocol trace lacks <redacted>:\n%s", out)
			}
		})
	}
}

// bodyOf returns a function that reads a whole RETR or TOP body, failing
// the test on an error; bodyOf(t)(c.Retr(ctx, id)).
func bodyOf(t *testing.T) func(r io.Reader, err error) []byte {
	return func(r io.Reader, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatalf("fetching: %v", err)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("reading body: %v", err)
		}
		return b
	}
}

// wantPOP3Error checks that err is a -ERR reply to cmd with argument arg.
func wantPOP3Error(t *testing.T, err error, cmd, arg string) {
	t.Helper()
	var perr *pop3.Error
	if !errors.As(err, &perr) || perr.Command != cmd || perr.Arg != arg {
		t.Errorf("err = %v, want -ERR to %s %s", err, cmd, arg)
	}
}

// uidList returns the UIDL listing of a new session and ends it.
func uidList(t *testing.T, d *realtest.Dovecot) []pop3.UIDEntry {
	t.Helper()
	c, _ := login(t, d)
	u, err := c.UIDL(t.Context())
	if err != nil {
		t.Fatalf("UIDL: %v", err)
	}
	if err := c.Quit(t.Context()); err != nil {
		t.Fatalf("QUIT: %v", err)
	}
	return u
}

func testDovecotCommands(t *testing.T, d *realtest.Dovecot, delivered [][]byte) {
	ctx := t.Context()
	stored := d.Messages(t)
	if len(stored) != len(delivered) {
		t.Fatalf("dovecot stores %d messages, want %d", len(stored), len(delivered))
	}
	for i := range stored {
		if !bytes.Equal(stored[i], delivered[i]) {
			t.Fatalf("message %d is stored as %q, delivered as %q", i+1, stored[i], delivered[i])
		}
	}
	n := len(stored)
	c, _ := login(t, d)
	readBody := bodyOf(t)

	var total int64
	for _, m := range stored {
		total += listSize(m)
	}
	if count, size, err := c.Stat(ctx); count != n || size != total || err != nil {
		t.Errorf("STAT = %d %d, %v; want %d %d", count, size, err, n, total)
	}

	list, err := c.List(ctx)
	if err != nil {
		t.Fatalf("LIST: %v", err)
	}
	if len(list) != n {
		t.Fatalf("LIST has %d entries, want %d", len(list), n)
	}
	for i, e := range list {
		if want := (pop3.MessageInfo{ID: i + 1, Size: listSize(stored[i])}); e != want {
			t.Errorf("LIST entry %d = %+v, want %+v", i, e, want)
		}
		if one, err := c.ListOne(ctx, i+1); one != e || err != nil {
			t.Errorf("LIST %d = %+v, %v; want %+v", i+1, one, err, e)
		}
	}
	_, err = c.ListOne(ctx, n+1)
	wantPOP3Error(t, err, "LIST", strconv.Itoa(n+1))

	uids, err := c.UIDL(ctx)
	if err != nil {
		t.Fatalf("UIDL: %v", err)
	}
	if len(uids) != n {
		t.Fatalf("UIDL has %d entries, want %d", len(uids), n)
	}
	for i, u := range uids {
		// pop3_uidl_format %08Xu%08Xv: the IMAP UID, then UIDVALIDITY.
		// The mailbox was empty, so the UIDs are 1 to n.
		uid, err := strconv.ParseUint(u.UID[:min(8, len(u.UID))], 16, 32)
		if u.ID != i+1 || len(u.UID) != 16 || err != nil || uid != uint64(i+1) || u.UID[8:] != uids[0].UID[8:] {
			t.Errorf("UIDL entry %d = %+v", i, u)
		}
		if one, err := c.UIDLOne(ctx, i+1); one != u.UID || err != nil {
			t.Errorf("UIDL %d = %q, %v; want %q", i+1, one, err, u.UID)
		}
	}
	_, err = c.UIDLOne(ctx, n+1)
	wantPOP3Error(t, err, "UIDL", strconv.Itoa(n+1))

	for i, m := range stored {
		id, wire := i+1, onWire(m)
		if got := readBody(c.Retr(ctx, id)); !bytes.Equal(got, wire) {
			t.Errorf("RETR %d:\n got %q\nwant %q", id, got, wire)
		}
		for _, lines := range []int{0, 1, 3, 1 << 20} {
			if got, want := readBody(c.Top(ctx, id, lines)), top(wire, lines); !bytes.Equal(got, want) {
				t.Errorf("TOP %d %d:\n got %q\nwant %q", id, lines, got, want)
			}
		}
	}
	_, err = c.Retr(ctx, n+1)
	wantPOP3Error(t, err, "RETR", strconv.Itoa(n+1))

	// A body left unread is drained by the next command; reading it
	// afterwards fails.
	r, err := c.Retr(ctx, 3)
	if err != nil {
		t.Fatalf("RETR 3: %v", err)
	}
	if _, err := r.Read(make([]byte, 10)); err != nil {
		t.Fatalf("reading RETR 3: %v", err)
	}
	if err := c.Noop(ctx); err != nil {
		t.Fatalf("NOOP after a partly read body: %v", err)
	}
	if _, err := io.ReadAll(r); !errors.Is(err, pop3.ErrBodyClosed) {
		t.Errorf("reading a drained body: %v, want ErrBodyClosed", err)
	}

	// DELE hides a message from this session; RSET brings it back.
	if err := c.Dele(ctx, 2); err != nil {
		t.Fatalf("DELE 2: %v", err)
	}
	wantPOP3Error(t, c.Dele(ctx, 2), "DELE", "2")
	_, err = c.Retr(ctx, 2)
	wantPOP3Error(t, err, "RETR", "2")
	_, err = c.ListOne(ctx, 2)
	wantPOP3Error(t, err, "LIST", "2")
	if count, size, err := c.Stat(ctx); count != n-1 || size != total-listSize(stored[1]) || err != nil {
		t.Errorf("STAT after DELE 2 = %d %d, %v", count, size, err)
	}
	if l, err := c.List(ctx); err != nil || len(l) != n-1 || slices.ContainsFunc(l, func(e pop3.MessageInfo) bool { return e.ID == 2 }) {
		t.Errorf("LIST after DELE 2 = %v, %v", l, err)
	}
	if u, err := c.UIDL(ctx); err != nil || len(u) != n-1 || u[0] != uids[0] || u[1] != uids[2] {
		t.Errorf("UIDL after DELE 2 = %v, %v", u, err)
	}
	if err := c.Rset(ctx); err != nil {
		t.Fatalf("RSET: %v", err)
	}
	if count, size, err := c.Stat(ctx); count != n || size != total || err != nil {
		t.Errorf("STAT after RSET = %d %d, %v", count, size, err)
	}
	if got := readBody(c.Retr(ctx, 2)); !bytes.Equal(got, onWire(stored[1])) {
		t.Errorf("RETR 2 after RSET differs")
	}
	if err := c.Noop(ctx); err != nil {
		t.Errorf("NOOP: %v", err)
	}
	if err := c.Quit(ctx); err != nil {
		t.Fatalf("QUIT: %v", err)
	}
	if err := c.Noop(ctx); !errors.Is(err, pop3.ErrClosed) {
		t.Errorf("NOOP after QUIT: %v, want ErrClosed", err)
	}
	if got := d.Messages(t); !slices.EqualFunc(got, stored, bytes.Equal) {
		t.Errorf("the mailbox changed in a session without a committed DELE: %d messages", len(got))
	}
	if got := uidList(t, d); !slices.Equal(got, uids) {
		t.Errorf("UIDL in a new session = %v, want %v", got, uids)
	}
}

func testDovecotDeleWithoutQuit(t *testing.T, d *realtest.Dovecot, stored [][]byte) {
	ctx := t.Context()
	n := len(stored)
	before := uidList(t, d)

	c, conn := login(t, d)
	perID, err := c.DeleEach(ctx, seq(n))
	if err != nil || slices.ContainsFunc(perID, func(e error) bool { return e != nil }) {
		t.Fatalf("DeleEach = %v, %v", perID, err)
	}
	if count, _, err := c.Stat(ctx); count != 0 || err != nil {
		t.Fatalf("STAT after deleting all = %d, %v", count, err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	checkDropped(t, d, conn, n)
	if got := uidList(t, d); !slices.Equal(got, before) {
		t.Errorf("UIDL after the dropped sessions = %v, want %v", got, before)
	}
	if got := d.Messages(t); !slices.EqualFunc(got, stored, bytes.Equal) {
		t.Errorf("the mailbox changed: %d messages", len(got))
	}
}

// checkDropped waits for Dovecot to end the session of conn and checks
// that it saw the connection close without QUIT and deleted nothing.
func checkDropped(t *testing.T, d *realtest.Dovecot, conn net.Conn, want int) {
	t.Helper()
	_, session := dovecotLogin(t, d, conn)
	// Dovecot counts in del= only what it expunged.
	if end := dovecotLogout(t, d, session); !strings.HasPrefix(end, "Connection closed") || !strings.Contains(end, " del=0/") {
		t.Errorf("dovecot ended the session with %q, want a closed connection without QUIT and del=0", end)
	}
	if got := d.Count(t); got != want {
		t.Errorf("dovecot stores %d messages, want %d", got, want)
	}
}

func testDovecotDeleQuit(t *testing.T, d *realtest.Dovecot) {
	ctx := t.Context()
	stored := d.Messages(t)
	before := uidList(t, d)
	n := len(stored)
	if n < 3 {
		t.Fatalf("%d messages, want at least 3", n)
	}
	c, conn := login(t, d)
	if err := c.Dele(ctx, 1); err != nil {
		t.Fatalf("DELE 1: %v", err)
	}
	if err := c.Dele(ctx, n); err != nil {
		t.Fatalf("DELE %d: %v", n, err)
	}
	if err := c.Quit(ctx); err != nil {
		t.Fatalf("QUIT: %v", err)
	}
	// RFC 1939 §6: the server deletes in the UPDATE state, before it
	// answers QUIT, so the files are gone now.
	if got, want := d.Messages(t), stored[1:n-1]; !slices.EqualFunc(got, want, bytes.Equal) {
		t.Errorf("after DELE 1, DELE %d, QUIT: %d messages stored, want %d (the middle ones)", n, len(got), len(want))
	}
	_, session := dovecotLogin(t, d, conn)
	if end := dovecotLogout(t, d, session); !strings.HasPrefix(end, "Logged out") || !strings.Contains(end, fmt.Sprintf("del=2/%d", n)) {
		t.Errorf("dovecot ended the session with %q, want a logout with del=2/%d", end, n)
	}
	// The remaining messages keep their unique-ids; numbers start at 1.
	after := uidList(t, d)
	if len(after) != n-2 {
		t.Fatalf("UIDL after QUIT has %d entries, want %d", len(after), n-2)
	}
	for i, u := range after {
		if u.ID != i+1 || u.UID != before[i+1].UID {
			t.Errorf("UIDL entry %d = %+v, want id %d uid %s", i, u, i+1, before[i+1].UID)
		}
	}
}

func seq(n int) []int {
	ids := make([]int, n)
	for i := range ids {
		ids[i] = i + 1
	}
	return ids
}

func testDovecotBulk(t *testing.T, d *realtest.Dovecot) {
	ctx := t.Context()
	var add [][]byte
	for i, m := range pop3test.SampleMessages(bulkMessages, 2) {
		add = append(add, m.Data)
		if i == bulkMessages/2 {
			add = append(add, pop3test.LargeMessage(3<<20+12345, 1).Data)
		}
	}
	add = append(add, pop3test.LargeMessage(2<<20, 2).Data, pop3test.LargeMessage(5<<20, 3).Data)
	add = append(add, lfMessages()...)
	old := d.Count(t)
	d.Deliver(t, add...)
	stored := d.Messages(t)
	if len(stored) != old+len(add) {
		t.Fatalf("dovecot stores %d messages, want %d", len(stored), old+len(add))
	}
	for i, m := range add {
		if !bytes.Equal(stored[old+i], m) {
			t.Fatalf("message %d of the new ones is not stored as delivered", i+1)
		}
	}
	n := len(stored)
	ids := seq(n)
	large := slices.IndexFunc(stored, func(m []byte) bool { return len(m) > 4<<20 }) + 1

	t.Run("CancelledRetr", func(t *testing.T) {
		// A RETR cancelled in the middle of a 5 MB message poisons the
		// client; Quit then sends nothing, so the DELE marks die with
		// the connection.
		c, conn := login(t, d)
		others := slices.DeleteFunc(slices.Clone(ids), func(id int) bool { return id == large })
		if _, err := c.DeleEach(ctx, others); err != nil {
			t.Fatalf("DeleEach: %v", err)
		}
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		r, err := c.Retr(rctx, large)
		if err != nil {
			t.Fatalf("RETR %d: %v", large, err)
		}
		if _, err := io.ReadFull(r, make([]byte, 1000)); err != nil {
			t.Fatalf("reading RETR %d: %v", large, err)
		}
		cancel()
		if _, err := io.Copy(io.Discard, r); !errors.Is(err, context.Canceled) {
			t.Fatalf("reading on after the cancellation: %v, want context.Canceled", err)
		}
		if err := c.Quit(ctx); !errors.Is(err, pop3.ErrPoisoned) || !errors.Is(err, context.Canceled) {
			t.Errorf("Quit after a cancelled RETR: %v, want ErrPoisoned and context.Canceled", err)
		}
		checkDropped(t, d, conn, n)
	})

	start := time.Now()
	c, conn := login(t, d)
	if !c.Caps().Pipelining() {
		t.Fatalf("no PIPELINING after login: %v", c.Caps().Names())
	}
	list, err := c.List(ctx)
	if err != nil || len(list) != n {
		t.Fatalf("LIST: %d entries, %v; want %d", len(list), err, n)
	}
	for i, e := range list {
		if e.Size != listSize(stored[i]) {
			t.Errorf("LIST %d: size %d, want %d", e.ID, e.Size, listSize(stored[i]))
		}
	}

	writes := conn.writes.Load()
	next, octets := 1, int64(0)
	err = c.RetrEach(ctx, ids, func(id int, body io.Reader, err error) error {
		if err != nil {
			return fmt.Errorf("RETR %d: %w", id, err)
		}
		if id != next {
			return fmt.Errorf("RetrEach handed out %d, want %d", id, next)
		}
		next++
		got, err := io.ReadAll(body)
		if err != nil {
			return fmt.Errorf("reading RETR %d: %w", id, err)
		}
		octets += int64(len(got))
		if want := onWire(stored[id-1]); !bytes.Equal(got, want) {
			return fmt.Errorf("RETR %d: %d octets differ from the %d stored ones (as sent on the wire) from offset %d",
				id, len(got), len(want), firstDiff(got, want))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("RetrEach: %v", err)
	}
	if next != n+1 {
		t.Fatalf("RetrEach handed out %d messages, want %d", next-1, n)
	}
	// Pipelined, the commands go out a batch per write; in lockstep
	// they would take n writes.
	if w := conn.writes.Load() - writes; w > int64(n/8) {
		t.Errorf("RETR of %d messages took %d socket writes: not pipelined", n, w)
	}
	t.Logf("RetrEach of %d messages, %d octets, %d socket writes, in %v", n, octets, conn.writes.Load()-writes, time.Since(start))

	next = 1
	err = c.TopEach(ctx, ids, 0, func(id int, body io.Reader, err error) error {
		if err != nil {
			return fmt.Errorf("TOP %d 0: %w", id, err)
		}
		next++
		got, err := io.ReadAll(body)
		if err != nil {
			return fmt.Errorf("reading TOP %d 0: %w", id, err)
		}
		if want := top(onWire(stored[id-1]), 0); !bytes.Equal(got, want) {
			return fmt.Errorf("TOP %d 0: differs from the header from offset %d", id, firstDiff(got, want))
		}
		return nil
	})
	if err != nil || next != n+1 {
		t.Fatalf("TopEach: %v after %d messages", err, next-1)
	}

	perID, err := c.DeleEach(ctx, ids)
	if err != nil {
		t.Fatalf("DeleEach: %v", err)
	}
	for i, e := range perID {
		if e != nil {
			t.Errorf("DELE %d: %v", ids[i], e)
		}
	}
	if count, size, err := c.Stat(ctx); count != 0 || size != 0 || err != nil {
		t.Errorf("STAT after deleting all = %d %d, %v", count, size, err)
	}
	if err := c.Quit(ctx); err != nil {
		t.Fatalf("QUIT: %v", err)
	}
	if got := d.Count(t); got != 0 {
		t.Errorf("dovecot stores %d messages after DELE of all and QUIT, want 0", got)
	}
	t.Logf("bulk session of %d messages in %v", n, time.Since(start))
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
