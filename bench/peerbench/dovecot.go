package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"popsync/fetch/pop3"
	"popsync/internal/realtest"
)

// dovecot is the benchmark's private Dovecot POP3 server on 127.0.0.1
// (internal/realtest), run as the server user, with one mailbox per
// benchmark user.
type dovecot struct {
	*realtest.Dovecot
	addr     string // 127.0.0.1:port (plain POP3)
	port     int
	password string
}

const benchPassword = "peerbench-secret"

// startDovecot starts Dovecot for the given mailbox users with its
// instance directory in dataDir, as who.
// With imap, it serves IMAP too (the imap scenario's target).
func startDovecot(ctx context.Context, dataDir string, who *osUser, users []string, imap bool) (*dovecot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("starting dovecot: no mailbox users")
	}
	d, err := realtest.LaunchDovecot(realtest.DovecotOptions{
		User:        users[0],
		Users:       users[1:],
		Password:    benchPassword,
		RunAs:       who.name,
		Parent:      dataDir,
		Connections: 256,
		IMAP:        imap,
	})
	if err != nil {
		if d != nil {
			d.Close()
		}
		return nil, err
	}
	_, port, _ := net.SplitHostPort(d.Addr)
	n, _ := strconv.Atoi(port)
	return &dovecot{Dovecot: d, addr: d.Addr, port: n, password: benchPassword}, nil
}

// stop stops Dovecot and removes its instance directory.
func (d *dovecot) stop() error { return d.Close() }

// maildir is the server-side Maildir of user.
func (d *dovecot) maildir(user string) string { return d.MaildirOf(user) }

// uidlCount logs in as user and returns how many messages the server
// lists. One such session also makes Dovecot build its index of a freshly
// filled Maildir, as it would have for mail an LDA delivered, so that no
// tool pays for that.
func (d *dovecot) uidlCount(ctx context.Context, user string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	c, err := pop3.Dial(ctx, d.addr, pop3.Options{Security: pop3.SecurityNone, Timeout: 5 * time.Minute})
	if err != nil {
		return 0, fmt.Errorf("connecting to dovecot: %w", err)
	}
	defer c.Close()
	if err := c.Auth(ctx, "user", user, d.password); err != nil {
		return 0, fmt.Errorf("logging in as %s: %w", user, err)
	}
	uids, err := c.UIDL(ctx)
	if err != nil {
		return 0, fmt.Errorf("listing %s: %w", user, err)
	}
	if err := c.Quit(ctx); err != nil {
		return 0, fmt.Errorf("logging out %s: %w", user, err)
	}
	return len(uids), nil
}

// cpu returns the CPU seconds (user and system) Dovecot has used so far:
// the master, its live descendants, and the children it has reaped, such
// as the POP3 session processes.
func (d *dovecot) cpu() float64 {
	master := d.Pid()
	if master == 0 {
		return 0
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	type proc struct {
		ppid  int
		ticks int64 // utime + stime, and for the master cutime + cstime
	}
	procs := map[int]proc{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name may hold spaces: the fields follow its ")".
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 15 {
			continue
		}
		// f[0] is field 3 (state): ppid is field 4, utime..cstime 14..17.
		ppid, _ := strconv.Atoi(f[1])
		var t int64
		for k := 11; k <= 14; k++ {
			if pid != master && k > 12 {
				break // a live child's children are counted as they are
			}
			v, _ := strconv.ParseInt(f[k], 10, 64)
			t += v
		}
		procs[pid] = proc{ppid, t}
	}
	var ticks int64
	for pid, p := range procs {
		for q := pid; q > 1; q = procs[q].ppid {
			if q == master {
				ticks += p.ticks
				break
			}
			if _, ok := procs[q]; !ok {
				break
			}
		}
	}
	return float64(ticks) / 100 // USER_HZ
}
