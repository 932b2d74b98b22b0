package deliver

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"net/textproto"
	"strings"
	"testing"
)

// FuzzCRLFDot: whatever the message and however it is split into
// Writes, crlfWriter in front of textproto's dot writer puts no bare CR
// or LF on the wire, no line "." before the terminator, and the
// unstuffed data is the message with each bare CR and LF as CRLF.
func FuzzCRLFDot(f *testing.F) {
	for _, s := range []string{"\r.\r\n", "\n.\r\n", "\r\n.\r", "\r.\n", "\n.\n", ".\r", "\r", "a\r\r\n.\r\r\n", ""} {
		f.Add([]byte(s), uint64(1))
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = "\r\n.a"[r.IntN(4)]
		}
		f.Add(b, r.Uint64())
	}
	f.Fuzz(func(t *testing.T, msg []byte, seed uint64) {
		var wire bytes.Buffer
		bw := bufio.NewWriter(&wire)
		dw := textproto.NewWriter(bw).DotWriter()
		cw := crlfWriter{w: dw}
		r := rand.New(rand.NewPCG(seed, 0))
		for rest := msg; len(rest) > 0; {
			n := 1 + r.IntN(len(rest))
			if _, err := cw.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		if err := cw.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := dw.Close(); err != nil {
			t.Fatal(err)
		}
		bw.Flush()
		out := wire.Bytes()
		if !bytes.HasSuffix(out, []byte(".\r\n")) {
			t.Fatalf("no terminator: %q", out)
		}
		body := out[:len(out)-3]
		for i, c := range body {
			if c == '\r' && (i+1 >= len(body) || body[i+1] != '\n') || c == '\n' && (i == 0 || body[i-1] != '\r') {
				t.Fatalf("bare %q at %d in %q (from %q)", c, i, out, msg)
			}
		}
		lines := strings.Split(string(body), "\r\n")
		for i, l := range lines {
			if l == "." {
				t.Fatalf("line %d is \".\" in %q (from %q)", i, out, msg)
			}
			lines[i] = strings.TrimPrefix(l, ".")
		}
		want := strings.NewReplacer("\r\n", "\r\n", "\r", "\r\n", "\n", "\r\n").Replace(string(msg))
		if !strings.HasSuffix(want, "\r\n") { // textproto ends even an empty message with CRLF
			want += "\r\n"
		}
		if got := strings.Join(lines, "\r\n"); got != want {
			t.Fatalf("unstuffed %q, want %q (from %q)", got, want, msg)
		}
	})
}
