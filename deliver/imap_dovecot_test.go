package deliver_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"popsync/deliver"
	"popsync/fetch/pop3"
	"popsync/fetch/pop3/pop3test"
	"popsync/internal/credential"
	"popsync/internal/realtest"
)

// trickyMessages is the corpus of the byte-exactness test: every kind of
// sample message (dot lines, a long line, no final line ending, 8-bit
// text, MIME parts), messages stored the Maildir way with bare LF, and
// lone CRs.
func trickyMessages() [][]byte {
	var msgs [][]byte
	for _, m := range pop3test.SampleMessages(14, 17) {
		msgs = append(msgs, m.Data)
	}
	return append(msgs,
		[]byte("From: Alice <alice@example.org>\nSubject: LF line endings\nDate: Mon, 6 Jan 2025 09:00:00 +0000\n\nStored with LF.\n.\n..two dots\n.\n"),
		[]byte("From: Bob <bob@example.org>\nSubject: LF, no final newline\n\nfirst line\n.last line, no newline"),
		[]byte("From: Carol <carol@example.org>\r\nSubject: mixed endings\r\n\nCRLF header, LF body\nline\r\nend\n"),
		[]byte("From: Dan <dan@example.org>\r\nSubject: a lone CR\r\n\r\nbefore\rafter\r\nCR CR LF\r\r\nend\r\n"),
		[]byte("Subject: header only, no body\r\n"),
	)
}

// TestIMAPCorpusDovecot fetches the corpus from Dovecot's POP3 side with
// popsync's client, delivers each message both into a Maildir and, over
// IMAP, into another mailbox of the same Dovecot, and reads the IMAP copy
// back with UID FETCH BODY.PEEK[]: apart from the token field on top, it
// must be what the Maildir holds with LF turned back into CRLF.
//
// Dovecot stores with CRLF here (mail_save_crlf): with its default LF
// storage it reads "CR CR LF" back as "CR LF", which would hide whether
// popsync sent the bytes unchanged.
func TestIMAPCorpusDovecot(t *testing.T) {
	for _, server := range []struct{ name, config string }{
		{"multiappend", ""},
		{"one-per-append", withoutMultiAppend},
	} {
		t.Run(server.name, func(t *testing.T) {
			d := realtest.StartDovecot(t, realtest.DovecotOptions{IMAP: true, Config: "mail_save_crlf = yes\n" + server.config})
			if multi := slices.Contains(d.IMAPCapabilities(t), "MULTIAPPEND"); multi != (server.config == "") {
				t.Fatalf("Dovecot offers MULTIAPPEND: %v", multi)
			}
			imapCorpus(t, d)
		})
	}
}

// imapCorpus appends the tricky-message corpus, fetched from d's POP3
// side, into d over IMAP and into a Maildir, and compares the copies.
func imapCorpus(t *testing.T, d *realtest.Dovecot) {
	corpus := trickyMessages()
	d.Deliver(t, corpus...)

	ctx := t.Context()
	pc, err := pop3.Dial(ctx, d.TLSAddr, pop3.Options{TLSConfig: d.TLSConfig(), Timeout: imapTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := pc.Auth(ctx, pop3.MechPlain, d.User, d.Password); err != nil {
		t.Fatal(err)
	}
	md, err := deliver.NewMaildir(filepath.Join(t.TempDir(), "Maildir"), deliver.MaildirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	tg := newIMAP(t, imapOptions(d, "Archive", filepath.Join(t.TempDir(), "spool")))

	received := "Received: from pop.example.net\r\n\tby test (popsync) with POP3S\r\n\tfor <me>; Wed, 3 Dec 2025 08:00:00 +0000\r\n"
	maildirOf := map[string][]byte{} // by IMAP token
	var ids []deliver.Delivery
	var mds []deliver.Delivery
	for i := range corpus {
		body, err := pc.Retr(ctx, i+1)
		if err != nil {
			t.Fatalf("RETR %d: %v", i+1, err)
		}
		wire, err := io.ReadAll(body)
		if err != nil {
			t.Fatalf("RETR %d: %v", i+1, err)
		}
		msg := append([]byte(received), wire...)
		mdd, err := md.Begin(ctx, deliver.Meta{UIDL: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		imd, err := tg.Begin(ctx, deliver.Meta{UIDL: fmt.Sprint(i), Size: int64(len(msg))})
		if err != nil {
			t.Fatal(err)
		}
		// Odd-sized writes, so CRLF pairs split across them.
		for p := msg; len(p) > 0; {
			n := min(len(p), 1+i*37%501)
			for _, dd := range []deliver.Delivery{mdd, imd} {
				if _, err := dd.Write(p[:n]); err != nil {
					t.Fatal(err)
				}
			}
			p = p[n:]
		}
		for _, dd := range []deliver.Delivery{mdd, imd} {
			if err := dd.Close(); err != nil {
				t.Fatal(err)
			}
		}
		mds = append(mds, mdd)
		ids = append(ids, imd)
		maildirOf[imd.Token()] = []byte(mdd.Token())
	}
	for _, pair := range []struct {
		tg deliver.Target
		ds []deliver.Delivery
	}{{md, mds}, {tg, ids}} {
		if err := pair.tg.Prepare(ctx, pair.ds); err != nil {
			t.Fatal(err)
		}
		if err := pair.tg.Publish(ctx, pair.ds); err != nil {
			t.Fatal(err)
		}
	}

	stored, _ := d.IMAPMessages(t, "Archive")
	if len(stored) != len(corpus) {
		t.Fatalf("%d messages in the IMAP mailbox, want %d", len(stored), len(corpus))
	}
	seen := map[string]bool{}
	for _, m := range stored {
		tok, rest := splitToken(t, m.Body)
		name, ok := maildirOf[tok]
		if !ok || seen[tok] {
			t.Errorf("UID %d: token %s unknown or seen twice", m.UID, tok)
			continue
		}
		seen[tok] = true
		onDisk, err := os.ReadFile(filepath.Join(md.Path(), "new", string(name)))
		if err != nil {
			t.Fatal(err)
		}
		want := bytes.ReplaceAll(onDisk, []byte("\n"), []byte("\r\n"))
		if !bytes.Equal(rest, want) {
			t.Errorf("UID %d differs from the Maildir copy:\n got %q\nwant %q", m.UID, clip(rest), clip(want))
		}
	}
	// Every message was appended with its APPENDUID known (Dovecot has
	// UIDPLUS), naming the message with its token. (Over several
	// connections, the batch is stored in no particular order.)
	tokenOf := map[uint32]string{}
	for _, m := range stored {
		tok, _ := splitToken(t, m.Body)
		tokenOf[m.UID] = tok
	}
	for i, dd := range ids {
		uid, ok := dd.(*deliver.IMAPDelivery).UID()
		if !ok || tokenOf[uid.UID] != dd.Token() {
			t.Errorf("delivery %d: APPENDUID %v, %v names token %q, not %s", i, uid, ok, tokenOf[uid.UID], dd.Token())
		}
	}
}

func clip(b []byte) []byte {
	if len(b) > 400 {
		return b[:400]
	}
	return b
}

// TestIMAPDeliveredDovecot: after a crash, Delivered finds a message that
// was appended and not one that was only prepared, nor one whose token
// field merely contains the token, and follows a message whose mailbox
// was recreated under a new UIDVALIDITY.
func TestIMAPDeliveredDovecot(t *testing.T) {
	d := realtest.StartDovecot(t, realtest.DovecotOptions{IMAP: true})
	ctx := t.Context()
	spoolDir := filepath.Join(t.TempDir(), "spool")
	const box = "Crash"

	// The process that crashes: it appended one message and prepared
	// another, then died without closing anything.
	crashed, err := deliver.NewIMAP(imapOptions(d, box, spoolDir))
	if err != nil {
		t.Fatal(err)
	}
	pub := publishAll(t, crashed, msg("Date: Tue, 2 Dec 2025 10:00:00 +0100\r\n", "appended\r\n"))[0]
	uid, ok := pub.(*deliver.IMAPDelivery).UID()
	if !ok {
		t.Fatal("no APPENDUID from Dovecot")
	}
	unpub, err := crashed.Begin(ctx, deliver.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(unpub, "Subject: prepared only\r\n\r\nbody\r\n")
	if err := unpub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := crashed.Prepare(ctx, []deliver.Delivery{unpub}); err != nil {
		t.Fatal(err)
	}

	// Another client stores a message whose token field holds the
	// unpublished token and more: SEARCH HEADER matches substrings, the
	// check by FETCH must not.
	c := d.IMAPClient(t)
	decoy := fmt.Sprintf("X-Popsync-Id: %sx\r\nX-Other: %s\r\nSubject: decoy\r\n\r\n%s\r\n", unpub.Token(), unpub.Token(), unpub.Token())
	appendRaw(t, c, box, decoy)

	after := newIMAP(t, imapOptions(d, box, spoolDir))
	// Both ways of looking: reading the newest messages, and (with none
	// read) UID SEARCH HEADER alone.
	for _, scan := range []int{1000, 0} {
		restore := deliver.SetIMAPRecentScan(scan)
		got, err := after.DeliveredUIDs(ctx, []string{pub.Token(), unpub.Token()})
		restore()
		if err != nil {
			t.Fatal(err)
		}
		if g, ok := got[pub.Token()]; !ok || g != uid {
			t.Errorf("scan %d: appended token: found %v %v, want %v", scan, g, ok, uid)
		}
		if g, ok := got[unpub.Token()]; ok {
			t.Errorf("scan %d: prepared-only token found at %v", scan, g)
		}
	}
	if err := after.Cleanup(ctx, []string{unpub.Token()}); err != nil {
		t.Fatal(err)
	}
	expectEmpty(t, spoolDir)

	// The mailbox is deleted and its content restored by another client
	// (a migration, a restore from backup): a new UIDVALIDITY, and the
	// APPENDUID recorded earlier names nothing any more. The token still
	// finds the message, under its new UID.
	stored, v1 := d.IMAPMessages(t, box)
	if v1 != uid.UIDValidity {
		t.Fatalf("UIDVALIDITY %d, APPENDUID said %d", v1, uid.UIDValidity)
	}
	if err := c.Delete(box).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(box, nil).Wait(); err != nil {
		t.Fatal(err)
	}
	appendRaw(t, c, box, "Subject: first in the new mailbox\r\n\r\nx\r\n")
	for _, m := range stored {
		appendRaw(t, c, box, string(m.Body))
	}
	restore := deliver.SetIMAPRecentScan(0)
	got, err := after.DeliveredUIDs(ctx, []string{pub.Token()})
	restore()
	if err != nil {
		t.Fatal(err)
	}
	_, v2 := d.IMAPMessages(t, box)
	g, ok := got[pub.Token()]
	switch {
	case !ok:
		t.Fatal("token not found after the mailbox was recreated")
	case v2 == v1:
		t.Fatalf("UIDVALIDITY did not change (%d)", v1)
	case g.UIDValidity != v2 || g == uid:
		t.Errorf("found at %v; want UIDVALIDITY %d, not the old %v", g, v2, uid)
	}

	// A mailbox that does not exist holds no token.
	gone := newIMAP(t, imapOptions(d, "NeverCreated", spoolDir))
	found, err := gone.Delivered(ctx, []string{pub.Token()})
	if err != nil || found[pub.Token()] {
		t.Errorf("Delivered in a missing mailbox = %v, %v; want false, nil", found, err)
	}
}

// appendRaw stores a message with another IMAP client.
func appendRaw(t *testing.T, c *imapclient.Client, box, m string) {
	t.Helper()
	cmd := c.Append(box, int64(len(m)), nil)
	if _, err := io.WriteString(cmd, m); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cmd.Wait(); err != nil {
		t.Fatalf("APPEND to %s: %v", box, err)
	}
}

// wireRecorder dials like net.Dialer, counts the connections and keeps
// the first bytes the client sends on each, as they go on the wire.
type wireRecorder struct {
	mu    sync.Mutex
	sent  []*bytes.Buffer
	dials int
}

func (w *wireRecorder) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dials++
	buf := &bytes.Buffer{}
	w.sent = append(w.sent, buf)
	return &recordedConn{Conn: c, w: w, buf: buf}, nil
}

type recordedConn struct {
	net.Conn
	w   *wireRecorder
	buf *bytes.Buffer
}

func (c *recordedConn) Write(p []byte) (int, error) {
	c.w.mu.Lock()
	if c.buf.Len() < 64<<10 {
		c.buf.Write(p[:min(len(p), 64<<10-c.buf.Len())])
	}
	c.w.mu.Unlock()
	return c.Conn.Write(p)
}

// TestIMAPSessionDovecot appends over every TLS mode and login method,
// the same connections (at most IMAPOptions.Connections) for several
// batches and a lookup, with flags and internal dates, and fails fast on
// a wrong password.
func TestIMAPSessionDovecot(t *testing.T) {
	d := realtest.StartDovecot(t, realtest.DovecotOptions{IMAP: true})
	ctx := t.Context()
	cases := []struct {
		name, tls, auth string
	}{
		{"implicit-plain", deliver.TLSImplicit, deliver.IMAPAuthPlain},
		{"starttls-login", deliver.TLSStartTLS, deliver.IMAPAuthLogin},
		{"starttls-login-command", deliver.TLSStartTLS, deliver.IMAPAuthLoginCommand},
		{"none-auto", deliver.TLSNone, deliver.IMAPAuthAuto},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			box := fmt.Sprintf("Session%d", i)
			opts := imapOptions(d, box, filepath.Join(t.TempDir(), "spool"))
			opts.TLS, opts.Auth = tc.tls, tc.auth
			if tc.tls != deliver.TLSImplicit {
				opts.Addr = d.IMAPAddr
			}
			opts.Flags = []string{`\Seen`, "$Popsync"}
			var wire wireRecorder
			opts.Dial = wire.dial
			tg := newIMAP(t, opts)
			var sent [][]byte
			var tokens []string
			for batch := range 3 {
				var msgs [][]byte
				for j := range 4 {
					msgs = append(msgs, msg(fmt.Sprintf("Date: Tue, 2 Dec 2025 10:%02d:00 +0100\r\n", batch*4+j), fmt.Sprintf("batch %d message %d\r\n", batch, j)))
				}
				for _, dd := range publishAll(t, tg, msgs...) {
					tokens = append(tokens, dd.Token())
				}
				sent = append(sent, msgs...)
			}
			found, err := tg.Delivered(ctx, tokens)
			if err != nil {
				t.Fatal(err)
			}
			for _, tok := range tokens {
				if !found[tok] {
					t.Errorf("token %s not found", tok)
				}
			}
			if err := tg.Close(); err != nil {
				t.Fatal(err)
			}
			wire.mu.Lock()
			dials, onWire := wire.dials, wire.sent[0].Bytes()
			wire.mu.Unlock()
			if dials < 1 || dials > deliver.DefaultIMAPConnections {
				t.Errorf("%d connections for 3 batches and a lookup, want 1 to %d", dials, deliver.DefaultIMAPConnections)
			}
			// What went on the wire: TLS from the first byte, STARTTLS
			// and then TLS, or plain text.
			const tlsHandshake = 0x16
			plain := "\x00" + d.User + "\x00" + d.Password
			inClear := bytes.Contains(onWire, []byte(d.Password)) || bytes.Contains(onWire, []byte(base64.StdEncoding.EncodeToString([]byte(plain))))
			switch tc.tls {
			case deliver.TLSImplicit:
				if len(onWire) == 0 || onWire[0] != tlsHandshake || inClear {
					t.Errorf("implicit TLS: the client sent %.40q first", onWire)
				}
			case deliver.TLSStartTLS:
				rest, ok := bytes.CutPrefix(onWire, []byte("S1 STARTTLS\r\n"))
				if !ok || len(rest) == 0 || rest[0] != tlsHandshake || inClear {
					t.Errorf("STARTTLS: the client sent %.40q first", onWire)
				}
			case deliver.TLSNone:
				if !inClear {
					t.Errorf("plain text: the login is not on the wire: %.200q", onWire)
				}
			}
			stored, _ := d.IMAPMessages(t, box)
			if len(stored) != len(sent) {
				t.Fatalf("%d messages stored, want %d", len(stored), len(sent))
			}
			for _, m := range stored {
				tok, rest := splitToken(t, m.Body)
				k := slices.Index(tokens, tok)
				if k < 0 {
					t.Errorf("UID %d: token %s not sent", m.UID, tok)
					continue
				}
				if !bytes.Equal(rest, sent[k]) {
					t.Errorf("message %d: got %q, want %q", k, rest, sent[k])
				}
				want := time.Date(2025, 12, 2, 10, k, 0, 0, time.FixedZone("", 3600))
				if !m.InternalDate.Equal(want) {
					t.Errorf("message %d: internal date %v, want %v", k, m.InternalDate, want)
				}
				if !slices.Contains(m.Flags, `\Seen`) || !slices.Contains(m.Flags, "$Popsync") {
					t.Errorf("message %d: flags %v, want \\Seen and $Popsync", k, m.Flags)
				}
			}
		})
	}

	t.Run("InternalDate", func(t *testing.T) {
		opts := imapOptions(d, "Dates", filepath.Join(t.TempDir(), "spool"))
		opts.Connections = 1 // the UIDs below follow the order of the batch
		tg := newIMAP(t, opts)
		publishAll(t, tg,
			[]byte("Received: from a by b; Mon, 1 Dec 2025 08:00:00 +0000\r\nReceived: from c by d; Sun, 30 Nov 2025 08:00:00 +0000\r\nSubject: no Date\r\n\r\nx\r\n"),
			[]byte("Date: not a date\r\nSubject: bad Date, no Received\r\n\r\nx\r\n"),
		)
		nowOpts := opts
		nowOpts.InternalDate = deliver.IMAPDateNow
		publishAll(t, newIMAP(t, nowOpts), msg("Date: Tue, 2 Dec 2025 10:00:00 +0100\r\n", "x\r\n"))
		stored, _ := d.IMAPMessages(t, "Dates")
		if len(stored) != 3 {
			t.Fatalf("%d messages, want 3", len(stored))
		}
		if want := time.Date(2025, 12, 1, 8, 0, 0, 0, time.UTC); !stored[0].InternalDate.Equal(want) {
			t.Errorf("without Date: %v, want the first Received's %v", stored[0].InternalDate, want)
		}
		for _, m := range stored[1:] {
			if d := time.Since(m.InternalDate); d < -time.Minute || d > time.Minute {
				t.Errorf("UID %d: internal date %v, want about now", m.UID, m.InternalDate)
			}
		}
	})

	t.Run("WrongPassword", func(t *testing.T) {
		opts := imapOptions(d, "INBOX", filepath.Join(t.TempDir(), "spool"))
		opts.Password = credential.Literal("wrong")
		var wire wireRecorder
		opts.Dial = wire.dial
		tg := newIMAP(t, opts)
		_, err := tg.Begin(ctx, deliver.Meta{})
		var de *deliver.DeliveryError
		if !errors.As(err, &de) || de.Stage != deliver.StageAuth || !de.Temporary || !de.TargetDown() {
			t.Fatalf("Begin with a wrong password: %v, want a temporary auth failure", err)
		}
		if strings.Contains(err.Error(), "wrong") {
			t.Errorf("error shows the password: %v", err)
		}
		_, err2 := tg.Begin(ctx, deliver.Meta{})
		if !errors.As(err2, &de) || err2.Error() != err.Error() {
			t.Errorf("second Begin: %v, want the same error", err2)
		}
		wire.mu.Lock()
		if wire.dials != 1 {
			t.Errorf("%d connections for two Begins after a failed login, want 1", wire.dials)
		}
		wire.mu.Unlock()
		if err := tg.Check(ctx); err == nil {
			t.Error("Check with a wrong password succeeded")
		}

	})

	t.Run("Check", func(t *testing.T) {
		opts := imapOptions(d, "Missing", filepath.Join(t.TempDir(), "spool"))
		if err := newIMAP(t, opts).Check(ctx); err != nil {
			t.Errorf("Check with create: %v", err)
		}
		opts.Create = false
		if err := newIMAP(t, opts).Check(ctx); err == nil {
			t.Error("Check of a missing mailbox without create succeeded")
		}
		tg := newIMAP(t, opts)
		d0, err := tg.Begin(ctx, deliver.Meta{})
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(d0, "Subject: x\r\n\r\nx\r\n")
		d0.Close()
		tg.Prepare(ctx, []deliver.Delivery{d0})
		err = tg.Publish(ctx, []deliver.Delivery{d0})
		var pe *deliver.PublishError
		if !errors.As(err, &pe) || len(pe.Published) != 0 || !deliver.IsTemporary(err) || !strings.Contains(err.Error(), "TRYCREATE") {
			t.Errorf("Publish to a missing mailbox without create: %v, want a temporary TRYCREATE failure", err)
		}
		d0.Abort()
	})
}
