package deliver

import (
	"bytes"
	"io"
	"testing"
)

// lfSample has CRLFs, a lone CR, CR CR LF, LF CR, a bare LF and a CR at the
// very end.
var lfSample = []byte("A: b\r\nC: d\r\rx\r\r\n\r\nbody\n\rline\r\n\r\n.\r\nend\r")

// lfReference is the conversion done in one piece: every CRLF becomes LF,
// scanning left to right, and nothing else changes.
func lfReference(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")) }

// convert feeds chunks through an lfWriter and returns what came out.
func convert(t *testing.T, chunks ...[]byte) []byte {
	t.Helper()
	var out bytes.Buffer
	c := lfWriter{w: &out}
	for _, ch := range chunks {
		n, err := c.Write(ch)
		if err != nil || n != len(ch) {
			t.Fatalf("Write(%q) = %d, %v", ch, n, err)
		}
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if c.n != int64(out.Len()) {
		t.Errorf("counted %d bytes, wrote %d", c.n, out.Len())
	}
	return out.Bytes()
}

func TestLFWriterEverySplit(t *testing.T) {
	want := lfReference(lfSample)
	if got := convert(t, lfSample); !bytes.Equal(got, want) {
		t.Fatalf("whole: got %q, want %q", got, want)
	}
	for i := 0; i <= len(lfSample); i++ {
		for j := i; j <= len(lfSample); j++ {
			got := convert(t, lfSample[:i], lfSample[i:j], lfSample[j:])
			if !bytes.Equal(got, want) {
				t.Fatalf("split at %d and %d: got %q, want %q", i, j, got, want)
			}
		}
	}
	var ones [][]byte
	for i := range lfSample {
		ones = append(ones, lfSample[i:i+1])
	}
	if got := convert(t, ones...); !bytes.Equal(got, want) {
		t.Fatalf("1-byte chunks: got %q, want %q", got, want)
	}
}

func TestLFWriterCases(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"\r", "\r"},
		{"\n", "\n"},
		{"\r\n", "\n"},
		{"\r\r\n", "\r\n"},
		{"\n\r", "\n\r"},
		{"a\rb", "a\rb"},
		{"a\r\n\r\nb", "a\n\nb"},
		{"a\r", "a\r"},
	} {
		if got := convert(t, []byte(tc.in)); string(got) != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

// errWriter accepts limit bytes, then fails.
type errWriter struct{ limit int }

func (w *errWriter) Write(p []byte) (int, error) {
	if len(p) <= w.limit {
		w.limit -= len(p)
		return len(p), nil
	}
	n := w.limit
	w.limit = 0
	return n, io.ErrShortWrite
}

func TestLFWriterError(t *testing.T) {
	c := lfWriter{w: &errWriter{limit: 3}}
	n, err := c.Write([]byte("ab\r\ncd\r\nef"))
	if err == nil {
		t.Fatal("no error from a failing writer")
	}
	if n >= 10 {
		t.Errorf("reported %d bytes consumed of 10 after an error", n)
	}
	if c.n != 3 {
		t.Errorf("counted %d bytes passed on, want 3", c.n)
	}
}

func FuzzLFWriter(f *testing.F) {
	f.Add(lfSample, uint8(3))
	f.Add([]byte("\r\r\r\n\n"), uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		size := int(step)%17 + 1
		var chunks [][]byte
		for p := in; len(p) > 0; {
			n := min(size, len(p))
			chunks = append(chunks, p[:n])
			p = p[n:]
		}
		if got, want := convert(t, chunks...), lfReference(in); !bytes.Equal(got, want) {
			t.Fatalf("chunks of %d: got %q, want %q", size, got, want)
		}
	})
}

func BenchmarkLFWriter(b *testing.B) {
	msg := benchMessage()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		c := lfWriter{w: io.Discard}
		c.Write(msg)
		c.Flush()
	}
}
