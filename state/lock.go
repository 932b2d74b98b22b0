package state

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// lockFileName names the lock file of a (canonical): the first 16 hex digits
// of the SHA-256 of the identity, NUL-separated so that no two identities
// share an encoding.
func lockFileName(a Account) string {
	sum := sha256.Sum256([]byte(a.Host + "\x00" + strconv.Itoa(a.Port) + "\x00" + a.User))
	return hex.EncodeToString(sum[:])[:16] + ".lock"
}

// accountLock is one held account lease: an open lock file carrying an
// exclusive flock(2). It is never lost while the process lives; closing
// the Store ends it as lost.
type accountLock struct {
	*LeaseState
	s *SQLite
	f *os.File
	a Account
}

// unlock drops the flock; LeaseState runs it once.
func (l *accountLock) unlock() {
	l.s.mu.Lock()
	delete(l.s.locks, l)
	l.s.mu.Unlock()
	// Closing the only descriptor of the open file description drops
	// the flock; unlocking first is explicit about it.
	_ = unlockFile(l.f)
	l.f.Close()
}

// LockAccount implements Store with flock(2) on <db>.locks/<hash>.lock.
//
// flock locks belong to the open file description, so a second LockAccount in
// the same process (another goroutine or another *SQLite on the same file)
// conflicts just as another process does, and the kernel drops the lock when
// the process dies: the lock cannot go stale. The file is opened close-on-exec
// (os.OpenFile always is), so MDA children do not inherit it. Lock files on
// network file systems are only as good as the server's flock support.
func (s *SQLite) LockAccount(ctx context.Context, a Account) (Lease, error) {
	a, err := CanonicalAccount(a)
	if err != nil {
		return nil, fmt.Errorf("locking account: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("locking %s: %w", a, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("locking %s: %w", a, ErrClosed)
	}
	p := filepath.Join(s.lockDir, lockFileName(a))
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		// The lock folder was removed behind our back.
		if err = os.Mkdir(s.lockDir, 0o700); err == nil || errors.Is(err, fs.ErrExist) {
			f, err = os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", a, fileErr(err))
	}
	held, err := tryLockFile(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s with %s: %w", a, p, err)
	}
	if !held {
		f.Close()
		holder := "another poll"
		if pid := lockHolder(p); pid != 0 {
			holder = "process " + strconv.Itoa(pid)
		}
		return nil, fmt.Errorf("locking %s: held by %s (lock file %s): %w", a, holder, p, ErrLocked)
	}
	// Who holds the lock, for the error message of the next one who tries.
	// The kernel lock is what counts; the contents are only a hint.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(fmt.Sprintf("pid %d\naccount %s\n", os.Getpid(), a)), 0)
	}
	l := &accountLock{s: s, f: f, a: a}
	l.LeaseState = NewLeaseState(l.unlock)
	s.locks[l] = struct{}{}
	return l, nil
}

// lockHolder returns the pid written in a lock file, 0 if unknown.
func lockHolder(p string) int {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimPrefix(line, "pid "))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
