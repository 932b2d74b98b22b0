package deliver_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"popsync/internal/realtest"
)

// delayDial dials addr and puts delay on each direction of the
// connection, as a distant server would: every chunk arrives delay after
// it was sent. Two goroutines per direction move the bytes; they end when
// either side closes.
func delayDial(delay time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		remote, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		local, mine := net.Pipe()
		var wg sync.WaitGroup
		wg.Go(func() { delayCopy(remote, mine, delay) })
		wg.Go(func() { delayCopy(mine, remote, delay) })
		go func() {
			wg.Wait()
			remote.Close()
			mine.Close()
		}()
		return local, nil
	}
}

// delayCopy copies from src to dst, each chunk delay after it was read.
func delayCopy(dst io.WriteCloser, src io.ReadCloser, delay time.Duration) {
	type chunk struct {
		at time.Time
		b  []byte
	}
	ch := make(chan chunk, 1024)
	go func() {
		defer close(ch)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				ch <- chunk{time.Now().Add(delay), b[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
	for range ch {
	}
}

// BenchmarkIMAPConnectionsLatency appends batches of 100 messages of
// 30 KiB into a real Dovecot reached over a connection with 10 ms each
// way, as a provider across the internet is, over 1, 2, 4 and 8
// connections, and reports messages per second: where the round trip
// bounds the rate, not the server. It does so twice: with MULTIAPPEND
// offered (a command of many messages per connection), and without it,
// as Gmail and Microsoft 365 are (one APPEND per message; go-imap sends
// a literal over 4 KiB as a synchronizing one, a round trip each).
func BenchmarkIMAPConnectionsLatency(b *testing.B) {
	const batch = 100
	msgs := make([][]byte, batch)
	for i := range msgs {
		msgs[i] = benchIMAPMessage(i, 30<<10)
	}
	for _, server := range []struct{ name, config string }{
		{"multiappend", ""},
		{"one-per-append", withoutMultiAppend},
	} {
		b.Run("server="+server.name, func(b *testing.B) {
			d := realtest.StartDovecot(b, realtest.DovecotOptions{IMAP: true, Config: server.config})
			for _, conns := range []int{1, 2, 4, 8} {
				b.Run(fmt.Sprintf("connections=%d", conns), func(b *testing.B) {
					opts := imapOptions(d, fmt.Sprintf("Latency%d", conns), filepath.Join(b.TempDir(), "spool"))
					opts.Connections = conns
					opts.Dial = delayDial(10 * time.Millisecond)
					tg := newIMAP(b, opts)
					// The connections and the mailbox are set up
					// outside the timing.
					benchBatch(b, tg, msgs)
					b.ResetTimer()
					n := 0
					for b.Loop() {
						benchBatch(b, tg, msgs)
						n += batch
					}
					b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
				})
			}
		})
	}
}
