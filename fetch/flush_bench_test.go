package fetch_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"popsync/configs"
	"popsync/deliver"
	"popsync/fetch"
	"popsync/fetch/pop3/pop3test"
	"popsync/internal/credential"
	"popsync/state"
)

// flushClock is the fake device of the slow-flush benchmark: wait sleeps
// for n flush latencies and remembers when, so that the flushes a poll
// waited for one after another can be told from those it waited for at
// once (two waits that overlap cost one latency, not two).
type flushClock struct {
	lat time.Duration

	mu    sync.Mutex
	spans [][2]time.Time // every wait, as [start, start+n×lat)
	waits int            // flushes asked for, overlapping or not
}

func (c *flushClock) wait(n int) {
	if c.lat <= 0 || n <= 0 {
		return
	}
	start := time.Now()
	time.Sleep(c.lat * time.Duration(n))
	c.mu.Lock()
	// The span is the flushes' own time: what a sleep overshoots by
	// (scheduling) is no flush, and would make waits in sequence look
	// as if they overlapped.
	c.spans = append(c.spans, [2]time.Time{start, start.Add(c.lat * time.Duration(n))})
	c.waits += n
	c.mu.Unlock()
}

// sequential is how many flush latencies the waits so far cover when
// overlapping waits count once: the flushes waited for in sequence.
func (c *flushClock) sequential() float64 {
	c.mu.Lock()
	spans := slices.Clone(c.spans)
	c.mu.Unlock()
	if c.lat <= 0 || len(spans) == 0 {
		return 0
	}
	slices.SortFunc(spans, func(a, b [2]time.Time) int { return a[0].Compare(b[0]) })
	var covered time.Duration
	cur := spans[0]
	for _, s := range spans[1:] {
		if s[0].After(cur[1]) {
			covered += cur[1].Sub(cur[0])
			cur = s
		} else if s[1].After(cur[1]) {
			cur[1] = s[1]
		}
	}
	covered += cur[1].Sub(cur[0])
	return float64(covered) / float64(c.lat)
}

// slowFlushTarget makes a target's flushes take lat, as on a slower disk
// than the test's: Prepare waits lat for every 64 files (the files of one
// Prepare are fsynced 64 at a time, and a device serves flushes issued at
// once together), Publish waits lat for its directory fsync.
type slowFlushTarget struct {
	deliver.Target
	clock *flushClock
}

func (s slowFlushTarget) Prepare(ctx context.Context, ds []deliver.Delivery) error {
	s.clock.wait((len(ds) + 63) / 64)
	return s.Target.Prepare(ctx, ds)
}

func (s slowFlushTarget) Publish(ctx context.Context, ds []deliver.Delivery) error {
	err := s.Target.Publish(ctx, ds)
	s.clock.wait(1)
	return err
}

// slowFlushStore makes each of the seen-set's commits wait lat (one WAL
// flush each), one commit at a time as SQLite's one writer does, and
// counts the batches recorded.
type slowFlushStore struct {
	state.Store
	clock *flushClock

	writer sync.Mutex // held for a commit and its flush
	marks  int        // guarded by writer
}

func (s *slowFlushStore) AddIntents(ctx context.Context, a state.Account, in []state.Intent) error {
	s.writer.Lock()
	defer s.writer.Unlock()
	s.clock.wait(1)
	return s.Store.AddIntents(ctx, a, in)
}

func (s *slowFlushStore) MarkDelivered(ctx context.Context, a state.Account, recs []state.Record) error {
	s.writer.Lock()
	defer s.writer.Unlock()
	s.marks++
	s.clock.wait(1)
	return s.Store.MarkDelivered(ctx, a, recs)
}

// MarkDeliveredAddIntents is one commit, as SQLite's (state.IntentRecorder).
func (s *slowFlushStore) MarkDeliveredAddIntents(ctx context.Context, a state.Account, recs []state.Record, in []state.Intent) error {
	s.writer.Lock()
	defer s.writer.Unlock()
	if len(recs) > 0 {
		s.marks++
	}
	s.clock.wait(1)
	return s.Store.(state.IntentRecorder).MarkDeliveredAddIntents(ctx, a, recs, in)
}

// BenchmarkGroupCommitSlowFlush fetches 2,000 messages into a Maildir
// whose flushes (file, directory and seen-set) take 0, 2 or 10 ms. With
// group commit the stream does not wait for them: the time per poll at
// 10 ms should stay close to the time at 0, since batches grow to hold
// what arrives during one commit (msgs/batch).
//
// seq-flushes/batch is the flush latencies a batch's commit waits for
// one after another (overlapping waits counted once), flushes/batch all
// the flushes it asks for; tail-ms is how long the poll ran on after its
// last message was received (the last commits).
func BenchmarkGroupCommitSlowFlush(b *testing.B) {
	msgs := pop3test.SampleMessages(2000, 31)
	for _, lat := range []time.Duration{0, 2 * time.Millisecond, 10 * time.Millisecond} {
		b.Run(fmt.Sprintf("flush=%s", lat), func(b *testing.B) {
			srv := pop3test.NewServer(pop3test.Config{User: testUser, Password: testPass}, msgs...)
			b.Cleanup(func() { srv.Close() })
			addr, err := srv.Listen()
			if err != nil {
				b.Fatal(err)
			}
			host, port, _ := strings.Cut(addr, ":")
			var p int
			fmt.Sscan(port, &p)
			var batches, delivered, waits int
			var seq float64
			var tail time.Duration
			for b.Loop() {
				dir := b.TempDir()
				st, err := state.OpenSQLite(b.Context(), filepath.Join(dir, "state.db"))
				if err != nil {
					b.Fatal(err)
				}
				acct := &configs.Account{
					Name: "bench", Host: host, Port: p, TLS: configs.TLSNone, User: testUser,
					Password: credential.Literal(testPass), Auth: configs.AuthAuto, Keep: true,
					Timeout: configs.Duration(30 * time.Second),
					Deliver: []configs.Deliver{{Target: &configs.MaildirTarget{Path: filepath.Join(dir, "Maildir")}}},
				}
				clock := &flushClock{lat: lat}
				store := &slowFlushStore{Store: st, clock: clock}
				var last time.Time
				o := &fetch.Options{Store: store, Hostname: "client.test",
					OpenTarget: func(a *configs.Account, d configs.Deliver) (deliver.Target, error) {
						t, err := fetch.OpenTarget(a, d)
						return slowFlushTarget{Target: t, clock: clock}, err
					},
					Progress: func(fetch.Progress) { last = time.Now() },
				}
				r := o.Poll(b.Context(), acct)
				tail += time.Since(last)
				st.Close()
				if r.Err != nil || r.Delivered != len(msgs) {
					b.Fatalf("poll: %+v", r)
				}
				batches += store.marks
				delivered += r.Delivered
				seq += clock.sequential()
				waits += clock.waits
			}
			b.ReportMetric(float64(delivered)/float64(batches), "msgs/batch")
			b.ReportMetric(float64(delivered)/b.Elapsed().Seconds(), "msgs/s")
			if lat > 0 {
				b.ReportMetric(seq/float64(batches), "seq-flushes/batch")
				b.ReportMetric(float64(waits)/float64(batches), "flushes/batch")
			}
			b.ReportMetric(float64(tail.Milliseconds())/float64(b.N), "tail-ms")
		})
	}
}
