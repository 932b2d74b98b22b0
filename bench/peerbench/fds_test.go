package main

import (
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestSampleFDs runs a shell that holds extra descriptors open under a
// child and checks that the sampler finds the child and counts them.
func TestSampleFDs(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the sampler reads Linux's /proc")
	}
	if _, err := os.Stat("/proc/self/task"); err != nil {
		t.Skip("no /proc")
	}
	// The outer shell waits for the inner one, which opens ten more
	// descriptors and sleeps.
	cmd := exec.Command("sh", "-c", `sh -c 'exec 3</dev/null 4</dev/null 5</dev/null 6</dev/null 7</dev/null 8</dev/null 9</dev/null; sleep 1' & wait`)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := sampleFDs(cmd.Process.Pid)
	deadline := time.Now().Add(20 * time.Second)
	var kids []int
	for time.Now().Before(deadline) {
		if kids = descendants(cmd.Process.Pid); len(kids) > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	peak := s.end()
	if len(kids) == 0 {
		if _, err := os.Stat("/proc/self/task/" + strconv.Itoa(os.Getpid()) + "/children"); err != nil {
			t.Skip("the kernel has no /proc/PID/task/TID/children")
		}
		t.Fatal("descendants found no child of the shell")
	}
	if slices.Contains(kids, cmd.Process.Pid) {
		t.Errorf("descendants(%d) = %v includes the root", cmd.Process.Pid, kids)
	}
	// stdin, stdout, stderr and the seven the inner shell opened.
	if peak < 10 {
		t.Errorf("peak open descriptors = %d, want at least 10", peak)
	}
}
