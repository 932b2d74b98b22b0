package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"popsync/fetch"
)

// progress draws one status line on a terminal while large polls run.
// Small polls (fewer than minProgress messages) draw nothing.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	start map[string]time.Time
	last  time.Time
}

const minProgress = 100

func newProgress(w io.Writer) *progress {
	return &progress{w: w, start: make(map[string]time.Time)}
}

func (p *progress) update(s fetch.Progress) {
	if s.Todo < minProgress {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	t0, ok := p.start[s.Account]
	if !ok {
		t0 = now
		p.start[s.Account] = now
	}
	if s.Done < s.Todo && now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last = now
	rate := 0.0
	if d := now.Sub(t0).Seconds(); d > 0 {
		rate = float64(s.Bytes) / d / 1e6
	}
	fmt.Fprintf(p.w, "\r\033[K%s: %d/%d messages, %.1f MB, %.1f MB/s", s.Account, s.Done, s.Todo, float64(s.Bytes)/1e6, rate)
	if s.Done == s.Todo {
		fmt.Fprintln(p.w)
	}
}
