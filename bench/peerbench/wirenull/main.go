// Command wirenull is peerbench's floor: the least work a POP3 fetcher
// can do. It logs in to each account of its job file, several accounts
// at once, pipelines RETR for every message (RFC 2449 PIPELINING), reads
// each reply to its terminating dot and throws it away, and writes
// nothing but a count. No fetcher that stores mail can finish sooner on
// the same machine: the time it takes is what the server and the
// loopback network cost alone.
//
// With a Maildir after a user in its job it is the floor of a fetcher
// that stores mail but never flushes and keeps no state: each message,
// dot-stuffing undone, is written to the Maildir's tmp/ and renamed
// into new/, with no fsync of the file or the folder.
//
// With smtp and rcpt in its job it is the floor of reinjection instead:
// each message goes to the SMTP server as it came, dot-stuffing and
// all, over connections transactions at once (RFC 2920: MAIL, RCPT and
// DATA in one write), with no state and no file of its own.
//
// The job file is written by peerbench:
//
//	host 127.0.0.1
//	port 41100
//	password secret
//	parallel 8
//	out /path/to/count
//	user u1
//	user u2 /path/to/Maildir
//	smtp 127.0.0.1:41200
//	rcpt box@example.test
//	connections 4
//
// The count file gets one line: messages and octets read.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// timeout bounds every read and write.
const timeout = 60 * time.Second

type job struct {
	addr, password, out string
	parallel            int
	users               []string
	maildirs            map[string]string // user → Maildir, where given
	smtp, rcpt          string
	connections         int
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: wirenull JOBFILE")
		os.Exit(2)
	}
	j, err := readJob(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "wirenull:", err)
		os.Exit(2)
	}
	if err := run(j); err != nil {
		fmt.Fprintln(os.Stderr, "wirenull:", err)
		os.Exit(1)
	}
}

func readJob(path string) (*job, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	j := &job{parallel: 1, connections: 1, maildirs: map[string]string{}}
	var host, port string
	for i, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		key, val, _ := strings.Cut(line, " ")
		switch key {
		case "host":
			host = val
		case "port":
			port = val
		case "password":
			j.password = val
		case "out":
			j.out = val
		case "parallel":
			if j.parallel, err = strconv.Atoi(val); err != nil || j.parallel < 1 {
				return nil, fmt.Errorf("%s:%d: parallel %q", path, i+1, val)
			}
		case "user":
			u, md, ok := strings.Cut(val, " ")
			j.users = append(j.users, u)
			if ok {
				j.maildirs[u] = md
			}
		case "smtp":
			j.smtp = val
		case "rcpt":
			j.rcpt = val
		case "connections":
			if j.connections, err = strconv.Atoi(val); err != nil || j.connections < 1 {
				return nil, fmt.Errorf("%s:%d: connections %q", path, i+1, val)
			}
		default:
			return nil, fmt.Errorf("%s:%d: unknown key %q", path, i+1, key)
		}
	}
	j.addr = net.JoinHostPort(host, port)
	return j, nil
}

// run drains every account, j.parallel at a time.
func run(j *job) error {
	var mu sync.Mutex
	var msgs, octets int64
	var errs []error
	// Where the messages go: nowhere, or to the SMTP senders.
	var out chan []byte
	var senders sync.WaitGroup
	if j.smtp != "" {
		out = make(chan []byte, 2*j.connections)
		for range j.connections {
			senders.Add(1)
			go func() {
				defer senders.Done()
				if err := send(j.smtp, j.rcpt, out); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("smtp: %w", err))
					mu.Unlock()
					// Keep draining, so that the readers are not stuck.
					for range out {
					}
				}
			}()
		}
	}
	next := make(chan string)
	var wg sync.WaitGroup
	for range min(j.parallel, len(j.users)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range next {
				var st store
				switch md := j.maildirs[u]; {
				case md != "":
					st = newMaildirStore(md)
				case out != nil:
					st = &smtpStore{out: out}
				}
				n, b, err := drain(j.addr, u, j.password, st)
				mu.Lock()
				msgs, octets = msgs+n, octets+b
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", u, err))
				}
				mu.Unlock()
			}
		}()
	}
	for _, u := range j.users {
		next <- u
	}
	close(next)
	wg.Wait()
	if out != nil {
		close(out)
		senders.Wait()
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return os.WriteFile(j.out, fmt.Appendf(nil, "%d %d\n", msgs, octets), 0o600)
}

// conn is one session, POP3 or SMTP; every read and write has a
// deadline.
type conn struct {
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

func (c *conn) line() ([]byte, error) {
	c.c.SetReadDeadline(time.Now().Add(timeout))
	l, err := c.r.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	return bytes.TrimRight(l, "\r\n"), nil
}

// store takes the messages of the RETR replies as they are read.
type store interface {
	begin() error
	// piece is a line of the reply as the server sent it, or a part of
	// one; atStart: it begins a line. The terminating line is not one.
	piece(p []byte, atStart bool) error
	end() error
}

// body reads a multi-line reply up to its terminating dot, counting
// its octets, and hands it to st unless st is nil; a line longer than
// the buffer is read in pieces. The reply's lines share the deadline of
// its first line: one per line would cost a timer update per line, more
// than the rest of the work.
func (c *conn) body(octets *int64, st store) error {
	if st != nil {
		if err := st.begin(); err != nil {
			return err
		}
	}
	atStart := true
	for {
		l, err := c.r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
		if atStart && err == nil && (string(l) == ".\r\n" || string(l) == ".\n") {
			if st != nil {
				return st.end()
			}
			return nil
		}
		*octets += int64(len(l))
		if st != nil {
			if perr := st.piece(l, atStart); perr != nil {
				return perr
			}
		}
		atStart = err == nil
	}
}

func (c *conn) ok() ([]byte, error) {
	l, err := c.line()
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(l, []byte("+OK")) {
		return nil, fmt.Errorf("server: %q", l)
	}
	return l, nil
}

func (c *conn) cmd(format string, args ...any) error {
	c.c.SetWriteDeadline(time.Now().Add(timeout))
	fmt.Fprintf(c.w, format+"\r\n", args...)
	return c.w.Flush()
}

// drain reads every message of user's mailbox once and returns how many
// and their octets as the server sent them (dot-stuffed lines included).
// With st, each message goes there as it is read.
func drain(addr, user, password string, st store) (msgs, octets int64, err error) {
	nc, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return 0, 0, err
	}
	defer nc.Close()
	c := &conn{c: nc, r: bufio.NewReaderSize(nc, 64<<10), w: bufio.NewWriterSize(nc, 64<<10)}
	if _, err := c.ok(); err != nil {
		return 0, 0, err
	}
	for _, step := range []string{"USER " + user, "PASS " + password} {
		if err := c.cmd("%s", step); err != nil {
			return 0, 0, err
		}
		if _, err := c.ok(); err != nil {
			return 0, 0, err
		}
	}
	if err := c.cmd("STAT"); err != nil {
		return 0, 0, err
	}
	l, err := c.ok()
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(l))
	if len(f) < 2 {
		return 0, 0, fmt.Errorf("STAT reply %q", l)
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, fmt.Errorf("STAT reply %q", l)
	}
	// The commands go out from a goroutine of their own while the replies
	// are read here, so that neither side waits for the other.
	sent := make(chan error, 1)
	go func() {
		w := bufio.NewWriterSize(nc, 64<<10)
		for i := 1; i <= n; i++ {
			nc.SetWriteDeadline(time.Now().Add(timeout))
			if _, err := fmt.Fprintf(w, "RETR %d\r\n", i); err != nil {
				sent <- err
				return
			}
		}
		nc.SetWriteDeadline(time.Now().Add(timeout))
		sent <- w.Flush()
	}()
	for range n {
		c.c.SetReadDeadline(time.Now().Add(timeout))
		if _, err := c.ok(); err != nil {
			return msgs, octets, err
		}
		if err := c.body(&octets, st); err != nil {
			return msgs, octets, err
		}
		msgs++
	}
	if err := <-sent; err != nil {
		return msgs, octets, err
	}
	if err := c.cmd("QUIT"); err != nil {
		return msgs, octets, err
	}
	_, err = c.ok()
	return msgs, octets, err
}

// send delivers every message of msgs over one SMTP session to rcpt,
// one transaction at a time, each with its MAIL, RCPT and DATA in one
// write (RFC 2920). A message is the dot-stuffed text of a RETR reply,
// which is what DATA takes too (RFC 5321 §4.5.2), terminating dot
// included.
func send(addr, rcpt string, msgs <-chan []byte) error {
	nc, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer nc.Close()
	c := &conn{c: nc, r: bufio.NewReaderSize(nc, 4<<10), w: bufio.NewWriterSize(nc, 64<<10)}
	if err := c.reply("220"); err != nil {
		return err
	}
	if err := c.cmd("EHLO wirenull.localhost"); err != nil {
		return err
	}
	if err := c.reply("250"); err != nil {
		return err
	}
	for m := range msgs {
		if err := c.cmd("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA", returnPath(m), rcpt); err != nil {
			return err
		}
		for _, code := range []string{"250", "250", "354"} {
			if err := c.reply(code); err != nil {
				return err
			}
		}
		c.c.SetWriteDeadline(time.Now().Add(timeout))
		if _, err := c.w.Write(m); err != nil {
			return err
		}
		if err := c.w.Flush(); err != nil {
			return err
		}
		if err := c.reply("250"); err != nil {
			return err
		}
	}
	if err := c.cmd("QUIT"); err != nil {
		return err
	}
	return c.reply("221")
}

// returnPath is the address of m's first Return-Path field, the
// envelope sender a fetcher passes on, or "" (the null sender).
func returnPath(m []byte) string {
	for len(m) > 0 {
		line, rest, _ := bytes.Cut(m, []byte("\n"))
		line = bytes.TrimRight(line, "\r")
		if len(line) == 0 {
			return ""
		}
		if name, val, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(name, []byte("Return-Path")) {
			val = bytes.TrimSpace(val)
			return string(bytes.Trim(val, "<>"))
		}
		m = rest
	}
	return ""
}

// reply reads one SMTP reply, all its lines, and wants code.
func (c *conn) reply(code string) error {
	for {
		l, err := c.line()
		if err != nil {
			return err
		}
		if len(l) < 4 || string(l[:3]) != code {
			return fmt.Errorf("server: %q, want %s", l, code)
		}
		if l[3] != '-' {
			return nil
		}
	}
}

// smtpStore hands each message, dot-stuffing and terminating line and
// all, to the SMTP senders.
type smtpStore struct {
	out chan<- []byte
	m   []byte
}

func (s *smtpStore) begin() error { s.m = nil; return nil }

func (s *smtpStore) piece(p []byte, _ bool) error {
	s.m = append(s.m, p...)
	return nil
}

func (s *smtpStore) end() error {
	s.out <- append(s.m, ".\r\n"...)
	return nil
}

// maildirStore stores each message in a Maildir the way a fetcher
// would, but flushes nothing: the text as it was before dot-stuffing
// (RFC 1939 §3), written to tmp/ and renamed into new/.
type maildirStore struct {
	dir, host string
	pid, seq  int
	name      string
	f         *os.File
	w         *bufio.Writer
}

func newMaildirStore(dir string) *maildirStore {
	host, _ := os.Hostname()
	return &maildirStore{dir: dir, host: host, pid: os.Getpid(), w: bufio.NewWriterSize(nil, 64<<10)}
}

func (s *maildirStore) begin() error {
	s.seq++
	s.name = fmt.Sprintf("%d.P%dQ%d.%s", time.Now().Unix(), s.pid, s.seq, s.host)
	f, err := os.OpenFile(filepath.Join(s.dir, "tmp", s.name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	s.f = f
	s.w.Reset(f)
	return nil
}

func (s *maildirStore) piece(p []byte, atStart bool) error {
	if atStart && len(p) > 0 && p[0] == '.' {
		p = p[1:]
	}
	_, err := s.w.Write(p)
	return err
}

func (s *maildirStore) end() error {
	err := s.w.Flush()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(filepath.Join(s.dir, "tmp", s.name), filepath.Join(s.dir, "new", s.name))
}
