//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package state

import (
	"fmt"
	"os"
	"syscall"
)

// fileStamp describes the state file at abs by inode, size, modification
// and change time; ok is false when a write-ahead log with content is left
// next to it (its state is then not the file's alone).
func fileStamp(abs string) (stamp string, ok bool) {
	if wal, err := os.Stat(abs + "-wal"); err == nil && wal.Size() > 0 {
		return "", false
	}
	var st syscall.Stat_t
	if err := syscall.Stat(abs, &st); err != nil {
		return "", false
	}
	mtime, ctime := statTimes(&st)
	return fmt.Sprintf("popsync-state-stamp 1\ndev %d ino %d size %d mtime %d ctime %d\n",
		uint64(st.Dev), uint64(st.Ino), st.Size, mtime, ctime), true
}
