//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package state

import "golang.org/x/sys/unix"

// dirWritable reports whether this process may create files in dir. It asks
// the kernel (access(2)), so it also answers for root and read-only mounts.
func dirWritable(dir string) error {
	return unix.Access(dir, unix.W_OK|unix.X_OK)
}
