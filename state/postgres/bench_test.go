package postgres

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"popsync/state"
)

// The no-new-mail poll of one account is what a fleet does most: every
// account, every few minutes. These measure what it asks of PostgreSQL,
// per poll: statements (a pgx tracer counts them) and round trips (writes
// to the server's socket; pgx sends each statement, or a whole pipelined
// batch, with one write and then waits for the answer).

// countConn counts the writes on connections to the server.
type countConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

type meter struct {
	stmts  countStatements
	writes atomic.Int64
}

func (m *meter) options(o Options) Options {
	o.tracer = &m.stmts
	// pgxpool pings a connection that was idle for more than a second
	// before it hands it out; on a loaded machine that would make the
	// counts vary. A busy daemon's connections are never idle that long.
	o.noIdlePing = true
	o.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countConn{Conn: c, writes: &m.writes}, nil
	}
	return o
}

func (m *meter) read() (stmts, trips int64) { return m.stmts.n.Load(), m.writes.Load() }

// fill gives each account n delivered records, all on the server.
func fill(tb testing.TB, s *Store, accts []state.Account, n int) [][]string {
	tb.Helper()
	lists := make([][]string, len(accts))
	t0 := time.Now().Add(-time.Hour)
	for i, a := range accts {
		recs := make([]state.Record, n)
		for j := range recs {
			u := fmt.Sprintf("%08X%08X", j+1, 1700000000+i)
			recs[j] = state.Record{UIDL: u, State: state.Delivered, Size: 4096, FirstSeen: t0, DeliveredAt: t0}
			lists[i] = append(lists[i], u)
		}
		if err := s.MarkDelivered(context.Background(), a, recs); err != nil {
			tb.Fatal(err)
		}
	}
	return lists
}

// pollNoNewMail is one poll that finds nothing new: read the seen-set,
// reconcile with the server's list (all known, nothing gone), record the
// poll.
func pollNoNewMail(ctx context.Context, s *Store, a state.Account, list []string) error {
	p, err := readAndReconcile(ctx, s, a, list)
	if err != nil {
		return err
	}
	return s.RecordPoll(ctx, p)
}

// readAndReconcile is the no-new-mail poll up to its record, which it
// returns.
func readAndReconcile(ctx context.Context, s *Store, a state.Account, list []string) (state.Poll, error) {
	start := time.Now()
	seen, err := s.ReadSeen(ctx, a)
	if err != nil {
		return state.Poll{}, err
	}
	recs, err := seen.Reconcile(ctx, list, time.Now(), 7*24*time.Hour)
	if err != nil {
		return state.Poll{}, err
	}
	for _, r := range recs {
		if r.State != state.Delivered {
			return state.Poll{}, fmt.Errorf("%s: UIDL %s not known", a, r.UIDL)
		}
	}
	return state.Poll{Name: a.User, Account: a, Start: start, End: time.Now(), OnServer: len(list)}, nil
}

// TestNoNewMailPollCost pins the statements and round trips of the
// no-new-mail poll, so that a change that adds one shows here. Single
// account (LockAccount): lease, seen-set, poll record, release. Fleet:
// ClaimDue for many accounts at once, then per account the seen-set and
// FinishPoll (poll record, next due time and release, fenced, one
// batch).
func TestNoNewMailPollCost(t *testing.T) {
	ctx := t.Context()
	var m meter
	s := open(t, newDB(t), m.options(Options{DaemonID: "d1"}))
	accts := accounts(20)
	lists := fill(t, s, accts, 100)
	if err := s.Schedule(ctx, accts); err != nil {
		t.Fatal(err)
	}
	// Warm up: the statements are prepared once per connection.
	for i, a := range accts {
		l, err := s.Acquire(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		if err := pollNoNewMail(ctx, s, a, lists[i]); err != nil {
			t.Fatal(err)
		}
		l.Release()
	}

	s0, w0 := m.read()
	for i, a := range accts {
		l, err := s.Acquire(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		if err := pollNoNewMail(ctx, s, a, lists[i]); err != nil {
			t.Fatal(err)
		}
		l.Release()
	}
	s1, w1 := m.read()
	n := int64(len(accts))
	if stmts, trips := (s1-s0)/n, (w1-w0)/n; stmts != 6 || trips != 4 || (s1-s0)%n != 0 {
		t.Errorf("single-account poll: %d statements, %d round trips per poll (%d, %d in all); want 6 and 4",
			stmts, trips, s1-s0, w1-w0)
	}

	// Fleet: twice, so the claim statement is prepared the first time.
	for round := range 2 {
		s0, w0 = m.read()
		ls, err := s.ClaimDue(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(ls) != len(accts) {
			t.Fatalf("claimed %d of %d", len(ls), len(accts))
		}
		idx := map[state.Account]int{}
		for i, a := range accts {
			idx[a] = i
		}
		for _, l := range ls {
			p, err := readAndReconcile(ctx, s, l.Account(), lists[idx[l.Account()]])
			if err != nil {
				t.Fatal(err)
			}
			if err := l.FinishPoll(ctx, p, time.Now().Add(-time.Second)); err != nil {
				t.Fatal(err)
			}
		}
		s1, w1 = m.read()
		if round == 1 {
			// 1 claim + 20 × (1 read + one batch: fence, 3 poll record,
			// schedule, release).
			if s1-s0 != 1+n*7 || w1-w0 != 1+n*2 {
				t.Errorf("fleet: %d statements, %d round trips for %d polls; want %d and %d",
					s1-s0, w1-w0, n, 1+n*7, 1+n*2)
			}
		}
	}
}

// BenchmarkNoNewMailPoll: one no-new-mail poll of an account with 100
// records, the fleet's way (ClaimDue in groups of 50, FinishPoll). Reported
// per poll: statements, round trips and rows read.
func BenchmarkNoNewMailPoll(b *testing.B) {
	for _, records := range []int{100, 1000} {
		b.Run(fmt.Sprintf("records=%d", records), func(b *testing.B) {
			ctx := context.Background()
			var m meter
			s := open(b, newDB(b), m.options(Options{DaemonID: "bench"}))
			accts := accounts(200)
			lists := fill(b, s, accts, records)
			if err := s.Schedule(ctx, accts); err != nil {
				b.Fatal(err)
			}
			idx := map[state.Account]int{}
			for i, a := range accts {
				idx[a] = i
			}
			var queue []*Lease
			next := func() *Lease {
				for len(queue) == 0 {
					ls, err := s.ClaimDue(ctx, 50)
					if err != nil {
						b.Fatal(err)
					}
					queue = ls
				}
				l := queue[0]
				queue = queue[1:]
				return l
			}
			poll := func() {
				l := next()
				p, err := readAndReconcile(ctx, s, l.Account(), lists[idx[l.Account()]])
				if err != nil {
					b.Fatal(err)
				}
				if err := l.FinishPoll(ctx, p, time.Now().Add(-time.Second)); err != nil {
					b.Fatal(err)
				}
			}
			for range 2 * len(accts) {
				poll()
			}
			s0, w0 := m.read()
			for b.Loop() {
				poll()
			}
			s1, w1 := m.read()
			n := float64(b.N)
			b.ReportMetric(float64(s1-s0)/n, "stmts/poll")
			b.ReportMetric(float64(w1-w0)/n, "roundtrips/poll")
			b.ReportMetric(float64(records), "rows-read/poll")
			for _, l := range queue {
				l.Release()
			}
		})
	}
}

// BenchmarkReadSeen: reading one account's seen-set of 10,000 records.
func BenchmarkReadSeen(b *testing.B) {
	ctx := context.Background()
	s := open(b, newDB(b), Options{})
	a := accounts(1)
	fill(b, s, a, 10000)
	for b.Loop() {
		seen, err := s.readSeen(ctx, a[0])
		if err != nil {
			b.Fatal(err)
		}
		if len(seen.recs) != 10000 {
			b.Fatalf("%d records", len(seen.recs))
		}
	}
}

// BenchmarkNewMailPoll: a fleet poll of an account with 100 records that
// finds one new message and delivers it to one Maildir: seen-set,
// reconcile, the intent, the delivery record, FinishPoll. Reported per
// poll like BenchmarkNoNewMailPoll.
func BenchmarkNewMailPoll(b *testing.B) {
	ctx := context.Background()
	var m meter
	s := open(b, newDB(b), m.options(Options{DaemonID: "bench"}))
	accts := accounts(200)
	lists := fill(b, s, accts, 100)
	if err := s.Schedule(ctx, accts); err != nil {
		b.Fatal(err)
	}
	idx := map[state.Account]int{}
	for i, a := range accts {
		idx[a] = i
	}
	var queue []*Lease
	seq := 0
	poll := func() {
		for len(queue) == 0 {
			ls, err := s.ClaimDue(ctx, 50)
			if err != nil {
				b.Fatal(err)
			}
			queue = ls
		}
		l := queue[0]
		queue = queue[1:]
		i := idx[l.Account()]
		seq++
		uidl := fmt.Sprintf("new-%d", seq)
		lists[i] = append(lists[i], uidl)
		start := time.Now()
		seen, err := s.ReadSeen(ctx, l.Account())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := seen.Reconcile(ctx, lists[i], start, 7*24*time.Hour); err != nil {
			b.Fatal(err)
		}
		in := state.Intent{UIDL: uidl, Target: "maildir:inbox", Token: "1740830400.M1P2Q" + uidl + ".host", Size: 4096}
		if err := s.AddIntents(ctx, l.Account(), []state.Intent{in}); err != nil {
			b.Fatal(err)
		}
		if err := s.MarkDelivered(ctx, l.Account(), []state.Record{{UIDL: uidl, State: state.Delivered, Size: 4096}}); err != nil {
			b.Fatal(err)
		}
		p := state.Poll{Name: "bench", Account: l.Account(), Start: start, End: time.Now(), OnServer: len(lists[i]), New: 1, Delivered: 1}
		if err := l.FinishPoll(ctx, p, time.Now().Add(-time.Second)); err != nil {
			b.Fatal(err)
		}
	}
	for range 2 * len(accts) {
		poll()
	}
	s0, w0 := m.read()
	for b.Loop() {
		poll()
	}
	s1, w1 := m.read()
	n := float64(b.N)
	b.ReportMetric(float64(s1-s0)/n, "stmts/poll")
	b.ReportMetric(float64(w1-w0)/n, "roundtrips/poll")
	for _, l := range queue {
		l.Release()
	}
}
