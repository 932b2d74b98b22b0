package fetch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"popsync/configs"
	"popsync/deliver"
	"popsync/fetch"
	"popsync/fetch/pop3/pop3test"
	"popsync/internal/credential"
	"popsync/state"
)

const (
	testUser = "me@example.net"
	testPass = "correct horse battery staple"
)

// env is one account on the fake server, a real SQLite seen-set and a
// real Maildir.
type env struct {
	t       *testing.T
	srv     *pop3test.Server
	msgs    []pop3test.Message
	store   *state.SQLite
	dir     string
	maildir string
	acct    *configs.Account
	opts    *fetch.Options
}

func newEnv(t *testing.T, msgs []pop3test.Message, cfg pop3test.Config) *env {
	t.Helper()
	cfg.User, cfg.Password = testUser, testPass
	srv := pop3test.NewServer(cfg, msgs...)
	t.Cleanup(func() { srv.Close() })
	addr, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(addr, ":")
	var p int
	fmt.Sscan(port, &p)
	dir := t.TempDir()
	st, err := state.OpenSQLite(t.Context(), filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	maildir := filepath.Join(dir, "Maildir")
	e := &env{t: t, srv: srv, msgs: msgs, store: st, dir: dir, maildir: maildir,
		acct: &configs.Account{
			Name: "test", Host: host, Port: p, TLS: configs.TLSNone, User: testUser,
			Password: credential.Literal(testPass), Auth: configs.AuthAuto, Keep: true,
			Timeout: configs.Duration(10 * time.Second), AddReceived: true,
			Deliver: []configs.Deliver{{Target: &configs.MaildirTarget{Path: maildir}}},
		},
	}
	e.opts = &fetch.Options{Store: st, Hostname: "client.test", BatchSize: 7}
	return e
}

func (e *env) poll() fetch.Result {
	e.t.Helper()
	return e.opts.Poll(e.t.Context(), e.acct)
}

func (e *env) mustPoll() fetch.Result {
	e.t.Helper()
	r := e.poll()
	if r.Err != nil {
		e.t.Fatalf("poll: %v", r.Err)
	}
	return r
}

// deferredPoll polls and wants the poll to fail with fetch.ErrDelivery
// (a message could not be delivered for now) and a *deliver.DeliveryError
// naming why, after delivering the rest.
func (e *env) deferredPoll() fetch.Result {
	e.t.Helper()
	r := e.poll()
	var de *deliver.DeliveryError
	if !errors.Is(r.Err, fetch.ErrDelivery) || !errors.As(r.Err, &de) {
		e.t.Fatalf("poll: %v, want ErrDelivery with a *deliver.DeliveryError", r.Err)
	}
	return r
}

// want is what a message must look like in the Maildir: LF line endings
// and, as POP3 cannot carry a missing final newline, one at the end.
func want(m pop3test.Message) string {
	s := strings.ReplaceAll(string(m.Data), "\r\n", "\n")
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s
}

// delivered returns the Maildir's messages with popsync's Received header
// removed, sorted; it fails the test on a file without that header.
func (e *env) delivered() []string {
	e.t.Helper()
	var out []string
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(e.maildir, sub))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			e.t.Fatal(err)
		}
		for _, de := range ents {
			b, err := os.ReadFile(filepath.Join(e.maildir, sub, de.Name()))
			if err != nil {
				e.t.Fatal(err)
			}
			out = append(out, stripReceived(e.t, string(b)))
		}
	}
	sort.Strings(out)
	return out
}

func stripReceived(t *testing.T, s string) string {
	t.Helper()
	if !strings.HasPrefix(s, "Received: from ") || strings.Contains(s[:strings.IndexByte(s, '\n')], "\r") {
		t.Fatalf("delivered message does not start with popsync's LF-terminated Received header:\n%.200s", s)
	}
	// The header is folded over three lines.
	for range 3 {
		s = s[strings.IndexByte(s, '\n')+1:]
	}
	return s
}

// wantExactlyOnce asserts the Maildir holds each of msgs exactly once,
// byte for byte, and nothing else.
func (e *env) wantExactlyOnce(msgs []pop3test.Message) {
	e.t.Helper()
	var exp []string
	for _, m := range msgs {
		exp = append(exp, want(m))
	}
	sort.Strings(exp)
	got := e.delivered()
	if len(got) != len(exp) {
		e.t.Fatalf("Maildir holds %d messages, want %d", len(got), len(exp))
	}
	for i := range exp {
		if got[i] != exp[i] {
			e.t.Fatalf("delivered message differs:\n got %.300q\nwant %.300q", got[i], exp[i])
		}
	}
	tmp, _ := os.ReadDir(filepath.Join(e.maildir, "tmp"))
	if len(tmp) != 0 {
		e.t.Fatalf("tmp/ holds %d leftover files", len(tmp))
	}
}

// wantOnServer asserts the server still holds exactly these UIDs.
func (e *env) wantOnServer(uids ...string) {
	e.t.Helper()
	var got []string
	for _, m := range e.srv.Messages() {
		got = append(got, m.UID)
	}
	sort.Strings(got)
	sort.Strings(uids)
	if strings.Join(got, ",") != strings.Join(uids, ",") {
		e.t.Fatalf("server holds %v, want %v", got, uids)
	}
}

func uids(msgs []pop3test.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.UID)
	}
	return out
}

func TestPollDeliversEveryMessageOnce(t *testing.T) {
	msgs := pop3test.SampleMessages(30, 1)
	e := newEnv(t, msgs, pop3test.Config{})
	r := e.mustPoll()
	if r.OnServer != 30 || r.New != 30 || r.Delivered != 30 || r.Deleted != 0 {
		t.Fatalf("first poll: %+v", r)
	}
	e.wantExactlyOnce(msgs)
	e.wantOnServer(uids(msgs)...)

	retrs := e.srv.Stats().Retrs
	r = e.mustPoll()
	if r.New != 0 || r.Delivered != 0 {
		t.Fatalf("second poll found new mail: %+v", r)
	}
	if got := e.srv.Stats().Retrs; got != retrs {
		t.Fatalf("second poll sent %d RETRs", got-retrs)
	}
	e.wantExactlyOnce(msgs)

	// Mail arriving later is fetched, and only it.
	more := pop3test.SampleMessages(35, 1)[30:]
	e.srv.Add(more...)
	if r := e.mustPoll(); r.Delivered != 5 {
		t.Fatalf("third poll delivered %d, want 5", r.Delivered)
	}
	e.wantExactlyOnce(append(msgs, more...))
}

func TestPollKeepFalseEmptiesServer(t *testing.T) {
	msgs := pop3test.SampleMessages(20, 2)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	r := e.mustPoll()
	if r.Delivered != 20 || r.Deleted != 20 {
		t.Fatalf("poll: %+v", r)
	}
	e.wantExactlyOnce(msgs)
	e.wantOnServer()
}

func TestDropMidRetrLosesNothing(t *testing.T) {
	msgs := pop3test.SampleMessages(30, 3)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	e.srv.SetFaults(pop3test.Faults{RetrDrops: []pop3test.RetrDrop{{Msg: 17, After: 100, Times: 1}}})
	r := e.poll()
	if r.Err == nil {
		t.Fatal("poll over a dropped connection succeeded")
	}
	// Messages before the drop were committed; nothing was deleted,
	// because the session never reached QUIT.
	if r.Delivered != 16 {
		t.Fatalf("delivered %d before the drop, want 16", r.Delivered)
	}
	e.wantExactlyOnce(msgs[:16])
	e.wantOnServer(uids(msgs)...)

	r = e.mustPoll()
	if r.Delivered != 14 || r.Deleted != 30 {
		t.Fatalf("second poll: %+v", r)
	}
	e.wantExactlyOnce(msgs)
	e.wantOnServer()
}

func TestDropBeforeQuitCommitsNoDelete(t *testing.T) {
	msgs := pop3test.SampleMessages(12, 4)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	e.srv.SetFaults(pop3test.Faults{QuitDrop: true})
	r := e.poll()
	if r.Err == nil {
		t.Fatal("poll without a QUIT reply succeeded")
	}
	e.wantExactlyOnce(msgs)
	e.wantOnServer(uids(msgs)...)

	e.srv.SetFaults(pop3test.Faults{})
	retrs := e.srv.Stats().Retrs
	r = e.mustPoll()
	if r.Delivered != 0 || r.Deleted != 12 {
		t.Fatalf("second poll: %+v", r)
	}
	if e.srv.Stats().Retrs != retrs {
		t.Fatal("second poll fetched again what was delivered")
	}
	e.wantExactlyOnce(msgs)
	e.wantOnServer()
}

func TestDeleRefusedIsRetried(t *testing.T) {
	msgs := pop3test.SampleMessages(6, 5)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	e.srv.SetFaults(pop3test.Faults{Commands: []pop3test.CommandFault{{Command: "DELE", UID: msgs[2].UID, Code: "SYS/TEMP", Times: 1}}})
	r := e.mustPoll()
	if r.Deleted != 5 {
		t.Fatalf("deleted %d, want 5", r.Deleted)
	}
	e.wantOnServer(msgs[2].UID)
	r = e.mustPoll()
	if r.Deleted != 1 || r.Delivered != 0 {
		t.Fatalf("second poll: %+v", r)
	}
	e.wantOnServer()
	e.wantExactlyOnce(msgs)
}

// failingTarget wraps a real target and fails on command.
type failingTarget struct {
	deliver.Target
	mu           sync.Mutex
	writesLeft   int  // Begin fails once this reaches 0 (-1: never)
	failPublish  bool // Publish fails before doing anything
	failPrepared bool // Prepare fails
}

var errDiskFull = errors.New("no space left on device (injected)")

func (f *failingTarget) Begin(ctx context.Context, m deliver.Meta) (deliver.Delivery, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.writesLeft == 0 {
		return nil, errDiskFull
	}
	if f.writesLeft > 0 {
		f.writesLeft--
	}
	return f.Target.Begin(ctx, m)
}

func (f *failingTarget) Publish(ctx context.Context, ds []deliver.Delivery) error {
	if f.failPublish {
		return errDiskFull
	}
	return f.Target.Publish(ctx, ds)
}

func (f *failingTarget) Prepare(ctx context.Context, ds []deliver.Delivery) error {
	if f.failPrepared {
		return errDiskFull
	}
	return f.Target.Prepare(ctx, ds)
}

func (e *env) injectTarget(f *failingTarget) {
	e.opts.OpenTarget = func(a *configs.Account, d configs.Deliver) (deliver.Target, error) {
		t, err := fetch.OpenTarget(a, d)
		if err != nil {
			return nil, err
		}
		f.Target = t
		return f, nil
	}
}

func TestFullDiskStopsPollAndDeletesNothing(t *testing.T) {
	msgs := pop3test.SampleMessages(20, 6)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	e.injectTarget(&failingTarget{writesLeft: 10})
	r := e.poll()
	if !errors.Is(r.Err, errDiskFull) {
		t.Fatalf("poll error = %v, want the disk error", r.Err)
	}
	if r.Deleted != 0 {
		t.Fatalf("deleted %d while the disk was full", r.Deleted)
	}
	e.wantOnServer(uids(msgs)...)
	// The ten messages written before the failure were committed, the
	// one that failed left no trace.
	e.wantExactlyOnce(msgs[:10])

	e.opts.OpenTarget = nil
	r = e.mustPoll()
	if r.Delivered != 10 {
		t.Fatalf("after space returned, delivered %d, want 10", r.Delivered)
	}
	e.wantExactlyOnce(msgs)
	e.wantOnServer()
}

func TestPrepareFailureRecordsNothing(t *testing.T) {
	msgs := pop3test.SampleMessages(5, 7)
	e := newEnv(t, msgs, pop3test.Config{})
	e.injectTarget(&failingTarget{writesLeft: -1, failPrepared: true})
	if r := e.poll(); !errors.Is(r.Err, errDiskFull) {
		t.Fatalf("poll error = %v", r.Err)
	}
	e.wantExactlyOnce(nil)
	e.opts.OpenTarget = nil
	e.mustPoll()
	e.wantExactlyOnce(msgs)
}

// crashStore fails MarkDelivered once, as a crash right after the
// Maildir rename would leave things.
type crashStore struct {
	state.Store
	failMark bool
}

func (c *crashStore) MarkDelivered(ctx context.Context, a state.Account, recs []state.Record) error {
	if c.failMark {
		c.failMark = false
		return errors.New("killed before recording (injected)")
	}
	return c.Store.MarkDelivered(ctx, a, recs)
}

func TestInterruptedAfterPublishIsNotFetchedAgain(t *testing.T) {
	msgs := pop3test.SampleMessages(5, 8)
	e := newEnv(t, msgs, pop3test.Config{})
	e.opts.Store = &crashStore{Store: e.store, failMark: true}
	if r := e.poll(); r.Err == nil {
		t.Fatal("poll with a failed record succeeded")
	}
	// The files of the first batch (whatever its size) are in new/, the
	// seen-set does not know them, but the intents say where to look.
	k := len(e.delivered())
	if k < 1 {
		t.Fatal("nothing was published before the failed record")
	}
	e.wantExactlyOnce(msgs[:k])
	retrs := e.srv.Stats().Retrs
	r := e.mustPoll()
	if r.Delivered != len(msgs)-k || e.srv.Stats().Retrs-retrs != len(msgs)-k {
		t.Fatalf("second poll fetched again: %+v, want only the %d not published", r, len(msgs)-k)
	}
	e.wantExactlyOnce(msgs)
	in, err := e.store.Intents(t.Context(), e.acct.Identity())
	if err != nil || len(in) != 0 {
		t.Fatalf("intents left: %v, %v", in, err)
	}
}

// TestInterruptedResolvedBeforeSeenSetIsRead: the poll after the crash
// uses the SQLite store itself, which reads the seen-set while the server
// logs in; the interrupted deliveries must be resolved into it first, or
// they are fetched again.
func TestInterruptedResolvedBeforeSeenSetIsRead(t *testing.T) {
	msgs := pop3test.SampleMessages(5, 8)
	e := newEnv(t, msgs, pop3test.Config{})
	e.opts.Store = &crashStore{Store: e.store, failMark: true}
	if r := e.poll(); r.Err == nil {
		t.Fatal("poll with a failed record succeeded")
	}
	e.opts.Store = e.store
	k := len(e.delivered())
	if k < 1 {
		t.Fatal("nothing was published before the failed record")
	}
	retrs := e.srv.Stats().Retrs
	if r := e.mustPoll(); r.Delivered != len(msgs)-k || e.srv.Stats().Retrs-retrs != len(msgs)-k {
		t.Fatalf("second poll fetched again: %+v, want only the %d not published", r, len(msgs)-k)
	}
	e.wantExactlyOnce(msgs)
}

// brokenIntents fails to read the intents, as a damaged state would.
type brokenIntents struct{ state.Store }

var errIntents = errors.New("reading intents failed (injected)")

func (brokenIntents) Intents(context.Context, state.Account) ([]state.Intent, error) {
	return nil, errIntents
}

// TestLocalFailureStopsLogin: the login runs while the poll does its
// local work; when that fails, the poll returns its error at once instead
// of waiting out a server that never answers.
func TestLocalFailureStopsLogin(t *testing.T) {
	e := newEnv(t, pop3test.SampleMessages(2, 9), pop3test.Config{})
	e.srv.SetFaults(pop3test.Faults{SilentAfterGreeting: true})
	e.acct.Timeout = configs.Duration(time.Hour)
	e.opts.Store = brokenIntents{e.store}
	done := make(chan fetch.Result, 1)
	go func() { done <- e.poll() }()
	select {
	case r := <-done:
		if !errors.Is(r.Err, errIntents) {
			t.Fatalf("poll error = %v, want the intents error", r.Err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("poll still waiting for the login after the local work failed")
	}
}

func TestInterruptedBeforePublishIsFetchedAgain(t *testing.T) {
	msgs := pop3test.SampleMessages(5, 9)
	e := newEnv(t, msgs, pop3test.Config{})
	e.injectTarget(&failingTarget{writesLeft: -1, failPublish: true})
	if r := e.poll(); !errors.Is(r.Err, errDiskFull) {
		t.Fatalf("poll error = %v", r.Err)
	}
	// The failed poll dropped its connection without QUIT; the fake
	// holds the maildrop until it has seen that, and would answer a
	// login before then with -ERR [IN-USE].
	if err := e.srv.WaitIdle(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.opts.OpenTarget = nil
	r := e.mustPoll()
	if r.Delivered != 5 {
		t.Fatalf("second poll delivered %d, want 5", r.Delivered)
	}
	e.wantExactlyOnce(msgs)
}

func TestAccountPolledByOneProcessAtATime(t *testing.T) {
	e := newEnv(t, pop3test.SampleMessages(3, 10), pop3test.Config{})
	lease, err := e.store.LockAccount(t.Context(), e.acct.Identity())
	if err != nil {
		t.Fatal(err)
	}
	r := e.poll()
	if !errors.Is(r.Err, fetch.ErrAccountBusy) {
		t.Fatalf("poll of a locked account: %v", r.Err)
	}
	if e.srv.Stats().Sessions != 0 {
		t.Fatal("a locked account was still contacted")
	}
	lease.Release()
	e.mustPoll()
}

func TestServerWithoutUIDL(t *testing.T) {
	msgs := pop3test.SampleMessages(10, 11)
	e := newEnv(t, msgs, pop3test.Config{Caps: pop3test.Caps{NoUIDL: true}})
	e.acct.Keep = true
	if r := e.mustPoll(); r.Delivered != 10 {
		t.Fatalf("delivered %d", r.Delivered)
	}
	retrs := e.srv.Stats().Retrs
	if r := e.mustPoll(); r.Delivered != 0 || e.srv.Stats().Retrs != retrs {
		t.Fatalf("second poll without UIDL fetched again: %+v", r)
	}
	e.wantExactlyOnce(msgs)
}

func TestDuplicateUIDLsLoseNothingAndDoNotLoop(t *testing.T) {
	msgs := pop3test.SampleMessages(6, 12)
	msgs[3].UID = msgs[1].UID
	msgs[5].UID = msgs[1].UID
	e := newEnv(t, msgs, pop3test.Config{})
	if r := e.mustPoll(); r.Delivered != 6 {
		t.Fatalf("delivered %d, want 6", r.Delivered)
	}
	retrs := e.srv.Stats().Retrs
	if r := e.mustPoll(); r.Delivered != 0 || e.srv.Stats().Retrs != retrs {
		t.Fatalf("duplicates were fetched again: %+v", r)
	}
	e.wantExactlyOnce(msgs)
}

func TestMaxSizeReportedOnceAndLeftOnServer(t *testing.T) {
	msgs := pop3test.SampleMessages(4, 13)
	big := pop3test.LargeMessage(300_000, 13)
	big.UID = "big-one"
	msgs = append(msgs, big)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	e.acct.MaxSize = 100_000
	r := e.mustPoll()
	if r.Skipped != 1 || r.Delivered != 4 || r.Deleted != 4 {
		t.Fatalf("first poll: %+v", r)
	}
	e.wantOnServer("big-one")
	if r := e.mustPoll(); r.Skipped != 0 || r.New != 0 {
		t.Fatalf("second poll reported the big message again: %+v", r)
	}
	// Raising the limit fetches it.
	e.acct.MaxSize = 0
	if r := e.mustPoll(); r.Delivered != 1 {
		t.Fatalf("after raising max_size: %+v", r)
	}
	e.wantExactlyOnce(msgs)
	e.wantOnServer()
}

func TestServerSendingMoreThanMaxSizeIsRefused(t *testing.T) {
	msgs := []pop3test.Message{pop3test.LargeMessage(200_000, 14)}
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.MaxSize = 50_000
	e.srv.SetFaults(pop3test.Faults{Sizes: []pop3test.SizeFault{{Msg: 1, Size: 1000}}})
	r := e.poll()
	if !errors.Is(r.Err, fetch.ErrOversized) {
		t.Fatalf("poll error = %v, want ErrOversized", r.Err)
	}
	e.wantExactlyOnce(nil)
	e.wantOnServer(uids(msgs)...)
}

func TestFetchLimit(t *testing.T) {
	msgs := pop3test.SampleMessages(25, 15)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.FetchLimit = 10
	for i, want := range []int{10, 10, 5, 0} {
		if r := e.mustPoll(); r.Delivered != want {
			t.Fatalf("poll %d delivered %d, want %d", i+1, r.Delivered, want)
		}
	}
	e.wantExactlyOnce(msgs)
}

func TestDeleteAfter(t *testing.T) {
	msgs := pop3test.SampleMessages(4, 16)
	e := newEnv(t, msgs, pop3test.Config{})
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e.opts.Now = func() time.Time { return now }
	e.acct.DeleteAfter = configs.Duration(30 * 24 * time.Hour)
	e.mustPoll()
	now = now.Add(29 * 24 * time.Hour)
	if r := e.mustPoll(); r.Deleted != 0 {
		t.Fatalf("deleted %d before delete_after", r.Deleted)
	}
	now = now.Add(48 * time.Hour)
	if r := e.mustPoll(); r.Deleted != 4 {
		t.Fatalf("deleted %d after delete_after, want 4", r.Deleted)
	}
	e.wantOnServer()
	e.wantExactlyOnce(msgs)
}

func TestDryRunChangesNothing(t *testing.T) {
	msgs := pop3test.SampleMessages(5, 17)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	e.opts.DryRun = true
	r := e.mustPoll()
	if r.New != 5 || r.Delivered != 0 || r.Deleted != 0 || e.srv.Stats().Retrs != 0 {
		t.Fatalf("dry run: %+v, %d RETRs", r, e.srv.Stats().Retrs)
	}
	e.wantOnServer(uids(msgs)...)
	if _, err := os.Stat(filepath.Join(e.maildir, "new")); err == nil {
		if got := e.delivered(); len(got) != 0 {
			t.Fatalf("dry run delivered %d messages", len(got))
		}
	}
}

func TestOneAccountFailureDoesNotStopOthers(t *testing.T) {
	good := newEnv(t, pop3test.SampleMessages(8, 18), pop3test.Config{})
	bad := *good.acct
	bad.Name, bad.User = "bad", "nobody@example.net"
	busy := newEnv(t, pop3test.SampleMessages(3, 19), pop3test.Config{})
	busy.srv.SetFaults(pop3test.Faults{Login: pop3test.LoginFault{Code: "IN-USE", Text: "maildrop locked"}})
	busy.acct.Name = "busy"
	res := good.opts.PollAll(t.Context(), []*configs.Account{&bad, good.acct, busy.acct}, 3)
	if res[0].Err == nil || !strings.Contains(res[0].Err.Error(), "logging in") {
		t.Fatalf("wrong user: %v", res[0].Err)
	}
	if strings.Contains(res[0].Err.Error(), testPass) {
		t.Fatal("the password appears in an error")
	}
	if res[1].Err != nil || res[1].Delivered != 8 {
		t.Fatalf("good account: %+v", res[1])
	}
	if res[2].Err == nil || !strings.Contains(res[2].Err.Error(), "IN-USE") {
		t.Fatalf("busy account: %v", res[2].Err)
	}
	good.wantExactlyOnce(good.msgs)
}

func TestReceivedHeaderCanBeTurnedOff(t *testing.T) {
	msgs := pop3test.SampleMessages(2, 20)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.AddReceived = false
	e.mustPoll()
	ents, _ := os.ReadDir(filepath.Join(e.maildir, "new"))
	var got []string
	for _, de := range ents {
		b, _ := os.ReadFile(filepath.Join(e.maildir, "new", de.Name()))
		got = append(got, string(b))
	}
	sort.Strings(got)
	exp := []string{want(msgs[0]), want(msgs[1])}
	sort.Strings(exp)
	if len(got) != 2 || got[0] != exp[0] || got[1] != exp[1] {
		t.Fatal("with add_received = false the message is not the server's bytes")
	}
	if bytes.Contains([]byte(got[0]), []byte("\r\n")) {
		t.Fatal("CRLF left in a Maildir file")
	}
}
