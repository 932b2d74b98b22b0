package realtest

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readAttempts bounds the rescans of the Maildir when Dovecot moved a
// file (new/ to cur/, or a flag change) between listing and reading it.
const readAttempts = 10

// Deliver puts msgs into the server's Maildir (new/), owned by the Dovecot
// user, in order: POP3 message numbers follow the order of the calls and
// of msgs. The bytes are stored as given; Maildir convention is LF line
// endings, and Dovecot sends CRLF on the wire either way.
//
// Order: Dovecot gives new files their UIDs sorted by the time in the file
// name, then by its microseconds, then by name, so every message gets a
// later time than the one before. Mail that arrives over LMTP gets its UID
// at once, before files Deliver put in new/ that Dovecot has not seen yet;
// Messages always reports the order POP3 uses.
func (d *Dovecot) Deliver(t testing.TB, msgs ...[]byte) {
	t.Helper()
	d.DeliverTo(t, d.User, msgs...)
}

// DeliverTo is Deliver into the Maildir of user (see MaildirOf).
func (d *Dovecot) DeliverTo(t testing.TB, user string, msgs ...[]byte) {
	t.Helper()
	maildir := d.MaildirOf(user)
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range msgs {
		now := time.Now().Truncate(time.Microsecond)
		if !now.After(d.last) {
			now = d.last.Add(time.Microsecond)
		}
		d.last = now
		name := fmt.Sprintf("%d.M%dP%d.realtest,S=%d", now.Unix(), now.Nanosecond()/1000, os.Getpid(), len(m))
		tmp := filepath.Join(maildir, "tmp", name)
		if err := d.writeFile(tmp, m, 0o600); err != nil {
			t.Fatalf("delivering to dovecot: %v", err)
		}
		if err := os.Rename(tmp, filepath.Join(maildir, "new", name)); err != nil {
			t.Fatalf("delivering to dovecot: %v", err)
		}
	}
}

// Messages returns the messages the server stores now, in POP3 order, as
// stored (not as sent on the wire).
func (d *Dovecot) Messages(t testing.TB) [][]byte {
	t.Helper()
	for range readAttempts {
		files, err := d.mailFiles()
		if err != nil {
			t.Fatalf("reading dovecot mailbox: %v", err)
		}
		msgs := make([][]byte, 0, len(files))
		for _, f := range files {
			b, err := os.ReadFile(f.path)
			if errors.Is(err, fs.ErrNotExist) {
				msgs = nil
				break
			}
			if err != nil {
				t.Fatalf("reading dovecot mailbox: %v", err)
			}
			msgs = append(msgs, b)
		}
		if msgs != nil {
			return msgs
		}
	}
	t.Fatalf("reading dovecot mailbox: files kept moving in %d scans", readAttempts)
	return nil
}

// Count returns how many messages the server stores now.
func (d *Dovecot) Count(t testing.TB) int {
	t.Helper()
	files, err := d.mailFiles()
	if err != nil {
		t.Fatalf("counting dovecot mailbox: %v", err)
	}
	return len(files)
}

// mailFile is one message file of the Maildir.
type mailFile struct {
	path string
	base string // the name without the ":2,flags" info part
	uid  uint32 // 0: Dovecot has not seen it yet
}

// mailFiles lists the messages in cur/ and new/ in the order POP3 numbers
// them: first those Dovecot gave a UID (dovecot-uidlist), by UID, then the
// others in the order Dovecot will give them UIDs.
func (d *Dovecot) mailFiles() ([]mailFile, error) {
	uids, err := readUIDList(filepath.Join(d.Maildir, "dovecot-uidlist"))
	if err != nil {
		return nil, err
	}
	// new/ before cur/: a message Dovecot moves from new/ to cur/ while
	// we list is then seen twice rather than missed, and the later sight
	// (in cur/) wins.
	byBase := make(map[string]int)
	var files []mailFile
	for _, sub := range []string{"new", "cur"} {
		entries, err := os.ReadDir(filepath.Join(d.Maildir, sub))
		if err != nil {
			return nil, fmt.Errorf("listing maildir: %w", err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
				continue
			}
			base := maildirBase(e.Name())
			f := mailFile{path: filepath.Join(d.Maildir, sub, e.Name()), base: base, uid: uids[base]}
			if i, ok := byBase[base]; ok {
				files[i] = f
				continue
			}
			byBase[base] = len(files)
			files = append(files, f)
		}
	}
	slices.SortFunc(files, func(a, b mailFile) int {
		switch {
		case a.uid != 0 && b.uid != 0:
			return cmp.Compare(a.uid, b.uid)
		case a.uid != 0:
			return -1
		case b.uid != 0:
			return 1
		}
		return maildirCompare(a.base, b.base)
	})
	return files, nil
}

// readUIDList reads Dovecot's dovecot-uidlist (version 3): a header line,
// then per message "<uid> <fields> :<file name>". A missing file means
// Dovecot has not opened the mailbox yet.
func readUIDList(path string) (map[string]uint32, error) {
	uids := make(map[string]uint32)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return uids, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading uidlist: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	if !sc.Scan() {
		return uids, nil
	}
	if header := sc.Text(); !strings.HasPrefix(header, "3 ") {
		return nil, fmt.Errorf("reading uidlist: unknown version in header %q", header)
	}
	for sc.Scan() {
		line := sc.Text()
		uidText, rest, ok := strings.Cut(line, " ")
		i := strings.Index(rest, ":")
		if !ok || i < 0 {
			return nil, fmt.Errorf("reading uidlist: bad line %q", line)
		}
		uid, err := strconv.ParseUint(uidText, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("reading uidlist: bad line %q: %w", line, err)
		}
		uids[maildirBase(rest[i+1:])] = uint32(uid)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading uidlist: %w", err)
	}
	return uids, nil
}

// maildirBase strips the info part (":2,FLAGS") of a Maildir file name.
func maildirBase(name string) string {
	base, _, _ := strings.Cut(name, ":")
	return base
}

// maildirCompare orders file names the way Dovecot assigns UIDs to new
// Maildir files: by the leading seconds, then by the microseconds after
// "M" in the unique part when both have them, then by the base name.
func maildirCompare(a, b string) int {
	secA, restA := leadingNumber(a)
	secB, restB := leadingNumber(b)
	if c := cmp.Compare(secA, secB); c != 0 {
		return c
	}
	usA, okA := maildirMicros(restA)
	usB, okB := maildirMicros(restB)
	if okA && okB {
		if c := cmp.Compare(usA, usB); c != 0 {
			return c
		}
	}
	return strings.Compare(maildirBase(restA), maildirBase(restB))
}

// leadingNumber parses the decimal digits at the start of s.
func leadingNumber(s string) (n uint64, rest string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		n = n*10 + uint64(s[i]-'0')
		i++
	}
	return n, s[i:]
}

// maildirMicros finds the microseconds in ".<unique>.<host>": the digits
// after the first "M" of the unique part.
func maildirMicros(rest string) (uint64, bool) {
	if !strings.HasPrefix(rest, ".") {
		return 0, false
	}
	unique := rest[1:]
	if i := strings.IndexAny(unique, ".:"); i >= 0 {
		unique = unique[:i]
	}
	i := strings.IndexByte(unique, 'M')
	if i < 0 {
		return 0, false
	}
	n, _ := leadingNumber(unique[i+1:])
	return n, true
}
