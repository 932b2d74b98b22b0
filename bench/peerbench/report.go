package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// group is the runs of one tool in one scenario and phase.
type group struct {
	scenario, tool, phase string
	rows                  []row
}

func (g *group) median(f func(row) float64) float64 {
	v := make([]float64, len(g.rows))
	for i, x := range g.rows {
		v[i] = f(x)
	}
	slices.Sort(v)
	n := len(v)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

func (g *group) wall() float64    { return g.median(func(x row) float64 { return x.wall }) }
func (g *group) cpu() float64     { return g.median(func(x row) float64 { return x.cpu }) }
func (g *group) machine() float64 { return g.median(func(x row) float64 { return x.machine }) }
func (g *group) server() float64  { return g.median(func(x row) float64 { return x.server }) }

func (g *group) maxRSS() float64 {
	var m int64
	for _, x := range g.rows {
		m = max(m, x.rssKB)
	}
	return float64(m) / 1024
}

func (g *group) maxFDs() int {
	m := 0
	for _, x := range g.rows {
		m = max(m, x.fds)
	}
	return m
}

func (g *group) runs() string {
	s := make([]string, len(g.rows))
	for i, x := range g.rows {
		s[i] = strconv.FormatFloat(x.wall, 'f', 3, 64)
	}
	return strings.Join(s, ", ")
}

func (g *group) ok() bool {
	for _, x := range g.rows {
		if !x.ok {
			return false
		}
	}
	return len(g.rows) > 0
}

// output summarises correctness: the first failing run's detail, else
// the last run's.
func (g *group) output() string {
	for _, x := range g.rows {
		if !x.ok {
			return "**" + x.detail + "**"
		}
	}
	if len(g.rows) == 0 {
		return ""
	}
	return g.rows[len(g.rows)-1].detail
}

func (g *group) msgs() int     { return g.rows[0].msgs }
func (g *group) mb() float64   { return float64(g.rows[0].wire) / 1e6 }
func (g *group) rate() float64 { return float64(g.msgs()) / g.wall() }

func (r *runner) groups(scenario, phase string) []*group {
	var out []*group
	byTool := map[string]*group{}
	for _, x := range r.rows {
		if x.scenario != scenario || x.phase != phase {
			continue
		}
		g := byTool[x.tool]
		if g == nil {
			g = &group{scenario: scenario, tool: x.tool, phase: phase}
			byTool[x.tool] = g
			out = append(out, g)
		}
		g.rows = append(g.rows, x)
	}
	return out
}

// delaySuffix is the "@DELAY" of a tool run under -flush-delay, or "".
func delaySuffix(tool string) string {
	return strings.TrimPrefix(tool, baseName(tool))
}

func find(gs []*group, tool string) *group {
	for _, g := range gs {
		if g.tool == tool {
			return g
		}
	}
	return nil
}

func (r *runner) writeReport() error {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# popsync peer benchmark")
	p("")
	r.machine(p)
	p("")
	p("Medians of %d runs per tool; runs of different tools interleaved; every mailbox freshly filled and indexed by Dovecot before each run; `sync` before each timed run. "+
		"MB = 10^6 octets as the server lists them. CPU = user+sys of the tool's process tree; machine CPU = every busy CPU second of the box (Dovecot included). "+
		"Peak RSS = largest process of the tree, highest of the runs. × mpop = speed relative to mpop in the same run.", r.o.repeats)
	var targets [][]string
	for _, s := range []struct{ name, title string }{
		{"keep", "(a) one account, keep mode, into Maildir"},
		{"delete", "(b) one account, delete mode (DELE after delivery)"},
		{"accounts", "(c) many accounts, keep mode: popsync in parallel (max_parallel) against mpop over the accounts one after another"},
	} {
		gs := r.groups(s.name, "fetch")
		if len(gs) == 0 {
			continue
		}
		p("")
		p("## %s", s.title)
		p("")
		p("| tool | msgs | MB | wall s | msgs/s | × mpop | CPU s | CPU s / 1000 msgs | peak RSS MB | machine CPU s | server CPU s | runs (wall s) | output |")
		p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
		mpop := find(gs, "mpop")
		for _, g := range gs {
			ratio := "-"
			// A tool on a slowed disk is compared with mpop on the same.
			if mpop := find(gs, "mpop"+delaySuffix(g.tool)); mpop != nil {
				ratio = fmt.Sprintf("%.2f", g.rate()/mpop.rate())
			}
			p("| %s | %d | %.1f | %.2f | %.0f | %s | %.2f | %.3f | %.1f | %.2f | %.2f | %s | %s |",
				g.tool, g.msgs(), g.mb(), g.wall(), g.rate(), ratio, g.cpu(), g.cpu()/float64(g.msgs())*1000,
				g.maxRSS(), g.machine(), g.server(), g.runs(), g.output())
		}
		if ps, mp := find(gs, "popsync"), mpop; ps != nil && mp != nil {
			want := 2.5
			if s.name == "accounts" {
				want = 5
			}
			targets = append(targets, []string{s.name + ": popsync msgs/s ≥ " + fmt.Sprint(want) + "× mpop",
				fmt.Sprintf("%.2f×", ps.rate()/mp.rate()), met(ps.rate()/mp.rate() >= want && ps.ok())})
			if fl := find(gs, "wire-maildir"); fl != nil {
				// Issue 19, goal 1: durable, and no slower than this.
				targets = append(targets, []string{s.name + ": popsync's time ÷ that of wire-maildir (no fsync, no state)",
					fmt.Sprintf("%.2f", ps.wall()/fl.wall()), "(floor)"})
			}
			if fl := find(gs, "wire-null"); fl != nil {
				// What no fetcher that stores mail can beat here.
				targets = append(targets, []string{s.name + ": the floor, wire-null (stores nothing), msgs/s × mpop",
					fmt.Sprintf("%.2f×", fl.rate()/mp.rate()), "(floor)"})
			}
			if s.name == "accounts" {
				// Issue 19, goal 4: the same ratio on slower disks.
				for _, d := range r.o.flushDelays {
					suffix := "@" + d.String()
					ps, mp := find(gs, "popsync"+suffix), find(gs, "mpop"+suffix)
					if ps == nil || mp == nil {
						continue
					}
					targets = append(targets, []string{fmt.Sprintf("%s, flush %s: popsync msgs/s ≥ %v× mpop's", s.name, d, want),
						fmt.Sprintf("%.2f×", ps.rate()/mp.rate()), met(ps.rate()/mp.rate() >= want && ps.ok())})
				}
			}
			if s.name == "keep" || s.name == "delete" {
				pc, mc := ps.cpu()/float64(ps.msgs())*1000, mp.cpu()/float64(mp.msgs())*1000
				targets = append(targets, []string{s.name + ": popsync CPU s / 1000 msgs ≤ mpop's",
					fmt.Sprintf("%.3f vs %.3f", pc, mc), met(pc <= mc)})
			}
		}
	}
	var polls []*group
	for _, s := range []string{"keep", "poll"} {
		polls = append(polls, r.groups(s, "poll")...)
	}
	if len(polls) > 0 {
		p("")
		p("## (d) a poll that finds nothing new (connect, log in, UIDL, compare, QUIT)")
		p("")
		p("| scenario | tool | msgs on server | wall s | ÷ mpop (time) | CPU s | peak RSS MB | machine CPU s | runs (wall s) | result |")
		p("|---|---|---:|---:|---:|---:|---:|---:|---|---|")
		for _, s := range []string{"keep", "poll"} {
			gs := r.groups(s, "poll")
			mpop := find(gs, "mpop")
			for _, g := range gs {
				ratio := "-"
				if mpop != nil {
					ratio = fmt.Sprintf("%.2f", g.wall()/mpop.wall())
				}
				p("| %s | %s | %d | %.3f | %s | %.3f | %.1f | %.2f | %s | %s |",
					s, g.tool, g.msgs(), g.wall(), ratio, g.cpu(), g.maxRSS(), g.machine(), g.runs(), g.output())
			}
			if s == "poll" {
				if ps, mp := find(gs, "popsync"), mpop; ps != nil {
					if mp != nil {
						targets = append(targets, []string{fmt.Sprintf("poll, %d on the server: popsync time ≤ 1.2× mpop's", ps.msgs()),
							fmt.Sprintf("%.2f× (%.3f s vs %.3f s)", ps.wall()/mp.wall(), ps.wall(), mp.wall()), met(ps.wall() <= 1.2*mp.wall() && ps.ok())})
					}
					targets = append(targets, []string{fmt.Sprintf("poll, %d on the server: popsync peak RSS ≤ 64 MB", ps.msgs()),
						fmt.Sprintf("%.1f MB", ps.maxRSS()), met(ps.maxRSS() <= 64)})
				}
			}
		}
		if init := r.groups("poll", "initial"); len(init) > 0 {
			p("")
			p("Filling the state for the poll (one run each, %d small messages):", init[0].msgs())
			p("")
			p("| tool | wall s | msgs/s | CPU s | peak RSS MB | output |")
			p("|---|---:|---:|---:|---:|---|")
			for _, g := range init {
				p("| %s | %.2f | %.0f | %.2f | %.1f | %s |", g.tool, g.wall(), g.rate(), g.cpu(), g.maxRSS(), g.output())
			}
		}
	}
	if gs := r.groups("first", "fetch"); len(gs) > 0 {
		p("")
		p("## First sync of a big mailbox: %d small messages into an empty Maildir, keep mode", gs[0].msgs())
		p("")
		p("| tool | msgs | MB | wall s | msgs/s | × mpop | CPU s | peak RSS MB | peak open fds | machine CPU s | server CPU s | runs (wall s) | output |")
		p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
		for _, g := range gs {
			ratio := "-"
			if mpop := find(gs, "mpop"+delaySuffix(g.tool)); mpop != nil {
				ratio = fmt.Sprintf("%.2f", g.rate()/mpop.rate())
			}
			p("| %s | %d | %.1f | %.2f | %.0f | %s | %.2f | %.1f | %d | %.2f | %.2f | %s | %s |",
				g.tool, g.msgs(), g.mb(), g.wall(), g.rate(), ratio, g.cpu(), g.maxRSS(), g.maxFDs(),
				g.machine(), g.server(), g.runs(), g.output())
		}
	}
	if gs := r.groups("big", "fetch"); len(gs) > 0 {
		p("")
		p("## (e) one message of %d MiB", r.o.bigMiB)
		p("")
		p("| tool | MB | wall s | CPU s | peak RSS MB | runs (wall s) | output |")
		p("|---|---:|---:|---:|---:|---|---|")
		for _, g := range gs {
			p("| %s | %.1f | %.2f | %.2f | %.1f | %s | %s |", g.tool, g.mb(), g.wall(), g.cpu(), g.maxRSS(), g.runs(), g.output())
		}
		if ps := find(gs, "popsync"); ps != nil {
			targets = append(targets, []string{fmt.Sprintf("one %d MiB message: popsync peak RSS ≤ 24 MB", r.o.bigMiB),
				fmt.Sprintf("%.1f MB", ps.maxRSS()), met(ps.maxRSS() <= 24 && ps.ok())})
		}
	}
	if gs := r.groups("smtp", "fetch"); len(gs) > 0 {
		p("")
		p("## SMTP reinjection into Postfix %s, counted until Postfix has delivered every message", r.postfixVersion)
		p("")
		p("| tool | msgs | MB | wall s | msgs/s | × fetchmail | CPU s | peak RSS MB | machine CPU s | runs (wall s) | output |")
		p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
		fm := find(gs, "fetchmail")
		for _, g := range gs {
			ratio := "-"
			if fm != nil {
				ratio = fmt.Sprintf("%.2f", g.rate()/fm.rate())
			}
			p("| %s | %d | %.1f | %.2f | %.0f | %s | %.2f | %.1f | %.2f | %s | %s |",
				g.tool, g.msgs(), g.mb(), g.wall(), g.rate(), ratio, g.cpu(), g.maxRSS(), g.machine(), g.runs(), g.output())
		}
		if fl := find(gs, "wire-smtp"); fl != nil && fm != nil {
			targets = append(targets, []string{"smtp: the floor, wire-smtp (no state, no files), msgs/s × fetchmail's",
				fmt.Sprintf("%.2f×", fl.rate()/fm.rate()), "(floor)"})
		}
		if ps := find(gs, "popsync"); ps != nil && fm != nil {
			targets = append(targets, []string{"smtp: popsync msgs/s ≥ 20× fetchmail's",
				fmt.Sprintf("%.2f×", ps.rate()/fm.rate()), met(ps.rate()/fm.rate() >= 20 && ps.ok())})
		}
	}
	if gs := r.groups("imap", "fetch"); len(gs) > 0 {
		p("")
		p("## IMAP APPEND into Dovecot against the Maildir target, keep mode, the same mailbox")
		p("")
		p("| tool | msgs | MB | wall s | msgs/s | × Maildir target | CPU s | peak RSS MB | machine CPU s | server CPU s | runs (wall s) | output |")
		p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
		md := find(gs, "popsync")
		for _, g := range gs {
			ratio := "-"
			if md != nil {
				ratio = fmt.Sprintf("%.2f", g.rate()/md.rate())
			}
			p("| %s | %d | %.1f | %.2f | %.0f | %s | %.2f | %.1f | %.2f | %.2f | %s | %s |",
				g.tool, g.msgs(), g.mb(), g.wall(), g.rate(), ratio, g.cpu(), g.maxRSS(), g.machine(), g.server(), g.runs(), g.output())
		}
		if ps, im := md, find(gs, "popsync-imap"); ps != nil && im != nil {
			targets = append(targets, []string{"imap: IMAP target msgs/s ≥ 0.5× the Maildir target's (issue 17)",
				fmt.Sprintf("%.2f×", im.rate()/ps.rate()), met(im.rate()/ps.rate() >= 0.5 && im.ok())})
		}
	}
	if len(targets) > 0 {
		p("")
		p("## Targets of issues 6, 17 and 19")
		p("")
		p("| target | measured | met |")
		p("|---|---|---|")
		for _, t := range targets {
			p("| %s | %s | %s |", t[0], t[1], t[2])
		}
	}
	for _, n := range r.notes {
		p("")
		p("%s", n)
	}
	p("")
	p("Raw rows: raw.tsv; each run's output: logs/.")
	out := filepath.Join(r.o.outDir, "summary.md")
	if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(b.String())
	logf("report: %s", out)
	return nil
}

func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func (r *runner) machine(p func(string, ...any)) {
	var u syscall.Utsname
	syscall.Uname(&u)
	kernel := utsString(u.Release[:])
	mem := "?"
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for l := range strings.SplitSeq(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				mem = fmt.Sprintf("%.0f GiB", kb/1024/1024)
			}
		}
	}
	p("- Date: %s (run took %s)", r.start.Format("2006-01-02 15:04 MST"), time.Since(r.start).Round(time.Second))
	p("- Machine: %s, kernel %s, %d × %s, %s RAM; data folder %s on %s. Server and clients share the CPUs; all traffic on 127.0.0.1.",
		osRelease(), kernel, runtime.NumCPU(), cpuModel(), mem, r.o.dataDir, fsType(r.o.dataDir))
	p("- Server: %s (Maildir, pop3_uidl_format %%08Xu%%08Xv, plain POP3, PIPELINING)", "Dovecot "+firstLine("dovecot", "--version"))
	for _, t := range r.tools {
		p("- %s: %s — %s", t.name, t.version(t.bin), t.about)
	}
	if pm, err := exec.LookPath("procmail"); err == nil {
		p("- procmail: %s", firstLine(pm, "-v"))
	}
	p("- Parameters: -n %d, -accounts %d × -per-account %d, -poll-n %d, -first-n %d, -big-mib %d, -smtp-n %d, -repeats %d, -seed %d, popsync max_parallel %d",
		r.o.n, r.o.accounts, r.o.perAccount, r.o.pollN, r.o.firstN, r.o.bigMiB, r.o.smtpN, r.o.repeats, r.o.seed, r.o.maxParallel)
}

func utsString(b []int8) string {
	var s strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		s.WriteByte(byte(c))
	}
	return s.String()
}
