package deliver_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeIMAP is a scripted IMAP server for the faults Dovecot cannot be made
// to show. It understands what popsync's IMAP target sends (LOGIN,
// AUTHENTICATE, CAPABILITY, APPEND, CREATE, LIST, STATUS, EXAMINE, UID
// SEARCH, UID FETCH, UNSELECT, LOGOUT) as far as these tests need, and
// serves each connection the target dials over net.Pipe.
type fakeIMAP struct {
	t *testing.T
	// caps is the capability list, "IMAP4rev1 ..." (after login too).
	caps string
	// greeting replaces the greeting line when set.
	greeting string
	// appendHook decides the fate of the n-th APPEND (from 0, over all
	// connections); nil stores every message.
	appendHook func(n int, size int64) fakeAppend
	// connHook, when set, decides instead: conn is the connection (from
	// 1, in the order they were dialed), nth the APPEND on it (from 0).
	connHook func(conn, nth int, size int64) fakeAppend
	// afterStore is called when connection conn has stored its nth
	// message.
	afterStore func(conn, nth int)
	// loginHook is called before a login on connection conn is answered.
	loginHook func(conn int)
	// maxConns > 0 greets every connection after that many with BYE,
	// like a provider's limit of simultaneous connections.
	maxConns int
	// afterLogin is sent (untagged) after the tagged OK of a login.
	afterLogin string
	// searchBlind makes UID SEARCH find nothing, like a server whose
	// index has not caught up.
	searchBlind bool
	// injectAfterSTARTTLS makes STARTTLS answer OK followed, in the same
	// write, by plain text (the STARTTLS injection attack). Without it,
	// STARTTLS is refused.
	injectAfterSTARTTLS bool
	// refuseAuth answers every AUTHENTICATE with NO [AUTHENTICATIONFAILED].
	refuseAuth bool

	mu       sync.Mutex
	auth     []string // the decoded SASL responses of the last AUTHENTICATE
	boxes    map[string]*fakeBox
	conns    int
	appends  int
	commands int         // APPEND commands, of one message or several
	stored   map[int]int // messages stored per connection
	creates  int
	logins   int
	logouts  int
	open     int // connections being served
	wg       sync.WaitGroup
	srv      []net.Conn
}

type fakeBox struct {
	uidValidity uint32
	msgs        []fakeMsg
}

type fakeMsg struct {
	uid  uint32
	data []byte
}

// fakeAppend is what the fake does with one APPEND.
type fakeAppend struct {
	// Reply replaces the tagged OK, e.g. "NO [OVERQUOTA] over quota".
	// With a synchronizing literal it comes instead of the continuation.
	Reply string
	// DropAfter > 0 closes the connection after that many octets of the
	// literal, or half of it if it is not longer.
	DropAfter int64
	// Silent reads the message and never answers.
	Silent bool
	// Bye answers with an untagged BYE of this text and closes.
	Bye string
}

func newFakeIMAP(t *testing.T, caps string, boxes ...string) *fakeIMAP {
	f := &fakeIMAP{t: t, caps: caps, boxes: map[string]*fakeBox{}, stored: map[int]int{}}
	for i, b := range boxes {
		f.boxes[b] = &fakeBox{uidValidity: uint32(100 + i)}
	}
	t.Cleanup(func() {
		f.mu.Lock()
		for _, c := range f.srv {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

// dial is IMAPOptions.Dial: each call starts a session of the fake.
func (f *fakeIMAP) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	client, server := net.Pipe()
	f.mu.Lock()
	f.conns++
	id := f.conns
	f.srv = append(f.srv, server)
	f.mu.Unlock()
	f.wg.Go(func() { f.serve(server, id) })
	return client, nil
}

func (f *fakeIMAP) stats() (conns, appends, creates, logins int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns, f.appends, f.creates, f.logins
}

// messages returns the messages stored in box.
func (f *fakeIMAP) messages(box string) [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.boxes[box]
	if b == nil {
		return nil
	}
	var out [][]byte
	for _, m := range b.msgs {
		out = append(out, m.data)
	}
	return out
}

var (
	literalAtEnd = regexp.MustCompile(`\{(\d+)(\+?)\}$`)
	tokenInLine  = regexp.MustCompile(`[a-z2-7]{26}`)
	fieldValue   = regexp.MustCompile(`(?mi)^X-Popsync-Id: (\S+)\r\n`)
)

// storedPer returns how many messages each connection stored.
func (f *fakeIMAP) storedPer() map[int]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.stored)
}

func (f *fakeIMAP) serve(c net.Conn, id int) {
	defer c.Close()
	r := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	send := func(format string, args ...any) bool {
		fmt.Fprintf(w, format+"\r\n", args...)
		return w.Flush() == nil
	}
	greeting := f.greeting
	if greeting == "" {
		greeting = "* OK [CAPABILITY " + f.caps + "] fake ready"
	}
	f.mu.Lock()
	f.open++
	full := f.maxConns > 0 && f.open > f.maxConns
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.open--
		f.mu.Unlock()
	}()
	if full {
		send("* BYE [UNAVAILABLE] too many connections for this account")
		return
	}
	if !send("%s", greeting) {
		return
	}
	var selected *fakeBox
	nth := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		tag, rest, _ := strings.Cut(line, " ")
		verb, args, _ := strings.Cut(rest, " ")
		verb = strings.ToUpper(verb)
		if verb == "UID" {
			verb2, args2, _ := strings.Cut(args, " ")
			verb, args = "UID "+strings.ToUpper(verb2), args2
		}
		switch verb {
		case "STARTTLS":
			if f.injectAfterSTARTTLS {
				send("%s OK begin TLS\r\n* OK injected", tag)
			} else {
				send("%s BAD STARTTLS not offered", tag)
			}
		case "CAPABILITY":
			send("* CAPABILITY %s", f.caps)
			send("%s OK done", tag)
		case "LOGIN":
			f.mu.Lock()
			f.logins++
			f.mu.Unlock()
			send("%s OK logged in", tag)
			if f.afterLogin != "" {
				send("%s", f.afterLogin)
			}
		case "AUTHENTICATE":
			_, ir, hasIR := strings.Cut(args, " ")
			if !hasIR {
				send("+ ")
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				ir = l
			}
			dec, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(ir))
			f.mu.Lock()
			f.auth = []string{string(dec)}
			f.logins++
			hook := f.loginHook
			f.mu.Unlock()
			if hook != nil {
				hook(id)
			}
			if f.refuseAuth {
				send("%s NO [AUTHENTICATIONFAILED] invalid credentials", tag)
				continue
			}
			send("%s OK authenticated", tag)
			if f.afterLogin != "" {
				send("%s", f.afterLogin)
			}
		case "APPEND":
			n, ok := f.doAppend(r, w, send, tag, args, id, nth)
			nth += n
			if !ok {
				return
			}
		case "CREATE":
			name := strings.Trim(args, `"`)
			f.mu.Lock()
			f.creates++
			if f.boxes[name] == nil {
				f.boxes[name] = &fakeBox{uidValidity: 500}
			}
			f.mu.Unlock()
			send("%s OK created", tag)
		case "LIST":
			name := strings.Trim(args[strings.LastIndexByte(args, ' ')+1:], `"`)
			f.mu.Lock()
			exists := f.boxes[name] != nil
			f.mu.Unlock()
			if exists {
				send(`* LIST () "/" %s`, name)
			}
			send("%s OK listed", tag)
		case "STATUS":
			name, _, _ := strings.Cut(args, " ")
			send("* STATUS %s (APPENDLIMIT 500)", name)
			send("%s OK status", tag)
		case "EXAMINE", "SELECT":
			name := strings.Trim(args, `"`)
			f.mu.Lock()
			selected = f.boxes[name]
			var n int
			var v uint32
			if selected != nil {
				n, v = len(selected.msgs), selected.uidValidity
			}
			f.mu.Unlock()
			if selected == nil {
				send("%s NO [NONEXISTENT] no such mailbox", tag)
				continue
			}
			send("* %d EXISTS", n)
			send("* OK [UIDVALIDITY %d] ok", v)
			send("%s OK [READ-ONLY] examined", tag)
		case "UID SEARCH":
			tok := tokenInLine.FindString(args)
			var uids []string
			f.mu.Lock()
			if selected != nil && !f.searchBlind {
				for _, m := range selected.msgs {
					if tok != "" && bytes.Contains(m.data, []byte(tok)) {
						uids = append(uids, strconv.Itoa(int(m.uid)))
					}
				}
			}
			f.mu.Unlock()
			send("* SEARCH %s", strings.Join(uids, " "))
			send("%s OK searched", tag)
		case "UID FETCH", "FETCH":
			bySeq := verb == "FETCH"
			set, _, _ := strings.Cut(args, " ")
			want := map[string]bool{}
			for _, part := range strings.Split(set, ",") {
				lo, hi, isRange := strings.Cut(part, ":")
				if !isRange {
					hi = lo
				}
				a, _ := strconv.Atoi(lo)
				b, _ := strconv.Atoi(hi)
				for u := a; u <= b; u++ {
					want[strconv.Itoa(u)] = true
				}
			}
			f.mu.Lock()
			var out []string
			if selected != nil {
				for i, m := range selected.msgs {
					key := int(m.uid)
					if bySeq {
						key = i + 1
					}
					if !want[strconv.Itoa(key)] {
						continue
					}
					field := ""
					if v := fieldValue.FindSubmatch(m.data); v != nil {
						field = string(v[0])
					}
					field += "\r\n"
					out = append(out, fmt.Sprintf("* %d FETCH (UID %d BODY[HEADER.FIELDS (X-Popsync-Id)] {%d}\r\n%s)", i+1, m.uid, len(field), field))
				}
			}
			f.mu.Unlock()
			for _, o := range out {
				send("%s", o)
			}
			send("%s OK fetched", tag)
		case "UNSELECT", "CLOSE":
			selected = nil
			send("%s OK done", tag)
		case "LOGOUT":
			f.mu.Lock()
			f.logouts++
			f.mu.Unlock()
			send("* BYE logging out")
			send("%s OK bye", tag)
			return
		default:
			send("%s BAD unknown command %s", tag, verb)
		}
	}
}

// doAppend handles one APPEND, of one message or, as MULTIAPPEND (RFC
// 3502), of several: each message is put to the hooks, the first that
// acts decides for the whole command, and the command stores all of its
// messages or none. It returns how many messages went to the hooks;
// false ends the session.
func (f *fakeIMAP) doAppend(r *bufio.Reader, w *bufio.Writer, send func(string, ...any) bool, tag, args string, conn, nth int) (int, bool) {
	m := literalAtEnd.FindStringSubmatch(args)
	if m == nil {
		send("%s BAD no literal", tag)
		return 0, true
	}
	name := strings.Trim(strings.Fields(args)[0], `"`)
	f.mu.Lock()
	f.commands++
	box := f.boxes[name]
	f.mu.Unlock()
	var act fakeAppend
	var msgs [][]byte
	seen := 0 // messages put to the hooks
	for {
		size, _ := strconv.ParseInt(m[1], 10, 64)
		sync := m[2] == ""
		f.mu.Lock()
		n := f.appends
		f.appends++
		hook, connHook := f.appendHook, f.connHook
		f.mu.Unlock()
		var this fakeAppend
		seen++
		switch {
		case connHook != nil:
			this = connHook(conn, nth+seen-1, size)
		case hook != nil:
			this = hook(n, size)
		}
		if act == (fakeAppend{}) {
			act = this
		}
		if act.Reply == "" && box == nil {
			act.Reply = "NO [TRYCREATE] no such mailbox"
		}
		if sync {
			if act.Reply != "" && act.DropAfter == 0 && !act.Silent && act.Bye == "" {
				send("%s %s", tag, act.Reply)
				return seen, true
			}
			send("+ go ahead")
		}
		limit := size
		if act.DropAfter > 0 {
			limit = min(act.DropAfter, size/2)
		}
		data := make([]byte, limit)
		if _, err := io.ReadFull(r, data); err != nil {
			return seen, false
		}
		if act.DropAfter > 0 {
			return seen, false
		}
		msgs = append(msgs, data)
		rest, err := r.ReadString('\n') // CRLF, or the next message
		if err != nil {
			return seen, false
		}
		if m = literalAtEnd.FindStringSubmatch(strings.TrimRight(rest, "\r\n")); m == nil {
			break
		}
	}
	switch {
	case act.Silent:
		// Read on, answer nothing, until the client gives up.
		io.Copy(io.Discard, r)
		return seen, false
	case act.Bye != "":
		send("* BYE %s", act.Bye)
		return seen, false
	case act.Reply != "":
		send("%s %s", tag, act.Reply)
		return seen, true
	}
	f.mu.Lock()
	first := uint32(len(box.msgs) + 1)
	for _, data := range msgs {
		box.msgs = append(box.msgs, fakeMsg{uid: uint32(len(box.msgs) + 1), data: data})
	}
	last := uint32(len(box.msgs))
	f.stored[conn] += len(msgs)
	v := box.uidValidity
	after := f.afterStore
	f.mu.Unlock()
	if after != nil {
		defer func() {
			for k := range msgs {
				after(conn, nth+k)
			}
		}()
	}
	switch {
	case !strings.Contains(f.caps, "UIDPLUS"):
		send("%s OK appended", tag)
	case first == last:
		send("%s OK [APPENDUID %d %d] appended", tag, v, first)
	default:
		send("%s OK [APPENDUID %d %d:%d] appended", tag, v, first, last)
	}
	return seen, true
}

// fakeTimeout is IMAPOptions.Timeout against the fake: short, since the
// timeout tests wait it out, yet long enough for a loaded machine.
const fakeTimeout = 2 * time.Second
