package deliver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/emersion/go-imap/v2"
)

// MULTIAPPEND (RFC 3502) puts many messages into the mailbox with one
// command, which the server stores in one transaction: Dovecot spends
// about a seventh of the CPU per message that one APPEND each costs it,
// since it syncs the mailbox's index once per command. go-imap's client
// sends one message per APPEND, so the target writes these commands
// itself, on the same connection, and reads their tagged replies off the
// stream before go-imap sees it (imapMux). That takes only the narrow
// part of the protocol such a command needs:
//
//   - it is used only where the server offers MULTIAPPEND and LITERAL+
//     (RFC 7888), so every literal is non-synchronizing and the server
//     sends nothing but the tagged reply: no continuation to wait for;
//   - only for a mailbox name of printable ASCII, sent as a quoted
//     string (RFC 3501 §4.3); another name goes message by message
//     through go-imap, which encodes it (modified UTF-7, §5.1.3);
//   - the reply's status, response code and APPENDUID (RFC 4315 §3) are
//     all it reads of it.
//
// The operation is atomic: either every message of the command is
// appended or none is (RFC 3502 §6.3.11). So a refusal of a command of
// several messages says nothing about which one the server did not want,
// and the messages are sent again one per command, which the server
// judges one by one.

// imapMultiMax and imapMultiBytes bound one MULTIAPPEND command: a
// connection lost in the middle of one leaves every message of it of
// unknown fate, to be looked for in the mailbox by the next poll.
const (
	imapMultiMax   = 64
	imapMultiBytes = 16 << 20
)

// imapMultiWindow is how many MULTIAPPEND commands one connection has in
// flight at most: enough that the server never waits for the next one.
const imapMultiWindow = 4

// multiTagPrefix starts the tags of the commands the target writes
// itself; go-imap's own tags start with "T", so a tagged reply starting
// with this letter is never one go-imap waits for.
const multiTagPrefix = "P"

// imapMux stands between the connection and go-imap's client and takes
// out of the server's stream the tagged replies to the target's own
// commands (multiTagPrefix), handing everything else on byte for byte.
// It splits the stream into lines and steps over the octets of literals
// ({n} at the end of a line, RFC 3501 §4.3), so that a message's content
// is never mistaken for a reply. Its Read runs on go-imap's reader
// goroutine, which reads without pause for as long as the client lives.
type imapMux struct {
	net.Conn
	br *bufio.Reader

	// Used by Read only.
	out     []byte // bytes of the current line for go-imap
	skip    int64  // literal octets still to hand on
	midLine bool   // the current line began in an earlier chunk
	tail    []byte // the last bytes of the current line, for {n}
	rerr    error  // the read error after out

	// wmu keeps go-imap's writes out of the target's own commands:
	// go-imap may send a command on its own at any time (it asks for
	// the capabilities again after a login, from a goroutine of its own).
	wmu sync.Mutex

	mu      sync.Mutex
	seq     int
	pending map[string]chan imapReply
	err     error // set: the stream ended; no more replies come
}

// imapReply is the tagged reply to one of the target's own commands, or
// why none will come.
type imapReply struct {
	line string
	err  error
}

// maxMuxLine bounds the bytes of a line that the mux holds at once; a
// longer line is handed on in pieces.
const maxMuxLine = 16 << 10

func newIMAPMux(c net.Conn) *imapMux {
	return &imapMux{Conn: c, br: bufio.NewReaderSize(c, maxMuxLine), pending: map[string]chan imapReply{}}
}

func (m *imapMux) Read(p []byte) (int, error) {
	for {
		if len(m.out) > 0 {
			n := copy(p, m.out)
			m.out = m.out[n:]
			return n, nil
		}
		if m.rerr != nil {
			return 0, m.rerr
		}
		if m.skip > 0 {
			n, err := m.br.Read(p[:min(int64(len(p)), m.skip)])
			m.skip -= int64(n)
			if err != nil {
				m.fail(err)
			}
			return n, err
		}
		line, err := m.br.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			m.keepTail(line)
			m.midLine = true
			m.out = line
			continue
		case err != nil:
			m.fail(err)
			m.out, m.rerr = line, err
			continue
		}
		if !m.midLine && bytes.HasPrefix(line, []byte(multiTagPrefix)) && m.deliver(line) {
			continue
		}
		m.keepTail(line)
		m.skip = literalAtLineEnd(m.tail)
		m.midLine, m.tail = false, m.tail[:0]
		m.out = line
	}
}

// keepTail remembers the last bytes of the current line, enough for the
// largest literal size.
func (m *imapMux) keepTail(b []byte) {
	const keep = 32
	m.tail = append(m.tail, b[max(0, len(b)-keep):]...)
	if len(m.tail) > keep {
		m.tail = append(m.tail[:0], m.tail[len(m.tail)-keep:]...)
	}
}

// literalAtLineEnd returns the size of the literal that a line ending in
// "{n}" CRLF announces (RFC 3501 §4.3), or 0.
func literalAtLineEnd(line []byte) int64 {
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if !bytes.HasSuffix(line, []byte("}")) {
		return 0
	}
	i := bytes.LastIndexByte(line, '{')
	if i < 0 {
		return 0
	}
	n, err := strconv.ParseInt(string(line[i+1:len(line)-1]), 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// deliver hands a tagged line to the command that waits for it; false
// when no command of the target has its tag.
func (m *imapMux) deliver(line []byte) bool {
	tag, _, _ := bytes.Cut(line, []byte(" "))
	m.mu.Lock()
	ch, ok := m.pending[string(tag)]
	delete(m.pending, string(tag))
	m.mu.Unlock()
	if ok {
		ch <- imapReply{line: strings.TrimRight(string(line), "\r\n")}
	}
	return ok
}

// fail ends every wait for a reply with err.
func (m *imapMux) fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err == nil {
		m.err = err
	}
	for tag, ch := range m.pending {
		ch <- imapReply{err: m.err}
		delete(m.pending, tag)
	}
}

func (m *imapMux) Write(p []byte) (int, error) {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	return m.Conn.Write(p)
}

func (m *imapMux) Close() error {
	m.fail(net.ErrClosed)
	return m.Conn.Close()
}

// register reserves the next tag of the target's own and the channel its
// reply will come on.
func (m *imapMux) register() (string, chan imapReply, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return "", nil, m.err
	}
	m.seq++
	tag := multiTagPrefix + strconv.Itoa(m.seq)
	ch := make(chan imapReply, 1)
	m.pending[tag] = ch
	return tag, ch, nil
}

// canMultiAppend reports whether the target may write MULTIAPPEND
// commands on s, and returns the mailbox as a quoted string.
func (t *IMAP) canMultiAppend(s *imapSession) (string, bool) {
	if s.mux == nil || !s.caps.Has(imap.CapMultiAppend) || !s.caps.Has(imap.CapLiteralPlus) {
		return "", false
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range []byte(t.opts.Mailbox) {
		if r < 0x20 || r > 0x7e {
			return "", false
		}
		if r == '"' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(r)
	}
	b.WriteByte('"')
	return b.String(), true
}

// multiAppendOn sends the deliveries it takes from q in MULTIAPPEND
// commands of up to per messages each, pipelined up to imapMultiWindow
// deep, and collects their replies into errs. The messages of a refused
// command of several are sent again one per command. It stops when q is
// empty or the connection is lost, and then says what broke it.
func (t *IMAP) multiAppendOn(ctx context.Context, s *imapSession, slot int, q *appendQueue, errs []error, mailbox string, per int) (broke error) {
	s.conn.begin()
	defer s.conn.end()
	stop := context.AfterFunc(ctx, func() { s.conn.Conn.Close() })
	defer stop()
	// Straight to the connection: the writes happen under mux.wmu.
	bw := bufio.NewWriterSize(s.mux.Conn, 64<<10)
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)

	var again []int
	take := func() ([]int, bool) { return q.takeRun(per, imapMultiBytes) }
	broke = t.multiPipeline(s, slot, bw, *bp, mailbox, q, errs, take, &again)
	if broke == nil && len(again) > 0 {
		next := 0
		one := func() ([]int, bool) {
			if next == len(again) {
				return nil, false
			}
			next++
			return again[next-1 : next], true
		}
		broke = t.multiPipeline(s, slot, bw, *bp, mailbox, q, errs, one, nil)
	}
	if broke != nil {
		s.mux.Conn.Close()
		t.dropSession(slot)
	}
	return broke
}

// multiPipeline writes a command for every run of deliveries take gives
// and collects the replies; a refused run of several messages goes into
// *again when again is not nil.
func (t *IMAP) multiPipeline(s *imapSession, slot int, bw *bufio.Writer, buf []byte, mailbox string, q *appendQueue, errs []error, take func() ([]int, bool), again *[]int) (broke error) {
	type inFlight struct {
		run []int
		ch  chan imapReply
	}
	var flight []inFlight
	collect := func(f inFlight) {
		r := <-f.ch
		if r.err != nil {
			for _, i := range f.run {
				errs[i] = r.err
			}
			if broke == nil {
				broke = fmt.Errorf("connection %d: APPEND: %w", slot+1, r.err)
			}
			return
		}
		uidValidity, uids, ie := parseAppendReply(r.line)
		switch {
		case ie == nil:
			for k, i := range f.run {
				errs[i] = nil
				if uidValidity != 0 && len(uids) == len(f.run) {
					q.ds[i].uid = IMAPUID{UIDValidity: uidValidity, UID: uids[k]}
				}
			}
		case ie.Code == imap.ResponseCodeTryCreate:
			for _, i := range f.run {
				errs[i] = ie
			}
			q.halt(ie)
		case len(f.run) > 1 && again != nil:
			t.log.Debug("MULTIAPPEND refused; sending its messages one by one", "messages", len(f.run), "reply", imapErrorText(ie))
			*again = append(*again, f.run...)
		default:
			for _, i := range f.run {
				errs[i] = ie
			}
		}
	}
	for broke == nil {
		if len(flight) == imapMultiWindow {
			collect(flight[0])
			flight = flight[1:]
			continue
		}
		run, ok := take()
		if !ok {
			break
		}
		tag, ch, err := s.mux.register()
		if err == nil {
			s.mux.wmu.Lock()
			err = t.writeMultiAppend(bw, buf, tag, mailbox, q.ds, run)
			s.mux.wmu.Unlock()
		}
		if err != nil {
			// Whatever of the command went out leaves the server
			// waiting for more: the connection cannot go on.
			for _, i := range run {
				if errs[i] == nil {
					errs[i] = err
				}
			}
			s.mux.Conn.Close()
			broke = fmt.Errorf("connection %d: APPEND: %w", slot+1, err)
			break
		}
		flight = append(flight, inFlight{run, ch})
	}
	for _, f := range flight {
		collect(f)
	}
	return broke
}

// writeMultiAppend writes one APPEND of the deliveries run (RFC 3502 §6.3.11):
// tag APPEND mailbox 1*(SP [flags SP] [date-time SP] literal) CRLF, every
// literal non-synchronizing (RFC 7888 §3).
func (t *IMAP) writeMultiAppend(bw *bufio.Writer, buf []byte, tag, mailbox string, ds []*IMAPDelivery, run []int) error {
	bw.WriteString(tag)
	bw.WriteString(" APPEND ")
	bw.WriteString(mailbox)
	for _, i := range run {
		d := ds[i]
		if len(t.flags) > 0 {
			bw.WriteString(" (")
			for k, f := range t.flags {
				if k > 0 {
					bw.WriteByte(' ')
				}
				bw.WriteString(string(f))
			}
			bw.WriteByte(')')
		}
		if !d.date.IsZero() {
			fmt.Fprintf(bw, " %q", d.date.Format(imapDateTime))
		}
		fmt.Fprintf(bw, " {%d+}\r\n", d.size)
		f, err := d.open()
		if err != nil {
			// Nothing of this message is out yet, but the command is:
			// it cannot be finished without it.
			return err
		}
		d.sent = true
		n, err := io.CopyBuffer(bw, onlyReader{f}, buf)
		f.Close()
		if err == nil && n != d.size {
			err = fmt.Errorf("spool file %s holds %d bytes, not %d", d.path, n, d.size)
		}
		if err != nil {
			return err
		}
	}
	bw.WriteString("\r\n")
	return bw.Flush()
}

// imapDateTime is the layout of an IMAP date-time (RFC 3501 §9).
const imapDateTime = "_2-Jan-2006 15:04:05 -0700"

// parseAppendReply reads a tagged reply to APPEND: nil *imap.Error for
// OK, with the UIDVALIDITY and UIDs of an APPENDUID code (RFC 4315 §3;
// for several messages, their UIDs in the order they were sent).
func parseAppendReply(line string) (uidValidity uint32, uids []uint32, ie *imap.Error) {
	_, rest, _ := strings.Cut(line, " ")
	status, text, _ := strings.Cut(rest, " ")
	var code, args string
	if strings.HasPrefix(text, "[") {
		if end := strings.IndexByte(text, ']'); end > 0 {
			code, args, _ = strings.Cut(text[1:end], " ")
			text = strings.TrimSpace(text[end+1:])
		}
	}
	code = strings.ToUpper(code)
	switch strings.ToUpper(status) {
	case "OK":
		if code == "APPENDUID" {
			uidValidity, uids = parseAppendUID(args)
		}
		return uidValidity, uids, nil
	case "NO":
		return 0, nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCode(code), Text: text}
	default:
		if !strings.EqualFold(status, "BAD") {
			text = rest
		}
		return 0, nil, &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCode(code), Text: text}
	}
}

// parseAppendUID reads "uidvalidity uid-set"; a uid-range a:b holds
// every UID between the two, whichever is larger (RFC 4315 §4). Nothing
// comes back for what does not parse.
func parseAppendUID(args string) (uint32, []uint32) {
	v, set, _ := strings.Cut(args, " ")
	uv, err := strconv.ParseUint(v, 10, 32)
	if err != nil || uv == 0 {
		return 0, nil
	}
	var uids []uint32
	for part := range strings.SplitSeq(set, ",") {
		lo, hi, isRange := strings.Cut(part, ":")
		if !isRange {
			hi = lo
		}
		a, err1 := strconv.ParseUint(lo, 10, 32)
		b, err2 := strconv.ParseUint(hi, 10, 32)
		if err1 != nil || err2 != nil || a == 0 || b == 0 || max(a, b)-min(a, b) > imapMultiMax {
			return 0, nil
		}
		for u := min(a, b); u <= max(a, b); u++ {
			uids = append(uids, uint32(u))
		}
	}
	return uint32(uv), uids
}
