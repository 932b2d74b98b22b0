package delivertest

import (
	"bytes"
	"context"
	"sync"
	"testing"

	"popsync/deliver"
)

// confirming is an in-memory target of the confirming kind (as SMTP will
// be): a message is delivered when its Close succeeds, and Prepare,
// Publish, Delivered and Cleanup have nothing to do. It checks that the
// suite holds such targets to their contract only.
type confirming struct {
	mu     sync.Mutex
	closed bool
	got    *[][]byte
}

type confirmingDelivery struct {
	t    *confirming
	buf  bytes.Buffer
	done bool
}

func (c *confirming) String() string { return "memory" }

func (c *confirming) Begin(ctx context.Context, _ deliver.Meta) (deliver.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, deliver.ErrClosed
	}
	return &confirmingDelivery{t: c}, nil
}

func (c *confirming) Prepare(context.Context, []deliver.Delivery) error { return nil }
func (c *confirming) Publish(context.Context, []deliver.Delivery) error { return nil }

func (c *confirming) Delivered(context.Context, []string) (map[string]bool, error) {
	return map[string]bool{}, nil
}

func (c *confirming) Cleanup(context.Context, []string) error { return nil }

func (c *confirming) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}

func (d *confirmingDelivery) Write(p []byte) (int, error) {
	if d.done {
		return 0, deliver.ErrState
	}
	return d.buf.Write(p)
}

func (d *confirmingDelivery) Close() error {
	if d.done {
		return deliver.ErrState
	}
	d.done = true
	d.t.mu.Lock()
	*d.t.got = append(*d.t.got, bytes.Clone(d.buf.Bytes()))
	d.t.mu.Unlock()
	return nil
}

func (d *confirmingDelivery) Abort() error  { d.done = true; return nil }
func (d *confirmingDelivery) Token() string { return "" }
func (d *confirmingDelivery) Size() int64   { return int64(d.buf.Len()) }

func TestSuiteConfirmingTarget(t *testing.T) {
	var mu sync.Mutex
	stores := map[*testing.T]*[][]byte{}
	store := func(t *testing.T) *[][]byte {
		mu.Lock()
		defer mu.Unlock()
		if stores[t] == nil {
			stores[t] = new([][]byte)
		}
		return stores[t]
	}
	RunSuite(t,
		func(t *testing.T) deliver.Target { return &confirming{got: store(t)} },
		func(t *testing.T) [][]byte { return *store(t) })
}

func TestMessage(t *testing.T) {
	a, b := Message(1, 1000), Message(2, 1000)
	if bytes.Equal(a, b) || len(a) < 1000 {
		t.Errorf("messages not distinct or too short: %d bytes", len(a))
	}
	if bytes.Count(a, []byte("\n")) != bytes.Count(a, []byte("\r\n")) || bytes.Count(a, []byte("\r")) != bytes.Count(a, []byte("\r\n")) {
		t.Error("message has a bare CR or LF")
	}
}
