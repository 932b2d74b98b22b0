//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package state

import (
	"errors"
	"os"
)

// CheckFolder has no owner and mode bits to check on this platform.
func CheckFolder(dir string) error { return nil }

func checkLockDir(dir string) (bool, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil && fi.IsDir(), err
}

func noLink(p, what string) error { return nil }

// OpenLockFile opens the lock file at p, creating it if missing.
func OpenLockFile(p, what string) (*os.File, error) {
	return os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
}

func createExcl(p string) (*os.File, error) {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
}
