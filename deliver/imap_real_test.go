package deliver_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"popsync/deliver"
	"popsync/deliver/delivertest"
	"popsync/internal/credential"
	"popsync/internal/realtest"
)

// imapTimeout is IMAPOptions.Timeout in the real-server tests: generous,
// since it only bounds a hang.
const imapTimeout = 30 * time.Second

// tokenLine matches the field the IMAP target puts on top of a message.
var tokenLine = regexp.MustCompile(`^X-Popsync-Id: ([a-z2-7]{26})\r\n`)

// splitToken takes the X-Popsync-Id field off an appended message.
func splitToken(t *testing.T, stored []byte) (token string, rest []byte) {
	t.Helper()
	m := tokenLine.FindSubmatch(stored)
	if m == nil {
		t.Fatalf("appended message does not start with the token field: %.120q", stored)
	}
	return string(m[1]), stored[len(m[0]):]
}

// imapStore gives each test its own mailbox and spool directory, the same
// for every target the test opens.
type imapStore struct {
	d     *realtest.Dovecot
	mu    sync.Mutex
	n     int
	boxes map[*testing.T]imapBox
}

type imapBox struct{ mailbox, spool string }

func (s *imapStore) box(t *testing.T) imapBox {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.boxes == nil {
		s.boxes = make(map[*testing.T]imapBox)
	}
	b, ok := s.boxes[t]
	if !ok {
		s.n++
		b = imapBox{mailbox: fmt.Sprintf("suite%d", s.n), spool: filepath.Join(t.TempDir(), "spool")}
		s.boxes[t] = b
		// Runs after every target of the test is closed: nothing may be
		// left in the spool.
		t.Cleanup(func() { expectEmpty(t, b.spool) })
	}
	return b
}

// withoutMultiAppend is Dovecot configuration that offers the
// capabilities a server without MULTIAPPEND (Gmail, Microsoft 365) does
// that matter here, so that the target sends one message per APPEND.
const withoutMultiAppend = "imap_capability = IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED ESEARCH LIST-STATUS SPECIAL-USE MOVE"

func imapOptions(d *realtest.Dovecot, mailbox, spool string) deliver.IMAPOptions {
	return deliver.IMAPOptions{
		Addr:      d.IMAPTLSAddr,
		TLS:       deliver.TLSImplicit,
		TLSConfig: d.TLSConfig(),
		User:      d.User,
		Password:  credential.Literal(d.Password),
		Mailbox:   mailbox,
		Create:    true,
		SpoolDir:  spool,
		Timeout:   imapTimeout,
	}
}

func newIMAP(t testing.TB, opts deliver.IMAPOptions) *deliver.IMAP {
	t.Helper()
	tg, err := deliver.NewIMAP(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Close() })
	return tg
}

// TestIMAPSuiteDovecot runs the conformance suite against a real Dovecot
// IMAP server, one mailbox per subtest, created by the target on
// TRYCREATE.
func TestIMAPSuiteDovecot(t *testing.T) {
	d := realtest.StartDovecot(t, realtest.DovecotOptions{IMAP: true})
	t.Logf("dovecot IMAP capabilities: %v", d.IMAPCapabilities(t))
	store := &imapStore{d: d}
	newTarget := func(t *testing.T) deliver.Target {
		b := store.box(t)
		return newIMAP(t, imapOptions(d, b.mailbox, b.spool))
	}
	read := func(t *testing.T) [][]byte {
		msgs, _ := d.IMAPMessages(t, store.box(t).mailbox)
		out := make([][]byte, 0, len(msgs))
		for _, m := range msgs {
			_, rest := splitToken(t, m.Body)
			out = append(out, rest)
		}
		return out
	}
	delivertest.RunSuite(t, newTarget, read)
}

// publishAll stages msgs into tg and publishes them as one batch.
func publishAll(t *testing.T, tg deliver.Target, msgs ...[]byte) []deliver.Delivery {
	t.Helper()
	ctx := context.Background()
	ds := make([]deliver.Delivery, len(msgs))
	for i, m := range msgs {
		d, err := tg.Begin(ctx, deliver.Meta{Account: "test", UIDL: fmt.Sprint(i), Size: int64(len(m))})
		if err != nil {
			t.Fatalf("Begin %d: %v", i, err)
		}
		if _, err := d.Write(m); err != nil {
			t.Fatalf("Write %d: %v", i, err)
		}
		if err := d.Close(); err != nil {
			t.Fatalf("Close %d: %v", i, err)
		}
		ds[i] = d
	}
	if err := tg.Prepare(ctx, ds); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	if err := tg.Publish(ctx, ds); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	return ds
}

// crlfAll turns every bare LF into CRLF, as IMAP carries messages.
func crlfAll(b []byte) []byte {
	var out bytes.Buffer
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out.WriteByte('\r')
		}
		out.WriteByte(c)
	}
	return out.Bytes()
}
