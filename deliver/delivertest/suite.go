// Package delivertest is the conformance suite every deliver.Target runs:
// it checks the two-phase protocol (Begin, Write, Close or Abort, Prepare,
// Publish), crash recovery through Delivered and Cleanup, and that content
// arrives byte for byte.
//
// It is not responsible for target-specific behaviour (line-ending
// conversion, file modes, disk-full handling): each target's own tests
// cover that.
package delivertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"popsync/deliver"
)

// RunSuite runs the conformance tests against the target made by
// newTarget.
//
// newTarget is called at least once per subtest and may be called again in
// the same subtest to simulate a restart after a crash: every call with the
// same t must return a new target over the same storage, and storage must
// be fresh for each t. The suite closes the targets it gets, except one
// that stands for a crashed process; a target's tests can check after the
// subtest (in a t.Cleanup registered by newTarget) that the storage holds
// no leftovers.
//
// read returns the messages published to t's storage so far, in any order,
// in the form they were written: the suite writes only CRLF-terminated
// lines with no other CR or LF, so a target that stores LF can turn each
// LF back into CRLF exactly.
//
// Targets whose Token is "" (confirming targets, which deliver in Close)
// are held to less: their tokens, Delivered and Cleanup are not checked,
// and a message may be visible as soon as it is closed.
func RunSuite(t *testing.T, newTarget func(t *testing.T) deliver.Target, read func(t *testing.T) [][]byte) {
	s := &suite{newTarget: newTarget, read: read}
	t.Run("DeliverOne", s.deliverOne)
	t.Run("DeliverBatch", s.deliverBatch)
	t.Run("ChunkedWrites", s.chunkedWrites)
	t.Run("Interleaved", s.interleaved)
	t.Run("VisibleOnlyAfterPublish", s.visibleOnlyAfterPublish)
	t.Run("Abort", s.abort)
	t.Run("AbortedLeftOutOfBatch", s.abortedLeftOut)
	t.Run("EmptyBatch", s.emptyBatch)
	t.Run("Delivered", s.delivered)
	t.Run("CrashBeforePublish", s.crashBeforePublish)
	t.Run("CrashAfterPublish", s.crashAfterPublish)
	t.Run("CleanupUnknown", s.cleanupUnknown)
	t.Run("CanceledContext", s.canceledContext)
	t.Run("Close", s.close)
}

type suite struct {
	newTarget func(t *testing.T) deliver.Target
	read      func(t *testing.T) [][]byte
}

// target returns a new target over t's storage, closed when t ends.
func (s *suite) target(t *testing.T) deliver.Target {
	t.Helper()
	tg := s.newTarget(t)
	t.Cleanup(func() { tg.Close() })
	if tg.String() == "" {
		t.Error("String() is empty")
	}
	return tg
}

// Message returns a sample message of about size bytes: CRLF lines only,
// with a header that makes it unique by n.
func Message(n, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Received: from pop.example.net by popsync for <me@example.net>; Tue, 25 Nov 2025 09:00:00 +0000\r\n")
	fmt.Fprintf(&b, "Message-ID: <%d@example.net>\r\nFrom: a@example.net\r\nTo: me@example.net\r\nSubject: message %d\r\n\r\n", n, n)
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "line %d of message %d: .dots and tabs\tand trailing space \r\n", i, n)
	}
	return b.Bytes()
}

// begin starts a delivery and writes msg in one Write.
func begin(t *testing.T, tg deliver.Target, msg []byte) deliver.Delivery {
	t.Helper()
	d, err := tg.Begin(context.Background(), deliver.Meta{Account: "test", UIDL: "uidl", Size: int64(len(msg))})
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	n, err := d.Write(msg)
	if err != nil || n != len(msg) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(msg))
	}
	return d
}

// stage begins, writes and closes one delivery.
func stage(t *testing.T, tg deliver.Target, msg []byte) deliver.Delivery {
	t.Helper()
	d := begin(t, tg, msg)
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if len(msg) > 0 && d.Size() <= 0 {
		t.Errorf("Size() = %d after writing %d bytes", d.Size(), len(msg))
	}
	return d
}

func prepare(t *testing.T, tg deliver.Target, ds ...deliver.Delivery) {
	t.Helper()
	if err := tg.Prepare(context.Background(), ds); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
}

func publish(t *testing.T, tg deliver.Target, ds ...deliver.Delivery) {
	t.Helper()
	if err := tg.Publish(context.Background(), ds); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}

// expect checks that exactly msgs (in any order) were published.
func (s *suite) expect(t *testing.T, msgs ...[]byte) {
	t.Helper()
	got := s.read(t)
	want := slices.Clone(msgs)
	slices.SortFunc(got, bytes.Compare)
	slices.SortFunc(want, bytes.Compare)
	if len(got) != len(want) {
		t.Fatalf("%d messages published, want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("published message differs:\n got %q\nwant %q", clip(got[i]), clip(want[i]))
		}
	}
}

func clip(b []byte) []byte {
	if len(b) > 300 {
		return b[:300]
	}
	return b
}

// staging reports whether the target names its deliveries by token.
func staging(d deliver.Delivery) bool { return d.Token() != "" }

// delivered calls Delivered and checks the answer for every token.
func delivered(t *testing.T, tg deliver.Target, want map[string]bool) {
	t.Helper()
	tokens := make([]string, 0, len(want))
	for tok := range want {
		tokens = append(tokens, tok)
	}
	got, err := tg.Delivered(context.Background(), tokens)
	if err != nil {
		t.Fatalf("Delivered: %v", err)
	}
	for tok, w := range want {
		if got[tok] != w {
			t.Errorf("Delivered[%s] = %v, want %v", tok, got[tok], w)
		}
	}
}

func (s *suite) deliverOne(t *testing.T) {
	tg := s.target(t)
	msg := Message(1, 2000)
	d := stage(t, tg, msg)
	prepare(t, tg, d)
	publish(t, tg, d)
	s.expect(t, msg)
	if staging(d) {
		delivered(t, tg, map[string]bool{d.Token(): true})
	}
	if err := d.Abort(); err != nil {
		t.Errorf("Abort after Publish: %v", err)
	}
	s.expect(t, msg)
}

func (s *suite) deliverBatch(t *testing.T) {
	tg := s.target(t)
	sizes := []int{0, 1, 100, 4 << 10, 64 << 10, 64<<10 + 1, 1 << 20}
	var msgs [][]byte
	var ds []deliver.Delivery
	tokens := map[string]bool{}
	for i := range 40 {
		msg := Message(i, sizes[i%len(sizes)])
		if i == 5 {
			msg = nil // an empty message is delivered as an empty one
		}
		msgs = append(msgs, msg)
		d := stage(t, tg, msg)
		ds = append(ds, d)
		if staging(d) {
			if tokens[d.Token()] {
				t.Fatalf("token %s issued twice", d.Token())
			}
			tokens[d.Token()] = true
		}
	}
	prepare(t, tg, ds...)
	publish(t, tg, ds...)
	s.expect(t, msgs...)
	if len(tokens) > 0 {
		delivered(t, tg, tokens)
	}
}

// chunkedWrites streams messages in small and odd-sized Writes.
func (s *suite) chunkedWrites(t *testing.T) {
	tg := s.target(t)
	var msgs [][]byte
	var ds []deliver.Delivery
	for i, chunk := range []int{1, 2, 3, 7, 1000, 4097} {
		msg := Message(i, 10<<10)
		d, err := tg.Begin(context.Background(), deliver.Meta{})
		if err != nil {
			t.Fatal(err)
		}
		for p := msg; len(p) > 0; {
			n := min(chunk, len(p))
			if _, err := d.Write(p[:n]); err != nil {
				t.Fatalf("Write: %v", err)
			}
			p = p[n:]
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, msg)
		ds = append(ds, d)
	}
	prepare(t, tg, ds...)
	publish(t, tg, ds...)
	s.expect(t, msgs...)
}

// interleaved writes three messages at once, line by line in turn.
func (s *suite) interleaved(t *testing.T) {
	tg := s.target(t)
	msgs := [][]byte{Message(1, 3000), Message(2, 5000), Message(3, 100)}
	ds := make([]deliver.Delivery, len(msgs))
	rest := make([][]byte, len(msgs))
	for i := range msgs {
		d, err := tg.Begin(context.Background(), deliver.Meta{})
		if err != nil {
			t.Fatal(err)
		}
		ds[i], rest[i] = d, msgs[i]
	}
	for more := true; more; {
		more = false
		for i, p := range rest {
			if len(p) == 0 {
				continue
			}
			n := bytes.IndexByte(p, '\n') + 1
			if _, err := ds[i].Write(p[:n]); err != nil {
				t.Fatal(err)
			}
			rest[i] = p[n:]
			more = true
		}
	}
	for _, d := range ds {
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
	prepare(t, tg, ds...)
	publish(t, tg, ds...)
	s.expect(t, msgs...)
}

func (s *suite) visibleOnlyAfterPublish(t *testing.T) {
	tg := s.target(t)
	msg := Message(1, 500)
	d := stage(t, tg, msg)
	if !staging(d) {
		t.Skip("confirming target: delivered in Close")
	}
	s.expect(t)
	delivered(t, tg, map[string]bool{d.Token(): false})
	prepare(t, tg, d)
	s.expect(t)
	delivered(t, tg, map[string]bool{d.Token(): false})
	publish(t, tg, d)
	s.expect(t, msg)
}

// abort discards deliveries at each stage before Publish (for a
// confirming target, Close already delivered: only the first stage).
func (s *suite) abort(t *testing.T) {
	tg := s.target(t)
	whileWriting := begin(t, tg, Message(1, 500))
	ds := []deliver.Delivery{whileWriting}
	if staging(whileWriting) {
		closed := stage(t, tg, Message(2, 500))
		prepared := stage(t, tg, Message(3, 500))
		prepare(t, tg, prepared)
		ds = append(ds, closed, prepared)
	}
	for _, d := range ds {
		if err := d.Abort(); err != nil {
			t.Errorf("Abort: %v", err)
		}
		if err := d.Abort(); err != nil {
			t.Errorf("second Abort: %v", err)
		}
	}
	if _, err := whileWriting.Write([]byte("more\r\n")); err == nil {
		t.Error("Write after Abort succeeded")
	}
	if err := whileWriting.Close(); err == nil {
		t.Error("Close after Abort succeeded")
	}
	if len(ds) > 1 {
		if err := tg.Publish(context.Background(), ds[2:]); err == nil {
			t.Error("Publish after Abort succeeded")
		}
		want := map[string]bool{}
		for _, d := range ds {
			want[d.Token()] = false
		}
		delivered(t, tg, want)
	}
	s.expect(t)
}

// abortedLeftOut aborts one delivery of a batch and publishes the rest.
func (s *suite) abortedLeftOut(t *testing.T) {
	tg := s.target(t)
	keep1, gone, keep2 := Message(1, 700), Message(2, 700), Message(3, 700)
	d1 := stage(t, tg, keep1)
	dg := begin(t, tg, gone)
	d2 := stage(t, tg, keep2)
	if err := dg.Abort(); err != nil {
		t.Fatal(err)
	}
	prepare(t, tg, d1, d2)
	publish(t, tg, d1, d2)
	s.expect(t, keep1, keep2)
	if staging(d1) {
		delivered(t, tg, map[string]bool{d1.Token(): true, d2.Token(): true, dg.Token(): false})
	}
}

func (s *suite) emptyBatch(t *testing.T) {
	tg := s.target(t)
	prepare(t, tg)
	publish(t, tg)
	got, err := tg.Delivered(context.Background(), nil)
	if err != nil || len(got) != 0 {
		t.Errorf("Delivered(nil) = %v, %v; want empty, nil", got, err)
	}
	if err := tg.Cleanup(context.Background(), nil); err != nil {
		t.Errorf("Cleanup(nil): %v", err)
	}
	s.expect(t)
}

// delivered checks answers for a mix of published, unpublished and unknown
// tokens.
func (s *suite) delivered(t *testing.T) {
	tg := s.target(t)
	pub := stage(t, tg, Message(1, 100))
	if !staging(pub) {
		t.Skip("confirming target: no tokens")
	}
	unpub := stage(t, tg, Message(2, 100))
	prepare(t, tg, pub, unpub)
	publish(t, tg, pub)
	// A token of the same shape that was never issued.
	other := s.target(t)
	never := stage(t, other, Message(3, 100))
	neverTok := never.Token()
	if err := never.Abort(); err != nil {
		t.Fatal(err)
	}
	delivered(t, tg, map[string]bool{pub.Token(): true, unpub.Token(): false, neverTok: false})
}

// crashBeforePublish: a process prepared a delivery, recorded its token
// and died; the next one finds it not delivered and cleans it up.
func (s *suite) crashBeforePublish(t *testing.T) {
	// The crashed process never closes its target.
	before := s.newTarget(t)
	d := stage(t, before, Message(1, 5000))
	if !staging(d) {
		t.Skip("confirming target: no tokens")
	}
	prepare(t, before, d)
	tok := d.Token()

	after := s.target(t)
	delivered(t, after, map[string]bool{tok: false})
	if err := after.Cleanup(context.Background(), []string{tok}); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if err := after.Cleanup(context.Background(), []string{tok}); err != nil {
		t.Fatalf("second Cleanup: %v", err)
	}
	delivered(t, after, map[string]bool{tok: false})
	s.expect(t)

	// The restarted process delivers the message again.
	msg := Message(1, 5000)
	d2 := stage(t, after, msg)
	prepare(t, after, d2)
	publish(t, after, d2)
	s.expect(t, msg)
	if d2.Token() == tok {
		t.Errorf("token %s issued again after restart", tok)
	}
}

// crashAfterPublish: a process published and died before recording it;
// the next one finds the token delivered.
func (s *suite) crashAfterPublish(t *testing.T) {
	before := s.target(t)
	msg := Message(1, 5000)
	d := stage(t, before, msg)
	if !staging(d) {
		t.Skip("confirming target: no tokens")
	}
	prepare(t, before, d)
	publish(t, before, d)

	after := s.target(t)
	delivered(t, after, map[string]bool{d.Token(): true})
	if err := after.Cleanup(context.Background(), []string{d.Token()}); err != nil {
		t.Fatalf("Cleanup of a published token: %v", err)
	}
	delivered(t, after, map[string]bool{d.Token(): true})
	s.expect(t, msg)
}

func (s *suite) cleanupUnknown(t *testing.T) {
	tg := s.target(t)
	d := stage(t, tg, Message(1, 100))
	if !staging(d) {
		t.Skip("confirming target: no tokens")
	}
	tok := d.Token()
	if err := d.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := tg.Cleanup(context.Background(), []string{tok}); err != nil {
		t.Errorf("Cleanup of an aborted token: %v", err)
	}
	for _, bad := range []string{"", "../x", "a/b", "."} {
		if _, err := tg.Delivered(context.Background(), []string{bad}); !errors.Is(err, deliver.ErrBadToken) {
			t.Errorf("Delivered(%q) error = %v, want ErrBadToken", bad, err)
		}
		if err := tg.Cleanup(context.Background(), []string{bad}); !errors.Is(err, deliver.ErrBadToken) {
			t.Errorf("Cleanup(%q) error = %v, want ErrBadToken", bad, err)
		}
	}
}

func (s *suite) canceledContext(t *testing.T) {
	tg := s.target(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if d, err := tg.Begin(ctx, deliver.Meta{}); err == nil {
		d.Abort()
		t.Error("Begin with a canceled context succeeded")
	} else if !errors.Is(err, context.Canceled) {
		t.Errorf("Begin error = %v, want context.Canceled", err)
	}
	d := stage(t, tg, Message(1, 100))
	if !staging(d) {
		return
	}
	if err := tg.Prepare(ctx, []deliver.Delivery{d}); !errors.Is(err, context.Canceled) {
		t.Errorf("Prepare error = %v, want context.Canceled", err)
	}
	// Nothing was lost: the same delivery still goes through.
	prepare(t, tg, d)
	if err := tg.Publish(ctx, []deliver.Delivery{d}); !errors.Is(err, context.Canceled) {
		t.Errorf("Publish error = %v, want context.Canceled", err)
	}
	s.expect(t)
	publish(t, tg, d)
	s.expect(t, Message(1, 100))
}

// close aborts what is unpublished and refuses new deliveries.
func (s *suite) close(t *testing.T) {
	tg := s.newTarget(t)
	msgs := [][]byte{Message(1, 100), Message(2, 100), Message(3, 100), Message(4, 100)}
	pub := stage(t, tg, msgs[0])
	prepare(t, tg, pub)
	publish(t, tg, pub)
	open := begin(t, tg, msgs[1])
	closed := stage(t, tg, msgs[2])
	prepared := stage(t, tg, msgs[3])
	prepare(t, tg, prepared)
	if err := tg.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d, err := tg.Begin(context.Background(), deliver.Meta{}); err == nil {
		d.Abort()
		t.Error("Begin after Close succeeded")
	} else if !errors.Is(err, deliver.ErrClosed) {
		t.Errorf("Begin after Close: %v, want ErrClosed", err)
	}
	if !staging(pub) {
		// Closing delivered the closed ones.
		s.expect(t, msgs[0], msgs[2], msgs[3])
		return
	}
	s.expect(t, msgs[0])
	after := s.target(t)
	delivered(t, after, map[string]bool{pub.Token(): true, open.Token(): false, closed.Token(): false, prepared.Token(): false})
}
