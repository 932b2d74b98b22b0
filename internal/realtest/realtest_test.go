package realtest

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// popConn is a bare POP3 client over net/textproto, enough to prove the
// server works; it is not popsync's client.
type popConn struct {
	t        testing.TB
	conn     net.Conn
	tp       *textproto.Conn
	greeting string
}

func dialPOP(t testing.TB, addr string, cfg *tls.Config) *popConn {
	t.Helper()
	var c net.Conn
	var err error
	d := &net.Dialer{Timeout: ioTimeout}
	if cfg != nil {
		c, err = tls.DialWithDialer(d, "tcp", addr, cfg)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	p := &popConn{t: t}
	p.attach(c)
	t.Cleanup(func() { p.conn.Close() })
	p.greeting = p.ok(p.line())
	return p
}

func (p *popConn) attach(c net.Conn) {
	p.conn = c
	p.tp = textproto.NewConn(c)
}

func (p *popConn) deadline() {
	p.t.Helper()
	if err := p.conn.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		p.t.Fatal(err)
	}
}

func (p *popConn) line() string {
	p.t.Helper()
	p.deadline()
	l, err := p.tp.ReadLine()
	if err != nil {
		p.t.Fatalf("reading reply: %v", err)
	}
	return l
}

// ok checks a status line is +OK and returns the rest.
func (p *popConn) ok(line string) string {
	p.t.Helper()
	if line != "+OK" && !strings.HasPrefix(line, "+OK ") {
		p.t.Fatalf("want +OK, got %q", line)
	}
	return strings.TrimPrefix(strings.TrimPrefix(line, "+OK"), " ")
}

// send writes one command line and returns the reply line.
func (p *popConn) send(format string, args ...any) string {
	p.t.Helper()
	p.deadline()
	if err := p.tp.PrintfLine(format, args...); err != nil {
		p.t.Fatalf("sending %q: %v", format, err)
	}
	return p.line()
}

// cmd sends a command that must succeed and returns the text after +OK.
func (p *popConn) cmd(format string, args ...any) string {
	p.t.Helper()
	return p.ok(p.send(format, args...))
}

// multi sends a command with a multi-line answer and returns the body,
// dot-unstuffed, with LF line endings (RFC 1939 §3).
func (p *popConn) multi(format string, args ...any) []byte {
	p.t.Helper()
	p.cmd(format, args...)
	p.deadline()
	b, err := io.ReadAll(p.tp.DotReader())
	if err != nil {
		p.t.Fatalf("reading %q body: %v", format, err)
	}
	return b
}

func (p *popConn) lines(format string, args ...any) []string {
	p.t.Helper()
	return strings.Fields(string(p.multi(format, args...)))
}

func (p *popConn) capa() []string {
	p.t.Helper()
	return strings.Split(strings.TrimSuffix(string(p.multi("CAPA")), "\n"), "\n")
}

func (p *popConn) login(user, pass string) {
	p.t.Helper()
	p.cmd("USER %s", user)
	p.cmd("PASS %s", pass)
}

// startTLS upgrades the connection after STLS (RFC 2595 §4).
func (p *popConn) startTLS(cfg *tls.Config) *tls.Conn {
	p.t.Helper()
	p.cmd("STLS")
	tc := tls.Client(p.conn, cfg)
	p.deadline()
	if err := tc.Handshake(); err != nil {
		p.t.Fatalf("TLS handshake after STLS: %v", err)
	}
	p.attach(tc)
	return tc
}

func (p *popConn) quit() {
	p.t.Helper()
	p.cmd("QUIT")
}

var sampleMsgs = [][]byte{
	[]byte("From: a@example.test\nTo: popsync@example.test\nSubject: one\n\nfirst body\n"),
	[]byte("From: b@example.test\nSubject: two\n\n.a line that needs dot-stuffing\n..and another\n.\nend\n"),
	[]byte("From: c@example.test\nSubject: three\n\n" + strings.Repeat("a longer line of the third message\n", 2000)),
}

func hasLine(lines []string, want string) bool { return slices.Contains(lines, want) }

// uidValidity reads the mailbox's UIDVALIDITY from dovecot-uidlist.
func uidValidity(t *testing.T, d *Dovecot) uint32 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.Maildir, "dovecot-uidlist"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`^3 V(\d+) `).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no UIDVALIDITY in uidlist %q", b)
	}
	v, err := strconv.ParseUint(string(m[1]), 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(v)
}

func TestPlainSession(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{})
	if d.Count(t) != 0 || len(d.Messages(t)) != 0 {
		t.Fatalf("new server is not empty: %d messages", d.Count(t))
	}
	d.Deliver(t, sampleMsgs...)
	if got := d.Count(t); got != 3 {
		t.Fatalf("Count after Deliver = %d, want 3", got)
	}
	// Before any session there is no dovecot-uidlist: the order comes
	// from the file names alone.
	if got := d.Messages(t); !slices.EqualFunc(got, sampleMsgs, bytes.Equal) {
		t.Fatalf("Messages after Deliver = %q, want the delivered ones in order", got)
	}

	p := dialPOP(t, d.Addr, nil)
	if strings.Contains(p.greeting, "<") {
		t.Errorf("greeting %q has an APOP timestamp, but APOP is off", p.greeting)
	}
	capa := p.capa()
	for _, want := range []string{"TOP", "UIDL", "USER", "STLS", "PIPELINING", "RESP-CODES", "AUTH-RESP-CODE", "SASL PLAIN LOGIN"} {
		if !hasLine(capa, want) {
			t.Errorf("CAPA %q lacks %q", capa, want)
		}
	}
	p.login(d.User, d.Password)

	var total int
	for _, m := range sampleMsgs {
		// STAT and LIST count octets as sent: CRLF line endings.
		total += len(m) + bytes.Count(m, []byte("\n"))
	}
	if got, want := p.cmd("STAT"), fmt.Sprintf("3 %d", total); got != want {
		t.Errorf("STAT = %q, want %q", got, want)
	}

	// pop3_uidl_format = %08Xu%08Xv: UID, then UIDVALIDITY; UIDs follow
	// the Deliver order.
	uidl := p.lines("UIDL")
	v := uidValidity(t, d)
	for i := range 3 {
		want := fmt.Sprintf("%08x%08x", i+1, v)
		if uidl[2*i] != strconv.Itoa(i+1) || !strings.EqualFold(uidl[2*i+1], want) {
			t.Errorf("UIDL line %d = %q, want %d %s", i+1, uidl[2*i:2*i+2], i+1, want)
		}
	}
	for i, m := range sampleMsgs {
		if got := p.multi("RETR %d", i+1); !bytes.Equal(got, m) {
			t.Errorf("RETR %d = %q, want %q", i+1, got, m)
		}
	}
	p.cmd("DELE 2")
	p.quit()

	if got, want := d.Messages(t), [][]byte{sampleMsgs[0], sampleMsgs[2]}; !slices.EqualFunc(got, want, bytes.Equal) {
		t.Fatalf("after DELE 2 and QUIT the server holds %q, want messages 1 and 3", got)
	}

	// Mail delivered after Dovecot has indexed the mailbox comes last.
	fourth := []byte("Subject: four\n\nlate\n")
	d.Deliver(t, fourth)
	if got, want := d.Messages(t), [][]byte{sampleMsgs[0], sampleMsgs[2], fourth}; !slices.EqualFunc(got, want, bytes.Equal) {
		t.Fatalf("after another Deliver the server holds %d messages, want 1, 3 and four", len(got))
	}
	p = dialPOP(t, d.Addr, nil)
	p.login(d.User, d.Password)
	uidl = p.lines("UIDL")
	if len(uidl) != 6 || !strings.EqualFold(uidl[5], fmt.Sprintf("%08x%08x", 4, v)) {
		t.Errorf("UIDL after redelivery = %q, want message 3 with UID 4", uidl)
	}
	if got := p.multi("RETR 3"); !bytes.Equal(got, fourth) {
		t.Errorf("RETR 3 = %q, want %q", got, fourth)
	}
	p.quit()
	if got := d.Count(t); got != 3 {
		t.Errorf("Count = %d, want 3 (RETR deletes nothing)", got)
	}
	if log := d.Log(t); !strings.Contains(log, "retr=3/") || !strings.Contains(log, "del=1/3") {
		t.Errorf("dovecot log lacks the first session's summary:\n%s", log)
	}
}

func TestSTLS(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{})
	d.Deliver(t, sampleMsgs[0])

	for _, name := range []string{"localhost", "127.0.0.1"} {
		t.Run(name, func(t *testing.T) {
			pool := x509.NewCertPool()
			pem, err := os.ReadFile(d.CAFile)
			if err != nil {
				t.Fatal(err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				t.Fatalf("CAFile %s holds no certificate", d.CAFile)
			}
			p := dialPOP(t, d.Addr, nil)
			tc := p.startTLS(&tls.Config{RootCAs: pool, ServerName: name})
			st := tc.ConnectionState()
			if st.Version < tls.VersionTLS12 {
				t.Errorf("TLS version %x, want at least 1.2", st.Version)
			}
			sum := sha256.Sum256(st.PeerCertificates[0].Raw)
			if got := hex.EncodeToString(sum[:]); got != d.CertSHA256 {
				t.Errorf("server certificate SHA-256 %s, CertSHA256 says %s", got, d.CertSHA256)
			}
			if capa := p.capa(); hasLine(capa, "STLS") {
				t.Errorf("CAPA after STLS still offers STLS: %q", capa)
			}
			p.login(d.User, d.Password)
			if got := p.multi("RETR 1"); !bytes.Equal(got, sampleMsgs[0]) {
				t.Errorf("RETR 1 over STLS = %q", got)
			}
			p.quit()
		})
	}
}

func TestImplicitTLS(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{})
	d.Deliver(t, sampleMsgs[1])

	p := dialPOP(t, d.TLSAddr, d.TLSConfig())
	if capa := p.capa(); hasLine(capa, "STLS") {
		t.Errorf("CAPA on the TLS port offers STLS: %q", capa)
	}
	// AUTH PLAIN with an initial response (RFC 5034 §4, RFC 4616).
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + d.User + "\x00" + d.Password))
	p.cmd("AUTH PLAIN %s", ir)
	if got := p.cmd("STAT"); !strings.HasPrefix(got, "1 ") {
		t.Errorf("STAT = %q, want 1 message", got)
	}
	if got := p.multi("RETR 1"); !bytes.Equal(got, sampleMsgs[1]) {
		t.Errorf("RETR 1 over TLS = %q", got)
	}
	p.quit()

	// ssl_min_protocol = TLSv1.2: older clients are refused.
	old := d.TLSConfig()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", d.TLSAddr, old)
	if err == nil {
		c.Close()
		t.Error("a TLS 1.1 handshake succeeded")
	}

	// A client that trusts only the system roots must reject the server.
	c, err = tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", d.TLSAddr, &tls.Config{ServerName: "localhost"})
	if err == nil {
		c.Close()
		t.Error("the self-signed certificate passed verification against the system roots")
	}
}

func TestAPOP(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{APOP: true})
	d.Deliver(t, sampleMsgs[0])

	digest := func(greeting, secret string) string {
		ts := regexp.MustCompile(`<[^<>]+@[^<>]+>`).FindString(greeting)
		if ts == "" {
			t.Fatalf("greeting %q has no APOP timestamp", greeting)
		}
		sum := md5.Sum([]byte(ts + secret)) // RFC 1939 §7
		return hex.EncodeToString(sum[:])
	}

	p := dialPOP(t, d.Addr, nil)
	if reply := p.send("APOP %s %s", d.User, digest(p.greeting, "wrong"+d.Password)); !strings.HasPrefix(reply, "-ERR") {
		t.Fatalf("APOP with a wrong secret: %q, want -ERR", reply)
	}
	p = dialPOP(t, d.Addr, nil)
	p.cmd("APOP %s %s", d.User, digest(p.greeting, d.Password))
	if got := p.cmd("STAT"); !strings.HasPrefix(got, "1 ") {
		t.Errorf("STAT after APOP = %q", got)
	}
	p.quit()
}

func TestCRAMMD5(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{Mechanisms: []string{"CRAM-MD5"}})

	auth := func(secret string) string {
		p := dialPOP(t, d.Addr, nil)
		if capa := p.capa(); !hasLine(capa, "SASL PLAIN LOGIN CRAM-MD5") {
			t.Fatalf("CAPA %q does not offer CRAM-MD5", capa)
		}
		// RFC 5034 §4 with RFC 2195: the challenge comes after "+ ".
		line := p.send("AUTH CRAM-MD5")
		enc, ok := strings.CutPrefix(line, "+ ")
		if !ok {
			t.Fatalf("AUTH CRAM-MD5: %q, want a challenge", line)
		}
		challenge, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			t.Fatalf("decoding challenge %q: %v", enc, err)
		}
		mac := hmac.New(md5.New, []byte(secret))
		mac.Write(challenge)
		resp := d.User + " " + hex.EncodeToString(mac.Sum(nil))
		reply := p.send("%s", base64.StdEncoding.EncodeToString([]byte(resp)))
		if strings.HasPrefix(reply, "+OK") {
			p.cmd("STAT")
			p.quit()
		}
		return reply
	}
	if reply := auth(d.Password); !strings.HasPrefix(reply, "+OK") {
		t.Errorf("CRAM-MD5 with the right password: %q", reply)
	}
	if reply := auth("not-" + d.Password); !strings.HasPrefix(reply, "-ERR [AUTH]") {
		t.Errorf("CRAM-MD5 with a wrong password: %q, want -ERR [AUTH]", reply)
	}
}

func TestLMTP(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{LMTP: true})
	if d.LMTPAddr == "" {
		t.Fatal("LMTP requested but LMTPAddr is empty")
	}
	d.Deliver(t, sampleMsgs[0])

	c, err := net.DialTimeout("tcp", d.LMTPAddr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	tp := textproto.NewConn(c)
	step := func(code int, format string, args ...any) {
		t.Helper()
		if format != "" {
			if err := tp.PrintfLine(format, args...); err != nil {
				t.Fatal(err)
			}
		}
		if _, msg, err := tp.ReadResponse(code); err != nil {
			t.Fatalf("%q: %v %s", format, err, msg)
		}
	}
	step(220, "")
	step(250, "LHLO realtest.test")
	step(250, "MAIL FROM:<sender@example.test>")
	step(250, "RCPT TO:<%s>", d.User)
	step(354, "DATA")
	w := tp.DotWriter()
	if _, err := io.WriteString(w, "Subject: via lmtp\r\n\r\nlmtp body\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	step(250, "") // one reply per accepted recipient (RFC 2033 §4.2)
	step(221, "QUIT")

	// Dovecot gives the LMTP message its UID at once, while the file
	// Deliver put into new/ gets one at the next sync: Messages must
	// report the order POP3 will use, whatever it is.
	msgs := d.Messages(t)
	if len(msgs) != 2 {
		t.Fatalf("server holds %d messages, want 2: %q", len(msgs), msgs)
	}
	var lmtpMsg []byte
	for _, m := range msgs {
		if bytes.Contains(m, []byte("Subject: via lmtp")) {
			lmtpMsg = m
		}
	}
	if !bytes.HasSuffix(lmtpMsg, []byte("\nlmtp body\n")) || !bytes.Contains(lmtpMsg, []byte("Delivered-To: "+d.User)) {
		t.Errorf("LMTP message stored as %q", lmtpMsg)
	}
	p := dialPOP(t, d.Addr, nil)
	p.login(d.User, d.Password)
	for i, m := range msgs {
		if got := p.multi("RETR %d", i+1); !bytes.Equal(got, m) {
			t.Errorf("RETR %d = %q, want Messages()[%d] = %q", i+1, got, i, m)
		}
	}
	p.quit()
}

func TestExtraConfig(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{Config: "login_greeting = realtest greeting\npop3_uidl_format = %f"})
	d.Deliver(t, sampleMsgs[0])
	p := dialPOP(t, d.Addr, nil)
	if !strings.Contains(p.greeting, "realtest greeting") {
		t.Errorf("greeting %q, want the configured one", p.greeting)
	}
	entries, err := os.ReadDir(filepath.Join(d.Maildir, "new"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("new/ holds %v (%v), want one file", entries, err)
	}
	p.login(d.User, d.Password)
	// The appended pop3_uidl_format overrides the generated one.
	if uidl := p.lines("UIDL"); len(uidl) != 2 || uidl[1] != entries[0].Name() {
		t.Errorf("UIDL = %q, want the file name %s", uidl, entries[0].Name())
	}
	p.quit()
}

func TestStopAndCleanup(t *testing.T) {
	t.Parallel()
	var dir, addr string
	var pid int
	t.Run("server", func(t *testing.T) {
		d := StartDovecot(t, DovecotOptions{})
		dir, addr, pid = d.Dir, d.Addr, d.proc.Process.Pid
		if _, err := os.Stat(filepath.Join(dir, "run", "master.pid")); err != nil {
			t.Errorf("no pid file: %v", err)
		}
		d.Stop(t)
		if c, err := net.DialTimeout("tcp", addr, ioTimeout); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after Stop", addr)
		}
		d.Stop(t) // twice is fine
	})
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("instance directory %s left behind: %v", dir, err)
	}
	// The master was waited for, so its pid is free: nothing by that pid
	// may still be our Dovecot.
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Contains(b, []byte(dir)) {
		t.Errorf("dovecot pid %d still runs", pid)
	}
}

func TestRunsUnprivileged(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{})
	st, err := os.Stat(d.Maildir)
	if err != nil {
		t.Fatal(err)
	}
	owner := int(st.Sys().(*syscall.Stat_t).Uid)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.proc.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	uid := regexp.MustCompile(`(?m)^Uid:\s+(\d+)`).FindSubmatch(b)
	if uid == nil {
		t.Fatalf("no Uid in /proc status")
	}
	if string(uid[1]) == "0" {
		t.Error("dovecot master runs as root")
	}
	if string(uid[1]) != strconv.Itoa(owner) {
		t.Errorf("dovecot runs as uid %s but the Maildir belongs to %d", uid[1], owner)
	}
	d.Deliver(t, sampleMsgs[0])
	entries, err := os.ReadDir(filepath.Join(d.Maildir, "new"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("new/ holds %v (%v), want one file", entries, err)
	}
	info, err := entries[0].Info()
	if err != nil {
		t.Fatal(err)
	}
	if got := int(info.Sys().(*syscall.Stat_t).Uid); got != owner {
		t.Errorf("delivered file belongs to uid %d, want %d", got, owner)
	}
}

func TestStartRetriesTakenPort(t *testing.T) {
	t.Parallel()
	Require(t, "dovecot")
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port

	var mu sync.Mutex
	calls := 0
	pick := func() (int, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			return takenPort, nil
		}
		return freePort()
	}
	d := startDovecot(t, DovecotOptions{}, pick)
	if d.Addr == taken.Addr().String() {
		t.Fatalf("dovecot claims the taken port %s", d.Addr)
	}
	if calls < 4 {
		t.Errorf("ports were picked %d times, want a second round after the taken port", calls)
	}
	p := dialPOP(t, d.Addr, nil)
	p.login(d.User, d.Password)
	p.quit()
}

func TestOptionsRejected(t *testing.T) {
	for _, o := range []DovecotOptions{
		{User: "Upper"},
		{User: "a:b"},
		{Password: "x\ny"},
		{Mechanisms: []string{"CRAM MD5"}},
	} {
		if err := o.fill(); err == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
	o := DovecotOptions{}
	if err := o.fill(); err != nil || o.User == "" || len(o.Password) < 16 {
		t.Errorf("defaults: %+v, %v", o, err)
	}
}

func TestMaildirCompare(t *testing.T) {
	// Sorted the way Dovecot hands out UIDs to new files.
	names := []string{
		"99.M999P1.host",
		"100.M5P1.host",
		"100.M10P1.host:2,S",
		"100.M10P2.host",
		"100.other",
		"100.plain",
		"1795600550.M847766P10892.vm,S=203,W=213",
	}
	for i := range names {
		for j := range names {
			got := maildirCompare(names[i], names[j])
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if (got < 0) != (want < 0) || (got > 0) != (want > 0) {
				t.Errorf("maildirCompare(%q, %q) = %d, want sign %d", names[i], names[j], got, want)
			}
		}
	}
}

// fakeTB records how Require ended a test.
type fakeTB struct {
	testing.TB
	mu      sync.Mutex
	skipped bool
	failed  bool
	msg     string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skipf(format string, args ...any) {
	f.mu.Lock()
	f.skipped, f.msg = true, fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func runRequire(programs ...string) *fakeTB {
	f := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Require(f, programs...)
	}()
	<-done
	return f
}

func TestRequire(t *testing.T) {
	const missing = "popsync-no-such-program"
	t.Run("skip", func(t *testing.T) {
		t.Setenv(EnvRequireReal, "")
		f := runRequire("sh", missing)
		if !f.skipped || f.failed || !strings.Contains(f.msg, missing) {
			t.Errorf("skipped=%v failed=%v msg=%q, want a skip naming %s", f.skipped, f.failed, f.msg, missing)
		}
	})
	t.Run("required", func(t *testing.T) {
		t.Setenv(EnvRequireReal, "1")
		f := runRequire(missing)
		if !f.failed || f.skipped || !strings.Contains(f.msg, missing) {
			t.Errorf("skipped=%v failed=%v msg=%q, want a failure naming %s", f.skipped, f.failed, f.msg, missing)
		}
	})
	t.Run("present", func(t *testing.T) {
		t.Setenv(EnvRequireReal, "1")
		if f := runRequire("sh"); f.skipped || f.failed {
			t.Errorf("Require(sh) ended the test: %q", f.msg)
		}
	})
}
