package deliver

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newSpoolTarget(t *testing.T) *IMAP {
	t.Helper()
	tg, err := NewIMAP(IMAPOptions{Addr: "127.0.0.1:1", TLS: TLSNone, SpoolDir: filepath.Join(t.TempDir(), "spool")})
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// TestIMAPSpoolLineEndings writes lfSample split at every pair of points:
// the spool holds the token field, then the bytes with each bare LF as
// CRLF and everything else (lone CRs, CR CR LF) unchanged; Size counts
// exactly that.
func TestIMAPSpoolLineEndings(t *testing.T) {
	tg := newSpoolTarget(t)
	want := crlfReference(lfSample)
	for i := 0; i <= len(lfSample); i++ {
		for j := i; j <= len(lfSample); j++ {
			d, err := tg.spool.create(tg)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range [][]byte{lfSample[:i], lfSample[i:j], lfSample[j:]} {
				if n, err := d.Write(p); err != nil || n != len(p) {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(d.path)
			if err != nil {
				t.Fatal(err)
			}
			head := "X-Popsync-Id: " + d.Token() + "\r\n"
			if !bytes.Equal(got, append([]byte(head), want...)) {
				t.Fatalf("split %d/%d: spool holds %q, want %q", i, j, got, want)
			}
			if d.Size() != int64(len(got)) {
				t.Fatalf("Size() = %d, file has %d bytes", d.Size(), len(got))
			}
			if err := d.Abort(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(d.path); !os.IsNotExist(err) {
				t.Fatalf("spool file left after Abort: %v", err)
			}
		}
	}
}

// crlfReference turns each LF not preceded by CR into CRLF.
func crlfReference(b []byte) []byte {
	var out []byte
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

func TestIMAPInternalDate(t *testing.T) {
	now := time.Date(2025, 12, 3, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		header string
		want   time.Time
	}{
		{"Date: Tue, 2 Dec 2025 10:00:00 +0100\r\n", time.Date(2025, 12, 2, 9, 0, 0, 0, time.UTC)},
		{"Received: from a\r\n\tby b; Mon, 1 Dec 2025 08:00:00 +0000\r\nDate: Sun, 30 Nov 2025 20:00:00 -0500\r\n", time.Date(2025, 12, 1, 1, 0, 0, 0, time.UTC)},
		{"Received: from a\r\n\tby b; Mon, 1 Dec 2025 08:00:00 +0000\r\nReceived: x; Sun, 30 Nov 2025 08:00:00 +0000\r\n", time.Date(2025, 12, 1, 8, 0, 0, 0, time.UTC)},
		{"Date: garbage\r\nReceived: by b; Mon, 1 Dec 2025 08:00:00 +0000\r\n", time.Date(2025, 12, 1, 8, 0, 0, 0, time.UTC)},
		{"Date: Fri, 1 Jan 2100 00:00:00 +0000\r\n", time.Time{}}, // a wrong clock
		{"Subject: nothing\r\n", time.Time{}},
		{"Received: no date here\r\n", time.Time{}},
	}
	for _, c := range cases {
		got := internalDate([]byte(c.header+"\r\nbody\r\n"), now)
		if !got.Equal(c.want) {
			t.Errorf("%q: %v, want %v", c.header, got, c.want)
		}
	}
}

func TestIMAPOptionsRefused(t *testing.T) {
	dir := t.TempDir()
	for _, o := range []IMAPOptions{
		{Addr: "imap.example.net", SpoolDir: dir},
		{Addr: "imap.example.net:0", SpoolDir: dir},
		{Addr: "imap.example.net:993"},
		{Addr: "imap.example.net:993", SpoolDir: dir, TLS: "ssl"},
		{Addr: "imap.example.net:993", SpoolDir: dir, Auth: "cram-md5"},
		{Addr: "imap.example.net:993", SpoolDir: dir, User: "me"},
		{Addr: "imap.example.net:993", SpoolDir: dir, InternalDate: "sent"},
		{Addr: "imap.example.net:993", SpoolDir: dir, Mailbox: "a\r\nb"},
		{Addr: "imap.example.net:993", SpoolDir: dir, Flags: []string{`\Recent`}},
		{Addr: "imap.example.net:993", SpoolDir: dir, Flags: []string{"bad flag"}},
	} {
		if _, err := NewIMAP(o); err == nil {
			t.Errorf("NewIMAP(%+v) succeeded", o)
		}
	}
}

func TestIMAPTokens(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		tok := newIMAPToken()
		if !validIMAPToken(tok) || seen[tok] {
			t.Fatalf("token %q invalid or repeated", tok)
		}
		seen[tok] = true
	}
	for _, bad := range []string{"", ".", "../x", strings.Repeat("a", 25), strings.Repeat("A", 26), strings.Repeat("a", 25) + "1"} {
		if validIMAPToken(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestIMAPObserver: BYE and ALERT lines are logged, the same words inside
// a literal are not, however the bytes are split.
func TestIMAPObserver(t *testing.T) {
	stream := "* OK [CAPABILITY IMAP4rev1] hi\r\n" +
		"* 1 FETCH (BODY[] {30}\r\n* BYE inside a message body\r\n)\r\n" +
		"* OK [ALERT] quota at 95%\r\n" +
		"T3 NO [ALERT] account locked\r\n" +
		"* BYE going away\r\n"
	for split := 1; split <= len(stream); split++ {
		var log bytes.Buffer
		o := &imapObserver{log: slog.New(slog.NewTextHandler(&log, nil))}
		for p := []byte(stream); len(p) > 0; {
			n := min(split, len(p))
			o.observe(p[:n])
			p = p[n:]
		}
		got := log.String()
		for _, want := range []string{"quota at 95%", "account locked", "going away"} {
			if !strings.Contains(got, want) {
				t.Fatalf("split %d: %q not logged:\n%s", split, want, got)
			}
		}
		if strings.Contains(got, "inside a message body") {
			t.Fatalf("split %d: literal content logged:\n%s", split, got)
		}
	}
}

func FuzzIMAPObserver(f *testing.F) {
	f.Add([]byte("* BYE x\r\n* 1 FETCH (BODY[] {5}\r\nab\r\nc)\r\n* OK [ALERT] y\r\n"), 3)
	f.Add([]byte("{99999999999999999999}\r\n"), 1)
	f.Fuzz(func(t *testing.T, data []byte, split int) {
		o := &imapObserver{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		split = max(1, split%64+1)
		for p := data; len(p) > 0; {
			n := min(split, len(p))
			o.observe(p[:n])
			p = p[n:]
		}
		if len(o.line) > maxObservedLine || o.skip < 0 {
			t.Fatalf("line %d bytes, skip %d", len(o.line), o.skip)
		}
	})
}
