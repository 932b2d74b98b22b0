package main

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// flushCalls are the system calls that wait for the device to flush its
// cache: what a slow disk makes slow.
const flushCalls = "fsync,fdatasync,syncfs,sync,sync_file_range,msync"

// parseFlushDelays parses -flush-delay: comma-separated durations such as
// "2ms,10ms". A delay of 0 runs the tool under the same strace without
// delaying anything: what tracing the flushes costs by itself, to tell
// from what the delays cost.
func parseFlushDelays(s string) ([]time.Duration, error) {
	var out []time.Duration
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		d, err := time.ParseDuration(f)
		if err != nil || d < 0 || d%time.Microsecond != 0 {
			return nil, fmt.Errorf("-flush-delay %q: want durations of 0 or more in whole microseconds, such as 0ms,2ms,10ms", f)
		}
		out = append(out, d)
	}
	return out, nil
}

// slowDisk returns a copy of t named NAME@DELAY whose every run goes
// through strace, so that each fsync-family call of the tool, its threads
// and its children returns delay after the kernel finished it, as on a
// device whose cache flush takes that long. Only those calls are traced
// (seccomp-bpf), so the others cost what they always do, and calls made
// at once by several threads wait at once, as on a device that overlaps
// flushes.
func slowDisk(t *tool, strace string, delay time.Duration) *tool {
	c := *t
	c.name = t.name + "@" + delay.String()
	c.about = t.about + fmt.Sprintf("; every fsync-family call delayed by %s (strace)", delay)
	if delay == 0 {
		c.about = t.about + "; every fsync-family call traced by strace, none delayed"
	}
	us := strconv.FormatInt(delay.Microseconds(), 10)
	inner := t.command
	c.command = func(_ *tool, j *job) ([]string, []string, error) {
		argv, env, err := inner(t, j)
		if err != nil {
			return nil, nil, err
		}
		wrap := []string{strace, "-f", "--seccomp-bpf", "-o", "/dev/null", "-e", "trace=" + flushCalls}
		if delay > 0 {
			wrap = append(wrap, "-e", "inject="+flushCalls+":delay_exit="+us)
		}
		return append(wrap, argv...), env, nil
	}
	return &c
}

// baseName is a tool's name without its @DELAY suffix.
func baseName(name string) string {
	if i := strings.IndexByte(name, '@'); i >= 0 {
		return name[:i]
	}
	return name
}

// withSlowDisks adds, after each tool, its variants for every delay.
func withSlowDisks(ts []*tool, delays []time.Duration) ([]*tool, error) {
	if len(delays) == 0 {
		return ts, nil
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		return nil, fmt.Errorf("-flush-delay runs the tools under strace (apt-get install strace): %w", err)
	}
	var out []*tool
	for _, t := range ts {
		out = append(out, t)
		for _, d := range delays {
			out = append(out, slowDisk(t, strace, d))
		}
	}
	return out, nil
}
