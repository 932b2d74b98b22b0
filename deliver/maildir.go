package deliver

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-maildir"

	"popsync/internal/osfile"
)

// Maildir layout and writing (cr.yp.to/proto/maildir.html): a message is
// written to tmp/NAME and then renamed to new/NAME; readers move it to
// cur/NAME:2,FLAGS. go-maildir is used to create the directories only: its
// Delivery never fsyncs and hides its file name, and the name is what the
// fetcher must record as an intent before the rename. So the durable
// sequence (write tmp, fsync file, rename into new/, fsync new/) is done
// here.

const (
	// bufSize is the write buffer of one delivery while it streams.
	bufSize = 64 << 10
	// defaultMaxHeld bounds the file descriptors held by closed deliveries
	// of one Maildir that wait for Prepare. Past it, Close fsyncs and
	// closes the file itself: slower (one fsync per message, not
	// concurrent) but still correct. It is twice the fetcher's largest
	// batch: one batch committing while the next fills.
	defaultMaxHeld = 1024
	// syncWorkers bounds the concurrent fsyncs of one Prepare. A flush
	// that the device serves at once for many files (a journal commit, a
	// disk cache flush) then costs one latency for up to 64 files rather
	// than one per 8; see BenchmarkMaildirSlowFlush.
	syncWorkers = 64
)

// heldFiles bounds, process-wide, the files that closed deliveries of
// every Maildir keep open for Prepare: a quarter of RLIMIT_NOFILE, so
// that many accounts polling at once cannot run the process out of file
// descriptors. Past it, Close fsyncs and closes the file itself.
var heldFiles = struct {
	once  sync.Once
	limit int64
	n     atomic.Int64
}{}

func acquireHeld() bool {
	heldFiles.once.Do(func() {
		heldFiles.limit = 256
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur/4 > 256 {
			heldFiles.limit = int64(min(rl.Cur/4, 1<<20))
		}
	})
	if heldFiles.n.Add(1) > heldFiles.limit {
		heldFiles.n.Add(-1)
		return false
	}
	return true
}

func releaseHeld() { heldFiles.n.Add(-1) }

// MaildirOptions configures a Maildir target.
type MaildirOptions struct {
	// KeepCRLF stores messages with the CRLF line endings they arrive
	// with. By default they are stored with LF, as Maildir readers expect.
	KeepCRLF bool
}

// Maildir is a Target that delivers into a Maildir. Its Token is the
// message's unique file name, the same in tmp/ and new/.
//
// Every closed delivery keeps its file open until Prepare fsyncs it
// (up to 1024 per Maildir and a quarter of RLIMIT_NOFILE in the process;
// beyond that Close fsyncs the file itself), so a batch costs about one
// file descriptor per message.
type Maildir struct {
	dir  string // absolute path
	opts MaildirOptions
	host string // sanitized host name, the last part of every file name

	// maxHeld, syncFiles and syncDir are fixed after NewMaildir; tests
	// change them.
	maxHeld   int
	syncFiles func(ctx context.Context, files []*os.File) []error
	syncDir   func(path string) error

	mu     sync.Mutex
	closed bool
	live   map[*maildirDelivery]struct{} // begun, not yet published or discarded
	held   int                           // open files of closed, unsynced deliveries
}

// NewMaildir returns a target delivering into the Maildir at path. It
// creates path and its tmp, new and cur directories (mode 0700) if they
// are missing, and makes their creation durable.
func NewMaildir(path string, opts MaildirOptions) (*Maildir, error) {
	if path == "" {
		return nil, errors.New("opening maildir: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("opening maildir %s: %w", path, err)
	}
	host, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("opening maildir %s: getting host name: %w", abs, err)
	}
	if err := initMaildir(abs); err != nil {
		return nil, fmt.Errorf("opening maildir %s: %w", abs, err)
	}
	return &Maildir{
		dir:       abs,
		opts:      opts,
		host:      sanitizeHost(host),
		maxHeld:   defaultMaxHeld,
		syncFiles: syncConcurrently,
		syncDir:   osfile.SyncDir,
		live:      make(map[*maildirDelivery]struct{}),
	}, nil
}

// initMaildir creates dir (and missing parents) and its subdirectories, then
// fsyncs the parent of every directory it created: mkdir is not durable
// until the directory holding the new entry is synced.
func initMaildir(dir string) error {
	var created []string // dir and missing parents, deepest first
	for p := dir; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s is not a directory", p)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		created = append(created, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	subs := []string{"tmp", "new", "cur"}
	var newSubs bool
	for _, s := range subs {
		if _, err := os.Stat(filepath.Join(dir, s)); errors.Is(err, fs.ErrNotExist) {
			newSubs = true
		}
	}
	if len(created) > 1 {
		if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
			return err
		}
	}
	if err := maildir.Dir(dir).Init(); err != nil {
		return fmt.Errorf("creating directories: %w", err)
	}
	for _, s := range subs {
		p := filepath.Join(dir, s)
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", p)
		}
	}
	var toSync []string
	if newSubs {
		toSync = append(toSync, dir)
	}
	for _, p := range created {
		toSync = append(toSync, filepath.Dir(p))
	}
	for _, p := range toSync {
		if err := osfile.SyncDir(p); err != nil {
			return err
		}
	}
	return nil
}

// sanitizeHost makes a host name safe as the last part of a Maildir file
// name. The spec replaces '/' and ':'; ',' is replaced too because readers
// such as Dovecot treat it as the start of fields (",S=") in the base name.
func sanitizeHost(h string) string {
	if h == "" {
		h = "localhost"
	}
	return strings.NewReplacer("/", `\057`, ":", `\072`, ",", `\054`).Replace(h)
}

// deliveryCount numbers the deliveries of this process (the Q part).
var deliveryCount atomic.Uint64

// newName returns a unique file name in the modern form of the Maildir
// spec: <seconds>.M<microseconds>P<pid>Q<count>R<random>.<host>. It carries
// no ",S=<size>" because it is fixed before the size is known.
func (m *Maildir) newName() string {
	now := time.Now()
	var r [4]byte
	rand.Read(r[:])
	var b strings.Builder
	b.Grow(64 + len(m.host))
	b.WriteString(strconv.FormatInt(now.Unix(), 10))
	b.WriteString(".M")
	b.WriteString(strconv.Itoa(now.Nanosecond() / 1000))
	b.WriteString("P")
	b.WriteString(strconv.Itoa(os.Getpid()))
	b.WriteString("Q")
	b.WriteString(strconv.FormatUint(deliveryCount.Add(1), 10))
	fmt.Fprintf(&b, "R%08x.", r)
	b.WriteString(m.host)
	return b.String()
}

// Path returns the Maildir's absolute path.
func (m *Maildir) Path() string { return m.dir }

// String names the target for logs.
func (m *Maildir) String() string { return "maildir " + m.dir }

// fileErr describes a failed file operation by the Maildir and the file
// relative to it, and calls a full disk or quota by name.
func (m *Maildir) fileErr(doing, rel string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err // the path is named here already
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		err = le.Err
	}
	var cause string
	switch {
	case errors.Is(err, syscall.ENOSPC):
		cause = "disk full "
	case errors.Is(err, syscall.EDQUOT):
		cause = "quota exceeded "
	}
	return fmt.Errorf("maildir %s: %s%s %s: %w", m.dir, cause, doing, rel, err)
}

var bufPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, bufSize) }}

// Begin creates tmp/NAME exclusively, mode 0600. The Maildir does not use
// Meta.
func (m *Maildir) Begin(ctx context.Context, _ Meta) (Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("maildir %s: beginning delivery: %w", m.dir, err)
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("maildir %s: beginning delivery: %w", m.dir, ErrClosed)
	}
	var (
		name string
		f    *os.File
		err  error
	)
	// The name is unique by construction; a clash can only come from a
	// reused pid in the same microsecond, so retry a few times.
	for range 3 {
		name = m.newName()
		f, err = os.OpenFile(filepath.Join(m.dir, "tmp", name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		return nil, m.fileErr("creating", "tmp/"+name, err)
	}
	bw := bufPool.Get().(*bufio.Writer)
	bw.Reset(f)
	d := &maildirDelivery{m: m, name: name, f: f, bw: bw}
	d.lf.w = bw
	m.mu.Lock()
	closed = m.closed
	if !closed {
		m.live[d] = struct{}{}
	}
	m.mu.Unlock()
	if closed {
		d.Abort()
		return nil, fmt.Errorf("maildir %s: beginning delivery: %w", m.dir, ErrClosed)
	}
	return d, nil
}

// own checks that every delivery of ds was begun by m and appears once.
func (m *Maildir) own(ds []Delivery, doing string) ([]*maildirDelivery, error) {
	out := make([]*maildirDelivery, len(ds))
	seen := make(map[*maildirDelivery]bool, len(ds))
	for i, d := range ds {
		md, ok := d.(*maildirDelivery)
		if !ok || md.m != m {
			return nil, fmt.Errorf("maildir %s: %s delivery %d of the batch: %w", m.dir, doing, i, ErrForeign)
		}
		if seen[md] {
			return nil, fmt.Errorf("maildir %s: %s tmp/%s: listed twice: %w", m.dir, doing, md.name, ErrState)
		}
		seen[md] = true
		out[i] = md
	}
	return out, nil
}

// Prepare fsyncs the tmp files of ds, up to 64 at a time, and closes them.
//
// Concurrent fsyncs were measured against one syncfs(2) and against fsyncs
// in sequence, for batches of 200 messages of 30 KB: see
// BenchmarkMaildirBatch. syncfs is not used: it also waits for every other
// dirty file on the file system, and reports write-back errors only on
// recent kernels.
//
// When ctx ends first, the files not yet synced stay open and Prepare may
// be called again; a file whose fsync failed is never retried (a second
// fsync can succeed without the data being on disk) and its delivery can
// only be aborted.
func (m *Maildir) Prepare(ctx context.Context, ds []Delivery) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("maildir %s: preparing: %w", m.dir, err)
	}
	mds, err := m.own(ds, "preparing")
	if err != nil {
		return err
	}
	var pending []*maildirDelivery
	for _, d := range mds {
		switch d.state {
		case stateClosed:
			if d.f != nil {
				pending = append(pending, d)
			}
		case statePrepared:
		default:
			return fmt.Errorf("maildir %s: preparing tmp/%s: %s: %w", m.dir, d.name, d.state, ErrState)
		}
	}
	files := make([]*os.File, len(pending))
	for i, d := range pending {
		files[i] = d.f
	}
	errs := m.syncFiles(ctx, files)
	var fails []error
	var skipped bool
	for i, d := range pending {
		switch {
		case errors.Is(errs[i], errSkipped):
			skipped = true
			continue
		case errs[i] != nil:
			fails = append(fails, m.fileErr("syncing", "tmp/"+d.name, errs[i]))
			d.closeFile()
			d.state = stateBroken
			continue
		}
		if err := d.closeFile(); err != nil {
			fails = append(fails, m.fileErr("closing", "tmp/"+d.name, err))
			d.state = stateBroken
		}
	}
	if len(fails) > 0 {
		return errors.Join(fails...)
	}
	if skipped {
		return fmt.Errorf("maildir %s: preparing: %w", m.dir, ctx.Err())
	}
	for _, d := range mds {
		d.state = statePrepared
	}
	return nil
}

// errSkipped marks a file that syncPool did not sync because its
// context ended first.
var errSkipped = errors.New("not synced")

// syncConcurrently fsyncs files with up to syncWorkers goroutines owned by
// the call and returns one result per file: nil, the fsync error, or
// errSkipped once ctx has ended.
func syncConcurrently(ctx context.Context, files []*os.File) []error {
	return syncPool(ctx, files, syncWorkers)
}

func syncPool(ctx context.Context, files []*os.File, workers int) []error {
	errs := make([]error, len(files))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, len(files)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(files) {
					return
				}
				if ctx.Err() != nil {
					errs[i] = errSkipped
					continue
				}
				errs[i] = files[i].Sync()
			}
		})
	}
	wg.Wait()
	return errs
}

// Publish renames tmp/NAME to new/NAME for each of ds in order, then
// fsyncs new/ once. A rename failure stops the batch: the deliveries
// renamed before it are made durable and reported in a *PublishError. If
// the fsync of new/ fails, no delivery of ds is reported published, though
// their files are in new/: the caller must not rely on them, and Delivered
// will find whichever survive. ctx is checked once, before the first
// rename: a batch of renames is not interrupted.
func (m *Maildir) Publish(ctx context.Context, ds []Delivery) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("maildir %s: publishing: %w", m.dir, err)
	}
	mds, err := m.own(ds, "publishing")
	if err != nil {
		return err
	}
	for _, d := range mds {
		if d.state != statePrepared {
			return fmt.Errorf("maildir %s: publishing tmp/%s: %s: %w", m.dir, d.name, d.state, ErrState)
		}
	}
	var (
		published []int
		renameErr error
	)
	for i, d := range mds {
		err := os.Rename(filepath.Join(m.dir, "tmp", d.name), filepath.Join(m.dir, "new", d.name))
		if err != nil {
			renameErr = m.fileErr("moving", "tmp/"+d.name+" to new/", err)
			if errors.Is(err, fs.ErrNotExist) {
				// Claim took the file: whoever resolved this
				// delivery's intent decided it was not published, and
				// so it must stay.
				renameErr = fmt.Errorf("%w (the staged file was claimed by the poll that resolved its intent; not published)", renameErr)
			}
			break
		}
		d.state = stateRenamed
		m.forget(d)
		published = append(published, i)
	}
	if len(published) > 0 {
		// One directory fsync makes every rename of the batch durable; the
		// entries leaving tmp/ need none (a stale one is only garbage).
		if err := m.syncDir(filepath.Join(m.dir, "new")); err != nil {
			return &PublishError{Err: errors.Join(renameErr, m.fileErr("syncing", "new/", err))}
		}
		for _, i := range published {
			mds[i].state = statePublished
		}
	}
	if renameErr != nil {
		return &PublishError{Published: published, Err: renameErr}
	}
	return nil
}

// validToken reports whether t could be a file name made by newName.
func validToken(t string) bool {
	return t != "" && t[0] != '.' && !strings.ContainsAny(t, "/:,\x00")
}

// Claim takes the staged files of tokens away from the deliveries that
// staged them, whichever process holds those: it removes tmp/TOKEN, one
// unlink(2) per token, and reports the tokens whose file it removed. It is
// the first step of resolving open intents, before Delivered: the
// process that staged a file may be alive still (a daemon paused past
// its lease, whose account another daemon took over), and its rename
// into new/ would then publish a message that the resolver, seeing it
// unpublished, fetches again. Rename and unlink are atomic, so exactly
// one of them finds tmp/TOKEN: after a successful claim that publisher's
// rename fails (ENOENT) and the message is never published under TOKEN;
// a token Claim found no file for was published already or never
// staged, and Delivered tells which.
//
// tmp/ is fsynced once when a file was removed, so that the claim also
// holds across a crash of the host. A token of a live delivery of m
// belongs to Abort, as for Cleanup.
func (m *Maildir) Claim(ctx context.Context, tokens []string) (map[string]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("maildir %s: claiming staged files: %w", m.dir, err)
	}
	for _, t := range tokens {
		if !validToken(t) {
			return nil, fmt.Errorf("maildir %s: claiming %q: %w", m.dir, t, ErrBadToken)
		}
	}
	claimed := make(map[string]bool, len(tokens))
	for _, t := range tokens {
		err := os.Remove(filepath.Join(m.dir, "tmp", t))
		switch {
		case err == nil:
			claimed[t] = true
		case errors.Is(err, fs.ErrNotExist):
			claimed[t] = false
		default:
			return nil, m.fileErr("claiming", "tmp/"+t, err)
		}
	}
	for _, c := range claimed {
		if c {
			if err := m.syncDir(filepath.Join(m.dir, "tmp")); err != nil {
				return nil, m.fileErr("syncing", "tmp/", err)
			}
			break
		}
	}
	return claimed, nil
}

// Delivered looks for new/TOKEN, and for the tokens not found there, reads
// cur/ once for TOKEN, TOKEN:2,FLAGS or TOKEN,FIELDS... (a reader moved
// it and may have added flags or size fields).
//
// When it finds a token in new/ it fsyncs new/ before it answers: the
// rename may be another process's that has not synced new/ yet (it was
// paused, or died, between the two), and the caller records what
// Delivered found.
func (m *Maildir) Delivered(ctx context.Context, tokens []string) (map[string]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("maildir %s: looking for delivered messages: %w", m.dir, err)
	}
	for _, t := range tokens {
		if !validToken(t) {
			return nil, fmt.Errorf("maildir %s: looking for %q: %w", m.dir, t, ErrBadToken)
		}
	}
	found := make(map[string]bool, len(tokens))
	missing := make(map[string]bool)
	inNew := false
	for _, t := range tokens {
		_, err := os.Lstat(filepath.Join(m.dir, "new", t))
		switch {
		case err == nil:
			found[t] = true
			inNew = true
		case errors.Is(err, fs.ErrNotExist):
			found[t] = false
			missing[t] = true
		default:
			return nil, m.fileErr("looking for", "new/"+t, err)
		}
	}
	if inNew {
		if err := m.syncDir(filepath.Join(m.dir, "new")); err != nil {
			return nil, m.fileErr("syncing", "new/", err)
		}
	}
	if len(missing) == 0 {
		return found, nil
	}
	dir, err := os.Open(filepath.Join(m.dir, "cur"))
	if err != nil {
		return nil, m.fileErr("reading", "cur/", err)
	}
	defer dir.Close()
	for {
		names, err := dir.Readdirnames(4096)
		for _, n := range names {
			base := n
			if i := strings.IndexAny(n, ":,"); i >= 0 {
				base = n[:i]
			}
			if missing[base] {
				found[base] = true
				delete(missing, base)
			}
		}
		if errors.Is(err, io.EOF) || len(missing) == 0 {
			return found, nil
		}
		if err != nil {
			return nil, m.fileErr("reading", "cur/", err)
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("maildir %s: reading cur/: %w", m.dir, err)
		}
	}
}

// Cleanup removes tmp/TOKEN for each token. It is meant for tokens left by
// an earlier process; a token of a live delivery of m belongs to Abort.
// Removing entries from tmp/ needs no directory fsync: a removal lost in a
// crash only leaves garbage behind.
func (m *Maildir) Cleanup(ctx context.Context, tokens []string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("maildir %s: cleaning up: %w", m.dir, err)
	}
	for _, t := range tokens {
		if !validToken(t) {
			return fmt.Errorf("maildir %s: cleaning up %q: %w", m.dir, t, ErrBadToken)
		}
	}
	var errs []error
	for _, t := range tokens {
		err := os.Remove(filepath.Join(m.dir, "tmp", t))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, m.fileErr("removing", "tmp/"+t, err))
		}
	}
	return errors.Join(errs...)
}

// Close aborts the deliveries that were begun and not published. Later
// calls to Begin fail with ErrClosed.
func (m *Maildir) Close() error {
	m.mu.Lock()
	m.closed = true
	live := make([]*maildirDelivery, 0, len(m.live))
	for d := range m.live {
		live = append(live, d)
	}
	m.mu.Unlock()
	var errs []error
	for _, d := range live {
		if err := d.Abort(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m *Maildir) forget(d *maildirDelivery) {
	m.mu.Lock()
	delete(m.live, d)
	m.mu.Unlock()
}

// deliveryState is where a maildirDelivery stands.
type deliveryState int

const (
	stateWriting   deliveryState = iota // open for Write
	stateClosed                         // written and flushed, not yet durable
	statePrepared                       // fsynced, file closed, in tmp/
	stateRenamed                        // in new/, not known durable
	statePublished                      // in new/, new/ fsynced
	stateAborted                        // discarded by Abort
	stateBroken                         // failed; the tmp file may remain until Abort
)

func (s deliveryState) String() string {
	switch s {
	case stateWriting:
		return "still being written"
	case stateClosed:
		return "closed"
	case statePrepared:
		return "prepared"
	case stateRenamed, statePublished:
		return "already published"
	case stateAborted:
		return "aborted"
	case stateBroken:
		return "failed"
	}
	return "state " + strconv.Itoa(int(s))
}

// maildirDelivery writes one message to tmp/name.
type maildirDelivery struct {
	m     *Maildir
	name  string
	f     *os.File      // nil once closed
	bw    *bufio.Writer // nil once Close flushed it
	lf    lfWriter
	held  bool // f counts against m.held
	state deliveryState
	err   error // the first write error; the delivery is dead after it
}

func (d *maildirDelivery) Token() string { return d.name }

func (d *maildirDelivery) Size() int64 { return d.lf.n }

func (d *maildirDelivery) Write(p []byte) (int, error) {
	if d.state != stateWriting {
		return 0, fmt.Errorf("maildir %s: writing tmp/%s: %s: %w", d.m.dir, d.name, d.state, ErrState)
	}
	if d.err != nil {
		return 0, d.err
	}
	var (
		n   int
		err error
	)
	if d.m.opts.KeepCRLF {
		n, err = d.lf.w.Write(p)
		d.lf.n += int64(n)
	} else {
		n, err = d.lf.Write(p)
	}
	if err != nil {
		d.err = d.m.fileErr("writing", "tmp/"+d.name, err)
		return n, d.err
	}
	return n, nil
}

// Close flushes the message to its tmp file without fsyncing it, unless
// too many closed deliveries of this Maildir already hold an open file: then
// it fsyncs and closes the file now. On error the tmp file is removed.
func (d *maildirDelivery) Close() error {
	if d.state != stateWriting {
		return fmt.Errorf("maildir %s: closing tmp/%s: %s: %w", d.m.dir, d.name, d.state, ErrState)
	}
	err := d.err
	if err == nil {
		if err = d.lf.Flush(); err == nil {
			err = d.bw.Flush()
		}
		if err != nil {
			err = d.m.fileErr("writing", "tmp/"+d.name, err)
		}
	}
	d.releaseBuf()
	if err != nil {
		d.discard()
		d.state = stateBroken
		return err
	}
	m := d.m
	m.mu.Lock()
	spill := m.held >= m.maxHeld || !acquireHeld()
	if !spill {
		m.held++
		d.held = true
	}
	m.mu.Unlock()
	if spill {
		if err := d.f.Sync(); err != nil {
			d.discard()
			d.state = stateBroken
			return m.fileErr("syncing", "tmp/"+d.name, err)
		}
		if err := d.closeFile(); err != nil {
			d.discard()
			d.state = stateBroken
			return m.fileErr("closing", "tmp/"+d.name, err)
		}
	}
	d.state = stateClosed
	return nil
}

// Abort removes the tmp file. It does nothing once the delivery was
// renamed into new/.
func (d *maildirDelivery) Abort() error {
	switch d.state {
	case stateRenamed, statePublished, stateAborted:
		return nil
	}
	d.releaseBuf()
	err := d.discard()
	d.state = stateAborted
	return err
}

// discard closes and removes the tmp file and forgets the delivery.
func (d *maildirDelivery) discard() error {
	d.closeFile()
	d.m.forget(d)
	err := os.Remove(filepath.Join(d.m.dir, "tmp", d.name))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return d.m.fileErr("removing", "tmp/"+d.name, err)
	}
	return nil
}

func (d *maildirDelivery) closeFile() error {
	if d.f == nil {
		return nil
	}
	err := d.f.Close()
	d.f = nil
	if d.held {
		d.held = false
		d.m.mu.Lock()
		d.m.held--
		d.m.mu.Unlock()
		releaseHeld()
	}
	return err
}

func (d *maildirDelivery) releaseBuf() {
	if d.bw == nil {
		return
	}
	d.bw.Reset(nil)
	bufPool.Put(d.bw)
	d.bw = nil
	d.lf.w = nil
}
