package pop3

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
)

// wireMessage returns a RETR reply of about size octets of message: 76
// character lines, every tenth starting with "." (so stuffed on the wire).
func wireMessage(size int) []byte {
	var b bytes.Buffer
	b.Grow(size + size/70 + 16)
	b.WriteString("+OK message follows\r\n")
	line := []byte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmn\r\n")
	n := 0
	for i := 0; n < size; i++ {
		if i%10 == 0 {
			b.WriteByte('.') // the stuffing byte
		}
		if i%10 == 0 || i%10 == 5 {
			b.WriteByte('.') // a line that starts with "." in the message
		}
		b.Write(line)
		n += len(line)
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

// benchServer answers CAPA and then every RETR with msg, on loopback TCP,
// without allocating per message (its allocations would count too).
func benchServer(b *testing.B, msg []byte, pipelining bool) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	capa := "+OK\r\nUIDL\r\n.\r\n"
	if pipelining {
		capa = "+OK\r\nUIDL\r\nPIPELINING\r\n.\r\n"
	}
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		w := bufio.NewWriterSize(conn, 64<<10)
		w.WriteString("+OK bench ready\r\n")
		w.Flush()
		for {
			line, err := r.ReadSlice('\n')
			if err != nil {
				return
			}
			switch {
			case bytes.HasPrefix(line, []byte("CAPA")):
				w.WriteString(capa)
			case bytes.HasPrefix(line, []byte("RETR")):
				w.Write(msg)
			case bytes.HasPrefix(line, []byte("QUIT")):
				w.WriteString("+OK\r\n")
				w.Flush()
				return
			default:
				w.WriteString("-ERR\r\n")
			}
			// Answer everything that arrived together in one go, as a
			// pipelining server does.
			if r.Buffered() == 0 {
				if err := w.Flush(); err != nil {
					return
				}
			}
		}
	}()
	return l.Addr().String()
}

// BenchmarkRetr streams one RETR at a time over loopback TCP. allocs/op is
// the same for every size: memory does not grow with the message.
func BenchmarkRetr(b *testing.B) {
	for _, size := range []int{2 << 10, 1 << 20, 100 << 20} {
		b.Run(sizeName(size), func(b *testing.B) {
			msg := wireMessage(size)
			c, err := Dial(bg, benchServer(b, msg, false), Options{Security: SecurityNone})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Quit(bg)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				r, err := c.Retr(bg, 1)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRetrEach fetches batches of 100 small messages pipelined; the
// lockstep variant shows what PIPELINING saves in round trips.
func BenchmarkRetrEach(b *testing.B) {
	for _, pipelining := range []bool{true, false} {
		name := "lockstep"
		if pipelining {
			name = "pipelined"
		}
		b.Run(name, func(b *testing.B) {
			const size, batch = 2 << 10, 100
			msg := wireMessage(size)
			c, err := Dial(bg, benchServer(b, msg, pipelining), Options{Security: SecurityNone})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Quit(bg)
			ids := seq(batch)
			fn := func(id int, body io.Reader, err error) error {
				if err != nil {
					return err
				}
				_, err = io.Copy(io.Discard, body)
				return err
			}
			b.SetBytes(size * batch)
			b.ReportAllocs()
			for b.Loop() {
				if err := c.RetrEach(bg, ids, fn); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%dMB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%dKB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
