//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package osfile

import (
	"errors"
	"os"
)

// ErrNoFlock: this platform has no flock(2).
var ErrNoFlock = errors.New("file locks need flock(2), which this platform lacks")

// TryLock cannot lock here.
func TryLock(*os.File) (bool, error) { return false, ErrNoFlock }

// Unlock cannot unlock here.
func Unlock(*os.File) error { return ErrNoFlock }
