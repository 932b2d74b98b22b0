//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"popsync/internal/osfile"
)

// Files in the state folder are opened as if someone else might have
// planted a symbolic link there: a link at the daemon lock or a stamp
// would make popsync truncate or overwrite a file of the planter's
// choosing. The folder itself must therefore be writable by its owner only
// (CheckFolder), and every file popsync writes in it is opened with
// O_NOFOLLOW and checked after opening (OpenLockFile).

// CheckFolder refuses a folder that someone other than the user running
// popsync could create, replace or rename files in: one that is not a
// folder, is writable by group or others, or is not owned by the
// effective user. dir may be reached through a symbolic link; its target
// is what is checked. The error names the folder, says why and how to fix
// it, and wraps ErrUnsafe.
func CheckFolder(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("checking state folder %s: %w", dir, err)
	}
	return checkDir(dir, "state folder", st)
}

// checkDir judges a folder popsync writes into from its Stat result.
func checkDir(dir, what string, fi fs.FileInfo) error {
	if !fi.IsDir() {
		return &stateError{msg: fmt.Sprintf("%s %s is not a folder", what, dir), kind: ErrUnsafe}
	}
	if err := checkOwner(dir, what, fi); err != nil {
		return err
	}
	// Sticky or not: in a sticky folder others still create new names,
	// such as a link where popsync is about to make its lock.
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		shown := uint32(perm)
		if fi.Mode()&fs.ModeSticky != 0 {
			shown |= 0o1000
		}
		return &stateError{
			msg: fmt.Sprintf("%s %s is writable by others (mode %04o): anyone who can write there can plant a link that makes popsync overwrite their choice of your files; run: chmod go-w %s",
				what, dir, shown, osfile.ShellQuote(dir)),
			kind: ErrUnsafe,
		}
	}
	return nil
}

// checkOwner refuses a file or folder not owned by the effective user.
func checkOwner(p, what string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if uid := os.Geteuid(); int(st.Uid) != uid {
		return &stateError{
			msg: fmt.Sprintf("%s %s is owned by uid %d, not by the user running popsync (uid %d); run: chown %d %s, or use a [state] path of your own",
				what, p, st.Uid, uid, uid, osfile.ShellQuote(p)),
			kind: ErrUnsafe,
		}
	}
	return nil
}

// checkLockDir checks the lock folder before popsync opens files in it:
// a real folder (not a link), owned by the user, not writable by others.
// A missing folder is not an error (ok is false).
func checkLockDir(dir string) (ok bool, err error) {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking lock folder %s: %w", dir, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return false, symlinkError(dir, "lock folder")
	}
	return true, checkDir(dir, "lock folder", fi)
}

// noLink refuses a symbolic link (or anything but a regular file) at p, a
// file that another program (SQLite) will open. A missing file is fine.
func noLink(p, what string) error {
	fi, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("checking %s %s: %w", what, p, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return symlinkError(p, what)
	case !fi.Mode().IsRegular():
		return &stateError{msg: fmt.Sprintf("%s %s is not a regular file", what, p), kind: ErrUnsafe}
	}
	return nil
}

func symlinkError(p, what string) error {
	fix := "remove the link (rm " + osfile.ShellQuote(p) + "); popsync makes what it needs"
	if what == "state file" {
		fix = "set [state] path to the file the link points to, or remove the link"
	}
	return &stateError{
		msg: fmt.Sprintf("%s %s is a symbolic link, and popsync follows no link in its state folder (one planted there could make it overwrite another file); %s",
			what, p, fix),
		kind: ErrUnsafe,
	}
}

// OpenLockFile opens the lock file at p for reading and writing, creating
// it (0600) if missing, without following a symbolic link, and refuses
// anything but a regular file owned by the user with one link. The caller
// checked p's folder (CheckFolder). what names the file in errors ("daemon
// lock").
func OpenLockFile(p, what string) (*os.File, error) {
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, symlinkError(p, what)
		}
		return nil, fmt.Errorf("opening %s %s: %w", what, p, fileErr(err))
	}
	fi, err := f.Stat()
	if err == nil {
		err = checkLockFile(p, what, fi)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func checkLockFile(p, what string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return &stateError{msg: fmt.Sprintf("%s %s is not a regular file", what, p), kind: ErrUnsafe}
	}
	if err := checkOwner(p, what, fi); err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
		return &stateError{
			msg:  fmt.Sprintf("%s %s has %d hard links: another name for it may be someone else's file; remove it (rm %s), popsync makes a new one", what, p, st.Nlink, osfile.ShellQuote(p)),
			kind: ErrUnsafe,
		}
	}
	return nil
}

// createExcl creates p (0600) for writing; it never follows a link and
// never opens an existing file: whatever is at p is removed first.
func createExcl(p string) (*os.File, error) {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
}
