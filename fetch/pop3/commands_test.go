package pop3

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

// dovecotStart is a Dovecot-style start of session, logged in.
const dovecotStart = `
	S: +OK Dovecot (Debian) ready.
	C: CAPA
	S: +OK
	S: CAPA
	S: TOP
	S: UIDL
	S: RESP-CODES
	S: AUTH-RESP-CODE
	S: USER
	S: SASL PLAIN
	S: .
`

var bg = context.Background()

func TestCommandsGolden(t *testing.T) {
	s := start(t, plain, dovecotStart+`
		C: STAT
		S: +OK 3 5120
		C: LIST
		S: +OK 3 messages:
		S: 1 1024
		S: 2 2048
		S: 3 2048
		S: .
		C: LIST 2
		S: +OK 2 2048
		C: UIDL
		S: +OK
		S: 1 000000014f3d2a10
		S: 2 000000024f3d2a10
		S: 3 000000034f3d2a10
		S: .
		C: UIDL 3
		S: +OK 3 000000034f3d2a10
		C: TOP 1 0
		S: +OK
		S: Subject: hi
		S: 
		S: .
		C: RETR 1
		S: +OK 1024 octets
		S: Subject: hi
		S: 
		S: ..leading dot
		S: body
		S: .
		C: DELE 1
		S: +OK Marked to be deleted.
		C: RSET
		S: +OK
		C: NOOP
		S: +OK
		C: DELE 2
		S: +OK
		C: QUIT
		S: +OK Logging out, messages deleted.
		EOF`)
	c := s.c
	n, size, err := c.Stat(bg)
	if err != nil || n != 3 || size != 5120 {
		t.Fatalf("Stat = %d, %d, %v", n, size, err)
	}
	list, err := c.List(bg)
	if err != nil || !slices.Equal(list, []MessageInfo{{1, 1024}, {2, 2048}, {3, 2048}}) {
		t.Fatalf("List = %v, %v", list, err)
	}
	one, err := c.ListOne(bg, 2)
	if err != nil || one != (MessageInfo{2, 2048}) {
		t.Fatalf("ListOne = %v, %v", one, err)
	}
	uids, err := c.UIDL(bg)
	if err != nil || !slices.Equal(uids, []UIDEntry{{1, "000000014f3d2a10"}, {2, "000000024f3d2a10"}, {3, "000000034f3d2a10"}}) {
		t.Fatalf("UIDL = %v, %v", uids, err)
	}
	uid, err := c.UIDLOne(bg, 3)
	if err != nil || uid != "000000034f3d2a10" {
		t.Fatalf("UIDLOne = %q, %v", uid, err)
	}
	r, err := c.Top(bg, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := readAll(r); err != nil || string(b) != "Subject: hi\r\n\r\n" {
		t.Fatalf("Top body = %q, %v", b, err)
	}
	r, err = c.Retr(bg, 1)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := readAll(r); err != nil || string(b) != "Subject: hi\r\n\r\n.leading dot\r\nbody\r\n" {
		t.Fatalf("Retr body = %q, %v", b, err)
	}
	for _, f := range []func(context.Context) error{
		func(ctx context.Context) error { return c.Dele(ctx, 1) },
		c.Rset, c.Noop,
		func(ctx context.Context) error { return c.Dele(ctx, 2) },
		c.Quit,
	} {
		if err := f(bg); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Noop(bg); !errors.Is(err, ErrClosed) {
		t.Fatalf("Noop after Quit = %v", err)
	}
	s.done()
}

func TestServerErrors(t *testing.T) {
	s := start(t, plain, dovecotStart+`
		C: RETR 9
		S: -ERR There's no message 9.
		C: TOP 9 10
		S: -ERR [SYS/PERM] no TOP
		C: DELE 9
		S: -ERR There's no message 9.
		C: LIST 9
		S: -ERR There's no message 9.
		C: UIDL
		S: -ERR [SYS/TEMP] unavailable
		C: STAT
		S: +OK 0 0
		C: QUIT
		S: -ERR [SYS/TEMP] could not expunge
		EOF`)
	c := s.c
	check := func(err error, cmd, arg, code string) {
		t.Helper()
		var e *Error
		if !errors.As(err, &e) || e.Command != cmd || e.Arg != arg || e.Code != code {
			t.Fatalf("err = %#v, want %s %s [%s]", err, cmd, arg, code)
		}
	}
	_, err := c.Retr(bg, 9)
	check(err, "RETR", "9", "")
	if err.Error() != "pop3: RETR 9: server replied -ERR There's no message 9." {
		t.Fatalf("Error() = %q", err.Error())
	}
	_, err = c.Top(bg, 9, 10)
	check(err, "TOP", "9 10", "SYS/PERM")
	check(c.Dele(bg, 9), "DELE", "9", "")
	_, err = c.ListOne(bg, 9)
	check(err, "LIST", "9", "")
	_, err = c.UIDL(bg)
	check(err, "UIDL", "", "SYS/TEMP")
	if n, _, err := c.Stat(bg); err != nil || n != 0 {
		t.Fatalf("Stat = %d, %v", n, err)
	}
	// A -ERR to QUIT means the DELE marks were not committed.
	err = c.Quit(bg)
	check(err, "QUIT", "", "SYS/TEMP")
	s.done()
}

func TestArgumentsChecked(t *testing.T) {
	s := start(t, plain, dovecotStart+`
		C: NOOP
		S: +OK`)
	c := s.c
	for name, err := range map[string]error{
		"retr 0":   func() error { _, err := c.Retr(bg, 0); return err }(),
		"top -1":   func() error { _, err := c.Top(bg, 1, -1); return err }(),
		"dele -5":  c.Dele(bg, -5),
		"list 0":   func() error { _, err := c.ListOne(bg, 0); return err }(),
		"uidl 0":   func() error { _, err := c.UIDLOne(bg, 0); return err }(),
		"retrEach": c.RetrEach(bg, []int{1, 0}, nil),
		"deleEach": func() error { _, err := c.DeleEach(bg, []int{-1}); return err }(),
	} {
		if !errors.Is(err, ErrBadArgument) {
			t.Errorf("%s: %v, want ErrBadArgument", name, err)
		}
	}
	// Nothing was sent for them: the next command is NOOP.
	if err := c.Noop(bg); err != nil {
		t.Fatal(err)
	}
	s.done()
}

func TestBodyDotUnstuffing(t *testing.T) {
	// Bare LF inside lines, a "." + LF after a bare LF (data: RFC 1939
	// §3 lines end in CRLF), CR inside a line, an empty line, a line of
	// just "..", and a dot line that is not the terminator.
	s := start(t, plain, dovecotStart+`
		C: RETR 1
		R: "+OK\r\nA: b\n\nline\rwith CR\r\n..\r\n.\rx\r\n...\r\nlast\n.\n..\n.\r\n\r\n.\r\n"
		C: RETR 2
		R: "+OK\r\nno final newline?.\r\n.\r\n"
		C: NOOP
		S: +OK`)
	r, err := s.c.Retr(bg, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := readAll(r)
	if want := "A: b\n\nline\rwith CR\r\n.\r\n\rx\r\n..\r\nlast\n.\n..\n.\r\n\r\n"; err != nil || string(b) != want {
		t.Fatalf("body = %q, %v; want %q", b, err, want)
	}
	r, err = s.c.Retr(bg, 2)
	if err != nil {
		t.Fatal(err)
	}
	// io.Copy goes through WriteTo.
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil || buf.String() != "no final newline?.\r\n" {
		t.Fatalf("body = %q, %v", buf.String(), err)
	}
	if err := s.c.Noop(bg); err != nil {
		t.Fatal(err)
	}
	s.done()
}

func TestBodyLongLine(t *testing.T) {
	// A line far longer than the read buffer streams through.
	line := strings.Repeat("x", 3*readBufferSize+17)
	s := start(t, plain, dovecotStart+`
		C: RETR 1
		S: +OK
		S: .`+line+`
		S: `+line+`
		S: .
		C: NOOP
		S: +OK`)
	r, err := s.c.Retr(bg, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if want := line + "\r\n" + line + "\r\n"; err != nil || string(b) != want {
		t.Fatalf("body: %d octets, %v; want %d", len(b), err, len(want))
	}
	if err := s.c.Noop(bg); err != nil {
		t.Fatal(err)
	}
	s.done()
}

func TestUnreadBodyDrained(t *testing.T) {
	s := start(t, plain, dovecotStart+`
		C: RETR 1
		S: +OK
		S: one
		S: two
		S: .
		C: NOOP
		S: +OK`)
	r, err := s.c.Retr(bg, 1)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 2)
	if _, err := io.ReadFull(r, p); err != nil {
		t.Fatal(err)
	}
	if err := s.c.Noop(bg); err != nil {
		t.Fatal(err)
	}
	// The rest was drained for NOOP: the old reader must not pretend the
	// message ended.
	if _, err := r.Read(p); !errors.Is(err, ErrBodyClosed) {
		t.Fatalf("Read after drain = %v, want ErrBodyClosed", err)
	}
	s.done()
}

func TestDropMidRetrPoisons(t *testing.T) {
	s := start(t, plain, dovecotStart+`
		C: RETR 1
		S: +OK 100000 octets
		S: Subject: half a message
		S: 
		S: some text
		DROP`)
	r, err := s.c.Retr(bg, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ReadAll = %q, %v; want io.ErrUnexpectedEOF", b, err)
	}
	if _, err := r.Read(make([]byte, 10)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("second Read = %v", err)
	}
	_, _, err = s.c.Stat(bg)
	if !errors.Is(err, ErrPoisoned) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Stat after drop = %v, want ErrPoisoned wrapping the cause", err)
	}
	if err := s.c.Quit(bg); !errors.Is(err, ErrPoisoned) {
		t.Fatalf("Quit = %v", err)
	}
	s.done()
}

func TestQuitOnPoisonedSendsNothing(t *testing.T) {
	// A garbage reply poisons; QUIT must not follow (it would commit the
	// DELE), the fake sees EOF and nothing else.
	s := start(t, plain, dovecotStart+`
		C: DELE 1
		S: +OK
		C: STAT
		S: garbage
		EOF`)
	if err := s.c.Dele(bg, 1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.c.Stat(bg); !errors.Is(err, ErrProtocol) {
		t.Fatalf("Stat = %v", err)
	}
	if err := s.c.Noop(bg); !errors.Is(err, ErrPoisoned) || !errors.Is(err, ErrProtocol) {
		t.Fatalf("Noop = %v", err)
	}
	if err := s.c.Quit(bg); !errors.Is(err, ErrPoisoned) {
		t.Fatalf("Quit = %v", err)
	}
	s.done()
}

func TestListingLimits(t *testing.T) {
	long := strings.Repeat("x", MaxLineLength)
	tests := []struct {
		name   string
		opts   Options
		script string
		call   func(*Client) error
		want   error
	}{
		{"too many entries", Options{Security: SecurityNone, MaxListEntries: 2}, `
			C: LIST
			S: +OK
			S: 1 10
			S: 2 10
			S: 3 10`, func(c *Client) error { _, err := c.List(bg); return err }, ErrTooManyEntries},
		{"status line too long", plain, `
			C: STAT
			S: +OK ` + long, func(c *Client) error { _, _, err := c.Stat(bg); return err }, ErrLineTooLong},
		{"status line beyond the buffer", plain, `
			C: NOOP
			S: +OK ` + strings.Repeat("y", 2*readBufferSize), func(c *Client) error { return c.Noop(bg) }, ErrLineTooLong},
		{"uidl too long", plain, `
			C: UIDL
			S: +OK
			S: 1 ` + strings.Repeat("u", 71), func(c *Client) error { _, err := c.UIDL(bg); return err }, ErrBadUIDL},
		{"uidl control char", plain, `
			C: UIDL 1
			R: "+OK 1 abc\x01def\r\n"`, func(c *Client) error { _, err := c.UIDLOne(bg, 1); return err }, ErrBadUIDL},
		{"uidl with space", plain, `
			C: UIDL
			S: +OK
			S: 1 abc def
			S: .`, func(c *Client) error { _, err := c.UIDL(bg); return err }, ErrBadUIDL},
		{"uidl empty", plain, `
			C: UIDL 1
			S: +OK 1`, func(c *Client) error { _, err := c.UIDLOne(bg, 1); return err }, ErrBadUIDL},
		{"list garbage", plain, `
			C: LIST
			S: +OK
			S: one 10
			S: .`, func(c *Client) error { _, err := c.List(bg); return err }, ErrProtocol},
		{"stat garbage", plain, `
			C: STAT
			S: +OK lots`, func(c *Client) error { _, _, err := c.Stat(bg); return err }, ErrProtocol},
		{"listing cut off", plain, `
			C: LIST
			S: +OK
			S: 1 10
			DROP`, func(c *Client) error { _, err := c.List(bg); return err }, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := start(t, tt.opts, dovecotStart+tt.script)
			err := tt.call(s.c)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if err := s.c.Noop(bg); !errors.Is(err, ErrPoisoned) {
				t.Fatalf("Noop after %v = %v, want ErrPoisoned", tt.want, err)
			}
			s.wait() // the fake may be cut short
		})
	}
}

func TestListingTolerance(t *testing.T) {
	// Text after the size (RFC 1939 §5 allows it), extra spaces, UIDs at
	// the limits of RFC 1939 §7.
	uid70 := strings.Repeat("~", 70)
	s := start(t, plain, dovecotStart+`
		C: LIST
		R: "+OK\r\n1 10 extra info\r\n2  20\r\n.\r\n"
		C: UIDL
		S: +OK
		S: 1 !
		S: 2 `+uid70+`  
		S: .`)
	list, err := s.c.List(bg)
	if err != nil || !slices.Equal(list, []MessageInfo{{1, 10}, {2, 20}}) {
		t.Fatalf("List = %v, %v", list, err)
	}
	uids, err := s.c.UIDL(bg)
	if err != nil || !slices.Equal(uids, []UIDEntry{{1, "!"}, {2, uid70}}) {
		t.Fatalf("UIDL = %v, %v", uids, err)
	}
	s.done()
}

func TestCloseWithoutQuit(t *testing.T) {
	s := start(t, plain, dovecotStart+`
		C: DELE 1
		S: +OK
		EOF`)
	if err := s.c.Dele(bg, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.c.Noop(bg); !errors.Is(err, ErrClosed) {
		t.Fatalf("Noop after Close = %v", err)
	}
	s.done()
}

func TestCloseWithActiveBody(t *testing.T) {
	s := start(t, plain, dovecotStart+`
		C: RETR 1
		S: +OK
		S: line one`)
	r, err := s.c.Retr(bg, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Read(make([]byte, 4)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close = %v, want ErrClosed", err)
	}
	if got := s.c.Caps().Args("sasl"); len(got) != 1 || got[0] != "PLAIN" {
		t.Fatalf("Args(sasl) = %v", got)
	}
	s.wait() // the fake's last byte found the connection closed
}
