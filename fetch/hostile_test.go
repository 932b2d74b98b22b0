package fetch_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"popsync/configs"
	"popsync/deliver"
	"popsync/fetch"
	"popsync/fetch/internal/hostile"
	"popsync/fetch/pop3"
	"popsync/fetch/pop3/pop3test"
	"popsync/internal/credential"
	"popsync/state"
)

// hostileCase is one attack and what the poll of the attacked account
// must end with.
type hostileCase struct {
	name   string
	script hostile.Script
	setup  func(a *configs.Account)
	// want is the error the poll must wrap; text must appear in it.
	want error
	text string
	// within bounds the poll's wall time; heap bounds the growth of the
	// Go heap in use during the poll (sampled), over what it was before.
	within time.Duration
	heap   uint64
}

// errAny stands for "any error" in hostileCase.want, where no sentinel
// describes the failure (crypto/tls's own errors).
var errAny = errors.New("any error")

// hostileTimeout is the account timeout in these tests: short, so the
// attacks that wait out a timeout end quickly.
const hostileTimeout = 400 * time.Millisecond

func hostileCases() []hostileCase {
	badUID := func(uid string) hostile.Script {
		return hostile.Script{Attack: hostile.BadUIDs, UIDs: []string{"good-1", uid, "good-3"}}
	}
	return []hostileCase{
		{name: "endless greeting", script: hostile.Script{Attack: hostile.EndlessLine},
			want: pop3.ErrLineTooLong, text: "reading greeting", within: 5 * time.Second, heap: 8 << 20},
		{name: "endless reply to PASS", script: hostile.Script{Attack: hostile.EndlessLine, At: "PASS"},
			want: pop3.ErrLineTooLong, text: "logging in", within: 5 * time.Second, heap: 8 << 20},
		{name: "endless message with max_size", script: hostile.Script{Attack: hostile.EndlessMessage},
			setup: func(a *configs.Account) { a.MaxSize = 1 << 20 },
			want:  fetch.ErrOversized, text: "LIST said", within: 5 * time.Second, heap: 8 << 20},
		{name: "endless message without max_size", script: hostile.Script{Attack: hostile.EndlessMessage},
			want: fetch.ErrListedSize, text: "LIST said", within: 5 * time.Second, heap: 8 << 20},
		// Duplicate UIDLs make the poll identify messages by a digest of
		// their headers (TOP n 0): endless headers must not hang it.
		{name: "endless headers for a digest", script: hostile.Script{Attack: hostile.EndlessMessage, UIDs: []string{"dup", "dup", "dup"}},
			want: fetch.ErrListedSize, text: "headers", within: 5 * time.Second, heap: 8 << 20},
		{name: "message larger than LIST said, over max_size",
			script: hostile.Script{Attack: hostile.OversizedMessage, ListedSize: 1000, BodySize: 3 << 20},
			setup:  func(a *configs.Account) { a.MaxSize = 100 << 10 },
			want:   fetch.ErrOversized, text: "LIST said 1000", within: 5 * time.Second, heap: 8 << 20},
		{name: "message larger than LIST said, no max_size",
			script: hostile.Script{Attack: hostile.OversizedMessage, ListedSize: 1000, BodySize: 3 << 20},
			want:   fetch.ErrListedSize, text: "LIST said 1000", within: 5 * time.Second, heap: 8 << 20},
		{name: "UIDL listing of 10 million", script: hostile.Script{Attack: hostile.HugeUIDL, Entries: 10_000_000},
			want: pop3.ErrTooManyEntries, text: "the session holds 3 messages", within: 5 * time.Second, heap: 8 << 20},
		// A LIST of 10 million is cut at pop3.DefaultMaxListEntries (1
		// million): its entries are held until then, 16 octets each.
		{name: "LIST listing of 10 million", script: hostile.Script{Attack: hostile.HugeList, Entries: 10_000_000},
			want: pop3.ErrTooManyEntries, text: "LIST", within: 20 * time.Second, heap: 96 << 20},
		{name: "UIDL with a control character", script: badUID("ab\x01cd"),
			want: pop3.ErrBadUIDL, text: "0x01", within: 5 * time.Second, heap: 8 << 20},
		{name: "UIDL with a space", script: badUID("ab cd"),
			want: pop3.ErrBadUIDL, text: "space", within: 5 * time.Second, heap: 8 << 20},
		{name: "UIDL of 10 KB", script: badUID(strings.Repeat("u", 10_000)),
			want: pop3.ErrLineTooLong, text: "UIDL", within: 5 * time.Second, heap: 8 << 20},
		{name: "UIDL of 71 octets", script: badUID(strings.Repeat("u", 71)),
			want: pop3.ErrBadUIDL, text: "length 71", within: 5 * time.Second, heap: 8 << 20},
		{name: "garbage greeting", script: hostile.Script{Attack: hostile.Garbage},
			want: pop3.ErrProtocol, text: "IMAP4rev1", within: 5 * time.Second, heap: 8 << 20},
		{name: "garbage reply to LIST", script: hostile.Script{Attack: hostile.Garbage, At: "LIST", Garbage: "HTTP/1.1 400 Bad Request\r\n\r\n"},
			want: pop3.ErrProtocol, text: "listing messages", within: 5 * time.Second, heap: 8 << 20},
		{name: "plaintext after STLS", script: hostile.Script{Attack: hostile.STLSPlaintext},
			setup: func(a *configs.Account) { a.TLS = configs.TLSStartTLS },
			want:  pop3.ErrProtocol, text: "STLS", within: 5 * time.Second, heap: 8 << 20},
		{name: "plaintext answer to the TLS handshake", script: hostile.Script{Attack: hostile.STLSPlaintext, AfterHello: true},
			setup: func(a *configs.Account) { a.TLS = configs.TLSStartTLS },
			want:  errAny, text: "TLS handshake", within: 5 * time.Second, heap: 8 << 20},
		{name: "greeting then silence", script: hostile.Script{Attack: hostile.Silence},
			want: os.ErrDeadlineExceeded, text: "no progress", within: 5 * time.Second, heap: 8 << 20},
		{name: "silence after login", script: hostile.Script{Attack: hostile.Silence, At: "PASS"},
			want: os.ErrDeadlineExceeded, text: "reading reply to CAPA", within: 5 * time.Second, heap: 8 << 20},
		{name: "one byte per second", script: hostile.Script{Attack: hostile.Trickle, ByteDelay: time.Second},
			setup: func(a *configs.Account) { a.Timeout = configs.Duration(2500 * time.Millisecond) },
			want:  pop3.ErrTooSlow, text: "octets in 2.5s", within: 8 * time.Second, heap: 8 << 20},
	}
}

// TestHostileServer runs every attack against one account of a PollAll
// that also polls a healthy account. For each: the attacked poll ends
// with a clear error within its bound, the Go heap stays within the
// stated bound, nothing of the attacked account is delivered or recorded
// (no Maildir file in new/ or tmp/, no seen-set record, no intent), no
// DELE is sent, and the healthy account gets all its mail.
//
// The cases run one after another, not in parallel, so that the heap
// measurement is the poll's.
func TestHostileServer(t *testing.T) {
	for i, tc := range hostileCases() {
		t.Run(tc.name, func(t *testing.T) {
			runHostile(t, tc, int64(100+i))
		})
	}
}

func runHostile(t *testing.T, tc hostileCase, seed int64) {
	good := newEnv(t, pop3test.SampleMessages(5, seed), pop3test.Config{})

	sc := tc.script
	sc.User, sc.Password = testUser, testPass
	if sc.Messages == nil {
		for _, m := range pop3test.SampleMessages(3, seed+1000) {
			sc.Messages = append(sc.Messages, m.Data)
		}
	}
	srv, err := hostile.Start(sc)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var port int
	fmt.Sscan(srv.Addr()[strings.LastIndexByte(srv.Addr(), ':')+1:], &port)
	maildir := filepath.Join(t.TempDir(), "Hostile")
	bad := &configs.Account{
		Name: "hostile", Host: "127.0.0.1", Port: port, TLS: configs.TLSNone, User: testUser,
		Password: credential.Literal(testPass), Auth: configs.AuthUser, Keep: false,
		Timeout: configs.Duration(hostileTimeout), AddReceived: true,
		Deliver: []configs.Deliver{{Target: &configs.MaildirTarget{Path: maildir}}},
	}
	if tc.setup != nil {
		tc.setup(bad)
	}

	peak := sampleHeap(t)
	begin := time.Now()
	res := good.opts.PollAll(t.Context(), []*configs.Account{bad, good.acct}, 2)
	took := time.Since(begin)
	grew := peak()

	r := res[0]
	if r.Err == nil {
		t.Fatalf("the attacked poll succeeded: %+v", r)
	}
	if (tc.want != errAny && !errors.Is(r.Err, tc.want)) || !strings.Contains(r.Err.Error(), tc.text) {
		t.Fatalf("attacked poll error = %v\nwant one wrapping %q and saying %q", r.Err, tc.want, tc.text)
	}
	if strings.Contains(r.Err.Error(), testPass) {
		t.Fatal("the password appears in the error")
	}
	if took > tc.within {
		t.Fatalf("the attacked poll took %v, bound %v", took, tc.within)
	}
	if grew > tc.heap {
		t.Fatalf("the heap grew by %d KiB during the poll, bound %d KiB", grew>>10, tc.heap>>10)
	}
	t.Logf("%v after %v; heap grew by %d KiB; server sent %d KiB", r.Err, took.Round(time.Millisecond), grew>>10, srv.Sent()>>10)

	// Nothing partial delivered, nothing recorded, nothing deleted.
	if r.Delivered != 0 || r.Deleted != 0 {
		t.Fatalf("attacked poll delivered %d, deleted %d", r.Delivered, r.Deleted)
	}
	for _, sub := range []string{"new", "tmp", "cur"} {
		if ents, _ := os.ReadDir(filepath.Join(maildir, sub)); len(ents) > 0 {
			t.Fatalf("%s/ of the attacked account's Maildir holds %d files", sub, len(ents))
		}
	}
	id := bad.Identity()
	keys := append([]string{"good-1", "good-3"}, sc.UIDs...)
	for i := range 3 {
		keys = append(keys, fmt.Sprintf("uid-%d", i+1))
	}
	known, err := state.Known(t.Context(), good.store, id, keys)
	if err != nil || len(known) != 0 {
		t.Fatalf("seen-set of the attacked account: %v, %v", known, err)
	}
	if in, err := good.store.Intents(t.Context(), id); err != nil || len(in) != 0 {
		t.Fatalf("intents of the attacked account: %v, %v", in, err)
	}
	for _, l := range srv.Lines() {
		if strings.HasPrefix(strings.ToUpper(l), "DELE") {
			t.Fatalf("DELE sent to the hostile server: %q", l)
		}
	}
	if sc.Attack == hostile.STLSPlaintext {
		for _, l := range srv.Lines() {
			if v := strings.ToUpper(l); strings.HasPrefix(v, "USER") || strings.HasPrefix(v, "PASS") || strings.HasPrefix(v, "AUTH") {
				t.Fatalf("credentials sent after a failed STLS: %q", l)
			}
		}
	}

	// The other account is not affected.
	if res[1].Err != nil || res[1].Delivered != 5 {
		t.Fatalf("healthy account beside the attack: %+v", res[1])
	}
	good.wantExactlyOnce(good.msgs)
}

// sampleHeap samples HeapInuse until the returned function is called,
// which returns the peak over the level at the start.
func sampleHeap(t *testing.T) func() uint64 {
	t.Helper()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	stop := make(chan struct{})
	done := make(chan uint64)
	go func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		var peak uint64
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 {
		close(stop)
		p := <-done
		if p < base {
			return 0
		}
		return p - base
	}
}

// refusingTarget wraps a real target and refuses one UIDL for now at
// Begin, the way an MTA answers 452 to MAIL FROM.
type refusingTarget struct {
	deliver.Target
	uidl string
}

func (r *refusingTarget) Begin(ctx context.Context, m deliver.Meta) (deliver.Delivery, error) {
	if m.UIDL == r.uidl {
		return nil, &deliver.DeliveryError{Target: r.String(), Stage: deliver.StageMail, Temporary: true, Code: 452, Text: "4.3.1 try later"}
	}
	return r.Target.Begin(ctx, m)
}

// TestRefusedLargeMessageDoesNotStopThePoll: a message no target takes is
// read past by the poll itself, so the client's cap on discarding unread
// bodies (pop3.MaxDrain) does not cost the rest of the poll.
func TestRefusedLargeMessageDoesNotStopThePoll(t *testing.T) {
	msgs := pop3test.SampleMessages(6, 600)
	big := pop3test.LargeMessage(3*pop3.MaxDrain, 600)
	big.UID = "big"
	msgs = append(msgs[:3], append([]pop3test.Message{big}, msgs[3:]...)...)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	e.opts.OpenTarget = func(a *configs.Account, d configs.Deliver) (deliver.Target, error) {
		tg, err := fetch.OpenTarget(a, d)
		if err != nil {
			return nil, err
		}
		return &refusingTarget{Target: tg, uidl: "big"}, nil
	}
	r := e.mustPoll()
	if r.Delivered != 6 || r.Failed != 1 || r.Deleted != 6 {
		t.Fatalf("poll: %+v", r)
	}
	e.wantOnServer("big")
	e.opts.OpenTarget = nil
	if r := e.mustPoll(); r.Delivered != 1 {
		t.Fatalf("second poll: %+v", r)
	}
	e.wantExactlyOnce(msgs)
}
