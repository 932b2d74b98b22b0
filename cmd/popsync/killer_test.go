package main_test

import (
	"math/rand/v2"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// killer runs `popsync fetch -c cfg` again and again for the kill -9
// loops, and kills each run with SIGKILL at a moment drawn uniformly over
// the length it is expected to take. That length comes from two probe
// polls with another config on the same server: one of a full mailbox
// (per messages) and one that finds nothing; a run with fewer messages
// left is expected to take proportionally less.
type killer struct {
	t          *testing.T
	cfg        string
	per        int           // messages of the probe's full poll
	full, idle time.Duration // the probe's polls, updated by completed runs
	rng        *rand.Rand
	seed       uint64
	// stretch widens the span after every kill and is reset by a run that
	// completes: on a loaded machine runs take longer than the probe
	// said, and the kills must still reach the end of the poll.
	stretch      float64
	done, killed int
	killAt       []float64 // kill moment / expected length
	// afterKill is how long to wait after a kill before the next run:
	// with the state on PostgreSQL, until the killed run's lease expired.
	afterKill time.Duration
}

// newKiller times the probe polls (probe is a config that fetches the
// full mailbox of per messages, keep = true, somewhere the test does not
// count) and returns the driver for cfg. stream tells the loops' random
// sequences apart.
func newKiller(t *testing.T, cfg, probe string, per int, stream uint64) *killer {
	t.Helper()
	popsyncBinary(t) // built before anything is timed
	start := time.Now()
	if r := runPopsync(t, "fetch", "-c", probe); r.code != 0 {
		t.Fatalf("probe run: %s", r.stderr)
	}
	full := time.Since(start)
	start = time.Now()
	runPopsync(t, "fetch", "-c", probe)
	idle := time.Since(start)
	seed := uint64(time.Now().UnixNano())
	return &killer{t: t, cfg: cfg, per: per, full: full, idle: idle,
		rng: rand.New(rand.NewPCG(seed, stream)), seed: seed, stretch: 1}
}

// run starts one fetch with about remaining messages left to deliver and
// kills it at a random moment of its expected length, unless it ends
// first. It reports whether it killed the run, and the exit error of a
// run that ended by itself.
func (k *killer) run(remaining int) (killed bool, exitErr error) {
	t := k.t
	t.Helper()
	span := time.Duration(k.stretch * float64(k.idle+(k.full-k.idle)*time.Duration(remaining)/time.Duration(k.per)))
	span = max(span, time.Millisecond)
	delay := time.Duration(k.rng.Int64N(int64(span) + 1))
	cmd := exec.Command(popsyncBinary(t), "fetch", "-c", k.cfg)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	began := time.Now()
	go func() { exited <- cmd.Wait() }()
	timer := time.NewTimer(delay)
	select {
	case err := <-exited:
		timer.Stop()
		k.done++
		k.stretch = 1
		if took := time.Since(began); remaining > 0 && took > k.idle {
			k.full = k.idle + (took-k.idle)*time.Duration(k.per)/time.Duration(remaining)
		}
		return false, err
	case <-timer.C:
		cmd.Process.Signal(syscall.SIGKILL)
		<-exited
		k.killed++
		k.stretch = min(k.stretch*1.05, 50)
		k.killAt = append(k.killAt, float64(delay)/float64(span))
		time.Sleep(k.afterKill)
		return true, nil
	}
}

// spread counts the kills in the first and the second half of their
// runs' expected length.
func (k *killer) spread() (early, late int) {
	for _, f := range k.killAt {
		if f < 0.5 {
			early++
		} else {
			late++
		}
	}
	return early, late
}
