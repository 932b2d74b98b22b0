package deliver_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"popsync/deliver"
	"popsync/internal/realtest"
)

// multiCaps is a server that takes MULTIAPPEND (RFC 3502) with LITERAL+.
const multiCaps = "IMAP4rev1 LITERAL+ MULTIAPPEND UIDPLUS AUTH=PLAIN"

func (f *fakeIMAP) appendCommands() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.commands
}

// checkUIDs checks that every delivery of ds has the APPENDUID of the
// message the fake stored for it.
func checkUIDs(t *testing.T, f *fakeIMAP, box string, ds []deliver.Delivery, msgs [][]byte) {
	t.Helper()
	stored := f.messages(box)
	for i, d := range ds {
		uid, ok := d.(*deliver.IMAPDelivery).UID()
		if !ok || uid.UID == 0 || int(uid.UID) > len(stored) {
			t.Errorf("message %d: APPENDUID %v %v", i, uid, ok)
			continue
		}
		if !bytes.HasSuffix(stored[uid.UID-1], msgs[i]) {
			t.Errorf("message %d: its APPENDUID %d names another message", i, uid.UID)
		}
	}
}

// TestIMAPMultiAppend: where the server offers MULTIAPPEND and LITERAL+,
// a batch goes in a few commands of many messages, spread over the
// connections; every message lands once, in order within its command,
// with the UID the APPENDUID's set gives it.
func TestIMAPMultiAppend(t *testing.T) {
	f := newFakeIMAP(t, multiCaps, "INBOX")
	tg, _ := fakeTarget(t, f, "INBOX", func(o *deliver.IMAPOptions) { o.Connections = 2 })
	msgs := mixed(150)
	ds := stageAll(t, tg, msgs...)
	if err := tg.Publish(t.Context(), ds); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if got := storedOnce(t, f, "INBOX", ds, msgs); len(got) != len(msgs) {
		t.Errorf("%d messages stored, want %d", len(got), len(msgs))
	}
	checkUIDs(t, f, "INBOX", ds, msgs)
	// 150 over 2 connections: commands of 64 at most.
	if n := f.appendCommands(); n < 3 || n > 6 {
		t.Errorf("%d APPEND commands for 150 messages, want 3 to 6", n)
	}
	// A small batch is one command per connection.
	before := f.appendCommands()
	more := mixed(6)
	ds2 := stageAll(t, tg, more...)
	if err := tg.Publish(t.Context(), ds2); err != nil {
		t.Fatalf("second Publish: %v", err)
	}
	if n := f.appendCommands() - before; n != 2 {
		t.Errorf("%d APPEND commands for 6 messages over 2 connections, want 2", n)
	}
	if n := len(f.messages("INBOX")); n != 156 {
		t.Errorf("%d messages stored, want 156", n)
	}
}

// TestIMAPMultiAppendRefusal: a command refused for one of its messages
// stored none of them (RFC 3502: all or none); its messages go again one
// per command, so that the one refused is known and all the others land.
func TestIMAPMultiAppendRefusal(t *testing.T) {
	f := newFakeIMAP(t, multiCaps, "INBOX")
	msgs := mixed(20)
	bad := append(sized(777), "refuse me\r\n"...)
	msgs[7] = bad
	var mu sync.Mutex
	badSize := int64(-1)
	f.appendHook = func(n int, size int64) fakeAppend {
		mu.Lock()
		defer mu.Unlock()
		if size == badSize {
			return fakeAppend{Reply: "NO [CANNOT] refused by policy"}
		}
		return fakeAppend{}
	}
	tg, _ := fakeTarget(t, f, "INBOX", nil)
	ds := stageAll(t, tg, msgs...)
	mu.Lock()
	badSize = ds[7].(*deliver.IMAPDelivery).Size()
	mu.Unlock()
	err := tg.Publish(t.Context(), ds)
	var pe *deliver.PublishError
	if !errors.As(err, &pe) {
		t.Fatalf("Publish: %v, want a *PublishError", err)
	}
	stored := storedOnce(t, f, "INBOX", ds, msgs)
	if len(stored) != 19 || stored[ds[7].Token()] {
		t.Errorf("%d stored (the refused one %v), want the 19 others", len(stored), stored[ds[7].Token()])
	}
	want := slices.DeleteFunc(slices.Collect(func(yield func(int) bool) {
		for i := range 20 {
			if !yield(i) {
				return
			}
		}
	}), func(i int) bool { return i == 7 })
	if !slices.Equal(pe.Published, want) {
		t.Errorf("Published %v, want %v", pe.Published, want)
	}
	de := deliveryErr(ds[7])
	if de == nil || de.Temporary || !strings.Contains(de.Error(), "refused by policy") {
		t.Errorf("the refused message: %v; want a permanent refusal with the server's text", de)
	}
	// One command of 20, then 20 of one.
	if n := f.appendCommands(); n != 21 {
		t.Errorf("%d APPEND commands, want 21", n)
	}
}

// TestIMAPMultiAppendDrop: a connection lost in the middle of a command
// stores none of its messages; those already sent are of unknown fate
// (Delivered finds none of them, and they cannot be published again),
// those not sent yet may go again, and the target goes on with a new
// connection.
func TestIMAPMultiAppendDrop(t *testing.T) {
	for _, at := range []int{0, 5} {
		f := newFakeIMAP(t, multiCaps, "INBOX")
		f.appendHook = func(n int, size int64) fakeAppend {
			if n == at {
				return fakeAppend{DropAfter: 100}
			}
			return fakeAppend{}
		}
		tg, _ := fakeTarget(t, f, "INBOX", nil)
		msgs := mixed(10)
		ds := stageAll(t, tg, msgs...)
		err := tg.Publish(t.Context(), ds)
		var pe *deliver.PublishError
		if !errors.As(err, &pe) || len(pe.Published) != 0 {
			t.Fatalf("drop at message %d: Publish: %v, want a *PublishError with none published", at, err)
		}
		if n := len(f.messages("INBOX")); n != 0 {
			t.Errorf("drop at message %d: %d messages stored, want none", at, n)
		}
		f.appendHook = nil
		var unknown []string
		var again [][]byte
		for i, d := range ds {
			de := deliveryErr(d)
			if de == nil || !de.Temporary {
				t.Errorf("drop at message %d: message %d: %v, want a temporary failure", at, i, de)
				continue
			}
			if !strings.Contains(de.Error(), "unknown fate") {
				// Not sent: what the client had buffered past the
				// drop may or may not have reached the wire.
				if i <= at {
					t.Errorf("drop at message %d: message %d was sent, yet not of unknown fate: %v", at, i, de)
				}
				again = append(again, msgs[i])
				continue
			}
			if err := tg.Publish(t.Context(), ds[i:i+1]); !errors.Is(err, deliver.ErrState) {
				t.Errorf("Publish again of a message of unknown fate: %v, want ErrState", err)
			}
			unknown = append(unknown, d.Token())
			again = append(again, msgs[i])
		}
		if len(unknown) < at+1 {
			t.Errorf("drop at message %d: %d messages of unknown fate, want at least %d", at, len(unknown), at+1)
		}
		found, err := tg.Delivered(t.Context(), unknown)
		for tok, ok := range found {
			if ok {
				t.Errorf("drop at message %d: Delivered found %s", at, tok)
			}
		}
		if err != nil {
			t.Errorf("Delivered: %v", err)
		}
		abortAll(ds)
		ds2 := stageAll(t, tg, again...)
		if err := tg.Publish(t.Context(), ds2); err != nil {
			t.Fatalf("Publish after the drop: %v", err)
		}
		if got := storedOnce(t, f, "INBOX", ds2, again); len(got) != 10 {
			t.Errorf("%d stored after the drop, want 10", len(got))
		}
	}
}

// TestIMAPMultiAppendTryCreate: a missing mailbox is created once, and
// the batch goes again in commands of many messages.
func TestIMAPMultiAppendTryCreate(t *testing.T) {
	f := newFakeIMAP(t, multiCaps)
	tg, _ := fakeTarget(t, f, "Archive", func(o *deliver.IMAPOptions) { o.Connections = 2 })
	msgs := mixed(30)
	ds := stageAll(t, tg, msgs...)
	if err := tg.Publish(t.Context(), ds); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if got := storedOnce(t, f, "Archive", ds, msgs); len(got) != 30 {
		t.Errorf("%d stored, want 30", len(got))
	}
	checkUIDs(t, f, "Archive", ds, msgs)
	if _, _, creates, _ := f.stats(); creates != 1 {
		t.Errorf("%d CREATEs, want 1", creates)
	}
	if n := f.appendCommands(); n > 4 {
		t.Errorf("%d APPEND commands for 30 messages, want at most 4 (2 refused, 2 after CREATE)", n)
	}
}

// TestIMAPMultiAppendNotUsed: without LITERAL+, or for a mailbox name
// that is not printable ASCII, every message goes in its own APPEND
// through the library.
func TestIMAPMultiAppendNotUsed(t *testing.T) {
	for _, tc := range []struct{ caps, box string }{
		{"IMAP4rev1 MULTIAPPEND UIDPLUS AUTH=PLAIN", "INBOX"},
		{multiCaps, "Entwürfe"},
	} {
		f := newFakeIMAP(t, tc.caps, tc.box, "Entw&APw-rfe")
		tg, _ := fakeTarget(t, f, tc.box, nil)
		ds := stageAll(t, tg, mixed(5)...)
		if err := tg.Publish(t.Context(), ds); err != nil {
			t.Fatalf("%s %q: Publish: %v", tc.caps, tc.box, err)
		}
		if n := f.appendCommands(); n != 5 {
			t.Errorf("%s %q: %d APPEND commands for 5 messages, want 5", tc.caps, tc.box, n)
		}
	}
}

// countingConn counts the target's own MULTIAPPEND commands in what the
// client writes.
type countingConn struct {
	net.Conn
	mu   *sync.Mutex
	n    *int
	last []byte
}

var ownAppend = regexp.MustCompile(`(?:^|\n)P[0-9]+ APPEND `)

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	// The tail of the last write comes first, for a command split over
	// two; a match that ends within it was counted then.
	buf := append(c.last, p...)
	for _, m := range ownAppend.FindAllIndex(buf, -1) {
		if m[1] > len(c.last) {
			*c.n++
		}
	}
	c.last = append([]byte(nil), buf[max(0, len(buf)-16):]...)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// TestIMAPMultiAppendDovecot: against the real Dovecot, a batch goes in a
// few MULTIAPPEND commands, every message is read back byte for byte
// under the UID its APPENDUID named.
func TestIMAPMultiAppendDovecot(t *testing.T) {
	d := realtest.StartDovecot(t, realtest.DovecotOptions{IMAP: true})
	var mu sync.Mutex
	commands := 0
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	// Plain text, so that the commands can be counted on the wire.
	opts := imapOptions(d, "INBOX", filepath.Join(t.TempDir(), "spool"))
	opts.Addr, opts.TLS, opts.Connections = d.IMAPAddr, deliver.TLSNone, 2
	opts.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: c, mu: &mu, n: &commands}, nil
	}
	tg := newIMAP(t, opts)
	msgs := mixed(300)
	ds := stageAll(t, tg, msgs...)
	if err := tg.Publish(t.Context(), ds); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ := d.IMAPMessages(t, "INBOX")
	byUID := map[uint32][]byte{}
	for _, m := range got {
		byUID[m.UID] = m.Body
	}
	if len(got) != len(msgs) {
		t.Errorf("%d messages in the mailbox, want %d", len(got), len(msgs))
	}
	for i, dl := range ds {
		uid, ok := dl.(*deliver.IMAPDelivery).UID()
		body := byUID[uid.UID]
		if !ok || !bytes.HasSuffix(body, msgs[i]) || !bytes.HasPrefix(body, []byte(deliver.IMAPTokenHeader+": "+dl.Token()+"\r\n")) {
			t.Errorf("message %d: UID %v %v holds %q", i, uid, ok, clip(body))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if commands < 5 || commands > 10 {
		t.Errorf("%d MULTIAPPEND commands for 300 messages over 2 connections, want 5 to 10", commands)
	}
}
