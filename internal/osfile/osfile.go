// Package osfile holds the few operating-system file primitives that
// several popsync packages need and that must behave the same in all of
// them: making a folder's entries durable (SyncDir), taking an exclusive
// lock file that names its holder (TryLock, WriteHolder, Holder), and
// telling whether that holder still runs (ProcessAlive), and quoting a path
// for the command an error advises (ShellQuote).
//
// It is not responsible for where those files are, for refusing links or
// unsafe folders (package state opens lock files safely), or for what a
// lock protects.
package osfile

import (
	"io"
	"os"
	"strconv"
	"strings"
)

// SyncDir fsyncs a folder, making the entries created, renamed or removed
// in it durable.
func SyncDir(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// WriteHolder replaces the contents of a held lock file with "pid N\n" and
// the extra lines, for the message of the next one who tries. The kernel
// lock is what counts; the contents are only a hint, so a failure to
// write them is ignored.
func WriteHolder(f *os.File, extra ...string) {
	if err := f.Truncate(0); err != nil {
		return
	}
	text := "pid " + strconv.Itoa(os.Getpid()) + "\n"
	for _, l := range extra {
		text += l + "\n"
	}
	_, _ = f.WriteAt([]byte(text), 0)
}

// Holder returns the pid a lock file names (see WriteHolder), 0 if it
// names none.
func Holder(f *os.File) int {
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 64))
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

// ShellQuote quotes s, a path, for a POSIX shell when it needs it, for the
// commands an error tells the user to run ("chmod 600 ...").
func ShellQuote(s string) string {
	if strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+,:@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
