package deliver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"

	"github.com/emersion/go-smtp"

	"popsync/deliver"
	"popsync/deliver/delivertest"
)

// liveConns wraps an SMTPOptions.Dial and counts the connections open at
// once, the most ever open, and all ever opened.
type liveConns struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu               sync.Mutex
	live, max, total int
}

func (l *liveConns) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := l.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.live++
	l.total++
	l.max = max(l.max, l.live)
	l.mu.Unlock()
	return &countedConn{Conn: c, l: l}, nil
}

func (l *liveConns) counts() (live, most, total int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.live, l.max, l.total
}

type countedConn struct {
	net.Conn
	l    *liveConns
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.live--
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// begin starts a delivery and writes a header section; the delivery holds
// its session until Close or Abort.
func begin(t *testing.T, ctx context.Context, tg deliver.Target, i int) deliver.Delivery {
	t.Helper()
	d, err := tg.Begin(ctx, deliver.Meta{UIDL: fmt.Sprint(i)})
	if err != nil {
		t.Fatalf("Begin %d: %v", i, err)
	}
	if _, err := d.Write(msg(fmt.Sprintf("Subject: %d\r\n", i), "")); err != nil {
		t.Fatalf("Write %d: %v", i, err)
	}
	return d
}

// TestSMTPPoolBound: with Connections 3, three deliveries in progress
// hold three sessions; a fourth Begin waits until one of them ends and
// then takes its session; a waiting Begin gives up when its context ends
// or the target is closed.
func TestSMTPPoolBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newPipeListener()
		m := startMTA(t, l, nil)
		lc := &liveConns{dial: l.dial}
		tg := newSMTP(t, deliver.SMTPOptions{Addr: "mta.test:25", Dial: lc.Dial, Connections: 3})
		if n := tg.Connections(); n != 3 {
			t.Fatalf("Connections() = %d, want 3", n)
		}
		ctx := context.Background()
		var ds []deliver.Delivery
		for i := range 3 {
			ds = append(ds, begin(t, ctx, tg, i))
		}
		type result struct {
			d   deliver.Delivery
			err error
		}
		got := make(chan result, 1)
		go func() {
			d, err := tg.Begin(ctx, deliver.Meta{UIDL: "3"})
			got <- result{d, err}
		}()
		synctest.Wait()
		select {
		case r := <-got:
			t.Fatalf("fourth Begin returned (%v) while three deliveries hold the three sessions", r.err)
		default:
		}
		if err := ds[1].Close(); err != nil {
			t.Fatal(err)
		}
		r := <-got
		if r.err != nil {
			t.Fatalf("fourth Begin after a Close: %v", r.err)
		}
		if _, err := r.d.Write(msg("Subject: 3\r\n", "")); err != nil {
			t.Fatal(err)
		}
		if _, most, total := lc.counts(); most != 3 || total != 3 {
			t.Errorf("%d connections at most, %d in all, want 3 and 3: the fourth message reuses a session", most, total)
		}

		// All sessions busy again: a Begin whose context ends gives up
		// with a temporary error that names the cause.
		cctx, cancel := context.WithCancel(ctx)
		go func() {
			_, err := tg.Begin(cctx, deliver.Meta{UIDL: "canceled"})
			got <- result{nil, err}
		}()
		synctest.Wait()
		cancel()
		if r := <-got; !errors.Is(r.err, context.Canceled) || !deliver.IsTemporary(r.err) {
			t.Errorf("waiting Begin with a canceled context: %v, want temporary context.Canceled", r.err)
		}

		for _, d := range []deliver.Delivery{ds[0], ds[2], r.d} {
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if got := len(m.messages()); got != 4 {
			t.Errorf("server stored %d messages, want 4", got)
		}

		// Closing the target while a Begin waits: the Begin fails with
		// ErrClosed.
		for i := range 3 {
			ds[i] = begin(t, ctx, tg, 10+i)
		}
		go func() {
			_, err := tg.Begin(ctx, deliver.Meta{UIDL: "late"})
			got <- result{nil, err}
		}()
		synctest.Wait()
		if err := tg.Close(); err != nil {
			t.Fatal(err)
		}
		if r := <-got; !errors.Is(r.err, deliver.ErrClosed) {
			t.Errorf("Begin waiting across Close: %v, want ErrClosed", r.err)
		}
		if got := len(m.messages()); got != 4 {
			t.Errorf("server stored %d messages after Close aborted three, want 4", got)
		}
		synctest.Wait()
		if live, _, _ := lc.counts(); live != 0 {
			t.Errorf("%d connections open after Close", live)
		}
	})
}

// TestSMTPPoolBrokenSession: a session that breaks during a message (the
// server drops it before its reply to the final dot) is dropped from the
// pool; its slot goes to a new session, the other session goes on, and
// never more than Connections are open.
func TestSMTPPoolBrokenSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newPipeListener()
		m := startMTA(t, l, nil)
		m.setFail(func(ev event) error {
			if ev.stage == "dot" && ev.n == 1 {
				return dropConn(ev)
			}
			return nil
		})
		lc := &liveConns{dial: l.dial}
		tg := newSMTP(t, deliver.SMTPOptions{Addr: "mta.test:25", Dial: lc.Dial, Connections: 2})
		ctx := context.Background()
		a := begin(t, ctx, tg, 0) // the server's transaction 1: dropped
		b := begin(t, ctx, tg, 1)
		err := a.Close()
		if !deliver.IsTemporary(err) {
			t.Fatalf("Close of the dropped message: %v, want a temporary error", err)
		}
		var de *deliver.DeliveryError
		if errors.As(err, &de) && de.TargetDown() {
			t.Errorf("%v: TargetDown for a session that broke during a message", err)
		}
		c := begin(t, ctx, tg, 2)
		if _, most, total := lc.counts(); most != 2 || total != 3 {
			t.Errorf("%d connections at most, %d in all, want 2 and 3", most, total)
		}
		for _, d := range []deliver.Delivery{b, c} {
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		}
		for i := 3; i < 10; i++ {
			if err := send(tg, delivertest.Message(i, 300), deliver.Meta{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, most, total := lc.counts(); most != 2 || total != 3 {
			t.Errorf("after more messages: %d connections at most, %d in all, want 2 and 3", most, total)
		}
		msgs := m.messages()
		if len(msgs) != 9 {
			t.Fatalf("server stored %d messages, want 9", len(msgs))
		}
		for _, b := range msgs {
			if bytes.Contains(b, []byte("Subject: 0\r\n")) {
				t.Error("the dropped message was stored")
			}
		}
	})
}

// TestSMTPPoolConcurrent: many goroutines deliver at once through one
// target (run it with -race); every message arrives once and the target
// never has more than Connections sessions.
func TestSMTPPoolConcurrent(t *testing.T) {
	for _, lmtp := range []bool{false, true} {
		name := "smtp"
		if lmtp {
			name = "lmtp"
		}
		t.Run(name, func(t *testing.T) {
			var setup func(*smtp.Server)
			if lmtp {
				setup = func(s *smtp.Server) { s.LMTP = true }
			}
			m := newTCPMTA(t, setup)
			lc := &liveConns{dial: (&net.Dialer{}).DialContext}
			opts := deliver.SMTPOptions{Addr: m.Addr, Dial: lc.Dial, Connections: 4, Rcpt: []string{"me@example.test"}}
			var tg *deliver.SMTP
			if lmtp {
				tg = newLMTP(t, opts)
			} else {
				tg = newSMTP(t, opts)
			}
			const workers, each = 12, 10
			var wg sync.WaitGroup
			errs := make(chan error, workers*each)
			for w := range workers {
				wg.Go(func() {
					for i := range each {
						if err := send(tg, delivertest.Message(w*each+i, 200+i), deliver.Meta{}); err != nil {
							errs <- err
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if _, most, total := lc.counts(); most > 4 || total > 4 {
				t.Errorf("%d connections at once, %d in all, want at most 4", most, total)
			}
			got := m.messages()
			if len(got) != workers*each {
				t.Fatalf("server stored %d messages, want %d", len(got), workers*each)
			}
			seen := make(map[string]bool)
			for _, b := range got {
				seen[string(b)] = true
			}
			if len(seen) != workers*each {
				t.Errorf("%d distinct messages of %d: some arrived twice", len(seen), len(got))
			}
			if err := tg.Close(); err != nil {
				t.Fatal(err)
			}
			if live, _, _ := lc.counts(); live != 0 {
				t.Errorf("%d connections open after Close", live)
			}
		})
	}
}

// TestSMTPConnectionsRefused: a bound outside 0..MaxConnections is a
// configuration error.
func TestSMTPConnectionsRefused(t *testing.T) {
	for _, n := range []int{-1, deliver.MaxConnections + 1} {
		if _, err := deliver.NewSMTP(deliver.SMTPOptions{Addr: "127.0.0.1:25", Rcpt: []string{"a@b"}, Connections: n}); err == nil {
			t.Errorf("Connections %d accepted", n)
		}
	}
	tg, err := deliver.NewLMTP(deliver.SMTPOptions{Addr: "unix:/x", Rcpt: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	if n := tg.Connections(); n != deliver.DefaultConnections {
		t.Errorf("default Connections() = %d, want %d", n, deliver.DefaultConnections)
	}
}

// TestSMTPResetOnlyAfterOpenTransaction: a session goes back to the pool
// without RSET when the last transaction ended (the reply to the final
// dot, or a refused MAIL), and with RSET when it may still be open (a
// refused RCPT).
func TestSMTPResetOnlyAfterOpenTransaction(t *testing.T) {
	m := newTCPMTA(t, nil)
	m.setFail(func(ev event) error {
		switch {
		case ev.n == 2 && ev.stage == "mail":
			return reply(550, "no such sender")
		case ev.n == 3 && ev.stage == "dot":
			return reply(554, "rejected")
		case ev.n == 4 && ev.stage == "rcpt":
			return reply(550, "no such user")
		}
		return nil
	})
	tg := newSMTP(t, deliver.SMTPOptions{Addr: m.Addr})
	var rsets []int
	for i := 1; i <= 5; i++ {
		before := strings.Count(m.transcript(), "RSET\r\n")
		err := send(tg, delivertest.Message(i, 100), deliver.Meta{})
		if (err != nil) != (i >= 2 && i <= 4) {
			t.Fatalf("message %d: %v", i, err)
		}
		rsets = append(rsets, strings.Count(m.transcript(), "RSET\r\n")-before)
	}
	// Only message 5 follows an open transaction (4's refused RCPT).
	if want := []int{0, 0, 0, 0, 1}; !slices.Equal(rsets, want) {
		t.Errorf("RSETs before each message %v, want %v", rsets, want)
	}
	if c := m.connections(); c != 1 {
		t.Errorf("%d connections, want 1", c)
	}
	if got := len(m.messages()); got != 2 {
		t.Errorf("server stored %d, want 2", got)
	}
}

// TestSMTPStaleSessionServerGone: the server closed the idle session and
// takes no new one: MAIL on the old session fails, the new connection is
// refused, and the delivery fails as target down (temporary), as a
// failed connect in Begin does.
func TestSMTPStaleSessionServerGone(t *testing.T) {
	m := newTCPMTA(t, nil)
	var (
		mu   sync.Mutex
		last *smtp.Conn
	)
	m.setFail(func(ev event) error {
		mu.Lock()
		last = ev.conn
		mu.Unlock()
		return nil
	})
	var refuse sync.Mutex
	down := false
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		refuse.Lock()
		defer refuse.Unlock()
		if down {
			return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	tg := newSMTP(t, deliver.SMTPOptions{Addr: m.Addr, Dial: dial})
	if err := send(tg, msg("", "one\r\n"), deliver.Meta{}); err != nil {
		t.Fatal(err)
	}
	refuse.Lock()
	down = true
	refuse.Unlock()
	mu.Lock()
	last.Close()
	mu.Unlock()
	err := send(tg, msg("", "two\r\n"), deliver.Meta{})
	var de *deliver.DeliveryError
	if !errors.As(err, &de) || !de.TargetDown() || !de.Temporary {
		t.Fatalf("send to a server that went away: %v, want a temporary target-down error", err)
	}
	if _, err := tg.Begin(context.Background(), deliver.Meta{}); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("next Begin: %v, want the sticky connection refused", err)
	}
}

// TestSMTPHoldSmallMessages: a small message is held whole and its whole
// transaction runs in Close (so a caller that closes on another goroutine
// overlaps every round trip); a large one starts streaming once the hold
// is full, before Close, so memory stays bounded.
func TestSMTPHoldSmallMessages(t *testing.T) {
	m := newTCPMTA(t, nil)
	tg := newSMTP(t, deliver.SMTPOptions{Addr: m.Addr})
	ctx := context.Background()
	d, err := tg.Begin(ctx, deliver.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Write(delivertest.Message(1, 20<<10)); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(m.transcript(), "MAIL FROM") {
		t.Error("a 20 KiB message started its transaction before Close")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(m.messages()); got != 1 {
		t.Fatalf("server stored %d, want 1", got)
	}

	d, err = tg.Begin(ctx, deliver.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	big := delivertest.Message(2, 4<<20)
	for b := big; len(b) > 0; {
		n := min(len(b), 32<<10)
		if _, err := d.Write(b[:n]); err != nil {
			t.Fatal(err)
		}
		b = b[n:]
	}
	if got := strings.Count(m.transcript(), "DATA\r\n"); got != 2 {
		t.Errorf("a 4 MiB message was not streaming before Close (%d DATA commands seen, want 2)", got)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if got := m.messages(); len(got) != 2 || len(got[1]) < 4<<20-64 {
		t.Fatalf("server stored %d messages", len(got))
	}
}
