package deliver

import (
	"bytes"
	"testing"
)

func TestParsePath(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"<a@example.net>", "a@example.net", true},
		{"  <a@example.net>  ", "a@example.net", true},
		{"<>", "", true},
		{" <> ", "", true},
		{"a@example.net", "a@example.net", true},
		{"<@relay.example,@other.example:a@example.net>", "a@example.net", true},
		{"<user@[192.0.2.1]>", "user@[192.0.2.1]", true},
		{"<josé@example.net>", "josé@example.net", true},
		{"", "", false},
		{"<a@example.net", "", false},
		{"<a@example.net> trailing", "", false},
		{"<a b@example.net>", "", false},
		{"<\"q\"@example.net>", "", false},
		{"<nodomain>", "", false},
		{"<a@>", "", false},
		{"<@example.net>", "", false},
		{"<a@example.net> (comment)", "", false},
		{"<a\x00@example.net>", "", false},
		{"<" + string(bytes.Repeat([]byte("a"), 300)) + "@example.net>", "", false},
	}
	for _, tc := range tests {
		got, ok := parsePath(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parsePath(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestReturnPath(t *testing.T) {
	tests := []struct {
		header string
		want   string
		ok     bool
	}{
		{"Return-Path: <a@example.net>\r\n\r\n", "a@example.net", true},
		{"Received: x\r\n y\r\nRETURN-PATH : <a@example.net>\r\n", "a@example.net", true},
		{"Return-Path:\r\n\t<folded@example.net>\r\n", "folded@example.net", true},
		{"Return-Path: <a@example.net>\nLF: only\n\n", "a@example.net", true},
		{"X-Return-Path: <no@example.net>\r\n", "", false},
		{"Subject: x\r\n Return-Path: <continuation@example.net>\r\n", "", false},
		{"", "", false},
		{"Return-Path: <>\r\n", "", true},
	}
	for _, tc := range tests {
		got, ok := returnPath([]byte(tc.header))
		if got != tc.want || ok != tc.ok {
			t.Errorf("returnPath(%q) = %q, %v; want %q, %v", tc.header, got, ok, tc.want, tc.ok)
		}
	}
}

func TestHeaderBuf(t *testing.T) {
	msg := []byte("A: 1\r\nB: 2\r\n\r\nbody\r\n")
	for _, chunk := range []int{1, 2, 5, len(msg)} {
		h := newHeaderBuf(0)
		taken := 0
		for p := msg; len(p) > 0 && !h.done; {
			n := min(chunk, len(p))
			k := h.add(p[:n])
			taken += k
			p = p[k:]
			if k < n {
				break
			}
		}
		if !h.done || string(h.header()) != "A: 1\r\nB: 2\r\n\r\n" {
			t.Errorf("chunk %d: done %v header %q", chunk, h.done, h.header())
		}
		if !bytes.Equal(h.buf, msg[:taken]) {
			t.Errorf("chunk %d: held %q, took %d", chunk, h.buf, taken)
		}
	}

	// An empty header section: the message starts with the empty line.
	h := newHeaderBuf(0)
	h.add([]byte("\nbody"))
	if !h.done || string(h.header()) != "\n" {
		t.Errorf("empty header: done %v header %q", h.done, h.header())
	}

	// The limit: at most max bytes are held; the header is incomplete.
	h = newHeaderBuf(10)
	if n := h.add([]byte("X: 0123456789\r\n\r\n")); n != 10 || !h.done || h.complete(false) || !h.complete(true) {
		t.Errorf("limit: took %d done %v complete %v", n, h.done, h.complete(false))
	}
	if n := h.add([]byte("more")); n != 0 {
		t.Errorf("took %d after done", n)
	}
}

// FuzzHeaderBuf: whatever the bytes and however they are split, the held
// bytes are a prefix of the message, the header section found ends at the
// first empty line, and parsing it does not panic.
func FuzzHeaderBuf(f *testing.F) {
	f.Add([]byte("Return-Path: <a@example.net>\r\nSubject: x\r\n\r\nbody\r\n"), 3, 64)
	f.Add([]byte("Return-Path:\r\n <@r.example:a@example.net>\r\n\r\n"), 1, 10)
	f.Add([]byte("\r\n\r\n"), 1, 1)
	f.Add([]byte("Return-Path: <>\n\n"), 7, 100)
	f.Fuzz(func(t *testing.T, msg []byte, chunk, max int) {
		if chunk <= 0 || chunk > 1<<16 || max <= 0 || max > 1<<20 {
			return
		}
		h := newHeaderBuf(max)
		taken := 0
		for p := msg; len(p) > 0 && !h.done; {
			n := min(chunk, len(p))
			k := h.add(p[:n])
			taken += k
			p = p[k:]
		}
		if !bytes.Equal(h.buf, msg[:taken]) || len(h.buf) > max {
			t.Fatalf("held %q of %q (max %d)", h.buf, msg, max)
		}
		hdr := h.header()
		if h.end >= 0 {
			if !bytes.HasSuffix(hdr, []byte("\n")) {
				t.Fatalf("header %q does not end a line", hdr)
			}
			// No earlier empty line.
			body := hdr[:len(hdr)-1]
			body = bytes.TrimSuffix(body, []byte("\r"))
			if bytes.Contains(body, []byte("\n\n")) || bytes.Contains(body, []byte("\n\r\n")) || bytes.HasPrefix(hdr, []byte("\n")) && len(hdr) > 1 {
				t.Fatalf("header %q holds an earlier empty line", hdr)
			}
		}
		if addr, ok := returnPath(hdr); ok {
			if !validAddr(addr) || addr != "" && !bytes.Contains([]byte(addr), []byte("@")) {
				t.Fatalf("returnPath gave %q", addr)
			}
		}
	})
}
