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
// (RFC 1939 §3): split into lines ending in LF, a line "." + CRLF or "." +
// LF ends the body, one leading "." is removed from other lines. ok is
// false when the data ends before the terminator.
func refUnstuff(data []byte) (body, rest []byte, ok bool) {
	body = []byte{}
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return body, nil, false
		}
		line := data[:i+1]
		data = data[i+1:]
		if string(line) == ".\r\n" || string(line) == ".\n" {
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
		"bare\nlf\n.\n",
		".\r\n",
		".\n",
		".\rx\r\n.\r\n",
		"no terminator\r\n",
		"line without newline",
		"a\r\n.",
		"a\r\n.\r",
		strings.Repeat("x", 100) + "\r\n.\r\n",
	} {
		f.Add([]byte(s), uint8(7), uint8(16))
	}
	f.Fuzz(func(t *testing.T, data []byte, readSize, bufSize uint8) {
		want, wantRest, ok := refUnstuff(data)
		for _, useWriteTo := range []bool{false, true} {
			c := readerClient(data, 16+int(bufSize%64), 10)
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
				full, _, _ := refUnstuff(append(bytes.Clone(data), "\r\n.\r\n"...))
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
