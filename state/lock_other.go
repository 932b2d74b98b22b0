//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package state

import (
	"errors"
	"os"
)

var errNoFlock = errors.New("account locks need flock(2), which this platform lacks")

func tryLockFile(*os.File) (bool, error) { return false, errNoFlock }

func unlockFile(*os.File) error { return errNoFlock }

func dirWritable(string) error { return nil }
