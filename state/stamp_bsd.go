//go:build darwin || dragonfly || freebsd || netbsd || openbsd

package state

import "syscall"

func statTimes(st *syscall.Stat_t) (mtime, ctime int64) {
	return st.Mtimespec.Nano(), st.Ctimespec.Nano()
}
