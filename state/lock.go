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

	"popsync/internal/osfile"
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
	_ = osfile.Unlock(l.f)
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
	if _, err := checkLockDir(s.lockDir); err != nil {
		return nil, fmt.Errorf("locking %s: %w", a, err)
	}
	f, err := OpenLockFile(p, "account lock file")
	if errors.Is(err, fs.ErrNotExist) {
		// The lock folder was removed behind our back.
		if err = os.Mkdir(s.lockDir, 0o700); err == nil || errors.Is(err, fs.ErrExist) {
			if _, err = checkLockDir(s.lockDir); err == nil {
				f, err = OpenLockFile(p, "account lock file")
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", a, err)
	}
	held, err := osfile.TryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s with %s: %w", a, p, err)
	}
	if !held {
		holder := "another poll"
		if pid := osfile.Holder(f); pid != 0 {
			holder = "process " + strconv.Itoa(pid)
		}
		f.Close()
		return nil, fmt.Errorf("locking %s: held by %s (lock file %s): %w", a, holder, p, ErrLocked)
	}
	osfile.WriteHolder(f, "account "+a.String())
	l := &accountLock{s: s, f: f, a: a}
	l.LeaseState = NewLeaseState(l.unlock)
	s.locks[l] = struct{}{}
	return l, nil
}
