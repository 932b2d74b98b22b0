package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"popsync/fetch/pop3/pop3test"
)

// TestRunDaemonDeliveryFailure: in the daemon, a poll whose target cannot
// take mail (an MDA typo) is a failure: logged with the reason, counted in
// the metrics as an error, shown by status, and it downloads nothing.
func TestRunDaemonDeliveryFailure(t *testing.T) {
	p := startInProcess(t, pop3test.SampleMessages(3, 11), `shutdown_grace = "5s"`)
	dlog := p.log
	dlog.wait(t, 0, "the first poll", deliveredAtLeast("fake", 3))
	retrs := p.srv.Stats().Retrs

	p.srv.Add(pop3test.SampleMessages(4, 12)...)
	broken := strings.Replace(p.config(`shutdown_grace = "5s"`, ""), `maildir = "Maildir"`, `mda = ["/usr/bin/procmial"]`, 1)
	p.write(t, broken)
	m := dlog.mark()
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	dlog.wait(t, m, "the reload", logged("config reloaded"))
	m = dlog.mark()
	syscall.Kill(os.Getpid(), syscall.SIGUSR1)
	// The scheduler logs "poll finished" after it counted the poll.
	dlog.wait(t, m, "the failed poll", func(recs []map[string]any) bool {
		for _, r := range recs {
			if r["msg"] == "poll finished" && r["outcome"] == "error" {
				return true
			}
		}
		return false
	})
	// Backed off, with the reason.
	dlog.wait(t, m, "the backoff naming the program", func(recs []map[string]any) bool {
		for _, r := range recs {
			if e, _ := r["error"].(string); r["msg"] == "poll failed; retrying later" && strings.Contains(e, "procmial") && r["retry_in"] != nil {
				return true
			}
		}
		return false
	})
	if got := p.srv.Stats().Retrs - retrs; got != 0 {
		t.Errorf("the failed poll RETRed %d messages, want 0", got)
	}
	_, body := httpGet(t, "http://"+p.metricsAddr+"/metrics")
	for series, want := range map[string]float64{
		`popsync_polls_total{account="fake",outcome="error"}`: 1,
		`popsync_consecutive_failures{account="fake"}`:        1,
	} {
		if got := metricValue(t, body, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	var status bytes.Buffer
	if c := run(context.Background(), []string{"status", "-c", p.cfgPath}, &status, io.Discard); c != 0 {
		t.Fatalf("status: exit %d", c)
	}
	if !strings.Contains(status.String(), "procmial") {
		t.Errorf("status does not show the delivery error:\n%s", status.String())
	}
	if n, _ := os.ReadDir(filepath.Join(p.dir, "Maildir", "new")); len(n) != 3 {
		t.Errorf("the Maildir holds %d messages, want the first 3", len(n))
	}
	p.cancel()
	p.exitCode(t)
}
