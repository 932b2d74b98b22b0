package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// osUser is a Unix user that runs part of the benchmark: Dovecot (the
// server user) or the fetchers (the client user). When the benchmark runs
// as root the two are unprivileged users of their own, so that no tool
// runs as root (getmail refuses to deliver as root) and the server and the
// clients cannot read each other's files; otherwise both are the current
// user.
type osUser struct {
	name, group string
	uid, gid    int
	home        string
	switchTo    bool // this process is root and runs the user's processes as uid/gid
}

// lookupUser returns the named user when this process is root, and the
// current user otherwise (name is then ignored).
func lookupUser(name string) (*osUser, error) {
	var u *user.User
	var err error
	root := os.Geteuid() == 0
	if root {
		if u, err = user.Lookup(name); err != nil {
			return nil, fmt.Errorf("looking up user %s (as root the benchmark runs the server and the fetchers as unprivileged users; create it with `useradd --system --no-create-home %s` or name another with a flag): %w", name, name, err)
		}
	} else if u, err = user.Current(); err != nil {
		return nil, fmt.Errorf("looking up the current user: %w", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("parsing uid of %s: %w", u.Username, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("parsing gid of %s: %w", u.Username, err)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("looking up the group of %s: %w", u.Username, err)
	}
	return &osUser{name: u.Username, group: g.Name, uid: uid, gid: gid, home: u.HomeDir, switchTo: root && uid != 0}, nil
}

// credential is what exec.Cmd needs to run a process as u; nil when no
// switch is needed.
func (u *osUser) credential() *syscall.Credential {
	if !u.switchTo {
		return nil
	}
	return &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid), Groups: []uint32{}}
}

func (u *osUser) chown(path string) error {
	if !u.switchTo {
		return nil
	}
	if err := os.Lchown(path, u.uid, u.gid); err != nil {
		return fmt.Errorf("handing %s to %s: %w", path, u.name, err)
	}
	return nil
}

// mkdirAll creates path and missing parents with mode and gives the
// directories it created to u.
func (u *osUser) mkdirAll(path string, mode os.FileMode) error {
	var created []string
	for p := path; ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		created = append(created, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	if err := os.MkdirAll(path, mode); err != nil {
		return fmt.Errorf("making %s: %w", path, err)
	}
	for _, p := range created {
		if err := os.Chmod(p, mode); err != nil {
			return fmt.Errorf("making %s: %w", p, err)
		}
		if err := u.chown(p); err != nil {
			return err
		}
	}
	return nil
}

// chownTree gives every file and folder under root to u.
func (u *osUser) chownTree(root string) error {
	if !u.switchTo {
		return nil
	}
	return filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return u.chown(p)
	})
}
