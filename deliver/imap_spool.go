package deliver

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io/fs"
	"net/mail"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"popsync/internal/osfile"
)

// imapTokenLen is the length of a token: 128 random bits in base32.
const imapTokenLen = 26

var tokenEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newIMAPToken returns 26 characters of [a-z2-7]: a single word to every
// IMAP SEARCH, so no server splits it, and safe in a file name.
func newIMAPToken() string {
	var b [16]byte
	rand.Read(b[:])
	return tokenEncoding.EncodeToString(b[:])
}

func validIMAPToken(t string) bool {
	if len(t) != imapTokenLen {
		return false
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// spool is the directory that holds messages between Begin and Publish,
// one file per delivery, named TOKEN.PID so that files of a process that
// is gone can be told from those of a live one.
type spool struct{ dir string }

func openSpool(dir string) (*spool, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("spool directory %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("creating spool directory: %w", err)
	}
	return &spool{dir: abs}, nil
}

func (sp *spool) create(t *IMAP) (*IMAPDelivery, error) {
	var (
		tok, path string
		f         *os.File
		err       error
	)
	for range 3 {
		tok = newIMAPToken()
		path = filepath.Join(sp.dir, tok+"."+strconv.Itoa(os.Getpid()))
		f, err = os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("creating spool file: %w", err)
	}
	bw := bufPool.Get().(*bufio.Writer)
	bw.Reset(f)
	d := &IMAPDelivery{t: t, token: tok, path: path, f: f, bw: bw, hdr: newHeaderBuf(imapMaxHeader)}
	// The token field goes first; the caller's bytes follow unchanged.
	head := IMAPTokenHeader + ": " + tok + "\r\n"
	if _, err := bw.WriteString(head); err != nil {
		d.discard()
		return nil, fmt.Errorf("writing spool file %s: %w", path, err)
	}
	d.size = int64(len(head))
	return d, nil
}

// remove deletes the spool files of tok, of any process.
func (sp *spool) remove(tok string) error {
	names, err := filepath.Glob(filepath.Join(sp.dir, tok+".*"))
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if err := os.Remove(n); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing spool file: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (sp *spool) removeStale(ctx context.Context) (int, error) {
	ents, err := os.ReadDir(sp.dir)
	if err != nil {
		return 0, fmt.Errorf("reading spool directory: %w", err)
	}
	removed := 0
	var errs []error
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		tok, pidText, ok := strings.Cut(e.Name(), ".")
		pid, perr := strconv.Atoi(pidText)
		if !ok || perr != nil || !validIMAPToken(tok) || pid == os.Getpid() || osfile.ProcessAlive(pid) {
			continue
		}
		err := os.Remove(filepath.Join(sp.dir, e.Name()))
		switch {
		case err == nil:
			removed++
		case !errors.Is(err, fs.ErrNotExist):
			errs = append(errs, fmt.Errorf("removing stale spool file: %w", err))
		}
	}
	return removed, errors.Join(errs...)
}

// imapMaxHeader bounds the bytes held back to find the Date and Received
// fields for the internal date.
const imapMaxHeader = 64 << 10

// IMAPDelivery is one message on its way into an IMAP mailbox.
type IMAPDelivery struct {
	t     *IMAP
	meta  Meta
	token string
	path  string
	f     *os.File      // nil once closed
	bw    *bufio.Writer // nil once released
	hdr   headerBuf
	cr    bool  // the last byte written was CR
	size  int64 // bytes in the spool file, the token field included
	date  time.Time
	state deliveryState
	err   error // why the delivery failed
	sent  bool  // an APPEND of it went out
	uid   IMAPUID
}

// Token is the unique value of the delivery's X-Popsync-Id field.
func (d *IMAPDelivery) Token() string { return d.token }

// Size is the size of the message as appended: the X-Popsync-Id field
// and the message with every bare LF turned into CRLF.
func (d *IMAPDelivery) Size() int64 { return d.size }

// UID is where the server put the message, from the APPENDUID of its
// reply (UIDPLUS, RFC 4315); ok is false before the message is published
// or when the server did not say.
func (d *IMAPDelivery) UID() (uid IMAPUID, ok bool) {
	return d.uid, d.state == statePublished && d.uid.UID != 0
}

// Err says why the delivery failed (after Close or Publish): a
// *DeliveryError classified as the IMAP type describes, or nil.
func (d *IMAPDelivery) Err() error { return d.err }

var (
	crlfBytes = []byte("\r\n")
)

// Write adds p to the spool file, with each bare LF written as CRLF.
func (d *IMAPDelivery) Write(p []byte) (int, error) {
	if d.state != stateWriting {
		return 0, fmt.Errorf("%s: writing %s: %s: %w", d.t.name, d.token, d.state, ErrState)
	}
	if d.err != nil {
		return 0, d.err
	}
	if !d.hdr.done {
		d.hdr.add(p)
	}
	written := 0
	fail := func(err error) (int, error) {
		d.err = fmt.Errorf("%s: writing spool file %s: %w", d.t.name, d.path, err)
		return written, d.err
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if _, err := d.bw.Write(p); err != nil {
				return fail(err)
			}
			d.size += int64(len(p))
			written += len(p)
			d.cr = p[len(p)-1] == '\r'
			break
		}
		bare := i > 0 && p[i-1] != '\r' || i == 0 && !d.cr
		seg := p[:i]
		if !bare {
			seg = p[:i+1]
		}
		if _, err := d.bw.Write(seg); err != nil {
			return fail(err)
		}
		d.size += int64(len(seg))
		if bare {
			if _, err := d.bw.Write(crlfBytes); err != nil {
				return fail(err)
			}
			d.size += 2
		}
		written += i + 1
		d.cr = false
		p = p[i+1:]
	}
	return written, nil
}

// Close flushes the spool file and closes it, and fixes the internal
// date. A message over the server's APPENDLIMIT fails here with
// ErrAppendLimit (and its spool file is removed).
func (d *IMAPDelivery) Close() error {
	if d.state != stateWriting {
		return fmt.Errorf("%s: closing %s: %s: %w", d.t.name, d.token, d.state, ErrState)
	}
	err := d.err
	if err == nil {
		if ferr := d.bw.Flush(); ferr != nil {
			err = fmt.Errorf("%s: writing spool file %s: %w", d.t.name, d.path, ferr)
		}
	}
	d.releaseBuf()
	if cerr := d.closeFile(); err == nil && cerr != nil {
		err = fmt.Errorf("%s: closing spool file %s: %w", d.t.name, d.path, cerr)
	}
	if err == nil {
		if limit := d.t.appendLimit(); limit > 0 && d.size > limit {
			err = tooLarge(d.t, StageSize, d.size, limit)
		}
	}
	if err != nil {
		d.err = err
		d.discard()
		d.state = stateBroken
		return err
	}
	if d.t.opts.InternalDate == IMAPDateReceived {
		d.date = internalDate(d.hdr.header(), time.Now())
	}
	d.hdr.release()
	d.state = stateClosed
	return nil
}

// Abort removes the spool file. It does nothing once the message was
// appended.
func (d *IMAPDelivery) Abort() error {
	switch d.state {
	case statePublished, stateAborted:
		return nil
	}
	d.releaseBuf()
	d.closeFile()
	err := d.discard()
	d.state = stateAborted
	return err
}

func (d *IMAPDelivery) open() (*os.File, error) {
	f, err := os.Open(d.path)
	if err != nil {
		return nil, fmt.Errorf("opening spool file: %w", err)
	}
	return f, nil
}

// published marks the message appended and removes its spool file.
func (d *IMAPDelivery) published() {
	d.state = statePublished
	d.t.forget(d)
	if err := os.Remove(d.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.t.log.Warn("removing spool file of an appended message", "error", err.Error())
	}
}

func (d *IMAPDelivery) discard() error {
	d.t.forget(d)
	d.hdr.release()
	if err := os.Remove(d.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: removing spool file: %w", d.t.name, err)
	}
	return nil
}

func (d *IMAPDelivery) closeFile() error {
	if d.f == nil {
		return nil
	}
	err := d.f.Close()
	d.f = nil
	return err
}

func (d *IMAPDelivery) releaseBuf() {
	if d.bw == nil {
		return
	}
	d.bw.Reset(nil)
	bufPool.Put(d.bw)
	d.bw = nil
}

// internalDate picks the INTERNALDATE for IMAPDateReceived: the Date
// field (RFC 5322 §3.6.1), else the date of the first Received field
// (after its last ";", RFC 5321 §4.4), else zero, which leaves it to the
// server (RFC 3501 §6.3.11: the current time). A date more than a day
// ahead of now is a wrong clock, not a receipt time, and is not used;
// neither is one a date-time (RFC 3501 §9) cannot express.
func internalDate(header []byte, now time.Time) time.Time {
	usable := func(t time.Time, err error) bool {
		return err == nil && t.Year() >= 1900 && t.Year() <= 9999 && !t.After(now.Add(24*time.Hour))
	}
	if v, ok := field(header, "date"); ok {
		if t, err := mail.ParseDate(strings.TrimSpace(v)); usable(t, err) {
			return t
		}
	}
	if v, ok := field(header, "received"); ok {
		if i := strings.LastIndexByte(v, ';'); i >= 0 {
			if t, err := mail.ParseDate(strings.TrimSpace(v[i+1:])); usable(t, err) {
				return t
			}
		}
	}
	return time.Time{}
}
