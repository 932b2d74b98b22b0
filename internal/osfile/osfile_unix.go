//go:build unix

package osfile

import (
	"errors"

	"golang.org/x/sys/unix"
)

// ProcessAlive reports whether pid names a running process; EPERM means it
// exists but belongs to someone else.
func ProcessAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}
