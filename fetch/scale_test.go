package fetch_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"popsync/configs"
	"popsync/fetch"
	"popsync/fetch/pop3/pop3test"
	"popsync/internal/credential"
	"popsync/state"
)

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(ents)
}

// TestManyAccountsNoLeak polls 200 accounts, each on its own fake server,
// in one PollAll with max_parallel = 32, and checks that every account
// got its mail and that no file descriptor or goroutine is left behind:
// the counts are taken before the servers start and after they were
// closed (Close waits for every goroutine of a server), so whatever is
// left over belongs to the polls.
func TestManyAccountsNoLeak(t *testing.T) {
	const accounts, perAccount = 200, 3
	dir := t.TempDir()
	st, err := state.OpenSQLite(t.Context(), filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	o := &fetch.Options{Store: st, Hostname: "client.test"}
	newAccount := func(i int) (*pop3test.Server, *configs.Account) {
		srv := pop3test.NewServer(pop3test.Config{User: testUser, Password: testPass}, pop3test.SampleMessages(perAccount, int64(500+i))...)
		t.Cleanup(func() { srv.Close() })
		addr, err := srv.Listen()
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])
		return srv, &configs.Account{
			Name: fmt.Sprintf("acct%03d", i), Host: "127.0.0.1", Port: port, TLS: configs.TLSNone,
			User: testUser, Password: credential.Literal(testPass), Auth: configs.AuthUser, Keep: i%2 == 0,
			Timeout: configs.Duration(30 * time.Second), AddReceived: true,
			Deliver: []configs.Deliver{{Target: &configs.MaildirTarget{Path: filepath.Join(dir, fmt.Sprintf("M%03d", i))}}},
		}
	}
	// A warm-up poll starts what lives as long as the store (database/sql's
	// connection) before the counts are taken.
	warm, wa := newAccount(accounts)
	if r := o.Poll(t.Context(), wa); r.Err != nil {
		t.Fatal(r.Err)
	}
	warm.Close()
	// Its goroutines are exiting: count the fewest seen while yielding.
	gs := runtime.NumGoroutine()
	for range 1000 {
		runtime.Gosched()
		gs = min(gs, runtime.NumGoroutine())
	}
	fds := openFDs(t)

	var servers []*pop3test.Server
	var accts []*configs.Account
	for i := range accounts {
		srv, a := newAccount(i)
		servers = append(servers, srv)
		accts = append(accts, a)
	}
	begin := time.Now()
	res := o.PollAll(t.Context(), accts, 32)
	took := time.Since(begin)
	for i, r := range res {
		if r.Err != nil || r.Delivered != perAccount {
			t.Fatalf("%s: %+v", accts[i].Name, r)
		}
	}
	for _, srv := range servers {
		srv.Close()
	}
	// A server's goroutines have signalled Close and are exiting; let
	// them run to their end (yielding, no fixed wait) before counting.
	for range 100_000 {
		if runtime.NumGoroutine() <= gs {
			break
		}
		runtime.Gosched()
	}
	fds2, gs2 := openFDs(t), runtime.NumGoroutine()
	t.Logf("%d accounts in %v; file descriptors %d -> %d, goroutines %d -> %d", accounts, took.Round(time.Millisecond), fds, fds2, gs, gs2)
	if fds2 > fds {
		t.Errorf("%d file descriptors leaked", fds2-fds)
	}
	if gs2 > gs {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines leaked:\n%s", gs2-gs, buf[:runtime.Stack(buf, true)])
	}
}

// peakRSS returns the process's peak resident set size (VmHWM) in KiB.
func peakRSS(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	t.Skip("no VmHWM in /proc/self/status")
	return 0
}

// TestHundredThousandMessages polls an account whose fake server holds
// 100,000 messages and reports the peak RSS of the test process during
// the poll (the fake server's maildrop, in the same process, included).
// It takes minutes: set POPSYNC_SCALE=1 to run it.
func TestHundredThousandMessages(t *testing.T) {
	if os.Getenv("POPSYNC_SCALE") != "1" {
		t.Skip("set POPSYNC_SCALE=1 to poll 100,000 messages")
	}
	const n = 100_000
	msgs := make([]pop3test.Message, n)
	for i := range msgs {
		msgs[i] = pop3test.Message{UID: fmt.Sprintf("m%06d", i),
			Data: fmt.Appendf(nil, "From: a@example.net\r\nSubject: message %d\r\nMessage-ID: <%d@example.net>\r\n\r\nBody of message %d.\r\n", i, i, i)}
	}
	e := newEnv(t, msgs, pop3test.Config{})
	e.opts.BatchSize = 0 // the default, as popsync runs
	e.acct.Keep = false
	runtime.GC()
	base := peakRSS(t)
	// Reset the peak to the current RSS (Linux 4.0+), so VmHWM is the
	// poll's.
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Logf("cannot reset the peak RSS (%v): it includes the set-up", err)
	}
	heap := sampleHeap(t)
	begin := time.Now()
	r := e.mustPoll()
	took := time.Since(begin)
	grew := heap()
	peak := peakRSS(t)
	if r.Delivered != n || r.Deleted != n {
		t.Fatalf("poll: %+v", r)
	}
	ents, err := os.ReadDir(filepath.Join(e.maildir, "new"))
	if err != nil || len(ents) != n {
		t.Fatalf("new/ holds %d files, %v", len(ents), err)
	}
	e.wantOnServer()
	t.Logf("%d messages in %v; peak RSS %d MiB (before the poll %d MiB); Go heap grew by at most %d MiB",
		n, took.Round(time.Millisecond), peak>>10, base>>10, grew>>20)
	// The bound: the seen-set keys, the server's listing and the poll's
	// per-message bookkeeping are O(n) and small; no message is held.
	if grew > 256<<20 {
		t.Fatalf("the Go heap grew by %d MiB polling %d messages", grew>>20, n)
	}
}
