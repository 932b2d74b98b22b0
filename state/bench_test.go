package state_test

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"popsync/state"
)

// Run: go test -run '^$' -bench . -benchtime 10x ./state/
// (BenchmarkMarkDelivered1 wants more iterations: -benchtime 200x.)
//
// The FULL/NORMAL pairs measure PRAGMA synchronous in WAL mode: FULL fsyncs
// the WAL at every commit and is what popsync uses, because a committed
// "delivered" must survive power loss before the message is deleted from the
// server; NORMAL only fsyncs at checkpoints.

// cpuMeter measures the process's CPU time (all threads, GC included):
// steadier than wall time on a busy machine, but blind to fsync waits.
type cpuMeter struct{ start int64 }

func cpuNow() int64 {
	var r syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &r); err != nil {
		return 0
	}
	return r.Utime.Nano() + r.Stime.Nano()
}

func startCPU() cpuMeter { return cpuMeter{cpuNow()} }

// report adds cpu-ns/op; call it right after the b.Loop loop.
func (m cpuMeter) report(b *testing.B) {
	if b.N > 0 {
		b.ReportMetric(float64(cpuNow()-m.start)/float64(b.N), "cpu-ns/op")
	}
}

func benchStore(b *testing.B, sync string) *state.SQLite {
	b.Helper()
	s, err := state.OpenSQLiteSync(b.Context(), filepath.Join(b.TempDir(), "state.db"), sync)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func benchUIDLs(prefix string, n int) []string {
	u := make([]string, n)
	for i := range u {
		// Typical shape: Dovecot-like "<uid><uidvalidity>" hex, 24 bytes.
		u[i] = fmt.Sprintf("%s%08x%016x", prefix, i, uint64(i)*0x9e3779b97f4a7c15)
	}
	return u
}

func benchDeliver(b *testing.B, s *state.SQLite, uidls []string) {
	b.Helper()
	const batch = 5000
	for i := 0; i < len(uidls); i += batch {
		recs := make([]state.Record, 0, batch)
		for _, u := range uidls[i:min(i+batch, len(uidls))] {
			recs = append(recs, state.Record{UIDL: u, State: state.Delivered, Size: 20000, FirstSeen: t0, DeliveredAt: t0})
		}
		if err := s.MarkDelivered(b.Context(), acct, recs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReconcile100k: a mailbox of 100,000 messages.
// Known: all 100,000 are in the seen-set (the steady state of keep = true).
// New: the seen-set has one record, the other 99,999 are new (first poll).
// Churn: 1,000 of the known ones are gone and 1,000 new ones arrived, every
// iteration marking and clearing "gone" on the same rows.
func BenchmarkReconcile100k(b *testing.B) {
	const n = 100000
	for _, sync := range []string{"FULL", "NORMAL"} {
		b.Run("Known/"+sync, func(b *testing.B) {
			s := benchStore(b, sync)
			uidls := benchUIDLs("k", n)
			benchDeliver(b, s, uidls)
			now := t0
			cpu := startCPU()
			for b.Loop() {
				now = now.Add(time.Minute)
				m, err := state.Reconcile(b.Context(), s, acct, uidls, now, 30*24*time.Hour)
				if err != nil || len(m) != n {
					b.Fatalf("Reconcile: %d known, %v", len(m), err)
				}
			}
			cpu.report(b)
		})
		b.Run("New/"+sync, func(b *testing.B) {
			s := benchStore(b, sync)
			uidls := benchUIDLs("n", n)
			benchDeliver(b, s, uidls[:1])
			now := t0
			cpu := startCPU()
			for b.Loop() {
				now = now.Add(time.Minute)
				m, err := state.Reconcile(b.Context(), s, acct, uidls, now, 30*24*time.Hour)
				if err != nil || len(m) != 1 {
					b.Fatalf("Reconcile: %d known, %v", len(m), err)
				}
			}
			cpu.report(b)
		})
		b.Run("Churn/"+sync, func(b *testing.B) {
			s := benchStore(b, sync)
			uidls := benchUIDLs("c", n+1000)
			benchDeliver(b, s, uidls[:n])
			lists := [][]string{uidls[:n], uidls[1000:]}
			now := t0
			i := 0
			cpu := startCPU()
			for b.Loop() {
				now = now.Add(time.Minute)
				if _, err := state.Reconcile(b.Context(), s, acct, lists[i%2], now, 30*24*time.Hour); err != nil {
					b.Fatal(err)
				}
				i++
			}
			cpu.report(b)
		})
	}
}

// BenchmarkMarkDelivered500: one batch of 500 new deliveries (intents
// recorded first, as the fetcher does) into a seen-set of 100,000.
func BenchmarkMarkDelivered500(b *testing.B) {
	for _, sync := range []string{"FULL", "NORMAL"} {
		b.Run(sync, func(b *testing.B) {
			s := benchStore(b, sync)
			benchDeliver(b, s, benchUIDLs("base", 100000))
			batch := 0
			for b.Loop() {
				b.StopTimer()
				recs := make([]state.Record, 500)
				in := make([]state.Intent, 500)
				for i := range recs {
					u := fmt.Sprintf("b%d-%d", batch, i)
					recs[i] = state.Record{UIDL: u, State: state.Delivered, Size: 20000, FirstSeen: t0, DeliveredAt: t0}
					in[i] = state.Intent{UIDL: u, Target: "maildir:x", Token: "1740830400.M1P2Q3_" + u + ".host", Size: 20000, Created: t0}
				}
				if err := s.AddIntents(b.Context(), acct, in); err != nil {
					b.Fatal(err)
				}
				batch++
				b.StartTimer()
				if err := s.MarkDelivered(b.Context(), acct, recs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMarkDelivered1: one message per transaction, where the commit's
// fsync dominates; the FULL/NORMAL gap here is the cost of durability.
func BenchmarkMarkDelivered1(b *testing.B) {
	for _, sync := range []string{"FULL", "NORMAL"} {
		b.Run(sync, func(b *testing.B) {
			s := benchStore(b, sync)
			i := 0
			for b.Loop() {
				i++
				r := state.Record{UIDL: fmt.Sprintf("one-%d", i), State: state.Delivered, DeliveredAt: t0}
				if err := s.MarkDelivered(b.Context(), acct, []state.Record{r}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAddIntents500: the other half of a batch.
func BenchmarkAddIntents500(b *testing.B) {
	for _, sync := range []string{"FULL", "NORMAL"} {
		b.Run(sync, func(b *testing.B) {
			s := benchStore(b, sync)
			batch := 0
			for b.Loop() {
				in := make([]state.Intent, 500)
				for i := range in {
					u := fmt.Sprintf("b%d-%d", batch, i)
					in[i] = state.Intent{UIDL: u, Target: "maildir:x", Token: "1740830400.M1P2Q3_" + u + ".host", Size: 20000, Created: t0}
				}
				batch++
				if err := s.AddIntents(b.Context(), acct, in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpen100k: opening a state file of 100,000 records, quick_check
// included.
func BenchmarkOpen100k(b *testing.B) {
	s := benchStore(b, "FULL")
	benchDeliver(b, s, benchUIDLs("o", 100000))
	path := s.Path()
	s.Close()
	for b.Loop() {
		s, err := state.OpenSQLite(b.Context(), path)
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}
