package deliver

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"
)

// syncStrategies are the ways Prepare could make a batch durable, compared
// by BenchmarkMaildirBatch. syncfs is added on Linux.
var syncStrategies = []struct {
	name string
	fn   func(ctx context.Context, files []*os.File) []error
}{
	{"fsync-sequential", func(ctx context.Context, files []*os.File) []error { return syncPool(ctx, files, 1) }},
	{"fsync-pool4", func(ctx context.Context, files []*os.File) []error { return syncPool(ctx, files, 4) }},
	{"fsync-pool8", func(ctx context.Context, files []*os.File) []error { return syncPool(ctx, files, 8) }},
	{"fsync-pool16", func(ctx context.Context, files []*os.File) []error { return syncPool(ctx, files, 16) }},
	{"fsync-pool32", func(ctx context.Context, files []*os.File) []error { return syncPool(ctx, files, 32) }},
	{"fsync-pool64", syncConcurrently},
	{"fsync-pool128", func(ctx context.Context, files []*os.File) []error { return syncPool(ctx, files, 128) }},
}

// benchMessage is a ~30 KB message with CRLF line endings.
func benchMessage() []byte {
	var b bytes.Buffer
	b.WriteString("Received: from pop.example.net by popsync; Tue, 25 Nov 2025 09:00:00 +0000\r\n")
	b.WriteString("From: a@example.net\r\nTo: b@example.net\r\nSubject: benchmark\r\n\r\n")
	line := []byte("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n")
	for b.Len() < 30<<10 {
		b.Write(line)
	}
	return b.Bytes()
}

// BenchmarkMaildirBatch delivers 200 messages of 30 KB per iteration
// through Begin, Write, Close, Prepare and Publish, once per fsync
// strategy, and reports ns per message.
func BenchmarkMaildirBatch(b *testing.B) {
	const batch = 200
	msg := benchMessage()
	ctx := context.Background()
	for _, s := range syncStrategies {
		b.Run(s.name, func(b *testing.B) {
			m, err := NewMaildir(b.TempDir(), MaildirOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			m.syncFiles = s.fn
			b.SetBytes(int64(batch * len(msg)))
			var write, prepare, publish time.Duration
			b.ResetTimer()
			for b.Loop() {
				t0 := time.Now()
				ds := make([]Delivery, batch)
				for i := range ds {
					d, err := m.Begin(ctx, Meta{})
					if err != nil {
						b.Fatal(err)
					}
					if _, err := d.Write(msg); err != nil {
						b.Fatal(err)
					}
					if err := d.Close(); err != nil {
						b.Fatal(err)
					}
					ds[i] = d
				}
				t1 := time.Now()
				if err := m.Prepare(ctx, ds); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				if err := m.Publish(ctx, ds); err != nil {
					b.Fatal(err)
				}
				write += t1.Sub(t0)
				prepare += t2.Sub(t1)
				publish += time.Since(t2)
			}
			per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N*batch) }
			b.ReportMetric(per(b.Elapsed()), "ns/msg")
			b.ReportMetric(per(write), "write-ns/msg")
			b.ReportMetric(per(prepare), "prepare-ns/msg")
			b.ReportMetric(per(publish), "publish-ns/msg")
		})
	}
}
