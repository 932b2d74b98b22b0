package deliver_test

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"popsync/deliver"
)

// recConn records every byte the client writes, as it goes on the wire.
type recConn struct {
	net.Conn
	mu  *sync.Mutex
	out *bytes.Buffer
}

func (c recConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.out.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// dataSections returns the DATA payloads of a client transcript: what
// follows each "DATA\r\n" up to and including the first "\r\n.\r\n".
func dataSections(t *testing.T, wire []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for {
		i := bytes.Index(wire, []byte("\r\nDATA\r\n"))
		if i < 0 {
			return out
		}
		wire = wire[i+len("\r\nDATA\r\n"):]
		j := bytes.Index(wire, []byte("\r\n.\r\n"))
		if j < 0 {
			t.Fatalf("DATA never ended on the wire: %q", wire)
		}
		out = append(out, wire[:j+len("\r\n.\r\n")])
		wire = wire[j+len("\r\n.\r\n"):]
	}
}

// TestSMTPNoEarlyDataEnd sends messages with every mix of CR, LF and dot
// that could end DATA on a server that splits lines at CR, at LF or at
// CRLF, in one Write and byte by byte, and reads the client's bytes on
// the wire: no bare CR or LF is left, so every reading of line ends agrees,
// and the only line "." is the final one.
func TestSMTPNoEarlyDataEnd(t *testing.T) {
	m := newTCPMTA(t, nil)
	var mu sync.Mutex
	var wire bytes.Buffer
	tg := newSMTP(t, deliver.SMTPOptions{Addr: m.Addr, Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return recConn{Conn: c, mu: &mu, out: &wire}, nil
	}})
	bodies := []string{
		"a\r.\r\nMAIL FROM:<evil@example.net>\r\n",
		"a\n.\r\nsmuggled\r\n",
		"a\r\n.\rsmuggled\r\n",
		"a\r.\nsmuggled\r\n",
		"a\n.\nsmuggled\r\n",
		"a\r.\rsmuggled\r\n",
		".\rat the start\r\n",
		"a\r\r\n.\r\r\n",
		"a\r\n.\r",  // ends in a bare CR after a dot
		"a\r\n.\n",  // ends in a bare LF after a dot
		"a\r\n.",    // ends in a dot
		"\r\r\r.\r", // CRs only
	}
	var wantData []string
	for _, chunked := range []bool{false, true} {
		for _, b := range bodies {
			msg := []byte("Subject: smuggling\r\n\r\n" + b)
			d, err := tg.Begin(context.Background(), deliver.Meta{})
			if err != nil {
				t.Fatal(err)
			}
			parts := [][]byte{msg}
			if chunked {
				parts = nil
				for i := range msg {
					parts = append(parts, msg[i:i+1])
				}
			}
			for _, p := range parts {
				if _, err := d.Write(p); err != nil {
					t.Fatal(err)
				}
			}
			if err := d.Close(); err != nil {
				t.Fatalf("%q: %v", b, err)
			}
			// What the server must keep: each bare CR or LF as CRLF.
			norm := strings.NewReplacer("\r\n", "\r\n", "\r", "\r\n", "\n", "\r\n").Replace(string(msg))
			// Size counts the message, not the CRLF the dot writer
			// adds to a last line without one.
			if d.Size() != int64(len(norm)) {
				t.Errorf("%q: Size() = %d, want %d", b, d.Size(), len(norm))
			}
			if !strings.HasSuffix(norm, "\r\n") {
				norm += "\r\n"
			}
			wantData = append(wantData, norm)
		}
	}
	mu.Lock()
	sections := dataSections(t, wire.Bytes())
	mu.Unlock()
	if len(sections) != len(wantData) {
		t.Fatalf("%d DATA sections on the wire, want %d", len(sections), len(wantData))
	}
	for i, sec := range sections {
		body := sec[:len(sec)-len(".\r\n")]
		// Every CR is followed by LF and every LF preceded by CR.
		for j, c := range body {
			if c == '\r' && (j+1 >= len(body) || body[j+1] != '\n') || c == '\n' && (j == 0 || body[j-1] != '\r') {
				t.Errorf("message %d: bare %q at offset %d on the wire: %q", i, c, j, sec)
			}
		}
		// Split at CR, at LF and at CRLF alike: no line "." but the last.
		lines := strings.FieldsFunc(string(sec), func(r rune) bool { return r == '\r' || r == '\n' })
		for j, l := range lines[:len(lines)-1] {
			if l == "." {
				t.Errorf("message %d: line %d is \".\" before the end of DATA: %q", i, j, sec)
			}
		}
		if lines[len(lines)-1] != "." {
			t.Errorf("message %d: DATA does not end with \".\": %q", i, sec)
		}
	}
	got := m.messages()
	if len(got) != len(wantData) {
		t.Fatalf("server kept %d messages, want %d", len(got), len(wantData))
	}
	for i := range got {
		if string(got[i]) != wantData[i] {
			t.Errorf("message %d: server kept %q, want %q", i, got[i], wantData[i])
		}
	}
}
