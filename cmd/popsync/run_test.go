package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"popsync/configs"
	"popsync/fetch/pop3/pop3test"
	"popsync/internal/osfile"
	"popsync/internal/realtest"
	"popsync/schedule"
)

// daemonWait bounds every wait for the daemon to log something.
const daemonWait = 90 * time.Second

// daemonLog follows the JSON log of a daemon: tests wait for records
// instead of sleeping.
type daemonLog struct {
	mu      sync.Mutex
	recs    []map[string]any
	raw     bytes.Buffer
	changed chan struct{} // gets a value after every record
	closed  chan struct{} // closed when the log ends
}

func newDaemonLog() *daemonLog {
	return &daemonLog{changed: make(chan struct{}, 1), closed: make(chan struct{})}
}

// follow reads r line by line until EOF.
func (l *daemonLog) follow(r io.Reader) {
	defer close(l.closed)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		_ = json.Unmarshal(sc.Bytes(), &rec)
		l.mu.Lock()
		l.raw.Write(sc.Bytes())
		l.raw.WriteByte('\n')
		if rec != nil {
			l.recs = append(l.recs, rec)
		}
		l.mu.Unlock()
		select {
		case l.changed <- struct{}{}:
		default:
		}
	}
}

// mark returns a position in the log for waits that look only at what
// comes after it.
func (l *daemonLog) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recs)
}

func (l *daemonLog) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.raw.String()
}

// wait waits until pred holds for the records from position from on.
func (l *daemonLog) wait(t *testing.T, from int, what string, pred func([]map[string]any) bool) {
	t.Helper()
	deadline := time.NewTimer(daemonWait)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		ok := pred(l.recs[min(from, len(l.recs)):])
		l.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-l.changed:
		case <-l.closed:
			l.mu.Lock()
			ok := pred(l.recs[min(from, len(l.recs)):])
			l.mu.Unlock()
			if !ok {
				t.Fatalf("daemon log ended before %s:\n%s", what, l.text())
			}
			return
		case <-deadline.C:
			t.Fatalf("no %s within %v:\n%s", what, daemonWait, l.text())
		}
	}
}

// logged is a predicate: a record with this message.
func logged(msg string) func([]map[string]any) bool {
	return func(recs []map[string]any) bool {
		for _, r := range recs {
			if r["msg"] == msg {
				return true
			}
		}
		return false
	}
}

// delivered sums what polls of account delivered in recs.
func delivered(recs []map[string]any, account string) int {
	n := 0
	for _, r := range recs {
		if (r["msg"] == "poll done" || r["msg"] == "poll failed") && r["account"] == account {
			if f, ok := r["delivered"].(float64); ok {
				n += int(f)
			}
		}
	}
	return n
}

// deliveredAtLeast is a predicate: polls of account delivered n messages,
// and the scheduler has booked every poll that ended (its metrics are
// up to date). The daemon must log at debug level.
func deliveredAtLeast(account string, n int) func([]map[string]any) bool {
	return func(recs []map[string]any) bool {
		ended, booked := 0, 0
		for _, r := range recs {
			if r["account"] != account {
				continue
			}
			switch r["msg"] {
			case "poll done", "poll failed":
				ended++
			case "poll finished":
				booked++
			}
		}
		return delivered(recs, account) >= n && booked >= ended
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// metricValue returns the value of the sample line that starts with
// series, e.g. `popsync_messages_fetched_total{account="x"}`.
func metricValue(t *testing.T, exposition, series string) float64 {
	t.Helper()
	for l := range strings.Lines(exposition) {
		if rest, ok := strings.CutPrefix(l, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("%s: %v", series, err)
			}
			return v
		}
	}
	t.Fatalf("no %s in:\n%s", series, exposition)
	return 0
}

// daemonMaildir reads a Maildir: message bodies (popsync's Received header
// cut off) and how often each appears.
func daemonMaildir(t *testing.T, dir string) map[string]int {
	t.Helper()
	out := make(map[string]int)
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, de := range ents {
			b, err := os.ReadFile(filepath.Join(dir, sub, de.Name()))
			if err != nil {
				t.Fatal(err)
			}
			s := string(b)
			if !strings.HasPrefix(s, "Received: from ") {
				t.Fatalf("%s/%s lacks popsync's Received header", sub, de.Name())
			}
			for range 3 { // the header is folded over three lines
				s = s[strings.IndexByte(s, '\n')+1:]
			}
			out[s]++
		}
	}
	return out
}

// lfMessage is a message as it lands in a Maildir.
func lfMessage(data []byte) string {
	s := strings.ReplaceAll(string(data), "\r\n", "\n")
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s
}

// checkOnce fails unless the Maildir holds exactly msgs, each once.
func checkOnce(t *testing.T, maildir string, msgs [][]byte) {
	t.Helper()
	got := daemonMaildir(t, maildir)
	total := 0
	for _, n := range got {
		total += n
	}
	for i, m := range msgs {
		if n := got[lfMessage(m)]; n != 1 {
			t.Errorf("message %d is in the Maildir %d times", i, n)
		}
	}
	if total != len(msgs) {
		t.Errorf("Maildir holds %d messages, want %d", total, len(msgs))
	}
}

func TestDaemonLock(t *testing.T) {
	statePath := filepath.Join(t.TempDir(), "sub", "state.db")
	st := configs.State{Path: statePath, Dir: filepath.Dir(statePath), Name: "state.db"}
	l1, err := lockDaemon(st)
	if err != nil {
		t.Fatal(err)
	}
	// flock conflicts between two open files of one process too.
	_, err = lockDaemon(st)
	want := fmt.Sprintf("another popsync daemon (pid %d) is already running on the state file %s (lock file %s)", os.Getpid(), statePath, statePath+".daemon.lock")
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("second lock: %v\nwant it to contain: %s", err, want)
	}
	l1.release()
	l2, err := lockDaemon(st)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	l2.release()
}

func TestDaemonPlanFile(t *testing.T) {
	statePath := filepath.Join(t.TempDir(), "state.db")
	st := configs.State{Path: statePath, Dir: filepath.Dir(statePath), Name: "state.db"}
	if daemonPlan(st) != nil {
		t.Error("plan without a file")
	}
	next := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	plan := []schedule.PlannedPoll{
		{Account: "a", Schedule: "@every 5m", Next: next, Reason: schedule.ReasonSchedule},
		{Account: "b", Schedule: "@hourly", Running: true},
		{Account: "c", Schedule: "@every 5m", Next: next, Reason: schedule.ReasonBackoff, Failures: 3},
	}
	if err := writeFileAtomic(planPath(st), planFile{PID: os.Getpid(), Accounts: plan}); err != nil {
		t.Fatal(err)
	}
	got := daemonPlan(st)
	if len(got) != 3 || !got["a"].Next.Equal(next) || !got["b"].Running || got["c"].Failures != 3 {
		t.Errorf("plan read back: %+v", got)
	}
	for account, want := range map[string]string{
		"a": when(next), "b": "polling now", "c": when(next) + " (backoff)", "gone": "not scheduled",
	} {
		if s := nextPollText(got, account); s != want {
			t.Errorf("nextPollText(%s) = %q, want %q", account, s, want)
		}
	}
	if s := nextPollText(nil, "a"); s != "no daemon" {
		t.Errorf("without a daemon: %q", s)
	}
	entries, _ := os.ReadDir(filepath.Dir(statePath))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}

	// A file left by a daemon that died is ignored.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(planPath(st), planFile{PID: cmd.Process.Pid, Accounts: plan}); err != nil {
		t.Fatal(err)
	}
	if osfile.ProcessAlive(cmd.Process.Pid) {
		t.Skip("the pid was reused already")
	}
	if p := daemonPlan(st); p != nil {
		t.Errorf("plan of a dead daemon: %+v", p)
	}
}

// syncWriter lets the in-process daemon's log feed a daemonLog.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// inProcess is `popsync run` running in the test process against the fake
// POP3 server. Signals sent to the test process reach it (it catches them
// from its start to its end).
type inProcess struct {
	dir, cfgPath, metricsAddr string
	srv                       *pop3test.Server
	log                       *daemonLog
	cancel                    context.CancelFunc
	code                      chan int
	config                    func(daemonKeys, accountKeys string) string
}

func startInProcess(t *testing.T, msgs []pop3test.Message, daemonKeys string, args ...string) *inProcess {
	t.Helper()
	srv := pop3test.NewServer(pop3test.Config{User: "me", Password: "pw"}, msgs...)
	t.Cleanup(func() { srv.Close() })
	addr, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(addr, ":")
	p := &inProcess{dir: t.TempDir(), srv: srv, metricsAddr: fmt.Sprintf("127.0.0.1:%d", realtest.FreePort(t)),
		log: newDaemonLog(), code: make(chan int, 1)}
	p.cfgPath = filepath.Join(p.dir, "config.toml")
	p.config = func(daemonKeys, accountKeys string) string {
		return fmt.Sprintf(`[state]
path = "state.db"
[daemon]
metrics = %q
%s
[[account]]
name = "fake"
host = %q
port = %s
tls = "none"
user = "me"
password_env = "POPSYNC_TEST_PW"
keep = false
schedule = "@every 1h"
%s
  [[account.deliver]]
  maildir = "Maildir"
`, p.metricsAddr, daemonKeys, host, port, accountKeys)
	}
	p.write(t, p.config(daemonKeys, ""))
	t.Setenv("POPSYNC_TEST_PW", "pw")

	pr, pw := io.Pipe()
	go p.log.follow(pr)
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() {
		p.code <- run(ctx, append([]string{"run", "-c", p.cfgPath, "--log-format", "json", "-v"}, args...), io.Discard, &syncWriter{w: pw})
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.code:
		case <-time.After(daemonWait):
			t.Error("the in-process daemon did not stop")
		}
	})
	p.log.wait(t, 0, "start", logged("popsync daemon started"))
	return p
}

func (p *inProcess) write(t *testing.T, cfg string) {
	t.Helper()
	if err := os.WriteFile(p.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// exitCode waits for the daemon to end.
func (p *inProcess) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case c := <-p.code:
		p.code <- c // for the cleanup
		return c
	case <-time.After(daemonWait):
		t.Fatalf("the daemon did not stop:\n%s", p.log.text())
		return 0
	}
}

// TestRunDaemonInProcess covers delivery, SIGUSR1, SIGHUP, status,
// metrics and a clean stop.
func TestRunDaemonInProcess(t *testing.T) {
	msgs := pop3test.SampleMessages(12, 7)
	p := startInProcess(t, msgs, `shutdown_grace = "5s"`)
	dlog := p.log
	dlog.wait(t, 0, "the first poll", deliveredAtLeast("fake", 12))
	checkOnce(t, filepath.Join(p.dir, "Maildir"), datasOf(msgs))

	// The schedule is hourly: only SIGUSR1 fetches what arrives now.
	more := pop3test.SampleMessages(3, 8)
	p.srv.Add(more...)
	m := dlog.mark()
	syscall.Kill(os.Getpid(), syscall.SIGUSR1)
	dlog.wait(t, m, "the poll SIGUSR1 asked for", deliveredAtLeast("fake", 3))
	checkOnce(t, filepath.Join(p.dir, "Maildir"), append(datasOf(msgs), datasOf(more)...))

	var status bytes.Buffer
	if c := run(context.Background(), []string{"status", "-c", p.cfgPath}, &status, io.Discard); c != 0 {
		t.Fatalf("status: exit %d", c)
	}
	if !strings.Contains(status.String(), "NEXT POLL") || !strings.Contains(status.String(), "@every 1h") || strings.Contains(status.String(), "no daemon") {
		t.Errorf("status while the daemon runs:\n%s", status.String())
	}

	// A reload with an unknown key is refused and logged; a good one is
	// applied.
	p.write(t, p.config(`shutdown_grace = "5s"`, "bogus_key = 1"))
	m = dlog.mark()
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	dlog.wait(t, m, "the refused reload", logged("reloading the config failed; keeping the running config"))
	if !strings.Contains(dlog.text(), `bogus_key`) {
		t.Errorf("the reload error does not name the bad key:\n%s", dlog.text())
	}
	p.write(t, p.config(`shutdown_grace = "5s"`, ""))
	m = dlog.mark()
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	dlog.wait(t, m, "the reload", logged("config reloaded"))

	if c, body := httpGet(t, "http://"+p.metricsAddr+"/healthz"); c != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", c, body)
	}
	_, body := httpGet(t, "http://"+p.metricsAddr+"/metrics")
	for series, want := range map[string]float64{
		`popsync_messages_fetched_total{account="fake"}`:      15,
		`popsync_polls_total{account="fake",outcome="ok"}`:    2,
		`popsync_seen_messages{account="fake"}`:               15,
		`popsync_consecutive_failures{account="fake"}`:        0,
		`popsync_config_reloads_total{result="error"}`:        1,
		`popsync_config_reloads_total{result="ok"}`:           1,
		`popsync_poll_duration_seconds_count{account="fake"}`: 2,
		`popsync_scheduler_running`:                           1,
	} {
		if got := metricValue(t, body, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}

	p.cancel()
	if c := p.exitCode(t); c != 0 {
		t.Errorf("exit code %d:\n%s", c, dlog.text())
	}
	if _, err := os.Stat(filepath.Join(p.dir, "state.db"+planSuffix)); !os.IsNotExist(err) {
		t.Errorf("plan file left behind: %v", err)
	}
	l, err := lockDaemon(configs.State{Path: filepath.Join(p.dir, "state.db"), Dir: p.dir, Name: "state.db"})
	if err != nil {
		t.Errorf("daemon lock not released: %v", err)
	} else {
		l.release()
	}
}

// TestRunDaemonSecondSIGTERM: the first SIGTERM lets a hung poll run for
// the grace (an hour here), the second cancels it at once.
func TestRunDaemonSecondSIGTERM(t *testing.T) {
	p := startInProcess(t, pop3test.SampleMessages(3, 9), `shutdown_grace = "1h"`, "--trace")
	p.srv.SetFaults(pop3test.Faults{Commands: []pop3test.CommandFault{{Command: "RETR", Msg: 2, Hang: true}}})
	p.log.wait(t, 0, "a poll past message 1, hanging in RETR 2", func(recs []map[string]any) bool {
		// The body of message 1 was read: it is staged and will be
		// committed. (The trace's "msg" attribute hides the record's
		// message in JSON; cmd and bytes identify it.)
		for _, r := range recs {
			if _, ok := r["bytes"]; ok && r["cmd"] == "RETR" {
				return true
			}
		}
		return false
	})
	m := p.log.mark()
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	p.log.wait(t, m, "the first SIGTERM", logged("stopping: letting running polls finish"))
	if c, _ := httpGet(t, "http://"+p.metricsAddr+"/healthz"); c != http.StatusServiceUnavailable {
		t.Errorf("/healthz while stopping: %d", c)
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	if c := p.exitCode(t); c != 0 {
		t.Errorf("exit code %d:\n%s", c, p.log.text())
	}
	text := p.log.text()
	for _, want := range []string{"SIGTERM again: stopping at once", `"delivered":1`} {
		if !strings.Contains(text, want) {
			t.Errorf("log lacks %s:\n%s", want, text)
		}
	}
	got := daemonMaildir(t, filepath.Join(p.dir, "Maildir"))
	if len(got) != 1 {
		t.Errorf("Maildir holds %d messages; want the one fetched before the hang", len(got))
	}
}

func datasOf(msgs []pop3test.Message) [][]byte {
	out := make([][]byte, len(msgs))
	for i, m := range msgs {
		out[i] = m.Data
	}
	return out
}

var (
	daemonBinOnce sync.Once
	daemonBin     string
	daemonBinErr  error
)

// daemonBinary builds popsync once per test process.
func daemonBinary(t *testing.T) string {
	t.Helper()
	daemonBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "popsync-daemon-bin-")
		if err != nil {
			daemonBinErr = err
			return
		}
		daemonBin = filepath.Join(dir, "popsync")
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			goBin = "go"
		}
		if out, err := exec.Command(goBin, "build", "-o", daemonBin, ".").CombinedOutput(); err != nil {
			daemonBinErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if daemonBinErr != nil {
		t.Fatal(daemonBinErr)
	}
	return daemonBin
}

// daemonProc is a popsync process started by a test.
type daemonProc struct {
	cmd    *exec.Cmd
	log    *daemonLog
	exited chan struct{}
	err    error // of Wait, once exited is closed
}

func startDaemonProc(t *testing.T, args ...string) *daemonProc {
	t.Helper()
	cmd := exec.Command(daemonBinary(t), args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &daemonProc{cmd: cmd, log: newDaemonLog(), exited: make(chan struct{})}
	go func() {
		p.log.follow(stderr)
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

func (p *daemonProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("sending %v: %v", sig, err)
	}
}

// waitExit waits for the process to end and returns its exit code.
func (p *daemonProc) waitExit(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(limit):
		t.Fatalf("popsync did not exit within %v:\n%s", limit, p.log.text())
	}
	return p.cmd.ProcessState.ExitCode()
}

// TestRunDaemonDovecot runs the built binary as a daemon against a real
// Dovecot while mail keeps arriving.
func TestRunDaemonDovecot(t *testing.T) {
	d := realtest.StartDovecot(t, realtest.DovecotOptions{})
	dir := t.TempDir()
	maildir := filepath.Join(dir, "Maildir")
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", realtest.FreePort(t))
	host, port, _ := strings.Cut(d.TLSAddr, ":")
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte(d.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const grace = 2 * time.Second
	cfgText := func(extra string) string {
		return fmt.Sprintf(`[state]
path = "state.db"

[daemon]
max_parallel = 2
shutdown_grace = "%s"
metrics = %q

[[account]]
name = "dove"
host = %q
port = %s
tls = "implicit"
tls_ca_file = %q
user = %q
password_file = %q
keep = false
schedule = "@every 1s"
%s
  [[account.deliver]]
  maildir = %q
`, grace, metricsAddr, host, port, d.CAFile, d.User, pwFile, extra, maildir)
	}
	cfgPath := filepath.Join(dir, "config.toml")
	writeCfg := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfgPath, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg(cfgText(""))

	var all [][]byte
	deliver := func(msgs []pop3test.Message) {
		t.Helper()
		data := datasOf(msgs)
		d.Deliver(t, data...)
		all = append(all, data...)
	}
	deliver(pop3test.SampleMessages(20, 11))

	// --trace: the POP3 dialogue is in the log, so the test can tell when
	// a poll is in the middle of fetching.
	p := startDaemonProc(t, "run", "-c", cfgPath, "--log-format", "json", "--trace")
	p.log.wait(t, 0, "start", logged("popsync daemon started"))
	p.log.wait(t, 0, "the first 20 messages", deliveredAtLeast("dove", 20))

	// Mail arriving while the daemon runs.
	deliver(pop3test.SampleMessages(10, 12))
	p.log.wait(t, 0, "the next 10 messages", deliveredAtLeast("dove", 30))
	checkOnce(t, maildir, all)

	_, body := httpGet(t, "http://"+metricsAddr+"/metrics")
	if got := metricValue(t, body, `popsync_messages_fetched_total{account="dove"}`); got != 30 {
		t.Errorf("metrics: %v messages fetched, want 30", got)
	}
	if got := metricValue(t, body, `popsync_seen_messages{account="dove"}`); got != 30 {
		t.Errorf("metrics: seen-set of %v, want 30", got)
	}
	if got := metricValue(t, body, `popsync_polls_total{account="dove",outcome="error"}`); got != 0 {
		t.Errorf("metrics: %v failed polls:\n%s", got, p.log.text())
	}

	// A second daemon on the same state file refuses to start.
	second := startDaemonProc(t, "run", "-c", cfgPath)
	if code := second.waitExit(t, 30*time.Second); code != exitBusy {
		t.Errorf("second daemon: exit %d, want %d", code, exitBusy)
	}
	wantMsg := fmt.Sprintf("another popsync daemon (pid %d) is already running on the state file %s (lock file %s)",
		p.cmd.Process.Pid, filepath.Join(dir, "state.db"), filepath.Join(dir, "state.db.daemon.lock"))
	if !strings.Contains(second.log.text(), wantMsg) {
		t.Errorf("second daemon says:\n%s\nwant it to contain:\n%s", second.log.text(), wantMsg)
	}

	// SIGHUP with a broken config: logged, and the daemon goes on with the
	// config it has.
	writeCfg(cfgText(`auth = "telepathy"`))
	m := p.log.mark()
	p.signal(t, syscall.SIGHUP)
	p.log.wait(t, m, "the refused reload", logged("reloading the config failed; keeping the running config"))
	if !strings.Contains(p.log.text(), `not \"telepathy\"`) {
		t.Errorf("the reload error does not quote the bad value")
	}
	m = p.log.mark()
	deliver(pop3test.SampleMessages(5, 13))
	p.log.wait(t, m, "polls after the refused reload", deliveredAtLeast("dove", 5))
	if c, _ := httpGet(t, "http://"+metricsAddr+"/healthz"); c != 200 {
		t.Errorf("/healthz after the refused reload: %d", c)
	}
	writeCfg(cfgText(""))
	m = p.log.mark()
	p.signal(t, syscall.SIGHUP)
	p.log.wait(t, m, "the reload", logged("config reloaded"))

	// SIGTERM in the middle of a large poll: the poll finishes within
	// the grace, nothing is lost, nothing is delivered twice.
	m = p.log.mark()
	deliver(bigBatch(1))
	stopMidPoll(t, p, m, grace)
	checkNothingLost(t, d, maildir, all)

	// Again with no grace at all: the poll is cancelled in the middle of
	// fetching. What it staged is committed, the rest stays on the server.
	// The batch is on the server before the daemon starts, so its first
	// poll is the large one.
	writeCfg(strings.Replace(cfgText(""), `shutdown_grace = "2s"`, `shutdown_grace = "0s"`, 1))
	deliver(bigBatch(2))
	p2 := startDaemonProc(t, "run", "-c", cfgPath, "--log-format", "json", "--trace")
	stopMidPoll(t, p2, 0, 0)
	switch text := p2.log.text(); {
	case strings.Contains(text, "shutdown grace is over"):
	case strings.Contains(text, "stopping: letting running polls finish"):
		t.Errorf("with shutdown_grace 0 the running poll was not cancelled:\n%s", text)
	default:
		t.Log("the poll ended before SIGTERM arrived: cancellation not exercised")
	}
	inMaildir := checkNothingLost(t, d, maildir, all)

	// A new daemon (the lock died with the old one) fetches the rest,
	// each message once.
	writeCfg(cfgText(""))
	p3 := startDaemonProc(t, "run", "-c", cfgPath, "--log-format", "json", "-v")
	p3.log.wait(t, 0, "start", logged("popsync daemon started"))
	p3.log.wait(t, 0, "the rest of the messages", deliveredAtLeast("dove", len(all)-inMaildir))
	checkOnce(t, maildir, all)
	p3.signal(t, syscall.SIGTERM)
	if code := p3.waitExit(t, grace+schedule.DefaultCancelWait+5*time.Second); code != 0 {
		t.Errorf("last run: exit %d:\n%s", code, p3.log.text())
	}
	if n := d.Count(t); n != 0 {
		t.Errorf("%d messages left on the server with keep = false", n)
	}
}

// bigBatch is a few hundred messages with two large ones: a poll that
// takes a while.
func bigBatch(seed int64) []pop3test.Message {
	big := pop3test.SampleMessages(300, 100+seed)
	return append(big, pop3test.LargeMessage(3<<20, 2*seed), pop3test.LargeMessage(4<<20, 2*seed+1))
}

// stopMidPoll sends SIGTERM once the daemon fetched a message (found in
// its log after position from), and checks it exits cleanly within the
// grace (plus the time cancelled polls may take to commit and return).
func stopMidPoll(t *testing.T, p *daemonProc, from int, grace time.Duration) {
	t.Helper()
	p.log.wait(t, from, "a poll fetching the large batch", func(recs []map[string]any) bool {
		for _, r := range recs {
			// The trace's "msg" attribute (a message number) hides the
			// record's message in JSON; cmd and bytes identify it.
			if _, ok := r["bytes"]; ok && r["cmd"] == "RETR" {
				return true
			}
		}
		return false
	})
	termAt := time.Now()
	p.signal(t, syscall.SIGTERM)
	if code := p.waitExit(t, grace+schedule.DefaultCancelWait+5*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM:\n%s", code, p.log.text())
	}
	took := time.Since(termAt)
	t.Logf("stopped %v after SIGTERM (grace %v); polls cancelled: %v", took, grace,
		strings.Contains(p.log.text(), "shutdown grace is over"))
	if took > grace+schedule.DefaultCancelWait {
		t.Errorf("stopping took %v, grace is %v", took, grace)
	}
}

// checkNothingLost checks that every message is in the Maildir at most
// once, or still on the server; it returns how many are in the Maildir.
func checkNothingLost(t *testing.T, d *realtest.Dovecot, maildir string, all [][]byte) int {
	t.Helper()
	inMaildir := daemonMaildir(t, maildir)
	onServer := make(map[string]bool)
	for _, m := range d.Messages(t) {
		onServer[lfMessage(m)] = true
	}
	n := 0
	for i, m := range all {
		s := lfMessage(m)
		switch c := inMaildir[s]; {
		case c > 1:
			t.Errorf("message %d delivered %d times", i, c)
		case c == 0 && !onServer[s]:
			t.Errorf("message %d lost: neither delivered nor on the server", i)
		}
		if inMaildir[s] > 0 {
			n++
		}
	}
	t.Logf("%d of %d messages delivered, %d on the server", n, len(all), len(onServer))
	return n
}
