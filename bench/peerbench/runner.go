package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"popsync/internal/realtest"
)

// runner holds one benchmark run.
type runner struct {
	o              options
	server, client *osUser
	srv            *dovecot
	tools          []*tool
	users          []string
	start          time.Time
	raw            *os.File
	rows           []row
	notes          []string
	trashed        int    // folders discard has moved aside
	postfixVersion string // of the smtp scenario's Postfix, once started
}

// row is one timed run of one tool.
type row struct {
	scenario string
	tool     string
	phase    string // "fetch", "poll" (nothing new) or "initial" (filling the state of a poll scenario)
	rep      int
	msgs     int   // messages in the mailbox(es)
	wire     int64 // their size as the server lists it
	wall     float64
	cpu      float64 // user + sys of the tool's process tree
	sys      float64 // of which sys: the kernel's work for the tool
	rssKB    int64   // peak RSS of the largest process of the tree
	machine  float64 // busy CPU seconds of the whole machine (server included)
	server   float64 // CPU seconds of Dovecot's processes
	fds      int     // peak open file descriptors of the largest process of the tree
	code     int
	ok       bool
	detail   string
}

func (r *runner) openRaw() error {
	f, err := os.Create(filepath.Join(r.o.outDir, "raw.tsv"))
	if err != nil {
		return err
	}
	r.raw = f
	_, err = fmt.Fprintln(f, "scenario\ttool\tphase\trep\tmsgs\twire_bytes\twall_s\tcpu_s\tmaxrss_kb\tmachine_cpu_s\tserver_cpu_s\texit\tok\tdetail\tpeak_fds\tsys_cpu_s")
	return err
}

func (r *runner) record(x row) {
	r.rows = append(r.rows, x)
	fmt.Fprintf(r.raw, "%s\t%s\t%s\t%d\t%d\t%d\t%.3f\t%.2f\t%d\t%.2f\t%.2f\t%d\t%v\t%s\t%d\t%.2f\n",
		x.scenario, x.tool, x.phase, x.rep, x.msgs, x.wire, x.wall, x.cpu, x.rssKB, x.machine, x.server, x.code, x.ok, x.detail, x.fds, x.sys)
	status := "ok"
	if !x.ok {
		status = "FAIL"
	}
	logf("%-8s %-14s %-7s rep %d: %8.3fs cpu %6.2fs (sys %.2fs) server %.2fs machine %.2fs rss %7.1f MB fds %5d  %s  %s",
		x.scenario, x.tool, x.phase, x.rep, x.wall, x.cpu, x.sys, x.server, x.machine, float64(x.rssKB)/1024, x.fds, status, x.detail)
}

// toolsFor returns the tools scenario runs: the scenario's defaults, only
// those installed, and only those -tools names if it is given.
func (r *runner) toolsFor(scenario string) []*tool {
	var out []*tool
	for _, t := range r.tools {
		if slices.Contains(defaultTools[scenario], baseName(t.name)) &&
			(len(r.o.tools) == 0 || slices.Contains(r.o.tools, t.name) || slices.Contains(r.o.tools, baseName(t.name))) {
			out = append(out, t)
		}
	}
	return out
}

// populate makes user's server Maildir hold exactly the messages of g
// (hard links to the golden files; Dovecot only renames and unlinks
// them), with a fresh Dovecot index built by one UIDL session.
func (r *runner) populate(ctx context.Context, user string, g *golden) error {
	md := r.srv.maildir(user)
	if err := os.RemoveAll(md); err != nil {
		return err
	}
	for _, sub := range []string{"new", "cur", "tmp"} {
		if err := r.server.mkdirAll(filepath.Join(md, sub), 0o700); err != nil {
			return err
		}
	}
	for _, m := range g.msgs {
		if err := os.Link(filepath.Join(g.dir, "new", m.file), filepath.Join(md, "new", m.file)); err != nil {
			return fmt.Errorf("filling %s: %w", md, err)
		}
	}
	n, err := r.srv.uidlCount(ctx, user)
	if err != nil {
		return err
	}
	if n != len(g.msgs) {
		return fmt.Errorf("server lists %d messages for %s, want %d", n, user, len(g.msgs))
	}
	return nil
}

// clientDirs resets the tool's state folder and one empty Maildir per
// account, owned by the client user, and returns the job.
func (r *runner) clientJob(t *tool, boxes []string, keep bool) (*job, error) {
	base := filepath.Join(r.o.dataDir, "out", t.name)
	if err := r.discard(base); err != nil {
		return nil, err
	}
	j := &job{host: "127.0.0.1", port: r.srv.port, password: r.srv.password, keep: keep,
		stateDir: filepath.Join(base, "state"), maxParallel: r.o.maxParallel, localUser: r.client.name}
	if err := r.client.mkdirAll(j.stateDir, 0o700); err != nil {
		return nil, err
	}
	for _, u := range boxes {
		md := filepath.Join(base, "md", u)
		for _, sub := range []string{"new", "cur", "tmp"} {
			if err := r.client.mkdirAll(filepath.Join(md, sub), 0o700); err != nil {
				return nil, err
			}
		}
		j.boxes = append(j.boxes, mailbox{name: u, user: u, maildir: md})
	}
	return j, nil
}

// discard moves dir, a tool's earlier output, into the trash folder, which
// is emptied only when the program ends. Deleting thousands of files just
// before a timed run would charge the run for it: ext4 without a journal
// does not reuse an inode freed in the last minute (six while its inode
// table block is dirty), and checks every such inode each time it
// allocates one, so each file the tool then creates costs up to a
// millisecond of system CPU.
func (r *runner) discard(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	trash := filepath.Join(r.o.dataDir, "trash")
	if err := os.MkdirAll(trash, 0o755); err != nil {
		return err
	}
	r.trashed++
	return os.Rename(dir, filepath.Join(trash, fmt.Sprintf("%d-%d", r.start.UnixNano(), r.trashed)))
}

// emptyTrash removes what discard moved aside, and notes when in
// trash-emptied for the next run's settle.
func (r *runner) emptyTrash() error {
	trash := filepath.Join(r.o.dataDir, "trash")
	if _, err := os.Lstat(trash); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := os.RemoveAll(trash); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(r.o.dataDir, "trash-emptied"), []byte(time.Now().Format(time.RFC3339Nano)), 0o644)
}

// inodeRecency is how long ext4 without a journal avoids a freed inode:
// a minute, and five more while its inode table block is dirty, which it
// is while files are being created next to it.
const inodeRecency = 6*time.Minute + 5*time.Second

// settle empties the trash an interrupted run left and waits until the
// files the last run deleted no longer slow down file creation.
func (r *runner) settle(ctx context.Context) error {
	if err := r.emptyTrash(); err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(r.o.dataDir, "trash-emptied"))
	if err != nil {
		return nil
	}
	at, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return nil
	}
	wait := time.Until(at.Add(inodeRecency))
	if wait <= 0 {
		return nil
	}
	logf("waiting %v: an earlier run deleted its output at %s, and ext4 passes over recently freed inodes one by one", wait.Round(time.Second), at.Format("15:04:05"))
	syscall.Sync()
	select {
	case <-time.After(wait):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// execute runs the tool once for j as the client user and measures it.
// The caller fills in msgs, ok and detail.
func (r *runner) execute(ctx context.Context, t *tool, j *job, tag string) (row, error) {
	x := row{tool: t.name}
	argv, env, err := t.command(t, j)
	if err != nil {
		return x, err
	}
	if err := r.client.chownTree(j.stateDir); err != nil {
		return x, err
	}
	logFile, err := os.Create(filepath.Join(r.o.outDir, "logs", tag+".log"))
	if err != nil {
		return x, err
	}
	defer logFile.Close()
	// GNU time measures the tool: a process that Go starts shares this
	// program's memory until it execs (vfork), and Linux counts that in
	// its peak RSS. time(1) forks a clean child and reports its rusage.
	timeFile := filepath.Join(filepath.Dir(j.stateDir), "time.txt")
	os.Remove(timeFile)
	argv = append([]string{timeBin, "-f", "%e %U %S %M", "-o", timeFile}, argv...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = j.stateDir
	cmd.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=" + j.stateDir,
		"USER=" + r.client.name, "LOGNAME=" + r.client.name, "LANG=C.UTF-8"}, env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// A group of its own, so that an interrupted benchmark stops the whole
	// tree (time, strace, the tool), not only GNU time.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.client.credential(), Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// Write back what earlier runs left dirty, so that this run does not
	// pay for it.
	syscall.Sync()
	cpu0, srv0 := machineCPU(), r.srv.cpu()
	t0 := time.Now()
	runErr := cmd.Start()
	if runErr == nil {
		fds := sampleFDs(cmd.Process.Pid)
		runErr = cmd.Wait()
		x.fds = fds.end()
	}
	x.wall = time.Since(t0).Seconds()
	x.machine = machineCPU() - cpu0
	// The server's session process ends just after the tool's QUIT:
	// give the master a moment to reap it into its children's times.
	time.Sleep(100 * time.Millisecond)
	x.server = r.srv.cpu() - srv0
	if cmd.ProcessState == nil {
		return x, fmt.Errorf("running %s: %w", t.name, runErr)
	}
	var ee *exec.ExitError
	if runErr != nil && !errors.As(runErr, &ee) {
		return x, fmt.Errorf("running %s: %w", t.name, runErr)
	}
	x.code = cmd.ProcessState.ExitCode()
	data, err := os.ReadFile(timeFile)
	if err != nil {
		return x, fmt.Errorf("reading the measurement of %s: %w", t.name, err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var wall, user, sys float64
	if _, err := fmt.Sscanf(lines[len(lines)-1], "%f %f %f %d", &wall, &user, &sys, &x.rssKB); err != nil {
		return x, fmt.Errorf("parsing the measurement of %s %q: %w", t.name, data, err)
	}
	x.cpu, x.sys = user+sys, sys
	return x, nil
}

// timeBin is GNU time, which measures every tool run.
const timeBin = "/usr/bin/time"

// machineCPU returns the busy CPU seconds of the machine so far.
func machineCPU() float64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	var busy float64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseFloat(v, 64)
		busy += n
	}
	return busy / 100 // USER_HZ
}

// countFiles counts the messages in the Maildirs of j.
func countFiles(j *job) int {
	n := 0
	for _, b := range j.boxes {
		for _, sub := range []string{"new", "cur"} {
			ents, _ := os.ReadDir(filepath.Join(b.maildir, sub))
			n += len(ents)
		}
	}
	return n
}

// check verifies the tool's Maildirs against the goldens (one per box)
// and, for delete mode, that the server mailboxes are empty.
func (r *runner) check(ctx context.Context, x *row, t *tool, j *job, golds []*golden) error {
	if t.discards {
		return checkCount(x, t, j, golds)
	}
	var total verdict
	for i, b := range j.boxes {
		v, err := verify(golds[i], b.maildir)
		if err != nil {
			return err
		}
		total.want += v.want
		total.exact += v.exact
		total.added += v.added
		total.refolded += v.refolded
		total.differ += v.differ
		total.missing += v.missing
		total.dup += v.dup
		total.unknown += v.unknown
		total.inTmp += v.inTmp
		if total.firstDiff == "" {
			total.firstDiff = v.firstDiff
		}
	}
	x.ok = total.ok() && t.success(x.code)
	x.detail = total.String()
	if !t.success(x.code) {
		x.detail = fmt.Sprintf("exit %d; %s", x.code, x.detail)
	}
	if !j.keep {
		left := 0
		for _, b := range j.boxes {
			n, err := r.srv.uidlCount(ctx, b.user)
			if err != nil {
				return err
			}
			left += n
		}
		if left > 0 {
			x.ok = false
			x.detail += fmt.Sprintf("; %d left on the server", left)
		} else {
			x.detail += "; server empty"
		}
	}
	return nil
}

// checkCount checks a tool that stores nothing: it read every message
// of the job's mailboxes once.
func checkCount(x *row, t *tool, j *job, golds []*golden) error {
	want := 0
	for _, g := range golds {
		want += len(g.msgs)
	}
	var got, octets int64
	data, err := os.ReadFile(filepath.Join(j.stateDir, countFile))
	if err == nil {
		_, err = fmt.Sscanf(string(data), "%d %d", &got, &octets)
	}
	x.ok = err == nil && got == int64(want) && t.success(x.code)
	x.detail = fmt.Sprintf("read %d/%d, stored none", got, want)
	if err != nil {
		x.detail = fmt.Sprintf("no count: %v", err)
	}
	if !t.success(x.code) {
		x.detail = fmt.Sprintf("exit %d; %s", x.code, x.detail)
	}
	return nil
}

// poll runs the tool again on an unchanged mailbox and checks that it
// delivered nothing.
func (r *runner) poll(ctx context.Context, scenario string, rep int, t *tool, j *job, msgs int, wire int64) error {
	before := countFiles(j)
	x, err := r.execute(ctx, t, j, fmt.Sprintf("%s-%s-poll-%d", scenario, t.name, rep))
	if err != nil {
		return err
	}
	x.scenario, x.phase, x.rep, x.msgs, x.wire = scenario, "poll", rep, msgs, wire
	got := countFiles(j) - before
	x.ok = got == 0 && t.success(x.code)
	x.detail = fmt.Sprintf("%d new messages delivered", got)
	if !t.success(x.code) {
		x.detail = fmt.Sprintf("exit %d; %s", x.code, x.detail)
	}
	r.record(x)
	return nil
}

func (r *runner) gold(spec goldSpec) (*golden, error) {
	return loadOrGenerate(filepath.Join(r.o.dataDir, "gold"), spec, r.server, logf)
}

// fetchScenario is scenarios (a) and (b): one account of o.n messages,
// into Maildir, keep or delete; in keep mode each run is followed by a
// poll that finds nothing new.
func (r *runner) fetchScenario(ctx context.Context, name string, keep bool) error {
	g, err := r.gold(goldSpec{Mix: mixReal, N: r.o.n, Seed: r.o.seed})
	if err != nil {
		return err
	}
	logf("mailbox: %d messages, %.1f MB on the wire", len(g.msgs), float64(g.wire)/1e6)
	for rep := 1; rep <= r.o.repeats; rep++ {
		for _, t := range r.toolsFor(name) {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := r.populate(ctx, "main", g); err != nil {
				return err
			}
			j, err := r.clientJob(t, []string{"main"}, keep)
			if err != nil {
				return err
			}
			x, err := r.execute(ctx, t, j, fmt.Sprintf("%s-%s-%d", name, t.name, rep))
			if err != nil {
				return err
			}
			x.scenario, x.phase, x.rep, x.msgs, x.wire = name, "fetch", rep, len(g.msgs), g.wire
			if err := r.check(ctx, &x, t, j, []*golden{g}); err != nil {
				return err
			}
			r.record(x)
			if keep && !t.stateless {
				if err := r.poll(ctx, name, rep, t, j, len(g.msgs), g.wire); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// accountsScenario is (c): o.accounts accounts of o.perAccount messages,
// one run of each tool over all of them.
func (r *runner) accountsScenario(ctx context.Context) error {
	var golds []*golden
	var users []string
	var wire int64
	msgs := 0
	for i := 1; i <= r.o.accounts; i++ {
		g, err := r.gold(goldSpec{Mix: mixReal, N: r.o.perAccount, Seed: r.o.seed, Account: i})
		if err != nil {
			return err
		}
		golds = append(golds, g)
		users = append(users, accountUser(i))
		wire += g.wire
		msgs += len(g.msgs)
	}
	logf("mailboxes: %d accounts, %d messages, %.1f MB on the wire", len(users), msgs, float64(wire)/1e6)
	for rep := 1; rep <= r.o.repeats; rep++ {
		for _, t := range r.toolsFor("accounts") {
			if err := ctx.Err(); err != nil {
				return err
			}
			for i, u := range users {
				if err := r.populate(ctx, u, golds[i]); err != nil {
					return err
				}
			}
			j, err := r.clientJob(t, users, true)
			if err != nil {
				return err
			}
			x, err := r.execute(ctx, t, j, fmt.Sprintf("accounts-%s-%d", t.name, rep))
			if err != nil {
				return err
			}
			x.scenario, x.phase, x.rep, x.msgs, x.wire = "accounts", "fetch", rep, msgs, wire
			if err := r.check(ctx, &x, t, j, golds); err != nil {
				return err
			}
			r.record(x)
		}
	}
	return nil
}

// pollScenario is (d): o.pollN messages on the server, fetched once by
// each tool to fill its state, then polled repeatedly with nothing new.
func (r *runner) pollScenario(ctx context.Context) error {
	g, err := r.gold(goldSpec{Mix: mixSmall, N: r.o.pollN, Seed: r.o.seed, Account: 1000})
	if err != nil {
		return err
	}
	logf("mailbox: %d messages, %.1f MB on the wire", len(g.msgs), float64(g.wire)/1e6)
	if err := r.populate(ctx, "poll", g); err != nil {
		return err
	}
	tools := r.toolsFor("poll")
	jobs := make(map[string]*job)
	for _, t := range tools {
		j, err := r.clientJob(t, []string{"poll"}, true)
		if err != nil {
			return err
		}
		x, err := r.execute(ctx, t, j, fmt.Sprintf("poll-%s-initial", t.name))
		if err != nil {
			return err
		}
		x.scenario, x.phase, x.msgs, x.wire = "poll", "initial", len(g.msgs), g.wire
		if err := r.check(ctx, &x, t, j, []*golden{g}); err != nil {
			return err
		}
		r.record(x)
		jobs[t.name] = j
	}
	for rep := 1; rep <= r.o.repeats; rep++ {
		for _, t := range tools {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := r.poll(ctx, "poll", rep, t, jobs[t.name], len(g.msgs), g.wire); err != nil {
				return err
			}
		}
	}
	return nil
}

// firstScenario is the first sync of a big mailbox: o.firstN small
// messages into an empty Maildir and empty state, keep mode, repeated.
// It shares the poll scenario's generated mailbox when -first-n equals
// -poll-n. Besides time and peak RSS it reports the peak of open file
// descriptors, which the batches of a long stream must keep bounded.
func (r *runner) firstScenario(ctx context.Context) error {
	g, err := r.gold(goldSpec{Mix: mixSmall, N: r.o.firstN, Seed: r.o.seed, Account: 1000})
	if err != nil {
		return err
	}
	logf("mailbox: %d messages, %.1f MB on the wire", len(g.msgs), float64(g.wire)/1e6)
	for rep := 1; rep <= r.o.repeats; rep++ {
		for _, t := range r.toolsFor("first") {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := r.populate(ctx, "first", g); err != nil {
				return err
			}
			j, err := r.clientJob(t, []string{"first"}, true)
			if err != nil {
				return err
			}
			x, err := r.execute(ctx, t, j, fmt.Sprintf("first-%s-%d", t.name, rep))
			if err != nil {
				return err
			}
			x.scenario, x.phase, x.rep, x.msgs, x.wire = "first", "fetch", rep, len(g.msgs), g.wire
			if err := r.check(ctx, &x, t, j, []*golden{g}); err != nil {
				return err
			}
			r.record(x)
		}
	}
	return nil
}

// bigScenario is (e): one message of o.bigMiB MiB, for peak RSS.
func (r *runner) bigScenario(ctx context.Context) error {
	g, err := r.gold(goldSpec{Mix: mixHuge, N: 1, Seed: r.o.seed, Account: 1001, HugeMiB: r.o.bigMiB})
	if err != nil {
		return err
	}
	for rep := 1; rep <= r.o.repeats; rep++ {
		for _, t := range r.toolsFor("big") {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := r.populate(ctx, "big", g); err != nil {
				return err
			}
			j, err := r.clientJob(t, []string{"big"}, true)
			if err != nil {
				return err
			}
			x, err := r.execute(ctx, t, j, fmt.Sprintf("big-%s-%d", t.name, rep))
			if err != nil {
				return err
			}
			x.scenario, x.phase, x.rep, x.msgs, x.wire = "big", "fetch", rep, 1, g.wire
			if err := r.check(ctx, &x, t, j, []*golden{g}); err != nil {
				return err
			}
			r.record(x)
		}
	}
	return nil
}

// smtpScenario reinjects o.smtpN messages over SMTP into a private Postfix,
// which delivers them with virtual(8) into a Maildir; a run counts until
// Postfix has delivered the last message, not until the tool exits. Every
// run gets a mailbox of its own, so that no run deletes files another
// creates.
func (r *runner) smtpScenario(ctx context.Context) error {
	tools := withConnections(r.toolsFor("smtp"), r.o.smtpConns)
	if len(tools) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return errors.New("postfix needs root to start its master daemon")
	}
	g, err := r.gold(goldSpec{Mix: mixReal, N: r.o.smtpN, Seed: r.o.seed, Account: 1002})
	if err != nil {
		return err
	}
	logf("mailbox: %d messages, %.1f MB on the wire", len(g.msgs), float64(g.wire)/1e6)
	var boxes []string
	for i := range r.o.repeats * len(tools) {
		boxes = append(boxes, fmt.Sprintf("run%02d", i+1))
	}
	pf, err := realtest.LaunchPostfix(realtest.PostfixOptions{Local: "unused", Extra: boxes, Owner: r.client.name})
	if pf != nil {
		defer func() {
			if err := pf.Close(); err != nil {
				logf("stopping postfix: %v", err)
			}
		}()
	}
	if err != nil {
		return err
	}
	r.postfixVersion = firstLine("postconf", "-d", "-h", "mail_version")
	logf("postfix %s on %s", r.postfixVersion, pf.Addr)
	next := 0
	for rep := 1; rep <= r.o.repeats; rep++ {
		for _, t := range tools {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := r.populate(ctx, "reinject", g); err != nil {
				return err
			}
			j, err := r.clientJob(t, []string{"reinject"}, true)
			if err != nil {
				return err
			}
			box := boxes[next]
			next++
			j.smtpAddr, j.rcpt = pf.Addr, box+"@"+realtest.PostfixDomain
			md := pf.MaildirOf(box)
			x, err := r.execute(ctx, t, j, fmt.Sprintf("smtp-%s-%d", t.name, rep))
			if err != nil {
				return err
			}
			x.scenario, x.phase, x.rep, x.msgs, x.wire = "smtp", "fetch", rep, len(g.msgs), g.wire
			// The tool is done when it exits; the mail when Postfix has
			// delivered it. Wait for that, at most ten times what the
			// tool took (and a minute).
			toolWall := x.wall
			delivered, took := waitFiles(ctx, filepath.Join(md, "new"), len(g.msgs), time.Minute+10*time.Duration(toolWall*float64(time.Second)))
			x.wall = toolWall + took.Seconds()
			j.boxes[0].maildir = md
			if err := r.check(ctx, &x, t, j, []*golden{g}); err != nil {
				return err
			}
			if delivered < len(g.msgs) {
				x.ok = false
			}
			x.detail += fmt.Sprintf("; tool exited after %.2fs, Postfix delivered the last %.2fs later", toolWall, took.Seconds())
			r.record(x)
		}
	}
	return nil
}

// withConnections adds, after each popsync tool, its variant NAME-cN
// for every count of -smtp-connections: the same run with connections = N
// in its smtp entry.
func withConnections(ts []*tool, counts []int) []*tool {
	var out []*tool
	for _, t := range ts {
		out = append(out, t)
		if baseName(t.name) != "popsync" {
			continue
		}
		for _, n := range counts {
			c := *t
			base, delay, _ := strings.Cut(t.name, "@")
			c.name = fmt.Sprintf("%s-c%d", base, n)
			if delay != "" {
				c.name += "@" + delay
			}
			c.about = t.about + fmt.Sprintf("; connections = %d", n)
			inner := t.command
			c.command = func(_ *tool, j *job) ([]string, []string, error) {
				j.connections = n
				return inner(t, j)
			}
			out = append(out, &c)
		}
	}
	return out
}

// waitFiles waits until dir holds at least n entries, at most limit, and
// returns how many it holds and how long it waited.
func waitFiles(ctx context.Context, dir string, n int, limit time.Duration) (int, time.Duration) {
	t0 := time.Now()
	count := func() int {
		f, err := os.Open(dir)
		if err != nil {
			return 0
		}
		defer f.Close()
		names, _ := f.Readdirnames(-1)
		return len(names)
	}
	for {
		got := count()
		if got >= n || time.Since(t0) > limit || ctx.Err() != nil {
			return got, time.Since(t0)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// osRelease returns PRETTY_NAME from /etc/os-release.
func osRelease() string {
	data, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return "?"
	}
	for l := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return "?"
}

func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	for l := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

func fsType(path string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return "?"
	}
	switch st.Type {
	case 0xef53:
		return "ext4"
	case 0x01021994:
		return "tmpfs"
	case 0x58465342:
		return "xfs"
	case 0x9123683e:
		return "btrfs"
	}
	return fmt.Sprintf("0x%x", st.Type)
}
