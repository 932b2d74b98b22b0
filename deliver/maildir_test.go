package deliver

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-maildir"
)

var bg = context.Background()

func newTestMaildir(t *testing.T, opts MaildirOptions) *Maildir {
	t.Helper()
	m, err := NewMaildir(filepath.Join(t.TempDir(), "Maildir"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// names lists the entries of the Maildir's subdirectory sub, sorted.
func names(t *testing.T, m *Maildir, sub string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(m.Path(), sub))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// stageMsg begins a delivery, writes msg in chunks of the given sizes
// (cycled; all of msg at once if none) and closes it.
func stageMsg(t *testing.T, m *Maildir, msg []byte, chunks ...int) *maildirDelivery {
	t.Helper()
	d, err := m.Begin(bg, Meta{Account: "a", UIDL: "u"})
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) == 0 {
		chunks = []int{len(msg)}
	}
	for i, p := 0, msg; len(p) > 0; i++ {
		n := min(max(chunks[i%len(chunks)], 1), len(p))
		if _, err := d.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return d.(*maildirDelivery)
}

func deliverAll(t *testing.T, m *Maildir, ds ...Delivery) {
	t.Helper()
	if err := m.Prepare(bg, ds); err != nil {
		t.Fatal(err)
	}
	if err := m.Publish(bg, ds); err != nil {
		t.Fatal(err)
	}
}

func readNew(t *testing.T, m *Maildir, token string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(m.Path(), "new", token))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMaildirLineEndings streams a message through real files in 1-byte,
// random and whole chunks, with and without KeepCRLF.
func TestMaildirLineEndings(t *testing.T) {
	msg := slices.Concat(bytes.Repeat(lfSample, 50), []byte("tail\r"))
	rng := rand.New(rand.NewPCG(1, 2))
	var random []int
	for range 200 {
		random = append(random, rng.IntN(40)+1)
	}
	for _, keep := range []bool{false, true} {
		m := newTestMaildir(t, MaildirOptions{KeepCRLF: keep})
		want := lfReference(msg)
		if keep {
			want = msg
		}
		for _, chunks := range [][]int{nil, {1}, random, {2, 3, 5}} {
			d := stageMsg(t, m, msg, chunks...)
			deliverAll(t, m, d)
			got := readNew(t, m, d.Token())
			if !bytes.Equal(got, want) {
				t.Errorf("KeepCRLF=%v chunks %v: got %q, want %q", keep, chunks, got, want)
			}
			if d.Size() != int64(len(want)) {
				t.Errorf("KeepCRLF=%v: Size() = %d, file has %d bytes", keep, d.Size(), len(want))
			}
		}
	}
}

func TestMaildirModesAndLayout(t *testing.T) {
	parent := t.TempDir()
	path := filepath.Join(parent, "a", "b", "Maildir")
	m, err := NewMaildir(path, MaildirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, p := range []string{"a", "a/b", "a/b/Maildir", "a/b/Maildir/tmp", "a/b/Maildir/new", "a/b/Maildir/cur"} {
		fi, err := os.Stat(filepath.Join(parent, p))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want a directory with 0700", p, fi.Mode())
		}
	}
	if got, want := m.String(), "maildir "+path; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}

	d := stageMsg(t, m, []byte("Subject: x\r\n\r\nhi\r\n"))
	fi, err := os.Stat(filepath.Join(path, "tmp", d.Token()))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("tmp file mode %v, want 0600", fi.Mode().Perm())
	}
	deliverAll(t, m, d)
	fi, err = os.Stat(filepath.Join(path, "new", d.Token()))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("new file mode %v, want 0600", fi.Mode().Perm())
	}

	// Opening an existing Maildir keeps what is there.
	m2, err := NewMaildir(path, MaildirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if got := names(t, m2, "new"); !slices.Equal(got, []string{d.Token()}) {
		t.Errorf("new/ after reopening: %v", got)
	}
}

func TestNewMaildirRejectsFiles(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMaildir(file, MaildirOptions{}); err == nil {
		t.Error("NewMaildir on a file succeeded")
	}
	if _, err := NewMaildir(filepath.Join(file, "Maildir"), MaildirOptions{}); err == nil {
		t.Error("NewMaildir below a file succeeded")
	}
	md := filepath.Join(dir, "Maildir")
	if err := os.MkdirAll(filepath.Join(md, "cur"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(md, "new"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := NewMaildir(md, MaildirOptions{})
	if err == nil || !strings.Contains(err.Error(), "new is not a directory") {
		t.Errorf("NewMaildir with a file as new/: %v", err)
	}
	if _, err := NewMaildir("", MaildirOptions{}); err == nil {
		t.Error("NewMaildir with an empty path succeeded")
	}
}

func TestMaildirTokens(t *testing.T) {
	m := newTestMaildir(t, MaildirOptions{})
	m.host = sanitizeHost("mx/1:2,3.example")
	if m.host != `mx\0571\0722\0543.example` {
		t.Errorf("sanitized host %q", m.host)
	}
	re := regexp.MustCompile(`^[0-9]+\.M[0-9]{1,6}P[0-9]+Q[0-9]+R[0-9a-f]{8}\.mx\\0571\\0722\\0543\.example$`)
	// Begin from several goroutines at once: every name is unique.
	var (
		mu     sync.Mutex
		tokens = map[string]bool{}
		wg     sync.WaitGroup
	)
	for range 4 {
		wg.Go(func() {
			for range 50 {
				d, err := m.Begin(bg, Meta{})
				if err != nil {
					t.Error(err)
					return
				}
				tok := d.Token()
				d.Abort()
				mu.Lock()
				if tokens[tok] {
					t.Errorf("token %s issued twice", tok)
				}
				tokens[tok] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for tok := range tokens {
		if !re.MatchString(tok) {
			t.Fatalf("token %q does not have the modern Maildir form", tok)
		}
		if !validToken(tok) {
			t.Fatalf("token %q not accepted by validToken", tok)
		}
	}
	if got := names(t, m, "tmp"); len(got) != 0 {
		t.Errorf("aborted deliveries left %v in tmp/", got)
	}
}

// TestMaildirPublishMoves checks that a message is in tmp/ (under its
// token) until Publish, and only in new/ after.
func TestMaildirPublishMoves(t *testing.T) {
	m := newTestMaildir(t, MaildirOptions{})
	d := stageMsg(t, m, []byte("a\r\n"))
	check := func(stage string, tmp, nw []string) {
		t.Helper()
		if got := names(t, m, "tmp"); !slices.Equal(got, tmp) {
			t.Errorf("%s: tmp/ = %v, want %v", stage, got, tmp)
		}
		if got := names(t, m, "new"); !slices.Equal(got, nw) {
			t.Errorf("%s: new/ = %v, want %v", stage, got, nw)
		}
	}
	tok := []string{d.Token()}
	check("after Close", tok, nil)
	if err := m.Prepare(bg, []Delivery{d}); err != nil {
		t.Fatal(err)
	}
	check("after Prepare", tok, nil)
	if err := m.Publish(bg, []Delivery{d}); err != nil {
		t.Fatal(err)
	}
	check("after Publish", nil, tok)
}

// TestMaildirDeliveredCur finds messages a reader moved to cur/.
func TestMaildirDeliveredCur(t *testing.T) {
	m := newTestMaildir(t, MaildirOptions{})
	var ds []Delivery
	var toks []string
	for i := range 5 {
		d := stageMsg(t, m, []byte(strings.Repeat("x\r\n", i+1)))
		ds = append(ds, d)
		toks = append(toks, d.Token())
	}
	deliverAll(t, m, ds...)
	keep := names(t, m, "new")
	if len(keep) != 5 {
		t.Fatalf("new/ has %v", keep)
	}
	// Message 4 leaves the Maildir. A reader takes the others into cur/
	// with the "2," info and flags message 0 as seen; messages 2 and 3 get
	// other names readers use (no info; Dovecot's size fields).
	for _, tok := range toks[4:] {
		if err := os.Rename(filepath.Join(m.Path(), "new", tok), filepath.Join(m.Path(), tok)); err != nil {
			t.Fatal(err)
		}
	}
	msgs, err := maildir.Dir(m.Path()).Unseen()
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range msgs {
		if msg.Key() == toks[0] {
			if err := msg.SetFlags([]maildir.Flag{maildir.FlagSeen}); err != nil {
				t.Fatal(err)
			}
		}
	}
	cur := filepath.Join(m.Path(), "cur")
	if err := os.Rename(filepath.Join(cur, toks[2]+":2,"), filepath.Join(cur, toks[2])); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(cur, toks[3]+":2,"), filepath.Join(cur, toks[3]+",S=4,W=5:2,RS")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cur, toks[0]+":2,S")); err != nil {
		t.Fatalf("reader did not flag the message: %v", err)
	}
	// A prefix of a token is another token, not a match.
	prefix := toks[1][:len(toks[1])-1]
	got, err := m.Delivered(bg, append(slices.Clone(toks), prefix))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{toks[0]: true, toks[1]: true, toks[2]: true, toks[3]: true, toks[4]: false, prefix: false}
	if !maps.Equal(got, want) {
		t.Errorf("Delivered = %v, want %v", got, want)
	}
}

// TestMaildirPublishPartial removes one tmp file behind the target's back:
// Publish moves the ones before it and reports them.
func TestMaildirPublishPartial(t *testing.T) {
	m := newTestMaildir(t, MaildirOptions{})
	var ds []Delivery
	for i := range 5 {
		ds = append(ds, stageMsg(t, m, []byte(strings.Repeat("y\r\n", i+1))))
	}
	if err := m.Prepare(bg, ds); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(m.Path(), "tmp", ds[2].Token())); err != nil {
		t.Fatal(err)
	}
	err := m.Publish(bg, ds)
	var pe *PublishError
	if !errors.As(err, &pe) {
		t.Fatalf("Publish error = %v, want a *PublishError", err)
	}
	if !slices.Equal(pe.Published, []int{0, 1}) {
		t.Errorf("Published = %v, want [0 1]", pe.Published)
	}
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "tmp/"+ds[2].Token()) {
		t.Errorf("error does not name the missing file and cause: %v", err)
	}
	if got, want := names(t, m, "new"), sortedTokens(ds[0], ds[1]); !slices.Equal(got, want) {
		t.Errorf("new/ = %v, want %v", got, want)
	}
	if got, want := names(t, m, "tmp"), sortedTokens(ds[3], ds[4]); !slices.Equal(got, want) {
		t.Errorf("tmp/ = %v, want %v", got, want)
	}
	got, err := m.Delivered(bg, []string{ds[0].Token(), ds[1].Token(), ds[2].Token(), ds[3].Token()})
	if err != nil {
		t.Fatal(err)
	}
	if !got[ds[0].Token()] || !got[ds[1].Token()] || got[ds[2].Token()] || got[ds[3].Token()] {
		t.Errorf("Delivered = %v", got)
	}
	// The rest of the batch can be published after all.
	if err := m.Publish(bg, ds[3:]); err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if err := d.Abort(); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(names(t, m, "new")); got != 4 {
		t.Errorf("%d messages in new/, want 4", got)
	}
}

func sortedTokens(ds ...Delivery) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Token())
	}
	slices.Sort(out)
	return out
}

// TestMaildirNewSyncFails: when new/ cannot be synced, nothing counts as
// published.
func TestMaildirNewSyncFails(t *testing.T) {
	m := newTestMaildir(t, MaildirOptions{})
	boom := errors.New("injected EIO")
	m.syncDir = func(string) error { return boom }
	ds := []Delivery{stageMsg(t, m, []byte("a\r\n")), stageMsg(t, m, []byte("b\r\n"))}
	if err := m.Prepare(bg, ds); err != nil {
		t.Fatal(err)
	}
	err := m.Publish(bg, ds)
	var pe *PublishError
	if !errors.As(err, &pe) || len(pe.Published) != 0 || !errors.Is(err, boom) {
		t.Fatalf("Publish error = %#v, want a *PublishError with nothing published", err)
	}
	if !strings.Contains(err.Error(), "syncing new/") {
		t.Errorf("error does not say what failed: %v", err)
	}
}

// TestMaildirPrepareFails: a file whose fsync fails is never published;
// the others of the batch still can be.
func TestMaildirPrepareFails(t *testing.T) {
	m := newTestMaildir(t, MaildirOptions{})
	boom := errors.New("injected EIO")
	m.syncFiles = func(ctx context.Context, files []*os.File) []error {
		errs := syncConcurrently(ctx, files)
		errs[1] = boom
		return errs
	}
	ds := []Delivery{stageMsg(t, m, []byte("a\r\n")), stageMsg(t, m, []byte("b\r\n")), stageMsg(t, m, []byte("c\r\n"))}
	err := m.Prepare(bg, ds)
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "syncing tmp/"+ds[1].Token()) {
		t.Fatalf("Prepare error = %v", err)
	}
	if err := m.Publish(bg, ds); !errors.Is(err, ErrState) {
		t.Fatalf("Publish after a failed Prepare: %v, want ErrState", err)
	}
	if got := names(t, m, "new"); len(got) != 0 {
		t.Fatalf("new/ = %v after a refused Publish", got)
	}
	if err := ds[1].Abort(); err != nil {
		t.Fatal(err)
	}
	m.syncFiles = syncConcurrently
	ok := []Delivery{ds[0], ds[2]}
	deliverAll(t, m, ok...)
	if got, want := names(t, m, "new"), sortedTokens(ok...); !slices.Equal(got, want) {
		t.Errorf("new/ = %v, want %v", got, want)
	}
	if got := names(t, m, "tmp"); len(got) != 0 {
		t.Errorf("tmp/ = %v", got)
	}
}

// TestMaildirPrepareCanceledMidway: files not synced when ctx ends stay
// open, and Prepare can be called again.
func TestMaildirPrepareCanceledMidway(t *testing.T) {
	m := newTestMaildir(t, MaildirOptions{})
	ctx, cancel := context.WithCancel(bg)
	m.syncFiles = func(ctx context.Context, files []*os.File) []error {
		errs := syncPool(ctx, files[:1], 1)
		cancel()
		return append(errs, syncPool(ctx, files[1:], 1)...)
	}
	ds := []Delivery{stageMsg(t, m, []byte("a\r\n")), stageMsg(t, m, []byte("b\r\n"))}
	if err := m.Prepare(ctx, ds); !errors.Is(err, context.Canceled) {
		t.Fatalf("Prepare error = %v, want context.Canceled", err)
	}
	if ds[0].(*maildirDelivery).f != nil || ds[1].(*maildirDelivery).f == nil {
		t.Fatal("synced file not closed, or unsynced file closed")
	}
	var synced int
	m.syncFiles = func(ctx context.Context, files []*os.File) []error {
		synced += len(files)
		return syncConcurrently(ctx, files)
	}
	deliverAll(t, m, ds...)
	if synced != 1 {
		t.Errorf("second Prepare synced %d files, want 1", synced)
	}
}

func TestMaildirOutOfOrder(t *testing.T) {
	m := newTestMaildir(t, MaildirOptions{})
	other := newTestMaildir(t, MaildirOptions{})
	writing, err := m.Begin(bg, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	closed := stageMsg(t, m, []byte("x\r\n"))
	foreign := stageMsg(t, other, []byte("x\r\n"))
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"Prepare while writing", m.Prepare(bg, []Delivery{writing}), ErrState},
		{"Publish before Prepare", m.Publish(bg, []Delivery{closed}), ErrState},
		{"Prepare twice in a batch", m.Prepare(bg, []Delivery{closed, closed}), ErrState},
		{"Prepare foreign", m.Prepare(bg, []Delivery{closed, foreign}), ErrForeign},
		{"Close twice", closed.Close(), ErrState},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	if _, err := closed.Write([]byte("more")); !errors.Is(err, ErrState) {
		t.Errorf("Write after Close: %v, want ErrState", err)
	}
	// Publish checks the whole batch before moving anything.
	if err := m.Prepare(bg, []Delivery{closed}); err != nil {
		t.Fatal(err)
	}
	if err := m.Publish(bg, []Delivery{closed, writing}); !errors.Is(err, ErrState) {
		t.Errorf("Publish with an unprepared delivery: %v, want ErrState", err)
	}
	if got := names(t, m, "new"); len(got) != 0 {
		t.Errorf("new/ = %v after a refused Publish", got)
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(entries)
}

// TestMaildirHeldFiles: closed deliveries keep their file open for
// Prepare, up to maxHeld; beyond it Close syncs and closes the file.
func TestMaildirHeldFiles(t *testing.T) {
	m := newTestMaildir(t, MaildirOptions{})
	m.maxHeld = 3
	var synced int
	m.syncFiles = func(ctx context.Context, files []*os.File) []error {
		synced += len(files)
		return syncConcurrently(ctx, files)
	}
	base := openFDs(t)
	var ds []Delivery
	var want [][]byte
	for i := range 8 {
		msg := []byte(strings.Repeat("z\r\n", i+1))
		ds = append(ds, stageMsg(t, m, msg))
		want = append(want, lfReference(msg))
		if n := openFDs(t) - base; n > 3 {
			t.Fatalf("%d files open after %d deliveries, want at most 3", n, i+1)
		}
	}
	deliverAll(t, m, ds...)
	if synced != 3 {
		t.Errorf("Prepare synced %d files, want the 3 held ones", synced)
	}
	if n := openFDs(t) - base; n != 0 {
		t.Errorf("%d files still open after Publish", n)
	}
	for i, d := range ds {
		if got := readNew(t, m, d.Token()); !bytes.Equal(got, want[i]) {
			t.Errorf("message %d: got %q, want %q", i, got, want[i])
		}
	}
}

// TestMaildirClose releases the files of unpublished deliveries and
// removes them.
func TestMaildirClose(t *testing.T) {
	m := newTestMaildir(t, MaildirOptions{})
	base := openFDs(t)
	w, err := m.Begin(bg, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	c := stageMsg(t, m, []byte("c\r\n"))
	p := stageMsg(t, m, []byte("p\r\n"))
	if err := m.Prepare(bg, []Delivery{p}); err != nil {
		t.Fatal(err)
	}
	pub := stageMsg(t, m, []byte("pub\r\n"))
	deliverAll(t, m, pub)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if n := openFDs(t) - base; n != 0 {
		t.Errorf("%d files open after Close", n)
	}
	if got := names(t, m, "tmp"); len(got) != 0 {
		t.Errorf("tmp/ = %v after Close", got)
	}
	if got := names(t, m, "new"); !slices.Equal(got, []string{pub.Token()}) {
		t.Errorf("new/ = %v after Close", got)
	}
	if _, err := m.Begin(bg, Meta{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Begin after Close: %v, want ErrClosed", err)
	}
	if err := c.Abort(); err != nil {
		t.Errorf("Abort after Close: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
