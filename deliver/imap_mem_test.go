package deliver_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"popsync/deliver"
	"popsync/internal/realtest"
)

// lineSource generates a message of exactly size bytes (size > 200) on
// the fly: a header, then CRLF lines, never all in memory.
type lineSource struct {
	left int64
	head []byte
	line []byte
	pos  int
}

func newLineSource(size int64, n int) *lineSource {
	head := fmt.Appendf(nil, "From: big@example.net\r\nSubject: large message %d\r\n\r\n", n)
	return &lineSource{left: size, head: head, line: []byte("The quick brown fox jumps over the lazy dog, again and again and again.\r\n")}
}

func (s *lineSource) Read(p []byte) (int, error) {
	if s.left == 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && s.left > 0 {
		var src []byte
		if len(s.head) > 0 {
			src = s.head
		} else {
			src = s.line[s.pos:]
		}
		k := copy(p[n:], src[:min(int64(len(src)), s.left)])
		if len(s.head) > 0 {
			s.head = s.head[k:]
		} else {
			s.pos = (s.pos + k) % len(s.line)
		}
		n += k
		s.left -= int64(k)
	}
	return n, nil
}

// heapSampler records the peak HeapInuse until stopped.
type heapSampler struct {
	stop chan struct{}
	done chan uint64
}

func sampleHeapPeak() *heapSampler {
	h := &heapSampler{stop: make(chan struct{}), done: make(chan uint64)}
	go func() {
		var ms runtime.MemStats
		var peak uint64
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-h.stop:
				h.done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return h
}

func (h *heapSampler) peak() uint64 {
	close(h.stop)
	return <-h.done
}

// peakRSSKiB reads VmHWM from /proc/self/status; 0 when unknown.
func peakRSSKiB() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// appendMeasured streams a generated message of size bytes through tg in
// 32 KiB writes and publishes it, and reports the bytes the Go heap
// allocated meanwhile, its peak over the start and the peak RSS growth.
func appendMeasured(t *testing.T, tg deliver.Target, size int64, n int) (alloc, heapGrowth uint64, rssGrowthKiB int64, d deliver.Delivery) {
	t.Helper()
	ctx := t.Context()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	// Reset the peak RSS to the current one (Linux 4.0+).
	os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	rss0 := peakRSSKiB()
	h := sampleHeapPeak()
	d, err := tg.Begin(ctx, deliver.Meta{UIDL: fmt.Sprint(n), Size: size})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 32<<10)
	if _, err := io.CopyBuffer(struct{ io.Writer }{d}, struct{ io.Reader }{newLineSource(size, n)}, buf); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tg.Prepare(ctx, []deliver.Delivery{d}); err != nil {
		t.Fatal(err)
	}
	if err := tg.Publish(ctx, []deliver.Delivery{d}); err != nil {
		t.Fatal(err)
	}
	peak := h.peak()
	runtime.ReadMemStats(&after)
	if peak > before.HeapInuse {
		heapGrowth = peak - before.HeapInuse
	}
	return after.TotalAlloc - before.TotalAlloc, heapGrowth, peakRSSKiB() - rss0, d
}

// TestIMAPLargeMessageMemoryDovecot appends a 2 KiB and a 64 MiB message
// (200 MiB with POPSYNC_BIG=1) to a real Dovecot and checks that the
// large one costs the Go heap no more than the small one, give or take a
// constant: the message streams from the writer to a spool file and from
// there to the socket.
func TestIMAPLargeMessageMemoryDovecot(t *testing.T) {
	if testing.Short() {
		t.Skip("appends a 64 MiB message")
	}
	big := int64(64 << 20)
	if os.Getenv("POPSYNC_BIG") == "1" {
		big = 200 << 20
	}
	d := realtest.StartDovecot(t, realtest.DovecotOptions{IMAP: true})
	tg := newIMAP(t, imapOptions(d, "Big", filepath.Join(t.TempDir(), "spool")))
	// Warm up: connection, TLS, mailbox creation.
	appendMeasured(t, tg, 2<<10, 0)

	smallAlloc, smallHeap, smallRSS, _ := appendMeasured(t, tg, 2<<10, 1)
	bigAlloc, bigHeap, bigRSS, dd := appendMeasured(t, tg, big, 2)
	t.Logf("2 KiB message: %d KiB allocated, heap peak +%d KiB, peak RSS +%d KiB", smallAlloc>>10, smallHeap>>10, smallRSS)
	t.Logf("%d MiB message: %d KiB allocated, heap peak +%d KiB, peak RSS +%d KiB", big>>20, bigAlloc>>10, bigHeap>>10, bigRSS)
	const slack = 4 << 20
	switch {
	case raceEnabled:
		t.Log("built with -race: the bounds are checked without it")
	case bigAlloc > smallAlloc+slack:
		t.Errorf("the %d MiB message allocated %d KiB, the 2 KiB one %d KiB", big>>20, bigAlloc>>10, smallAlloc>>10)
	case bigHeap > smallHeap+slack:
		t.Errorf("the heap grew by %d KiB for the %d MiB message, by %d KiB for the 2 KiB one", bigHeap>>10, big>>20, smallHeap>>10)
	}

	// Dovecot holds it whole: its size (RFC822.SIZE counts CRLF) is the
	// delivery's, and its token is findable.
	c := d.IMAPClient(t)
	if _, err := c.Select("Big", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	uid, ok := dd.(*deliver.IMAPDelivery).UID()
	if !ok {
		t.Fatal("no APPENDUID")
	}
	msgs, err := c.Fetch(imap.UIDSetNum(imap.UID(uid.UID)), &imap.FetchOptions{RFC822Size: true}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetching the size: %v, %d messages", err, len(msgs))
	}
	if msgs[0].RFC822Size != dd.Size() {
		t.Errorf("stored size %d, delivered %d", msgs[0].RFC822Size, dd.Size())
	}
	if want := big + int64(len("X-Popsync-Id: \r\n")+26); dd.Size() != want {
		t.Errorf("Size() = %d, want %d", dd.Size(), want)
	}
}

// BenchmarkIMAPAppendDovecot appends batches of 100 messages into a real
// Dovecot over implicit TLS, one connection for all, and reports
// messages per second. Dovecot commits (and by default fsyncs) each
// APPEND on its own, which bounds the rate; POPSYNC_BENCH_DOVECOT adds
// Dovecot settings, e.g. "mail_fsync = never" to measure without them.
func BenchmarkIMAPAppendDovecot(b *testing.B) {
	d := realtest.StartDovecot(b, realtest.DovecotOptions{IMAP: true, Config: os.Getenv("POPSYNC_BENCH_DOVECOT")})
	for _, size := range []int{2 << 10, 30 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			tg, err := deliver.NewIMAP(imapOptions(d, fmt.Sprintf("Bench%d", size), filepath.Join(b.TempDir(), "spool")))
			if err != nil {
				b.Fatal(err)
			}
			defer tg.Close()
			const batch = 100
			msgs := make([][]byte, batch)
			for i := range msgs {
				msgs[i] = benchIMAPMessage(i, size)
			}
			// The connection and the mailbox are set up outside the timing.
			benchBatch(b, tg, msgs[:1])
			b.SetBytes(int64(batch * size))
			b.ReportAllocs()
			b.ResetTimer()
			n := 0
			for b.Loop() {
				benchBatch(b, tg, msgs)
				n += batch
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

func benchBatch(b *testing.B, tg deliver.Target, msgs [][]byte) {
	ctx := b.Context()
	ds := make([]deliver.Delivery, len(msgs))
	for i, m := range msgs {
		d, err := tg.Begin(ctx, deliver.Meta{Size: int64(len(m))})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := d.Write(m); err != nil {
			b.Fatal(err)
		}
		if err := d.Close(); err != nil {
			b.Fatal(err)
		}
		ds[i] = d
	}
	if err := tg.Prepare(ctx, ds); err != nil {
		b.Fatal(err)
	}
	if err := tg.Publish(ctx, ds); err != nil {
		b.Fatal(err)
	}
}

func benchIMAPMessage(i, size int) []byte {
	var sb strings.Builder
	fmt.Fprintf(&sb, "Received: from pop.example.net\r\n\tby bench (popsync) with POP3S; Wed, 3 Dec 2025 08:00:00 +0000\r\n")
	fmt.Fprintf(&sb, "From: a@example.net\r\nTo: b@example.net\r\nSubject: benchmark %d\r\nDate: Wed, 3 Dec 2025 07:59:00 +0000\r\n\r\n", i)
	for sb.Len() < size {
		sb.WriteString("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n")
	}
	return []byte(sb.String())
}
