package fetch_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"popsync/configs"
	"popsync/deliver"
	"popsync/fetch"
	"popsync/fetch/pop3/pop3test"
	"popsync/internal/credential"
	"popsync/state"
)

// slowFlushTarget makes a target's flushes take lat, as on a slower disk
// than the test's: Prepare waits lat for every 64 files (the files of one
// Prepare are fsynced 64 at a time, and a device serves flushes issued at
// once together), Publish waits lat for its directory fsync.
type slowFlushTarget struct {
	deliver.Target
	lat time.Duration
}

func (s slowFlushTarget) Prepare(ctx context.Context, ds []deliver.Delivery) error {
	time.Sleep(s.lat * time.Duration((len(ds)+63)/64))
	return s.Target.Prepare(ctx, ds)
}

func (s slowFlushTarget) Publish(ctx context.Context, ds []deliver.Delivery) error {
	err := s.Target.Publish(ctx, ds)
	time.Sleep(s.lat)
	return err
}

// slowFlushStore makes each of the seen-set's commits in a batch wait lat
// (one WAL flush each).
type slowFlushStore struct {
	state.Store
	lat time.Duration
}

func (s slowFlushStore) AddIntents(ctx context.Context, a state.Account, in []state.Intent) error {
	time.Sleep(s.lat)
	return s.Store.AddIntents(ctx, a, in)
}

func (s slowFlushStore) MarkDelivered(ctx context.Context, a state.Account, recs []state.Record) error {
	time.Sleep(s.lat)
	return s.Store.MarkDelivered(ctx, a, recs)
}

// BenchmarkGroupCommitSlowFlush fetches 2,000 messages into a Maildir
// whose flushes (file, directory and seen-set) take 0, 2 or 10 ms. With
// group commit the stream does not wait for them: the time per poll at
// 10 ms should stay close to the time at 0, since batches grow to hold
// what arrives during one commit (msgs/batch).
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
			var batches, delivered int
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
				store := slowFlushStore{Store: st, lat: lat}
				o := &fetch.Options{Store: store, Hostname: "client.test",
					OpenTarget: func(a *configs.Account, d configs.Deliver) (deliver.Target, error) {
						t, err := fetch.OpenTarget(a, d)
						return slowFlushTarget{Target: t, lat: lat}, err
					},
					Progress: func(fetch.Progress) {},
				}
				counting := &countingStore{slowFlushStore: store}
				o.Store = counting
				r := o.Poll(b.Context(), acct)
				st.Close()
				if r.Err != nil || r.Delivered != len(msgs) {
					b.Fatalf("poll: %+v", r)
				}
				batches += counting.marks
				delivered += r.Delivered
			}
			b.ReportMetric(float64(delivered)/float64(batches), "msgs/batch")
			b.ReportMetric(float64(delivered)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// countingStore counts the batches recorded.
type countingStore struct {
	slowFlushStore
	marks int
}

func (c *countingStore) MarkDelivered(ctx context.Context, a state.Account, recs []state.Record) error {
	c.marks++
	return c.slowFlushStore.MarkDelivered(ctx, a, recs)
}
