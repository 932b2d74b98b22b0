package pop3

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// readerConn is a net.Conn that reads from r and discards writes, for
// driving the parsers with fuzz input.
type readerConn struct{ r io.Reader }

func (c readerConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c readerConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c readerConn) Close() error                     { return nil }
func (c readerConn) LocalAddr() net.Addr              { return nil }
func (c readerConn) RemoteAddr() net.Addr             { return nil }
func (c readerConn) SetDeadline(time.Time) error      { return nil }
func (c readerConn) SetReadDeadline(time.Time) error  { return nil }
func (c readerConn) SetWriteDeadline(time.Time) error { return nil }

// readerClient is a Client whose server side is the bytes data, read
// through a buffer of bufSize (16 at least).
func readerClient(data []byte, bufSize int, maxEntries int) *Client {
	conn := readerConn{bytes.NewReader(data)}
	c := &Client{
		opts: Options{Security: SecurityNone, Timeout: time.Minute, MaxListEntries: maxEntries},
		raw:  conn,
		dc:   &deadlineConn{Conn: conn, timeout: time.Minute},
	}
	c.br = bufio.NewReaderSize(c.dc, bufSize)
	c.bw = bufio.NewWriter(io.Discard)
	return c
}

func FuzzStatusLine(f *testing.F) {
	for _, s := range []string{
		"+OK Dovecot ready.",
		"+OK Dovecot (Debian) ready. <1a2b.3c4d@mail.example.net>",
		"-ERR [IN-USE] Mailbox is locked by another POP3 session",
		"-ERR [LOGIN-DELAY] wait",
		"-ERR [SYS/TEMP] System error, try later",
		"-ERR [SYS/PERM/x] gone",
		"-ERR [AUTH] Authentication failed.",
		"-ERR [] empty",
		"-ERR [A//B] bad",
		"-ERR",
		"+OK",
		"+ ",
		"+ VXNlcm5hbWU6",
		"+OK 2 320",
		"* OK IMAP",
		"-ERR [unclosed",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		kind, rest, err := parseStatus(line)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v does not wrap ErrProtocol", err)
			}
			return
		}
		if !bytes.HasSuffix(line, rest) {
			t.Fatalf("rest %q is not a suffix of %q", rest, line)
		}
		if kind == statusOK && !bytes.HasPrefix(bytes.ToUpper(line), []byte("+OK")) {
			t.Fatalf("%q classified +OK", line)
		}
		code, text := splitRespCode(rest)
		if code != "" {
			if !validRespCode([]byte(code)) || strings.ToUpper(code) != code {
				t.Fatalf("invalid code %q from %q", code, line)
			}
		}
		for _, r := range text {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("control character in text %q", text)
			}
		}
		e := newError(newCmd("NOOP"), rest)
		_ = e.Error()
		_ = e.Temporary()
		s, n, err := parseStat(rest)
		if err == nil && (s < 0 || n < 0) {
			t.Fatalf("negative STAT %d %d", s, n)
		}
		_ = apopTimestamp(string(rest))
	})
}

func FuzzCapa(f *testing.F) {
	for _, s := range []string{
		"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n",
		"+OK Capability list follows\r\nTOP\r\nUSER\r\nSASL CRAM-MD5 KERBEROS_V4\r\nRESP-CODES\r\nLOGIN-DELAY 900\r\nPIPELINING\r\nEXPIRE 60\r\nUIDL\r\nIMPLEMENTATION Shlemazle-Plotz-v302\r\n.\r\n",
		"+OK\r\nSTLS\r\nEXPIRE NEVER\r\nLOGIN-DELAY 0 USER\r\n.\r\n",
		"-ERR unknown command\r\n",
		"+OK\n..weird\n.\n",
		"+OK\r\n\r\n.\r\n",
		"+OK\r\nTOP\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := readerClient(data, 64, 100)
		if err := c.capa(bg); err != nil {
			if c.err == nil {
				t.Fatalf("capa error %v did not poison", err)
			}
			return
		}
		caps := c.Caps()
		seen := map[string]bool{}
		for _, n := range caps.Names() {
			if n == "" || strings.ToUpper(n) != n || seen[n] || !caps.Has(strings.ToLower(n)) {
				t.Fatalf("bad capability name %q in %v", n, caps.Names())
			}
			seen[n] = true
		}
		for _, m := range caps.SASL() {
			if !caps.HasSASL(m) {
				t.Fatalf("SASL %q not found", m)
			}
		}
		caps.Pipelining()
		caps.Implementation()
		caps.LoginDelay()
		caps.Expire()
		_ = caps.String()
		_, _ = c.AutoMechanism()
	})
}

func FuzzListing(f *testing.F) {
	for _, s := range []string{
		"+OK 2 messages\r\n1 120\r\n2 200\r\n.\r\n",
		"+OK\r\n1 000000014f3d2a10\r\n2 000000024f3d2a10\r\n.\r\n",
		"+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n.\r\n",
		"+OK\r\n1 10 extra\n2  20\n.\n",
		"+OK\r\n1 a b\r\n.\r\n",
		"+OK\r\n0 1\r\n.\r\n",
		"+OK\r\n99999999999999999999 1\r\n.\r\n",
		"-ERR [SYS/TEMP] no\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 50
		if uids, err := readerClient(data, 32, max).UIDL(bg); err == nil {
			if len(uids) > max {
				t.Fatalf("%d entries, limit %d", len(uids), max)
			}
			for _, u := range uids {
				if u.ID < 1 || checkUID([]byte(u.UID)) != nil {
					t.Fatalf("invalid entry %+v accepted", u)
				}
			}
		}
		if list, err := readerClient(data, 32, max).List(bg); err == nil {
			if len(list) > max {
				t.Fatalf("%d entries, limit %d", len(list), max)
			}
			for _, m := range list {
				if m.ID < 1 || m.Size < 0 {
					t.Fatalf("invalid entry %+v accepted", m)
				}
			}
		}
		// Single lines, as in "+OK 1 uid" and "+OK 1 120".
		if u, err := parseUIDLine(data); err == nil && (u.ID < 1 || !utf8.ValidString(u.UID) || checkUID([]byte(u.UID)) != nil) {
			t.Fatalf("invalid %+v accepted", u)
		}
		if m, err := parseScanLine(data); err == nil && (m.ID < 1 || m.Size < 0) {
			t.Fatalf("invalid %+v accepted", m)
		}
	})
}

// refUnstuff is the obvious dot-unstuffing over a complete byte slice
// (RFC 1939 §3): split into lines ending in CRLF (with lf, in LF as in a
// session whose status lines end in bare LF), a line "." ends the body,
// one leading "." is removed from other lines. A bare LF inside a CRLF
// line is data, and so is a "." after it. ok is false when the data ends
// before the terminator.
func refUnstuff(data []byte, lf bool) (body, rest []byte, ok bool) {
	body = []byte{}
	sep := []byte("\r\n")
	if lf {
		sep = []byte("\n")
	}
	for {
		i := bytes.Index(data, sep)
		if i < 0 {
			return body, nil, false
		}
		line := data[:i+len(sep)]
		data = data[i+len(sep):]
		if string(line) == ".\r\n" || (lf && string(line) == ".\n") {
			return body, data, true
		}
		if line[0] == '.' {
			line = line[1:]
		}
		body = append(body, line...)
	}
}

func FuzzDotReader(f *testing.F) {
	for _, s := range []string{
		"Subject: x\r\n\r\nbody\r\n.\r\n",
		"..\r\n...\r\n.x\r\n.\r\n+OK next",
		// A "." after a bare LF is data, not a terminator: the
		// smuggling of a reply past a server that stuffs after CRLF only.
		"bare\nlf\n.\nstill data\r\n.\r\n",
		"x\n.\n+OK\r\nFrom: ceo@victim.example\r\n\r\nforged\r\n.\r\n",
		"x\n.\r\n+OK\r\n.\r\n",
		"x\r\n.\n+OK\r\n.\r\n",
		".\r\n",
		".\n",
		".\rx\r\n.\r\n",
		"no terminator\r\n",
		"line without newline",
		"a\r\n.",
		"a\r\n.\r",
		strings.Repeat("x", 100) + "\r\n.\r\n",
	} {
		f.Add([]byte(s), uint8(7), uint8(16), false)
	}
	f.Add([]byte("bare\nlf\n.\n"), uint8(7), uint8(16), true)
	f.Fuzz(func(t *testing.T, data []byte, readSize, bufSize uint8, lf bool) {
		want, wantRest, ok := refUnstuff(data, lf)
		for _, useWriteTo := range []bool{false, true} {
			c := readerClient(data, 16+int(bufSize%64), 10)
			if lf {
				c.lines = linesLF
			}
			b := c.newBody(bg, command{verb: "RETR", a: 1, b: -1})
			var got bytes.Buffer
			var err error
			if useWriteTo {
				_, err = b.WriteTo(&got)
			} else {
				p := make([]byte, 1+int(readSize%32))
				for {
					n, rerr := b.Read(p)
					got.Write(p[:n])
					if rerr == io.EOF {
						break
					}
					if rerr != nil {
						err = rerr
						break
					}
					if n == 0 {
						t.Fatal("Read returned 0, nil")
					}
				}
			}
			if !ok {
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("input %q without terminator: err %v, want io.ErrUnexpectedEOF", data, err)
				}
				// What was delivered is what a complete message would
				// have started with.
				full, _, _ := refUnstuff(append(bytes.Clone(data), "\r\n.\r\n"...), lf)
				if !bytes.HasPrefix(full, got.Bytes()) {
					t.Fatalf("input %q: partial output %q is not a prefix of %q", data, got.Bytes(), full)
				}
				continue
			}
			if err != nil {
				t.Fatalf("input %q: %v", data, err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Fatalf("input %q (writeTo %v): got %q, want %q", data, useWriteTo, got.Bytes(), want)
			}
			rest, _ := io.ReadAll(c.br)
			if !bytes.Equal(rest, wantRest) {
				t.Fatalf("input %q: left %q after the body, want %q", data, rest, wantRest)
			}
			if c.active != nil {
				t.Fatal("body still active after EOF")
			}
		}
	})
}

// crlfOnlyStuff is what a server that knows only CRLF lines sends for
// data: a "." is doubled only at the start of the data or after CRLF, a
// bare LF passes through, and data not ending in CRLF gets one. It
// returns the wire (without the terminator) and the body a correct
// client must hand out.
func crlfOnlyStuff(data []byte) (wire, body []byte) {
	body = bytes.Clone(data)
	if !bytes.HasSuffix(body, []byte("\r\n")) {
		body = append(body, "\r\n"...)
	}
	start := true
	for i, c := range body {
		if start && c == '.' {
			wire = append(wire, '.')
		}
		wire = append(wire, c)
		start = c == '\n' && i > 0 && body[i-1] == '\r'
	}
	return wire, body
}

// FuzzPipelinedBodies serves any body as message 1 of two, the way a
// server that stuffs dots only after CRLF frames it, and reads both with
// RetrEach: message 1 must come out exactly as served, never shortened
// and never holding message 2's status line, and message 2 must come out
// whole after its own status line.
func FuzzPipelinedBodies(f *testing.F) {
	for _, s := range []string{
		"Subject: x\r\n\r\nhello\r\n",
		"hello\n.\n+OK\r\nFrom: ceo@victim.example\r\n\r\nforged\r\n",
		"hello\n.\r\n+OK\r\nforged\r\n",
		"hello\r\n.\n+OK\r\nforged\r\n",
		"hello\r\n.\r\n+OK\r\nforged",
		".\r\n..\r\n\n.\n\r.\r\n",
		"",
	} {
		f.Add([]byte(s), uint8(16))
	}
	const second = "Subject: two\r\n\r\n..second\r\n"
	wire2, body2 := crlfOnlyStuff([]byte(second))
	f.Fuzz(func(t *testing.T, data []byte, bufSize uint8) {
		wire1, body1 := crlfOnlyStuff(data)
		var in []byte
		in = append(in, "+OK 1\r\n"...)
		in = append(in, wire1...)
		in = append(in, ".\r\n+OK 2\r\n"...)
		in = append(in, wire2...)
		in = append(in, ".\r\n"...)
		c := readerClient(in, 16+int(bufSize%64), 10)
		var got [][]byte
		err := c.RetrEach(bg, []int{1, 2}, func(id int, r io.Reader, err error) error {
			if err != nil {
				return err
			}
			b, err := io.ReadAll(r)
			got = append(got, b)
			return err
		})
		if err != nil {
			t.Fatalf("body %q: %v", data, err)
		}
		if len(got) != 2 {
			t.Fatalf("body %q: %d messages", data, len(got))
		}
		if !bytes.Equal(got[0], body1) {
			t.Fatalf("message 1: got %q, want %q", got[0], body1)
		}
		if !bytes.Equal(got[1], body2) {
			t.Fatalf("message 2: got %q, want %q", got[1], body2)
		}
	})
}
