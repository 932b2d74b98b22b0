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

// deadlineConn sets a fresh deadline before every Read and Write on the
// underlying connection, and lets a context cancellation interrupt a call
// that is blocked. It sits below TLS, so the handshake is covered too.
type deadlineConn struct {
	net.Conn
	timeout time.Duration

	mu sync.Mutex
	// cancelled is the context error once the running operation's context
	// is done; it stops deadlines from being refreshed and replaces the
	// resulting timeout error.
	cancelled error
}

func (d *deadlineConn) Read(p []byte) (int, error) {
	d.mu.Lock()
	if d.cancelled != nil {
		err := d.cancelled
		d.mu.Unlock()
		return 0, err
	}
	// An error here (net.Pipe reports a closed peer this way) shows up
	// in the Read below, with the right cause.
	_ = d.Conn.SetReadDeadline(time.Now().Add(d.timeout))
	d.mu.Unlock()
	n, err := d.Conn.Read(p)
	if err != nil {
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
		d.interrupt(ctx.Err())
	})
	return func() {
		if !stop() {
			<-done
			d.clear()
		}
	}
}
