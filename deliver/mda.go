package deliver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// DefaultMDATimeout bounds one run of the delivery program.
	DefaultMDATimeout = 5 * time.Minute
	// mdaStderrTail is how much of the program's standard error an error
	// carries: the end, where the reason usually is.
	mdaStderrTail = 4 << 10
	// mdaWaitDelay is how long Wait waits for the program's output pipes
	// after it exited or was killed (a grandchild may hold them).
	mdaWaitDelay = 5 * time.Second
	// exTempFail is EX_TEMPFAIL of sysexits.h: "try again later".
	exTempFail = 75
)

// Environment variables an MDA gets on top of MDAOptions.Env. EnvUIDL is
// chosen by the POP3 server and EnvSender comes from the message itself:
// both are untrusted data that may hold any printable byte (` $ | & ; and
// spaces included), to be quoted ("$SENDER") by any shell that uses them.
const (
	EnvAccount = "POPSYNC_ACCOUNT" // the account name
	EnvUIDL    = "POPSYNC_UIDL"    // the message's UIDL, as the server sent it
	EnvSender  = "SENDER"          // the envelope sender, when known ("" for <>)
)

// MDAOptions configure an MDA target.
type MDAOptions struct {
	// Command is the program and its arguments, run without a shell. A
	// program without a '/' is looked up in $PATH.
	Command []string
	// Env is the environment the program starts from ("NAME=value"), to
	// which EnvAccount, EnvUIDL and EnvSender are added; any EnvAccount,
	// EnvUIDL or EnvSender already in it is dropped first. The caller
	// removes secrets from it (configs.ChildEnv). nil means an empty
	// environment besides those three, never popsync's own: a forgotten
	// Env must not hand the program every password in the environment.
	Env []string
	// From is the sender reported in SENDER for messages without a usable
	// Return-Path; with neither, SENDER is not set.
	From string
	// Timeout bounds one run; past it the program's process group is
	// killed. Default DefaultMDATimeout.
	Timeout time.Duration
	// MaxHeader bounds the bytes held back to find Return-Path; default
	// DefaultMaxHeader.
	MaxHeader int
	// Logger gets events at Debug; nil discards.
	Logger *slog.Logger
}

// MDA is a confirming delivery target that pipes each message into a
// program (procmail, maildrop, a script): exit status 0 means delivered.
// The program runs once per message in a process group of its own,
// without a shell, with the message on its standard input in LF line
// endings and EnvAccount, EnvUIDL and EnvSender added to MDAOptions.Env.
// It is started once the header section is known (for SENDER), at the
// latest when the message ends.
//
// Exit status 75 (EX_TEMPFAIL) and a program killed by a signal or by the
// deadline are temporary failures; any other nonzero status is permanent,
// with the end of the program's standard error in the *DeliveryError. A
// program that cannot be found or started is a temporary StageStart error
// that the target repeats for every later Begin.
type MDA struct {
	Confirming
	opts MDAOptions
	name string
	log  *slog.Logger

	mu     sync.Mutex
	live   map[*mdaDelivery]struct{}
	closed bool
	down   error
}

// NewMDA returns a target that runs opts.Command for each message. It does
// not look for the program: Begin and Check do.
func NewMDA(opts MDAOptions) (*MDA, error) {
	if len(opts.Command) == 0 || opts.Command[0] == "" {
		return nil, errors.New("mda: no program given")
	}
	m := &MDA{opts: opts, name: "mda " + opts.Command[0], live: make(map[*mdaDelivery]struct{})}
	m.opts.Command = append([]string(nil), opts.Command...)
	m.opts.Env = make([]string, 0, len(opts.Env))
	for _, kv := range opts.Env {
		switch name, _, _ := strings.Cut(kv, "="); name {
		case EnvAccount, EnvUIDL, EnvSender:
		default:
			m.opts.Env = append(m.opts.Env, kv)
		}
	}
	if m.opts.Timeout <= 0 {
		m.opts.Timeout = DefaultMDATimeout
	}
	m.log = opts.Logger
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.log = m.log.With("target", m.name)
	return m, nil
}

// String names the target, e.g. "mda /usr/bin/procmail".
func (m *MDA) String() string { return m.name }

// lookPath finds the program and checks that it can be executed.
func (m *MDA) lookPath() (string, error) {
	p, err := exec.LookPath(m.opts.Command[0])
	if err != nil {
		return "", &DeliveryError{Target: m.name, Stage: StageStart, Temporary: true,
			Err: fmt.Errorf("finding program %s: %w", m.opts.Command[0], err)}
	}
	return p, nil
}

// Check reports whether the program exists and is executable, without
// running it.
func (m *MDA) Check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: checking: %w", m.name, err)
	}
	_, err := m.lookPath()
	return err
}

// Begin checks the program can be found and returns a delivery that starts
// it when the header section has arrived.
func (m *MDA) Begin(ctx context.Context, meta Meta) (Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: beginning delivery: %w", m.name, err)
	}
	m.mu.Lock()
	closed, down := m.closed, m.down
	m.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("%s: beginning delivery: %w", m.name, ErrClosed)
	}
	if down != nil {
		return nil, down
	}
	path, err := m.lookPath()
	if err != nil {
		m.setDown(err)
		return nil, err
	}
	d := &mdaDelivery{m: m, ctx: ctx, meta: meta, path: path, hdr: newHeaderBuf(m.opts.MaxHeader)}
	m.mu.Lock()
	closed = m.closed
	if !closed {
		m.live[d] = struct{}{}
	}
	m.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("%s: beginning delivery: %w", m.name, ErrClosed)
	}
	return d, nil
}

func (m *MDA) setDown(err error) {
	m.mu.Lock()
	if m.down == nil {
		m.down = err
	}
	m.mu.Unlock()
}

// Close kills the programs of deliveries still open and refuses new ones.
func (m *MDA) Close() error {
	m.mu.Lock()
	m.closed = true
	live := make([]*mdaDelivery, 0, len(m.live))
	for d := range m.live {
		live = append(live, d)
	}
	m.mu.Unlock()
	for _, d := range live {
		d.Abort()
	}
	return nil
}

func (m *MDA) forget(d *mdaDelivery) {
	m.mu.Lock()
	delete(m.live, d)
	m.mu.Unlock()
}

// mdaDelivery states.
const (
	mdaWriting = iota
	mdaDone
	mdaFailed
	mdaAborted
)

type mdaDelivery struct {
	m     *MDA
	ctx   context.Context
	meta  Meta
	path  string
	state int
	err   error

	hdr    headerBuf
	cmd    *exec.Cmd       // nil until started
	runCtx context.Context // ends at the deadline
	cancel context.CancelFunc
	stdin  io.WriteCloser
	bw     *bufio.Writer
	lf     lfWriter
	stderr tailBuffer
}

func (d *mdaDelivery) Token() string { return "" }

// Size is the number of bytes passed to the program, in LF line endings.
func (d *mdaDelivery) Size() int64 { return d.lf.n }

func (d *mdaDelivery) Write(p []byte) (int, error) {
	switch d.state {
	case mdaFailed:
		return 0, d.err
	case mdaDone, mdaAborted:
		return 0, fmt.Errorf("%s: writing: %w", d.m.name, ErrState)
	}
	rest := p
	if !d.hdr.done {
		k := d.hdr.add(p)
		if !d.hdr.done {
			return len(p), nil
		}
		if err := d.start(); err != nil {
			return 0, err
		}
		rest = p[k:]
	}
	if _, err := d.lf.Write(rest); err != nil {
		// The program stopped reading: its exit status says why.
		return 0, d.finish(err)
	}
	return len(p), nil
}

// start runs the program and hands it the held bytes.
func (d *mdaDelivery) start() error {
	m := d.m
	env := append(m.opts.Env[:len(m.opts.Env):len(m.opts.Env)], EnvAccount+"="+d.meta.Account, EnvUIDL+"="+d.meta.UIDL)
	if sender, ok := returnPath(d.hdr.header()); ok {
		env = append(env, EnvSender+"="+sender)
	} else if m.opts.From != "" {
		env = append(env, EnvSender+"="+m.opts.From)
	}
	ctx, cancel := context.WithTimeout(d.ctx, m.opts.Timeout)
	cmd := exec.CommandContext(ctx, d.path, m.opts.Command[1:]...)
	cmd.Args[0] = m.opts.Command[0]
	cmd.Env = env
	// A group of its own, so that the deadline kills what the program
	// started too (a shell script's children).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = mdaWaitDelay
	cmd.Stderr = &d.stderr
	stdin, err := cmd.StdinPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		cancel()
		de := &DeliveryError{Target: m.name, Stage: StageStart, Temporary: true,
			Err: err}
		if d.ctx.Err() == nil {
			m.setDown(de)
		}
		return d.fail(de)
	}
	d.cmd, d.runCtx, d.cancel, d.stdin = cmd, ctx, cancel, stdin
	d.bw = bufio.NewWriterSize(stdin, 64<<10)
	d.lf.w = d.bw
	_, err = d.lf.Write(d.hdr.buf)
	d.hdr.release()
	if err != nil {
		return d.finish(err)
	}
	return nil
}

// Close ends the message and waits for the program: nil when it exited 0.
func (d *mdaDelivery) Close() error {
	switch d.state {
	case mdaFailed:
		return d.err
	case mdaDone, mdaAborted:
		return fmt.Errorf("%s: closing: %w", d.m.name, ErrState)
	}
	if !d.hdr.done {
		d.hdr.done = true
		if err := d.start(); err != nil {
			return err
		}
	}
	err := d.lf.Flush()
	if err == nil {
		err = d.bw.Flush()
	}
	return d.finish(err)
}

// finish closes the program's input, waits for it and judges the outcome;
// writeErr is the error that stopped writing, if any.
func (d *mdaDelivery) finish(writeErr error) error {
	d.stdin.Close()
	waitErr := d.cmd.Wait()
	timedOut := d.runCtx.Err() != nil
	d.cancel()
	d.m.forget(d)
	de := &DeliveryError{Target: d.m.name, Stage: StageExit, Text: d.stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(waitErr, &ee) && ee.ExitCode() < 0:
		// Killed by a signal: by the deadline, by the end of ctx, or by
		// something else. Not a verdict on the message.
		de.Temporary = true
		switch {
		case d.ctx.Err() != nil:
			de.Err = fmt.Errorf("%w: %s killed", d.ctx.Err(), d.path)
		case timedOut:
			de.Err = fmt.Errorf("%w: %s still running after %v, killed", context.DeadlineExceeded, d.path, d.m.opts.Timeout)
		default:
			de.Err = fmt.Errorf("%s: %v", d.path, ee.ProcessState)
		}
	case errors.As(waitErr, &ee):
		de.Code = ee.ExitCode()
		de.Temporary = de.Code == exTempFail
	case waitErr != nil && !errors.Is(waitErr, exec.ErrWaitDelay):
		de.Temporary = true
		de.Err = fmt.Errorf("waiting for %s: %w", d.path, waitErr)
	case writeErr != nil:
		de.Temporary = true
		de.Err = fmt.Errorf("%w: %v", ErrIncomplete, writeErr)
	default:
		d.state = mdaDone
		return nil
	}
	return d.fail(de)
}

func (d *mdaDelivery) fail(err *DeliveryError) error {
	d.state = mdaFailed
	d.err = err
	d.m.forget(d)
	return err
}

// Abort kills the program if it runs: a message not wholly written is not
// delivered, whatever the program would have said.
func (d *mdaDelivery) Abort() error {
	if d.state != mdaWriting {
		if d.state == mdaFailed {
			d.state = mdaAborted
		}
		return nil
	}
	d.state = mdaAborted
	d.hdr.release()
	if d.cmd != nil {
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		d.stdin.Close()
		d.cmd.Wait()
		d.cancel()
	}
	d.m.forget(d)
	return nil
}

// tailBuffer keeps the last mdaStderrTail bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	cut bool
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > 2*mdaStderrTail {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-mdaStderrTail:]...)
		b.cut = true
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf
	cut := b.cut
	if len(s) > mdaStderrTail {
		s, cut = s[len(s)-mdaStderrTail:], true
	}
	if cut {
		return "..." + string(s)
	}
	return string(s)
}
