package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"popsync/deliver"
	"strings"
)

// mailbox is one account as a fetcher sees it.
type mailbox struct {
	name    string // account name in the tool's config
	user    string // POP3 user
	maildir string // where the tool delivers
}

// job is one run of one tool: the accounts to fetch and how.
type job struct {
	host        string
	port        int
	password    string
	boxes       []mailbox
	keep        bool
	stateDir    string // the tool's config and UIDL state; also its HOME
	maxParallel int
	localUser   string // the Unix user the tool runs as
	// smtpAddr, when set, makes the tool reinject every message over SMTP
	// to smtpAddr (host:port) for rcpt instead of delivering into the
	// boxes' Maildirs.
	smtpAddr string
	rcpt     string
	// connections, when above 0, is popsync's connections key of the
	// smtp entry.
	connections int
	// imapAddr, when set, makes the tool append every message to the
	// INBOX of imapUser at imapAddr (host:port, plain IMAP) instead.
	imapAddr, imapUser string
}

// tool is a fetcher the benchmark can run. Its config is written into the
// job's state folder; the command runs as the client user.
type tool struct {
	name    string
	bin     string
	about   string
	version func(bin string) string
	// command writes the configuration and returns argv and extra
	// environment.
	command func(t *tool, j *job) (argv, env []string, err error)
	// exitOK maps exit codes that mean success besides 0.
	exitOK []int
	// discards marks a tool that stores nothing (wire-null): its output
	// is the count it writes to countFile in the job's state folder.
	discards bool
	// stateless marks a tool that keeps no state (wire-maildir): a
	// second run would fetch everything again, so it has no poll phase.
	stateless bool
}

// countFile is where wire-null writes how many messages it read.
const countFile = "count"

// wireTools are the floors, all the wirenull program (bin, built by
// peerbench at start): wire-null for the accounts scenario, which reads
// every message and stores none; wire-maildir for the keep scenario,
// which stores each in the Maildir without any fsync and keeps no
// state; and wire-smtp for the smtp scenario, which hands each message
// to the MTA as it came, with no state and no file of its own. No
// fetcher that does its job as safely can beat them.
func wireTools(bin string) []*tool {
	command := func(t *tool, j *job) ([]string, []string, error) {
		var b strings.Builder
		fmt.Fprintf(&b, "host %s\nport %d\npassword %s\nparallel %d\nout %s\n",
			j.host, j.port, j.password, j.maxParallel, filepath.Join(j.stateDir, countFile))
		for _, m := range j.boxes {
			if t.name == "wire-maildir" {
				fmt.Fprintf(&b, "user %s %s\n", m.user, m.maildir)
			} else {
				fmt.Fprintf(&b, "user %s\n", m.user)
			}
		}
		if j.smtpAddr != "" {
			conns := j.connections
			if conns == 0 {
				conns = smtpConnections
			}
			fmt.Fprintf(&b, "smtp %s\nrcpt %s\nconnections %d\n", j.smtpAddr, j.rcpt, conns)
		}
		jobFile := filepath.Join(j.stateDir, "wirenull.job")
		if err := os.WriteFile(jobFile, []byte(b.String()), 0o600); err != nil {
			return nil, nil, err
		}
		return []string{t.bin, jobFile}, nil, nil
	}
	version := func(string) string { return "wirenull (this tree)" }
	return []*tool{
		{
			name: "wire-null", bin: bin, discards: true, version: version, command: command,
			about: "the floor: RETR of every message, max_parallel accounts at once, each reply read and thrown away (bench/peerbench/wirenull)",
		},
		{
			name: "wire-maildir", bin: bin, stateless: true, version: version, command: command,
			about: "the floor of a fetcher that never flushes: RETR of every message, each written to the Maildir's tmp/ and renamed into new/, no fsync, no state (bench/peerbench/wirenull)",
		},
		{
			name: "wire-smtp", bin: bin, version: version, command: command,
			about: fmt.Sprintf("the floor of reinjection: RETR of every message, each passed on as it came over %d SMTP connections, no state, no files (bench/peerbench/wirenull)", smtpConnections),
		},
	}
}

// smtpConnections is wire-smtp's number of SMTP connections: popsync's
// default for an smtp target.
const smtpConnections = deliver.DefaultConnections

func firstLine(bin string, args ...string) string {
	out, _ := exec.Command(bin, args...).CombinedOutput()
	for l := range strings.SplitSeq(string(out), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "fetchmail: WARNING") {
			return l
		}
	}
	return "?"
}

// allTools lists the fetchers in report order. popsyncBin is the binary
// under test; popsync-pN runs it with max_parallel = N for each of
// parallel.
func allTools(popsyncBin string, parallel []int) []*tool {
	popsync := func(name string, par int) *tool {
		about := "popsync fetch (this tree)"
		if name == "popsync-imap" {
			about = "popsync fetch (this tree), appending over IMAP (plain, loopback) into another Dovecot user's INBOX"
		}
		return &tool{
			name: name, bin: popsyncBin,
			about:   about,
			version: func(bin string) string { return firstLine(bin, "version") },
			command: func(t *tool, j *job) ([]string, []string, error) {
				par := par
				if par == 0 {
					par = j.maxParallel
				}
				cfg := filepath.Join(j.stateDir, "popsync.toml")
				var b strings.Builder
				fmt.Fprintf(&b, "[state]\npath = %q\n\n[daemon]\nmax_parallel = %d\n", filepath.Join(j.stateDir, "state.db"), par)
				for _, m := range j.boxes {
					fmt.Fprintf(&b, "\n[[account]]\nname = %q\nhost = %q\nport = %d\ntls = \"none\"\nuser = %q\npassword = %q\nauth = \"user\"\nkeep = %v\n\n  [[account.deliver]]\n",
						m.name, j.host, j.port, m.user, j.password, j.keep)
					switch {
					case j.imapAddr != "":
						fmt.Fprintf(&b, "  imap = %q\n  tls = \"none\"\n  user = %q\n  password = %q\n  mailbox = \"INBOX\"\n",
							j.imapAddr, j.imapUser, j.password)
					case j.smtpAddr != "":
						fmt.Fprintf(&b, "  smtp = %q\n  rcpt = [%q]\n", j.smtpAddr, j.rcpt)
						if j.connections > 0 {
							fmt.Fprintf(&b, "  connections = %d\n", j.connections)
						}
					default:
						fmt.Fprintf(&b, "  maildir = %q\n", m.maildir)
					}
				}
				if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
					return nil, nil, err
				}
				return []string{t.bin, "fetch", "-c", cfg}, nil, nil
			},
		}
	}
	ts := []*tool{popsync("popsync", 0)}
	for _, n := range parallel {
		t := popsync(parallelTool(n), n)
		t.about = fmt.Sprintf("popsync fetch (this tree), max_parallel = %d", n)
		ts = append(ts, t)
	}
	return append(ts,
		popsync("popsync-serial", 1),
		popsync("popsync-imap", 0),
		&tool{
			name: "mpop", bin: "mpop",
			about:   "mpop, delivery maildir, pipelining auto, accounts one after another (-a)",
			version: func(bin string) string { return firstLine(bin, "--version") },
			command: func(t *tool, j *job) ([]string, []string, error) {
				rc := filepath.Join(j.stateDir, "mpoprc")
				var b strings.Builder
				b.WriteString("defaults\ntimeout 300\n")
				for _, m := range j.boxes {
					fmt.Fprintf(&b, "\naccount %s\nhost %s\nport %d\nuser %s\npassword %s\nauth user\ntls off\ndelivery maildir %s\nonly_new on\nuidls_file %s\nkeep %s\n",
						m.name, j.host, j.port, m.user, j.password, m.maildir,
						filepath.Join(j.stateDir, "uidls."+m.name), onOff(j.keep))
				}
				if err := os.WriteFile(rc, []byte(b.String()), 0o600); err != nil {
					return nil, nil, err
				}
				argv := []string{t.bin, "-C", rc, "-q"}
				if len(j.boxes) == 1 {
					argv = append(argv, j.boxes[0].name)
				} else {
					argv = append(argv, "-a")
				}
				return argv, nil, nil
			},
		},
		&tool{
			name: "getmail", bin: "getmail",
			about:   "getmail6, SimplePOP3Retriever, Maildir destination",
			version: func(bin string) string { return firstLine(bin, "--version") },
			command: func(t *tool, j *job) ([]string, []string, error) {
				argv := []string{t.bin, "--getmaildir=" + j.stateDir, "--quiet"}
				for _, m := range j.boxes {
					rc := filepath.Join(j.stateDir, "getmailrc."+m.name)
					data := fmt.Sprintf("[retriever]\ntype = SimplePOP3Retriever\nserver = %s\nport = %d\nusername = %s\npassword = %s\n\n[destination]\ntype = Maildir\npath = %s/\n\n[options]\nverbose = 0\nread_all = %v\ndelete = %v\n",
						j.host, j.port, m.user, j.password, m.maildir, !j.keep, !j.keep)
					if err := os.WriteFile(rc, []byte(data), 0o600); err != nil {
						return nil, nil, err
					}
					argv = append(argv, "--rcfile="+rc)
				}
				return argv, nil, nil
			},
		},
		&tool{
			name: "fetchmail", bin: "fetchmail",
			about:   "fetchmail with mda procmail (one procmail per message, into the Maildir); in the smtp scenario its default SMTP delivery",
			version: func(bin string) string { return firstLine(bin, "--version") },
			exitOK:  []int{1}, // 1: no mail
			command: func(t *tool, j *job) ([]string, []string, error) {
				procmail, err := exec.LookPath("procmail")
				if err != nil && j.smtpAddr == "" {
					return nil, nil, fmt.Errorf("fetchmail needs procmail as its MDA: %w", err)
				}
				rc := filepath.Join(j.stateDir, "fetchmailrc")
				var b strings.Builder
				b.WriteString("set no syslog\nset no bouncemail\n")
				for _, m := range j.boxes {
					prc := filepath.Join(j.stateDir, "procmailrc."+m.name)
					if err := os.WriteFile(prc, []byte("VERBOSE=off\n:0\n"+m.maildir+"/\n"), 0o600); err != nil {
						return nil, nil, err
					}
					keep := "keep"
					if !j.keep {
						keep = "nokeep fetchall"
					}
					fmt.Fprintf(&b, "poll %s via %s service %d protocol pop3 auth password uidl\n  user \"%s\" there with password \"%s\" is \"%s\" here %s\n  sslproto ''\n",
						m.name, j.host, j.port, m.user, j.password, j.localUser, keep)
					if j.smtpAddr != "" {
						// fetchmail's default path, SMTP, to this
						// listener rather than port 25.
						host, port, _ := strings.Cut(j.smtpAddr, ":")
						fmt.Fprintf(&b, "  smtphost \"%s/%s\"\n  smtpname \"%s\"\n", host, port, j.rcpt)
					} else {
						fmt.Fprintf(&b, "  mda \"%s -m %s\"\n", procmail, prc)
					}
				}
				if err := os.WriteFile(rc, []byte(b.String()), 0o600); err != nil {
					return nil, nil, err
				}
				return []string{t.bin, "-f", rc, "--idfile", filepath.Join(j.stateDir, "fetchids"),
						"--pidfile", filepath.Join(j.stateDir, "fetchmail.pid"), "--silent"},
					[]string{"FETCHMAILHOME=" + j.stateDir}, nil
			},
		},
	)
}

// parallelTool names popsync run with max_parallel = n by -max-parallel.
func parallelTool(n int) string { return fmt.Sprintf("popsync-p%d", n) }

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// available reports whether the tool's program can be run.
func (t *tool) available() bool {
	if strings.ContainsRune(t.bin, '/') {
		_, err := os.Stat(t.bin)
		return err == nil
	}
	p, err := exec.LookPath(t.bin)
	if err == nil {
		t.bin = p
	}
	return err == nil
}

func (t *tool) success(code int) bool {
	if code == 0 {
		return true
	}
	for _, c := range t.exitOK {
		if c == code {
			return true
		}
	}
	return false
}
