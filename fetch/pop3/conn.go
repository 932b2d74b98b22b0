package pop3

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// MinProgress is the least a server must send per Options.Timeout while
// the client waits for it. A live server sends a whole reply (RFC 2449 §4
// allows 512 octets for a status line) far quicker than that; one that
// trickles its replies below it, one octet a second say, would otherwise
// keep a poll alive for as long as it likes, since every octet would
// refresh a per-read deadline.
const MinProgress = 128

// deadlineConn bounds every Read and Write on the underlying connection
// and lets a context cancellation interrupt a call that is blocked. It
// sits below TLS, so the handshake is covered too.
//
// A Write gets a fresh deadline of timeout. Reads share a budget: from the
// last Write on, or from the moment MinProgress octets had arrived, the
// time spent blocked in Read may add up to timeout before MinProgress
// more octets arrive. Time the client spends elsewhere (writing mail to
// disk) does not count, and every command sent starts afresh, so a server
// that takes its time to answer is fine; a silent one, or one that
// trickles, fails after timeout.
type deadlineConn struct {
	net.Conn
	timeout time.Duration

	mu sync.Mutex
	// cancelled is the context error once the running operation's context
	// is done; it stops deadlines from being refreshed and replaces the
	// resulting timeout error.
	cancelled error
	// waited is the time spent in Read and got the octets read since the
	// read budget was last renewed.
	waited time.Duration
	got    int
}

func (d *deadlineConn) Read(p []byte) (int, error) {
	d.mu.Lock()
	if d.cancelled != nil {
		err := d.cancelled
		d.mu.Unlock()
		return 0, err
	}
	if d.got >= MinProgress {
		d.waited, d.got = 0, 0
	}
	begin := time.Now()
	// An error here (net.Pipe reports a closed peer this way) shows up
	// in the Read below, with the right cause. A spent budget gives a
	// deadline in the past: the Read fails at once.
	_ = d.Conn.SetReadDeadline(begin.Add(d.timeout - d.waited))
	d.mu.Unlock()
	n, err := d.Conn.Read(p)
	d.mu.Lock()
	d.waited += time.Since(begin)
	d.got += n
	got := d.got
	d.mu.Unlock()
	if err != nil {
		if got > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("%w: %d octets in %v, a server must send at least %d", ErrTooSlow, got, d.timeout, MinProgress)
		}
		err = d.translate(err, "waiting for the server")
	}
	return n, err
}

func (d *deadlineConn) Write(p []byte) (int, error) {
	d.mu.Lock()
	if d.cancelled != nil {
		err := d.cancelled
		d.mu.Unlock()
		return 0, err
	}
	// A command sent: the wait for its reply starts a new read budget.
	d.waited, d.got = 0, 0
	// An error here (net.Pipe reports a closed peer this way) shows up
	// in the Write below, with the right cause.
	_ = d.Conn.SetWriteDeadline(time.Now().Add(d.timeout))
	d.mu.Unlock()
	n, err := d.Conn.Write(p)
	if err != nil {
		err = d.translate(err, "sending to the server")
	}
	return n, err
}

func (d *deadlineConn) translate(err error, doing string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cancelled != nil {
		return d.cancelled
	}
	if errors.Is(err, ErrTooSlow) {
		return fmt.Errorf("%s: %w: %w", doing, err, os.ErrDeadlineExceeded)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%s: no progress for %v: %w", doing, d.timeout, err)
	}
	return err
}

// interrupt makes the blocked and all further calls fail with err.
func (d *deadlineConn) interrupt(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cancelled = err
	// A deadline in the past wakes up a blocked Read or Write.
	_ = d.Conn.SetDeadline(time.Unix(1, 0))
}

func (d *deadlineConn) clear() {
	d.mu.Lock()
	d.cancelled = nil
	d.mu.Unlock()
}

// watch arranges for ctx's cancellation to interrupt the connection until
// the returned function is called. It returns nil when ctx cannot be
// cancelled. The returned function waits for a running interruption to
// finish and then re-arms the connection, so a cancellation that raced
// with the end of an operation cannot leak into the next one.
func (d *deadlineConn) watch(ctx context.Context) func() {
	if ctx.Done() == nil {
		return nil
	}
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(done)
		d.interrupt(ctxError(ctx))
	})
	return func() {
		if !stop() {
			<-done
			d.clear()
		}
	}
}

// ctxError is ctx's error, told by its cause when the canceller gave one
// ("interrupted" rather than "context canceled"); errors.Is still finds
// context.Canceled or context.DeadlineExceeded in it.
func ctxError(ctx context.Context) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return &causeError{cause: cause, err: err}
	}
	return err
}

type causeError struct{ cause, err error }

func (e *causeError) Error() string   { return e.cause.Error() }
func (e *causeError) Unwrap() []error { return []error{e.cause, e.err} }
