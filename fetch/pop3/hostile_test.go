package pop3

import (
	"errors"
	"io"
	"testing"
	"time"

	"popsync/fetch/internal/hostile"
)

// dialHostile logs in to a hostile server running s over loopback.
func dialHostile(t *testing.T, s hostile.Script, opts Options) (*Client, *hostile.Server) {
	t.Helper()
	s.User, s.Password = "tim", "tanstaaf"
	if s.Messages == nil {
		s.Messages = [][]byte{[]byte("Subject: one\r\n\r\n1\r\n"), []byte("Subject: two\r\n\r\n2\r\n"), []byte("Subject: three\r\n\r\n3\r\n")}
	}
	srv, err := hostile.Start(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	opts.Security = SecurityNone
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	c, err := Dial(t.Context(), srv.Addr(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Auth(t.Context(), MechUser, "tim", "tanstaaf"); err != nil {
		t.Fatal(err)
	}
	return c, srv
}

func TestRetrEachStopOnEndlessBodyIsBounded(t *testing.T) {
	// fn gives up on an endless message: the rest is not read (it would
	// never end, and at full speed no deadline fires); the client closes
	// the connection, returns fn's reason and is poisoned.
	c, srv := dialHostile(t, hostile.Script{Attack: hostile.EndlessMessage}, Options{})
	stop := errors.New("too big for us")
	begin := time.Now()
	err := c.RetrEach(t.Context(), []int{1, 2, 3}, func(id int, body io.Reader, err error) error {
		if _, err := io.CopyN(io.Discard, body, 64<<10); err != nil {
			return err
		}
		return stop
	})
	if !errors.Is(err, stop) {
		t.Fatalf("RetrEach = %v, want fn's error", err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Fatalf("RetrEach took %v", d)
	}
	if err := c.Noop(t.Context()); !errors.Is(err, ErrPoisoned) || !errors.Is(err, ErrDrainLimit) {
		t.Fatalf("Noop after the abandoned body = %v, want ErrPoisoned and ErrDrainLimit", err)
	}
	// The server was cut off after little more than MaxDrain beyond what
	// fn read (plus what sat in socket buffers).
	if sent := srv.Sent(); sent > 64<<20 {
		t.Fatalf("server got to send %d octets", sent)
	}
}

func TestUnreadEndlessBodyIsNotDrained(t *testing.T) {
	c, _ := dialHostile(t, hostile.Script{Attack: hostile.EndlessMessage}, Options{})
	r, err := c.Retr(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, r, 1000); err != nil {
		t.Fatal(err)
	}
	if err := c.Noop(t.Context()); !errors.Is(err, ErrDrainLimit) {
		t.Fatalf("Noop after an endless unread body = %v, want ErrDrainLimit", err)
	}
	if _, err := r.Read(make([]byte, 10)); err == nil {
		t.Fatal("the abandoned body is still readable")
	}
	if err := c.Quit(t.Context()); !errors.Is(err, ErrPoisoned) {
		t.Fatalf("Quit = %v, want ErrPoisoned (no QUIT on a poisoned client)", err)
	}
}

func TestUIDLLongerThanListIsRefused(t *testing.T) {
	c, _ := dialHostile(t, hostile.Script{Attack: hostile.HugeUIDL, Entries: 10_000_000}, Options{})
	list, err := c.List(t.Context())
	if err != nil || len(list) != 3 {
		t.Fatalf("List = %v, %v", list, err)
	}
	_, err = c.UIDL(t.Context())
	if !errors.Is(err, ErrTooManyEntries) {
		t.Fatalf("UIDL = %v, want ErrTooManyEntries", err)
	}
	if err := c.Noop(t.Context()); !errors.Is(err, ErrPoisoned) {
		t.Fatalf("Noop after the refused listing = %v", err)
	}
}

func TestHugeListingStopsAtMaxListEntries(t *testing.T) {
	// Without an earlier LIST or STAT only Options.MaxListEntries bounds
	// a listing; the server's 10 million entries are never all read.
	c, srv := dialHostile(t, hostile.Script{Attack: hostile.HugeUIDL, Entries: 10_000_000}, Options{MaxListEntries: 5000})
	if _, err := c.UIDL(t.Context()); !errors.Is(err, ErrTooManyEntries) {
		t.Fatalf("UIDL = %v, want ErrTooManyEntries", err)
	}
	if sent := srv.Sent(); sent > 64<<20 {
		t.Fatalf("server got to send %d octets", sent)
	}
}
