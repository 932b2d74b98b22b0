//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package configs

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"popsync/internal/osfile"
)

// ownerProblems checks who could have written the config file at abs
// (whose Stat is fi): the file names programs popsync runs and may hold
// passwords, so it must be owned by the user running popsync or by root,
// in a folder only they can change (one writable by others lets anyone
// replace the file, unless the folder is sticky, as /tmp is).
func ownerProblems(abs string, fi fs.FileInfo) []string {
	var out []string
	uid := os.Geteuid()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != uid && st.Uid != 0 {
		out = append(out, fmt.Sprintf("is owned by uid %d, not by the user running popsync (uid %d) or root: its owner could make popsync run any program; run: chown %d %s",
			st.Uid, uid, uid, osfile.ShellQuote(abs)))
	}
	dir := filepath.Dir(abs)
	di, err := os.Stat(dir)
	if err != nil {
		return out
	}
	if st, ok := di.Sys().(*syscall.Stat_t); ok && int(st.Uid) != uid && st.Uid != 0 {
		out = append(out, fmt.Sprintf("is in folder %s, owned by uid %d, not by the user running popsync (uid %d) or root: its owner could replace the file; run: chown %d %s, or move the file",
			dir, st.Uid, uid, uid, osfile.ShellQuote(dir)))
	}
	if perm := di.Mode().Perm(); perm&0o022 != 0 && di.Mode()&fs.ModeSticky == 0 {
		out = append(out, fmt.Sprintf("is in folder %s, which others can write (mode %04o): anyone who can write there could replace the file; run: chmod go-w %s",
			dir, perm, osfile.ShellQuote(dir)))
	}
	return out
}
