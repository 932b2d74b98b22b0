package state

import (
	"os"
	"path/filepath"
)

// The check at open (PRAGMA quick_check) reads the whole file: for a
// seen-set of 100,000 messages that is about a tenth of a second, as much
// as the rest of a poll that finds nothing new. A clean Close therefore
// leaves a stamp of the file it closed (inode, size, modification and
// change times) in the lock folder, and the next open skips the check when
// the file still matches the stamp: nothing has touched it since popsync,
// having started from a checked file, closed it. Any other writer, a
// restore, a truncation or a crash changes the change time (which no
// program can set) or leaves a write-ahead log, and the check runs. The
// stamp is a cache: lost or garbled, it only costs one check.
const stampName = "checked"

// stampMatches reports whether the file at abs is the one the stamp in
// lockDir describes.
func stampMatches(abs, lockDir string) bool {
	want, err := os.ReadFile(filepath.Join(lockDir, stampName))
	if err != nil {
		return false
	}
	got, ok := fileStamp(abs)
	return ok && got == string(want)
}

// writeStamp records the file at abs as closed cleanly. It writes nothing
// when the file cannot be stamped (a write-ahead log is left, another
// process has it open, or the system has no change times).
func writeStamp(abs, lockDir string) {
	st, ok := fileStamp(abs)
	if !ok {
		return
	}
	if ok, err := checkLockDir(lockDir); !ok || err != nil {
		return
	}
	// A new file, never an existing one nor a link's target: the rename
	// then replaces whatever is at the stamp's name, link or not.
	tmp := filepath.Join(lockDir, stampName+".tmp")
	f, err := createExcl(tmp)
	if err != nil {
		return
	}
	_, err = f.WriteString(st)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(lockDir, stampName))
	}
	if err != nil {
		os.Remove(tmp)
	}
}
