package deliver

import (
	"io"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// TestIMAPMuxSplitsReplies: the mux takes out exactly the tagged replies
// to the target's own commands, and hands go-imap every other byte
// unchanged, also a literal whose content looks like such a reply, in
// reads of any size.
func TestIMAPMuxSplitsReplies(t *testing.T) {
	literal := "P1 OK fake\r\nP2 NO inside a literal\r\n"
	stream := "* OK hello\r\n" +
		"P1 OK [APPENDUID 7 3:5] done\r\n" +
		"* 1 FETCH (BODY[] {" + strconv.Itoa(len(literal)) + "}\r\n" + literal + ")\r\n" +
		"T4 OK fetched\r\n" +
		"P9 OK not ours: nobody waits for it\r\n" +
		"P2 NO [TRYCREATE] no mailbox\r\n" +
		"* BYE\r\n"
	want := "* OK hello\r\n" +
		"* 1 FETCH (BODY[] {" + strconv.Itoa(len(literal)) + "}\r\n" + literal + ")\r\n" +
		"T4 OK fetched\r\n" +
		"P9 OK not ours: nobody waits for it\r\n" +
		"* BYE\r\n"
	for _, chunk := range []int{1, 3, 7, 4096} {
		client, server := net.Pipe()
		m := newIMAPMux(client)
		_, ch1, _ := m.register()
		_, ch2, _ := m.register()
		go func() {
			server.Write([]byte(stream))
			server.Close()
		}()
		var got []byte
		buf := make([]byte, chunk)
		for {
			n, err := m.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		if string(got) != want {
			t.Errorf("reads of %d: go-imap got\n%q\nwant\n%q", chunk, got, want)
		}
		for i, ch := range []chan imapReply{ch1, ch2} {
			select {
			case r := <-ch:
				if r.err != nil || r.line[:2] != "P"+strconv.Itoa(i+1) {
					t.Errorf("reads of %d: reply %d: %+v", chunk, i+1, r)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("reads of %d: no reply %d", chunk, i+1)
			}
		}
		// The stream has ended: a command registered now fails.
		if _, _, err := m.register(); err == nil {
			t.Errorf("register after the end: no error")
		}
		m.Close()
	}
}

// TestIMAPMuxEndFailsWaiters: a connection that ends wakes every command
// still waiting for its reply, with the reason.
func TestIMAPMuxEndFailsWaiters(t *testing.T) {
	client, server := net.Pipe()
	m := newIMAPMux(client)
	_, ch, _ := m.register()
	server.Close()
	go io.Copy(io.Discard, m)
	select {
	case r := <-ch:
		if r.err == nil {
			t.Errorf("reply %+v, want an error", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting command was not woken")
	}
}

func TestParseAppendReply(t *testing.T) {
	cases := []struct {
		line string
		uv   uint32
		uids []uint32
		typ  imap.StatusResponseType
		code imap.ResponseCode
	}{
		{"P1 OK [APPENDUID 38505 3955] APPEND completed", 38505, []uint32{3955}, "", ""},
		{"P1 OK [APPENDUID 38505 3955:3957,3960] done", 38505, []uint32{3955, 3956, 3957, 3960}, "", ""},
		{"P1 OK [APPENDUID 38505 3957:3955] done", 38505, []uint32{3955, 3956, 3957}, "", ""},
		{"P1 ok [appenduid 1 2] done", 1, []uint32{2}, "", ""},
		{"P1 OK done", 0, nil, "", ""},
		{"P1 OK [APPENDUID x 1] done", 0, nil, "", ""},
		{"P1 OK [APPENDUID 1 1:100000] done", 0, nil, "", ""},
		{"P1 NO [TRYCREATE] Mailbox doesn't exist", 0, nil, imap.StatusResponseTypeNo, imap.ResponseCodeTryCreate},
		{"P1 NO [OVERQUOTA] Quota exceeded", 0, nil, imap.StatusResponseTypeNo, imap.ResponseCodeOverQuota},
		{"P1 NO refused", 0, nil, imap.StatusResponseTypeNo, ""},
		{"P1 BAD [CLIENTBUG] parse error", 0, nil, imap.StatusResponseTypeBad, imap.ResponseCodeClientBug},
		{"P1 BYE what", 0, nil, imap.StatusResponseTypeBad, ""},
	}
	for _, tc := range cases {
		uv, uids, ie := parseAppendReply(tc.line)
		if uv != tc.uv || !slices.Equal(uids, tc.uids) {
			t.Errorf("%q: APPENDUID %d %v, want %d %v", tc.line, uv, uids, tc.uv, tc.uids)
		}
		switch {
		case tc.typ == "" && ie != nil:
			t.Errorf("%q: %v, want OK", tc.line, ie)
		case tc.typ != "" && (ie == nil || ie.Type != tc.typ || ie.Code != tc.code):
			t.Errorf("%q: %+v, want %s [%s]", tc.line, ie, tc.typ, tc.code)
		}
	}
}
