package main_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"popsync/internal/credential/oauth"
	"popsync/internal/realtest"
	"popsync/state"
	"popsync/state/postgres"
)

// fleetTTL is the lease TTL of the fleet test: short, so that takeovers
// after kill -9 and SIGSTOP happen within seconds.
const fleetTTL = 2 * time.Second

// TestFleet runs 3 `popsync run` daemons on one PostgreSQL database and
// one config against a real Dovecot with many virtual users while new
// mail keeps arriving, and through it all: kills a random daemon with
// SIGKILL and restarts it, again and again; stops one with SIGSTOP in the
// middle of a poll for longer than the lease TTL and lets it go on after
// another daemon took its account over; restarts PostgreSQL (pg_ctl
// restart -m fast). At the end every message is in its account's Maildir
// exactly once and the server holds none, every account was polled after
// the disturbances, the stopped daemon lost its lease and deleted
// nothing, and each daemon polled roughly a third of the accounts.
//
// By default it runs with 100 accounts and 5 kills (well under a minute);
// POPSYNC_FLEET_ACCOUNTS=300 POPSYNC_FLEET_KILLS=30 is the full run.
func TestFleet(t *testing.T) {
	nAccounts := envInt("POPSYNC_FLEET_ACCOUNTS", 100)
	kills := envInt("POPSYNC_FLEET_KILLS", 5)
	realtest.RequirePostgres(t)
	pg := realtest.StartPostgres(t, realtest.PostgresOptions{Config: "max_connections = 100"})
	if err := pg.CreateDatabase("fleet"); err != nil {
		t.Fatal(err)
	}
	users := make([]string, nAccounts)
	for i := range users {
		users[i] = fmt.Sprintf("u%03d", i)
	}
	d := realtest.StartDovecot(t, realtest.DovecotOptions{Users: users, Connections: 100000,
		Config: "mail_max_userip_connections = 100000"})
	dir := t.TempDir()
	url := pg.ConnString("fleet")
	cfg := writeFleetConfig(t, dir, d, url, users)
	bin := popsyncBinary(t)

	// Mail arrives all along: a few messages to random accounts.
	var mu sync.Mutex
	want := make(map[string]map[string]bool) // user → Message-IDs
	seq := 0
	arrive := func(rng *rand.Rand) {
		u := users[rng.IntN(len(users))]
		mu.Lock()
		seq++
		id := fmt.Sprintf("<%d.fleet@test>", seq)
		if want[u] == nil {
			want[u] = make(map[string]bool)
		}
		want[u][id] = true
		mu.Unlock()
		d.DeliverTo(t, u, fleetMessage(id, 2000+rng.IntN(20000)))
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for range nAccounts {
		arrive(rng)
	}
	stopMail := make(chan struct{})
	mailDone := make(chan struct{})
	go func() {
		defer close(mailDone)
		r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 8))
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopMail:
				return
			case <-tick.C:
				arrive(r)
			}
		}
	}()
	defer func() {
		select {
		case <-stopMail:
		default:
			close(stopMail)
		}
		<-mailDone
	}()

	fl := &fleet{t: t, bin: bin, cfg: cfg, dir: dir}
	for i := range 3 {
		fl.start(i)
	}
	defer fl.stopAll()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := postgres.Open(ctx, url, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	idents := make([]state.Account, len(users))
	host, port, _ := strings.Cut(d.TLSAddr, ":")
	portN, _ := strconv.Atoi(port)
	for i, u := range users {
		idents[i] = state.Account{Host: host, Port: portN, User: u}.Canonical()
	}
	start := time.Now()
	fl.waitPolledSince(ctx, st, idents, start, "first round")
	t.Logf("%d accounts polled once by the fleet in %v", nAccounts, time.Since(start).Round(time.Millisecond))

	// kill -9 a random daemon and restart it.
	for k := range kills {
		time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		i := rng.IntN(3)
		fl.kill(i)
		fl.start(i)
		_ = k
	}
	afterKills := time.Now()
	fl.waitPolledSince(ctx, st, idents, afterKills, "after the kills")
	t.Logf("%d kills: every account polled again within %v", kills, time.Since(afterKills).Round(time.Millisecond))

	// SIGSTOP a daemon in the middle of a poll, longer than the TTL: a
	// batch of big messages, and the stop once its holder has put some
	// but not most of them into the Maildir. A poll too quick to be
	// caught is tried again with another batch.
	big := users[0]
	const bigN = 80
	var victim, fetched int
	var token int64
	for try := 0; ; try++ {
		if try == 5 {
			t.Fatalf("no poll of %s was caught in its middle in %d tries", big, try)
		}
		// The whole batch is on the server before a poll starts: the
		// account is taken out of the fleet's schedule meanwhile (again
		// once a running poll, which sets the next due time, ended).
		for range 2 {
			if err := st.SetNextDue(ctx, idents[0], time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			for leaseOf(ctx, t, st, idents[0]).Owner != "" {
				time.Sleep(10 * time.Millisecond)
			}
		}
		base := maildirCount(t, filepath.Join(dir, "m", big))
		for i := range bigN {
			id := fmt.Sprintf("<big%d.%d.fleet@test>", try, i)
			mu.Lock()
			if want[big] == nil {
				want[big] = make(map[string]bool)
			}
			want[big][id] = true
			mu.Unlock()
			d.DeliverTo(t, big, fleetMessage(id, 200000))
		}
		if err := st.SetNextDue(ctx, idents[0], time.Now()); err != nil {
			t.Fatal(err)
		}
		var ok bool
		victim, token, fetched, ok = fl.waitMidPoll(ctx, st, idents[0], filepath.Join(dir, "m", big), base, 5, bigN*3/4)
		if ok {
			break
		}
	}
	fl.signal(victim, syscall.SIGSTOP)
	stoppedAt := time.Now()
	t.Logf("daemon %d stopped while it held %s (token %d), %d of %d big messages in the Maildir", victim, big, token, fetched, bigN)
	// Its POP3 session, in Dovecot's log: the latest login of big that
	// has not ended (no other daemon polls big while it holds the lease).
	session := openSession(t, d, big)
	// Another daemon takes the account over once the lease expired.
	for {
		li := leaseOf(ctx, t, st, idents[0])
		if li.Token > token {
			break
		}
		if time.Since(stoppedAt) > 30*fleetTTL {
			t.Fatalf("no daemon took %s over from the stopped one", big)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(fleetTTL) // longer than the TTL in all
	fl.signal(victim, syscall.SIGCONT)
	t.Logf("daemon %d continued after %v", victim, time.Since(stoppedAt).Round(time.Millisecond))

	// Restart PostgreSQL in the middle of it all.
	time.Sleep(500 * time.Millisecond)
	if err := pg.Restart(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	fl.waitPolledSince(ctx, st, idents, restarted, "after the PostgreSQL restart")
	t.Logf("PostgreSQL restarted: every account polled again within %v", time.Since(restarted).Round(time.Millisecond))

	// The share of each daemon, in a window without disturbances.
	fl.mark()
	time.Sleep(3 * time.Second)
	shares := fl.pollsSinceMark()

	close(stopMail)
	<-mailDone
	// Drain: every account is polled after the last message arrived.
	fl.waitPolledSince(ctx, st, idents, time.Now(), "after the mail stopped")
	fl.waitPolledSince(ctx, st, idents, time.Now(), "a second time after the mail stopped")
	fl.stopAll()

	// The stopped daemon lost its lease, and its poll of big deleted
	// nothing.
	log := fl.logOf(victim)
	if !strings.Contains(log, "account lease lost") {
		t.Errorf("daemon %d was stopped past its lease TTL but logged no lost lease:\n%s", victim, tail(log, 30))
	}
	// Its poll of big that was stopped ends in failure, deleting nothing
	// (the first poll line of big it logged after it was stopped).
	var stale string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "lease lost") || (strings.Contains(line, "account="+big+" ") && strings.Contains(line, "poll")) {
			t.Logf("daemon %d: %s", victim, line)
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if stale == "" && err == nil && at.After(stoppedAt) && strings.Contains(line, "account="+big+" ") &&
			(strings.Contains(line, `msg="poll done"`) || strings.Contains(line, `msg="poll failed"`)) {
			stale = line
		}
	}
	if !strings.Contains(stale, `msg="poll failed"`) || !strings.Contains(stale, " deleted=0 ") {
		t.Errorf("daemon %d: the poll of %s it was stopped in should fail and delete nothing; it logged: %q", victim, big, stale)
	}
	// How it found out, after SIGCONT: a commit refused by the fence in
	// the database (popsync_fence, SQLSTATE PSL01: the poll's error says
	// so), and/or its own renewal that noticed the loss (the first
	// "account lease lost" line of the account and token says which),
	// after which every write is refused before it is sent. Both may
	// happen: the renewal and a commit in flight wake up together.
	var lostLine string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `msg="account lease lost"`) && strings.Contains(line, " account="+idents[0].String()+" ") &&
			strings.Contains(line, fmt.Sprintf(" token=%d ", token)) {
			lostLine = line
			break
		}
	}
	fenced := strings.Contains(stale, "PSL01")
	noticed := strings.Contains(lostLine, "another daemon took it over") || strings.Contains(lostLine, "not renewed for")
	if fenced {
		t.Logf("daemon %d: a commit of its poll of %s was refused by the fence in the database (SQLSTATE PSL01)", victim, big)
	}
	if noticed {
		t.Logf("daemon %d: its lease renewal noticed the loss of %s: %s", victim, big, lostLine)
	}
	if !fenced && !noticed {
		t.Errorf("daemon %d: neither a commit refused by the fence nor a lost lease noticed by its renewal for %s (token %d): poll %q, lease %q",
			victim, big, token, stale, lostLine)
	}
	// And the server's word: its session ended without QUIT (Dovecot
	// says "Logged out" after QUIT) and without a DELE.
	end := sessionEnd(t, d, session)
	t.Logf("daemon %d: Dovecot ended its session of %s with: %s", victim, big, end)
	if strings.HasPrefix(end, "Logged out") || !strings.Contains(end, " del=0/") {
		t.Errorf("daemon %d: its session of %s ended %q; want no QUIT (not \"Logged out\") and del=0", victim, big, end)
	}

	lost, dup, extra := 0, 0, 0
	total := 0
	for _, u := range users {
		have := localIDs(t, filepath.Join(dir, "m", u))
		w := want[u]
		total += len(w)
		for id, n := range have {
			switch {
			case !w[id]:
				extra++
			case n > 1:
				dup += n - 1
			}
		}
		for id := range w {
			if have[id] == 0 {
				lost++
			}
		}
		if n := maildirCount(t, d.MaildirOf(u)); n != 0 {
			t.Errorf("%s: the server still holds %d messages", u, n)
		}
	}
	var sum int
	for _, n := range shares {
		sum += n
	}
	t.Logf("%d accounts, %d messages, %d kills: lost %d, duplicated %d, unknown %d; polls per daemon in a quiet 3 s: %v",
		nAccounts, total, kills, lost, dup, extra, shares)
	if lost > 0 || dup > 0 || extra > 0 {
		t.Fatalf("lost %d, duplicated %d, unknown %d", lost, dup, extra)
	}
	for i, n := range shares {
		if sum == 0 || float64(n) < 0.2*float64(sum) || float64(n) > 0.5*float64(sum) {
			t.Errorf("daemon %d polled %d of %d accounts in the quiet window, not about a third", i, n, sum)
		}
	}
}

// dovecotLoginRE and dovecotEndRE match Dovecot's login line and the end
// of a mail session (default log formats).
var (
	dovecotLoginRE = regexp.MustCompile(`Login: user=<([^>]*)>,.* session=<([^>]+)>`)
	dovecotEndRE   = regexp.MustCompile(`<([^>]+)>: Info: Disconnected: (.*)`)
)

// openSession returns the Dovecot session id of the latest login of user
// that has not ended yet, waiting a little for Dovecot's log, which its
// processes write asynchronously.
func openSession(t *testing.T, d *realtest.Dovecot, user string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		log := d.Log(t)
		ended := make(map[string]bool)
		for _, m := range dovecotEndRE.FindAllStringSubmatch(log, -1) {
			ended[m[1]] = true
		}
		var open string
		for _, m := range dovecotLoginRE.FindAllStringSubmatch(log, -1) {
			if m[1] == user && !ended[m[2]] {
				open = m[2]
			}
		}
		if open != "" {
			return open
		}
		if time.Now().After(deadline) {
			t.Fatalf("no open POP3 session of %s in Dovecot's log", user)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sessionEnd returns how Dovecot reported the end of session: "Logged
// out ..." after QUIT, "Connection closed ..." when the client went away
// without it, with the counts (del=DELEs/messages).
func sessionEnd(t *testing.T, d *realtest.Dovecot, session string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, m := range dovecotEndRE.FindAllStringSubmatch(d.Log(t), -1) {
			if m[1] == session {
				return m[2]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Dovecot's log has no end of session %s", session)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

func fleetMessage(id string, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: a@example.org\nTo: b@example.org\nMessage-ID: %s\nSubject: fleet %s\n\n", id, id)
	line := strings.Repeat("fleet test body ", 4) + "\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.Bytes()
}

func writeFleetConfig(t *testing.T, dir string, d *realtest.Dovecot, url string, users []string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "[state]\nurl = %q\nlease_ttl = %q\ndir = %q\n\n[daemon]\nmax_parallel = 8\nshutdown_grace = \"5s\"\n\n",
		url, fleetTTL.String(), filepath.Join(dir, "local"))
	host, port, _ := strings.Cut(d.TLSAddr, ":")
	fmt.Fprintf(&b, "[defaults]\nhost = %q\nport = %s\ntls = \"implicit\"\ntls_ca_file = %q\npassword = %q\nschedule = \"@every 1s\"\nkeep = false\n",
		host, port, d.CAFile, d.Password)
	for _, u := range users {
		fmt.Fprintf(&b, "\n[[account]]\nname = %q\nuser = %q\n\n  [[account.deliver]]\n  maildir = %q\n", u, u, filepath.Join(dir, "m", u))
	}
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// fleet is the daemons of TestFleet.
type fleet struct {
	t             *testing.T
	bin, cfg, dir string
	mu            sync.Mutex
	procs         [3]*exec.Cmd
	exited        [3]chan struct{}
	logs          [3]*lockedBuffer
	marks         [3]int
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (f *fleet) start(i int) {
	f.t.Helper()
	cmd := exec.Command(f.bin, "run", "-c", f.cfg)
	f.mu.Lock()
	if f.logs[i] == nil {
		f.logs[i] = &lockedBuffer{}
	}
	cmd.Stderr = f.logs[i]
	f.mu.Unlock()
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	f.mu.Lock()
	f.procs[i], f.exited[i] = cmd, done
	f.mu.Unlock()
}

func (f *fleet) kill(i int) {
	f.mu.Lock()
	cmd, done := f.procs[i], f.exited[i]
	f.mu.Unlock()
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

func (f *fleet) signal(i int, sig syscall.Signal) {
	f.mu.Lock()
	cmd := f.procs[i]
	f.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fleet) stopAll() {
	for i := range 3 {
		f.mu.Lock()
		cmd, done := f.procs[i], f.exited[i]
		f.mu.Unlock()
		if cmd == nil {
			continue
		}
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			f.t.Errorf("daemon %d did not stop after SIGTERM", i)
			cmd.Process.Signal(syscall.SIGKILL)
			<-done
		}
	}
}

func (f *fleet) logOf(i int) string { return f.logs[i].String() }

// pidOf returns which daemon has pid, or -1.
func (f *fleet) pidOf(pid int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, c := range f.procs {
		if c != nil && c.Process.Pid == pid {
			return i
		}
	}
	return -1
}

func (f *fleet) mark() {
	for i := range 3 {
		f.marks[i] = strings.Count(f.logOf(i), "poll done")
	}
}

func (f *fleet) pollsSinceMark() [3]int {
	var out [3]int
	for i := range 3 {
		out[i] = strings.Count(f.logOf(i), "poll done") - f.marks[i]
	}
	return out
}

// waitPolledSince waits until every account has a poll started after
// since.
func (f *fleet) waitPolledSince(ctx context.Context, st *postgres.Store, idents []state.Account, since time.Time, what string) {
	f.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		all, err := st.Status(ctx)
		if err == nil {
			byID := make(map[state.Account]state.AccountStatus, len(all))
			for _, s := range all {
				byID[s.Account] = s
			}
			missing := 0
			for _, a := range idents {
				s := byID[a]
				if !s.LastOK || !s.LastPoll.After(since) {
					missing++
				}
			}
			if missing == 0 {
				return
			}
			if time.Now().After(deadline) {
				f.t.Fatalf("%s: %d accounts not polled successfully since %v\n%s", what, missing, since, tail(f.logOf(0), 20))
			}
		} else if time.Now().After(deadline) {
			f.t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// daemonPid is the pid part of a default daemon id (host-pid-random).
var daemonPid = regexp.MustCompile(`-(\d+)-[0-9a-f]{8}$`)

// waitHolder waits until a daemon of the fleet holds a's lease and
// returns which, with the lease's token.
func (f *fleet) waitHolder(ctx context.Context, st *postgres.Store, a state.Account) (int, int64) {
	f.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		li := leaseOf(ctx, f.t, st, a)
		if m := daemonPid.FindStringSubmatch(li.Owner); m != nil {
			pid, _ := strconv.Atoi(m[1])
			if i := f.pidOf(pid); i >= 0 {
				return i, li.Token
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.t.Fatalf("no daemon took the lease of %s", a)
	return 0, 0
}

// waitMidPoll waits until a daemon holds a's lease while the poll under
// it has put from lo to hi messages more than base into maildir, and
// returns the daemon, the token and how many it put there; ok is false
// when a poll under one lease went past hi (or no poll came).
func (f *fleet) waitMidPoll(ctx context.Context, st *postgres.Store, a state.Account, maildir string, base, lo, hi int) (i int, tok int64, n int, ok bool) {
	f.t.Helper()
	i, tok = f.waitHolder(ctx, st, a)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		n = maildirCount(f.t, maildir) - base
		li := leaseOf(ctx, f.t, st, a)
		switch {
		case n > hi:
			return i, tok, n, false
		case li.Token != tok || li.Owner == "":
			if n > 0 {
				return i, tok, n, false // that poll ended
			}
			i, tok = f.waitHolder(ctx, st, a)
		case n >= lo:
			return i, tok, n, true
		}
		time.Sleep(time.Millisecond)
	}
	return i, tok, n, false
}

func leaseOf(ctx context.Context, t *testing.T, st *postgres.Store, a state.Account) postgres.LeaseInfo {
	t.Helper()
	all, err := st.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, li := range all {
		if li.Account == a {
			return li
		}
	}
	return postgres.LeaseInfo{}
}

var fleetMsgID = regexp.MustCompile(`(?m)^Message-ID: (\S+)`)

// localIDs counts the Message-IDs in a Maildir.
func localIDs(t *testing.T, maildir string) map[string]int {
	t.Helper()
	out := make(map[string]int)
	eachMaildirFile(t, maildir, func(name string, b []byte) {
		m := fleetMsgID.FindSubmatch(b)
		if m == nil {
			out["(none) "+name]++
			return
		}
		out[string(m[1])]++
	})
	return out
}

// maildirCount counts the messages in a Maildir.
func maildirCount(t *testing.T, maildir string) int {
	t.Helper()
	n := 0
	for _, sub := range []string{"new", "cur"} {
		entries, err := os.ReadDir(filepath.Join(maildir, sub))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), ".") && e.Type().IsRegular() {
				n++
			}
		}
	}
	return n
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestStateCopyAndStatus moves a state that `popsync fetch` wrote into
// SQLite over to PostgreSQL with `popsync state copy`, then checks that
// `status` on the database shows the same seen counts and the fleet
// columns, that a second copy is refused without --force, and that the
// database password appears in no output.
func TestStateCopyAndStatus(t *testing.T) {
	realtest.RequirePostgres(t)
	pg := realtest.StartPostgres(t, realtest.PostgresOptions{})
	if err := pg.CreateDatabase("copied"); err != nil {
		t.Fatal(err)
	}
	d := realtest.StartDovecot(t, realtest.DovecotOptions{})
	d.Deliver(t, datas(e2eMail(5))...)
	dir := t.TempDir()
	sqliteCfg := writeConfig(t, dir, d, account{name: "main", user: d.User, password: d.Password, keep: true,
		maildir: filepath.Join(dir, "Maildir")})
	if r := runPopsync(t, "fetch", "-c", sqliteCfg); r.code != 0 {
		t.Fatalf("fetch: exit %d\n%s", r.code, r.stderr)
	}
	url := pg.ConnString("copied")
	secret := pg.Password
	db := filepath.Join(dir, "state.db")
	// OAuth 2.0 tokens `popsync login` stored, one of them marked as
	// needing a new login.
	exp := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	const tokWork, tokGone = "pop3 me@outlook.example.com:995", "imap me@imap.example.com:993 INBOX"
	tokens := map[string]oauth.Token{
		tokWork: {AccessToken: "access-secret-1", TokenType: "Bearer", RefreshToken: "refresh-secret-1", Expiry: exp},
		tokGone: {AccessToken: "access-secret-2", RefreshToken: "refresh-secret-2"},
	}
	func() {
		src, err := state.OpenSQLite(t.Context(), db)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		for k, tok := range tokens {
			if err := src.Tokens().Save(t.Context(), k, tok); err != nil {
				t.Fatal(err)
			}
		}
		if err := src.Tokens().MarkLoginNeeded(t.Context(), tokGone, "refresh-secret-2", "invalid_grant"); err != nil {
			t.Fatal(err)
		}
	}()
	r := runPopsync(t, "state", "copy", "--from", db, "--to", url)
	if r.code != 0 {
		t.Fatalf("state copy: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "1 accounts, 5 records") || !strings.Contains(r.stdout, "2 OAuth 2.0 tokens") {
		t.Errorf("state copy said %q, want 1 account, 5 records and 2 tokens", r.stdout)
	}
	func() {
		dst, err := postgres.Open(t.Context(), url, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer dst.Close()
		for k, want := range tokens {
			got, err := dst.Tokens().Load(t.Context(), k)
			if err != nil || got.AccessToken != want.AccessToken || got.RefreshToken != want.RefreshToken ||
				got.TokenType != want.TokenType || !got.Expiry.Equal(want.Expiry) {
				t.Errorf("token %s in the database: %+v, %v; want %+v", k, got, err, want)
			}
			info, err := dst.Tokens().Info(t.Context(), k)
			if err != nil || info.LoginNeeded != (k == tokGone) {
				t.Errorf("token %s in the database: %+v, %v; want login needed only for %s", k, info, err, tokGone)
			}
		}
	}()
	for _, tok := range tokens {
		if strings.Contains(r.stdout+r.stderr, tok.AccessToken) || strings.Contains(r.stdout+r.stderr, tok.RefreshToken) {
			t.Errorf("state copy printed a token:\n%s%s", r.stdout, r.stderr)
		}
	}
	again := runPopsync(t, "state", "copy", "--from", db, "--to", url)
	if again.code == 0 || !strings.Contains(again.stderr, "not empty") {
		t.Errorf("a second copy: exit %d, %q; want a refusal", again.code, again.stderr)
	}
	if forced := runPopsync(t, "state", "copy", "--force", "--from", db, "--to", url); forced.code != 0 {
		t.Errorf("state copy --force: exit %d\n%s", forced.code, forced.stderr)
	}

	// The same config with url instead of path.
	b, err := os.ReadFile(sqliteCfg)
	if err != nil {
		t.Fatal(err)
	}
	pgCfg := filepath.Join(dir, "pg.toml")
	text := strings.Replace(string(b), fmt.Sprintf("path = %q", db), fmt.Sprintf("url = %q\ndir = %q", url, filepath.Join(dir, "local")), 1)
	if err := os.WriteFile(pgCfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	st := runPopsync(t, "status", "-c", pgCfg)
	if st.code != 0 {
		t.Fatalf("status: exit %d\n%s", st.code, st.stderr)
	}
	lines := strings.Split(st.stdout, "\n")
	if len(lines) < 2 || !strings.Contains(lines[0], "LEASE") || !strings.Contains(lines[0], "NEXT DUE") {
		t.Fatalf("status with url has no fleet columns:\n%s", st.stdout)
	}
	f := strings.Fields(lines[1])
	if f[0] != "main" || !strings.Contains(lines[1], "free") || !strings.Contains(lines[1], "not scheduled") {
		t.Errorf("status row %q: want main, not scheduled, free", lines[1])
	}
	js := runPopsync(t, "status", "--json", "-c", pgCfg)
	if !strings.Contains(js.stdout, `"seen": 5`) || !strings.Contains(js.stdout, `"fleet"`) {
		t.Errorf("status --json:\n%s", js.stdout)
	}
	// Once fetched with the database, the account is in no daemon's
	// schedule but its seen-set carried over: nothing is new.
	f2 := runPopsync(t, "fetch", "-c", pgCfg)
	if f2.code != 0 || !strings.Contains(f2.stderr, "new=0") {
		t.Errorf("fetch with url after the copy: exit %d\n%s", f2.code, f2.stderr)
	}
	// A refused password is named as such, never printed.
	wrong := "wrong-" + secret
	badCfg := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(badCfg, []byte(strings.Replace(text, "password="+secret, "password="+wrong, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := runPopsync(t, "status", "-c", badCfg)
	if bad.code == 0 || strings.Contains(bad.stderr, wrong) {
		t.Errorf("status with a wrong database password: exit %d\n%s", bad.code, bad.stderr)
	}
	for _, out := range []string{r.stdout, r.stderr, again.stderr, st.stdout, st.stderr, js.stdout, f2.stderr, bad.stderr} {
		if strings.Contains(out, secret) {
			t.Errorf("the database password is in the output:\n%s", out)
		}
	}
}
