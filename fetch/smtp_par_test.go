package fetch_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"popsync/configs"
	"popsync/deliver"
	"popsync/fetch"
	"popsync/fetch/pop3/pop3test"
	"popsync/state"
)

// fakeMTA is an in-process SMTP server (emersion/go-smtp) for the tests of
// reinjection over several connections: it keeps the subject of every
// message it stored, in the order it stored them, tracks how many
// messages wait for their reply to the final dot at once, and answers
// each final dot through a hook.
type fakeMTA struct {
	addr string

	mu      sync.Mutex
	stored  []string       // subjects, in the order their 250 was decided
	atDot   map[string]int // subject → times its final dot arrived
	waiting int            // messages between their final dot and its reply
	most    int            // the most that ever waited at once
	refuse  bool           // dials fail: the MTA is down
	changed chan struct{}  // closed and replaced whenever atDot changes
	// dot, when set, decides the reply to a message's final dot (nil:
	// 250); it may block, until the test ends at the latest.
	dot func(subject string) error

	done chan struct{} // closed when the test ends
}

func newFakeMTA(t *testing.T) *fakeMTA {
	t.Helper()
	m := &fakeMTA{atDot: map[string]int{}, changed: make(chan struct{}), done: make(chan struct{})}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &fakeSession{m: m}, nil
	}))
	srv.Domain = "mta.test"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.addr = l.Addr().String()
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		close(m.done)
		srv.Close()
		l.Close()
		<-served
	})
	return m
}

// dial is the SMTP target's Dial: refused while the MTA is down.
func (m *fakeMTA) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	m.mu.Lock()
	refuse := m.refuse
	m.mu.Unlock()
	if refuse {
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", m.addr)
}

func (m *fakeMTA) setDot(f func(subject string) error) {
	m.mu.Lock()
	m.dot = f
	m.mu.Unlock()
}

func (m *fakeMTA) setRefuse(v bool) {
	m.mu.Lock()
	m.refuse = v
	m.mu.Unlock()
}

func (m *fakeMTA) storedSubjects() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.stored)
}

func (m *fakeMTA) mostWaiting() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.most
}

// waitFor waits until cond, called under the lock, holds, at most until
// the test ends or a generous deadline passes.
func (m *fakeMTA) waitFor(what string, cond func() bool) error {
	deadline := time.After(20 * time.Second)
	for {
		m.mu.Lock()
		ok := cond()
		ch := m.changed
		m.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-deadline:
			return fmt.Errorf("waited in vain for %s", what)
		case <-m.done:
			return errors.New("test over")
		}
	}
}

// waitDots waits until the final dot of every one of subjects arrived.
func (m *fakeMTA) waitDots(subjects ...string) error {
	return m.waitFor(fmt.Sprintf("the final dots of %v", subjects), func() bool {
		for _, s := range subjects {
			if m.atDot[s] == 0 {
				return false
			}
		}
		return true
	})
}

// waitStored waits until every one of subjects was stored.
func (m *fakeMTA) waitStored(subjects ...string) error {
	return m.waitFor(fmt.Sprintf("%v stored", subjects), func() bool {
		for _, s := range subjects {
			if !slices.Contains(m.stored, s) {
				return false
			}
		}
		return true
	})
}

// signal wakes the waiters; called with m.mu held.
func (m *fakeMTA) signal() {
	close(m.changed)
	m.changed = make(chan struct{})
}

type fakeSession struct {
	m *fakeMTA
}

func (s *fakeSession) Reset()                               {}
func (s *fakeSession) Logout() error                        { return nil }
func (s *fakeSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *fakeSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *fakeSession) Data(r io.Reader) error               { return s.m.data(r) }

var subjectRE = regexp.MustCompile(`(?m)^Subject: (\S+)\r$`)

func subjectOf(b []byte) string {
	if m := subjectRE.FindSubmatch(b); m != nil {
		return string(m[1])
	}
	return ""
}

func (m *fakeMTA) data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	subj := subjectOf(b)
	m.mu.Lock()
	m.atDot[subj]++
	m.signal()
	m.waiting++
	m.most = max(m.most, m.waiting)
	f := m.dot
	m.mu.Unlock()
	var verdict error
	if f != nil {
		verdict = f(subj)
	}
	m.mu.Lock()
	m.waiting--
	if verdict == nil {
		m.stored = append(m.stored, subj)
		m.signal()
	}
	m.mu.Unlock()
	return verdict
}

func smtpReply(code int, text string) error {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{code / 100, 0, 0}, Message: text}
}

// parMessages are n small messages with UIDs u00.. and subjects m00...
func parMessages(n int) []pop3test.Message {
	out := make([]pop3test.Message, n)
	for i := range out {
		out[i] = pop3test.Message{UID: fmt.Sprintf("u%02d", i),
			Data: fmt.Appendf(nil, "From: a@example.test\r\nSubject: m%02d\r\nMessage-ID: <m%02d@example.test>\r\n\r\nbody %d\r\n", i, i, i)}
	}
	return out
}

// withMTA makes the account deliver to m over SMTP with connections
// sessions, after the given other entries (Maildirs), and records every
// message event of the poll.
func (e *env) withMTA(m *fakeMTA, connections int, others ...configs.Deliver) *events {
	entry := configs.Deliver{Target: &configs.SMTPTarget{Addr: m.addr, Rcpt: []string{"me@localhost"}, TLS: configs.TLSNone,
		Connections: connections}, OnReject: configs.OnRejectQuarantine}
	e.acct.Deliver = append(others, entry)
	e.opts.QuarantineDir = filepath.Join(e.dir, "quarantine")
	e.opts.OpenTarget = func(a *configs.Account, d configs.Deliver) (deliver.Target, error) {
		if st, ok := d.Target.(*configs.SMTPTarget); ok {
			return deliver.NewSMTP(deliver.SMTPOptions{Addr: st.Addr, Rcpt: st.Rcpt, Helo: "client.test",
				Connections: st.Connections, Dial: m.dial, CommandTimeout: 20 * time.Second})
		}
		return fetch.OpenTarget(a, d)
	}
	ev := &events{}
	e.opts.OnMessage = ev.add
	return ev
}

// events records Options.OnMessage.
type events struct {
	mu  sync.Mutex
	all []fetch.MessageEvent
}

func (ev *events) add(e fetch.MessageEvent) {
	ev.mu.Lock()
	ev.all = append(ev.all, e)
	ev.mu.Unlock()
}

// of returns the UIDLs of the events with this result, in order.
func (ev *events) of(result string) []string {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	var out []string
	for _, e := range ev.all {
		if e.Result == result {
			out = append(out, e.UIDL)
		}
	}
	return out
}

func (ev *events) reset() {
	ev.mu.Lock()
	ev.all = nil
	ev.mu.Unlock()
}

func recorded(t *testing.T, e *env, msgs []pop3test.Message) map[string]state.MsgState {
	t.Helper()
	known, err := state.Known(t.Context(), e.store, e.acct.Identity(), uids(msgs))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]state.MsgState{}
	for k, v := range known {
		out[k] = v.State
	}
	return out
}

// TestSMTPParallelSettlesInStreamOrder: with four connections the MTA
// holds four messages between their final dot and its reply at once, and
// answers them out of order; the poll still settles and commits them in
// the order they were fetched, and counts each after its own 250.
func TestSMTPParallelSettlesInStreamOrder(t *testing.T) {
	msgs := parMessages(12)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	m := newFakeMTA(t)
	// In every group of four, each message is answered only once all
	// four final dots arrived (so four wait at once: impossible unless
	// four are in flight), and the first only once the other three were
	// stored: their replies overtake its.
	m.setDot(func(subj string) error {
		var i int
		fmt.Sscanf(subj, "m%d", &i)
		g := i / 4 * 4
		name := func(k int) string { return fmt.Sprintf("m%02d", k) }
		if err := m.waitDots(name(g), name(g+1), name(g+2), name(g+3)); err != nil {
			return err
		}
		if i == g {
			return m.waitStored(name(g+1), name(g+2), name(g+3))
		}
		return nil
	})
	ev := e.withMTA(m, 4)
	r := e.mustPoll()
	if r.Delivered != len(msgs) || r.Deleted != len(msgs) {
		t.Fatalf("poll: %+v", r)
	}
	if got := ev.of(fetch.MessageDelivered); !slices.Equal(got, uids(msgs)) {
		t.Errorf("settled in the order %v, want the stream's %v", got, uids(msgs))
	}
	if n := m.mostWaiting(); n != 4 {
		t.Errorf("at most %d messages waited for the MTA's reply at once, want 4", n)
	}
	stored := m.storedSubjects()
	if len(stored) != len(msgs) || stored[3] != "m00" {
		t.Errorf("MTA stored %v: want all %d, m00 fourth", stored, len(msgs))
	}
	e.wantOnServer()
}

// TestSMTPParallelOneConnectionIsSequential: connections = 1 keeps
// today's order: never two messages waiting for the MTA at once.
func TestSMTPParallelOneConnectionIsSequential(t *testing.T) {
	msgs := parMessages(8)
	e := newEnv(t, msgs, pop3test.Config{})
	m := newFakeMTA(t)
	ev := e.withMTA(m, 1)
	r := e.mustPoll()
	if r.Delivered != len(msgs) {
		t.Fatalf("poll: %+v", r)
	}
	if n := m.mostWaiting(); n != 1 {
		t.Errorf("%d messages waited for the MTA at once, want 1", n)
	}
	var want []string
	for i := range msgs {
		want = append(want, fmt.Sprintf("m%02d", i))
	}
	if got := m.storedSubjects(); !slices.Equal(got, want) {
		t.Errorf("MTA stored %v, want %v", got, want)
	}
	if got := ev.of(fetch.MessageDelivered); !slices.Equal(got, uids(msgs)) {
		t.Errorf("settled %v", got)
	}
}

// TestSMTPParallelRejectOneGoesOn: a 550 to one message while others are
// in flight: on_reject quarantines that one, the rest are delivered and
// deleted.
func TestSMTPParallelRejectOneGoesOn(t *testing.T) {
	msgs := parMessages(10)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	m := newFakeMTA(t)
	m.setDot(func(subj string) error {
		if subj == "m03" {
			return smtpReply(550, "rejected as spam")
		}
		return nil
	})
	ev := e.withMTA(m, 4)
	r := e.mustPoll()
	if r.Delivered != 9 || r.Rejected != 1 || r.Deleted != 9 {
		t.Fatalf("poll: %+v", r)
	}
	if got := ev.of(fetch.MessageRejected); !slices.Equal(got, []string{"u03"}) {
		t.Errorf("rejected %v, want [u03]", got)
	}
	e.wantOnServer("u03")
	if n := countFiles(t, filepath.Join(e.opts.QuarantineDir, "test")); n != 1 {
		t.Errorf("quarantine holds %d, want 1", n)
	}
	if st := recorded(t, e, msgs); st["u03"] != state.Quarantined || len(st) != 10 {
		t.Errorf("seen-set %v", st)
	}
	if got := m.storedSubjects(); len(got) != 9 || slices.Contains(got, "m03") {
		t.Errorf("MTA stored %v", got)
	}
}

// TestSMTPParallelTemporaryFailure: a 451 to one message is deferred; the
// others go on; the next poll delivers it, and nothing twice.
func TestSMTPParallelTemporaryFailure(t *testing.T) {
	msgs := parMessages(10)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	m := newFakeMTA(t)
	m.setDot(func(subj string) error {
		if subj == "m02" {
			return smtpReply(451, "try later")
		}
		return nil
	})
	ev := e.withMTA(m, 4)
	r := e.deferredPoll()
	if r.Delivered != 9 || r.Failed != 1 || r.Deleted != 9 {
		t.Fatalf("poll: %+v", r)
	}
	if got := ev.of(fetch.MessageDeferred); !slices.Equal(got, []string{"u02"}) {
		t.Errorf("deferred %v, want [u02]", got)
	}
	e.wantOnServer("u02")
	m.setDot(nil)
	if r := e.mustPoll(); r.Delivered != 1 || r.Deleted != 1 {
		t.Fatalf("retry: %+v", r)
	}
	got := m.storedSubjects()
	slices.Sort(got)
	var want []string
	for i := range msgs {
		want = append(want, fmt.Sprintf("m%02d", i))
	}
	if !slices.Equal(got, want) {
		t.Errorf("MTA stored %v, want each message once", got)
	}
	e.wantOnServer()
}

// TestSMTPParallelTargetDown: the MTA goes away in the middle of the poll
// (it answers 421 to every later final dot and refuses connections): the
// poll stops with the target's error and deletes nothing; exactly the
// messages the MTA stored are recorded; the next poll, with the MTA back,
// delivers the rest once and deletes everything.
func TestSMTPParallelTargetDown(t *testing.T) {
	msgs := parMessages(30)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	m := newFakeMTA(t)
	var mu sync.Mutex
	down := false
	m.setDot(func(subj string) error {
		mu.Lock()
		defer mu.Unlock()
		if subj == "m06" {
			down = true
			m.setRefuse(true)
		}
		if down {
			return smtpReply(421, "shutting down")
		}
		return nil
	})
	ev := e.withMTA(m, 4)
	r := e.poll()
	var de *deliver.DeliveryError
	if !errors.Is(r.Err, fetch.ErrDelivery) || !errors.As(r.Err, &de) || !de.TargetDown() {
		t.Fatalf("poll: %v, want the target-down error", r.Err)
	}
	stored := m.storedSubjects()
	if r.Delivered != len(stored) || r.Deleted != 0 || len(stored) < 3 {
		t.Fatalf("poll %+v; the MTA stored %v", r, stored)
	}
	st := recorded(t, e, msgs)
	for _, s := range stored {
		if st["u"+s[1:]] != state.Delivered {
			t.Errorf("%s stored by the MTA, not recorded", s)
		}
	}
	if len(st) != len(stored) {
		t.Errorf("%d recorded, %d stored", len(st), len(stored))
	}
	delivered := ev.of(fetch.MessageDelivered)
	if len(delivered) != len(stored) {
		t.Errorf("delivered events %v", delivered)
	}
	if len(delivered)+len(ev.of(fetch.MessageDeferred)) >= len(msgs) {
		t.Errorf("the poll went on through the mailbox after the target went down")
	}

	m.setRefuse(false)
	m.setDot(nil)
	if r := e.mustPoll(); r.Delivered != len(msgs)-len(stored) || r.Deleted != len(msgs) {
		t.Fatalf("next poll: %+v", r)
	}
	all := m.storedSubjects()
	slices.Sort(all)
	if len(all) != len(msgs) || len(slices.Compact(all)) != len(msgs) {
		t.Errorf("MTA stored %d messages (%d distinct), want each of %d once", len(all), len(slices.Compact(all)), len(msgs))
	}
	e.wantOnServer()
}

// TestSMTPParallelLeaseLost: the lease is lost while messages are in
// flight: they are settled (the poll waits for their replies), nothing
// after the loss is recorded or deleted, the session ends without QUIT,
// and the next poll delivers the rest; only messages the MTA took after
// the loss can reach it twice (at least once, as the README says).
func TestSMTPParallelLeaseLost(t *testing.T) {
	msgs := parMessages(20)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	e.opts.BatchSize = 100
	m := newFakeMTA(t)
	ev := e.withMTA(m, 4)
	ls := &losingStore{Store: e.store}
	e.opts.Store = ls
	e.opts.Progress = func(p fetch.Progress) {
		if p.Done == 3 {
			ls.lose()
		}
	}
	r := e.poll()
	if !errors.Is(r.Err, state.ErrLeaseLost) {
		t.Fatalf("poll: %v, want ErrLeaseLost", r.Err)
	}
	if r.Delivered > 3 || r.Deleted != 0 {
		t.Fatalf("poll without a lease delivered %d, deleted %d", r.Delivered, r.Deleted)
	}
	wantNoQuit(t, e.srv)
	first := m.storedSubjects()
	if len(first) > 3+4 {
		t.Errorf("the MTA got %d messages, want at most the 3 settled and 4 in flight", len(first))
	}
	if st := recorded(t, e, msgs); len(st) != r.Delivered {
		t.Errorf("recorded %v, want %d", st, r.Delivered)
	}
	ev.reset()

	e.opts.Progress = nil
	before := r.Delivered
	r = e.mustPoll()
	if before+r.Delivered != len(msgs) || r.Deleted != len(msgs) {
		t.Fatalf("poll with a lease: %+v", r)
	}
	count := map[string]int{}
	for _, s := range m.storedSubjects() {
		count[s]++
	}
	for i := range msgs {
		s := fmt.Sprintf("m%02d", i)
		switch {
		case count[s] == 0:
			t.Errorf("%s never reached the MTA", s)
		case count[s] > 1 && !slices.Contains(first, s):
			t.Errorf("%s reached the MTA %d times", s, count[s])
		}
	}
	e.wantOnServer()
}

// TestSMTPParallelWithMaildir: a Maildir and an SMTP target with four
// connections in one sink: the Maildir publishes exactly what the MTA
// accepted, a 550 goes to on_reject, a 451 is retried at the next poll,
// and at the end each target holds every message once.
func TestSMTPParallelWithMaildir(t *testing.T) {
	msgs := parMessages(16)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	m := newFakeMTA(t)
	m.setDot(func(subj string) error {
		switch subj {
		case "m04":
			return smtpReply(550, "no")
		case "m09":
			return smtpReply(451, "later")
		}
		return nil
	})
	ev := e.withMTA(m, 4, configs.Deliver{Target: &configs.MaildirTarget{Path: e.maildir}})
	r := e.deferredPoll()
	if r.Delivered != 14 || r.Rejected != 1 || r.Failed != 1 || r.Deleted != 14 {
		t.Fatalf("poll: %+v", r)
	}
	want := slices.DeleteFunc(uids(msgs), func(u string) bool { return u == "u04" || u == "u09" })
	if got := ev.of(fetch.MessageDelivered); !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
	if n := countFiles(t, e.maildir); n != 14 {
		t.Errorf("Maildir holds %d, want 14", n)
	}
	e.wantOnServer("u04", "u09")
	m.setDot(nil)
	if r := e.mustPoll(); r.Delivered != 1 {
		t.Fatalf("retry: %+v", r)
	}
	keep := slices.DeleteFunc(slices.Clone(msgs), func(x pop3test.Message) bool { return x.UID == "u04" })
	e.wantExactlyOnce(keep)
	got := m.storedSubjects()
	if len(got) != 15 || slices.Contains(got, "m04") {
		t.Errorf("MTA stored %v", got)
	}
	e.wantOnServer("u04")
}
