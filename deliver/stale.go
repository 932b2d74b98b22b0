package deliver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"

	"popsync/internal/osfile"
)

// StaleRemover is implemented by targets that can leave staged files
// behind when the process is killed before it recorded an intent for
// them (a crash while a message was still streaming in). The fetcher
// calls it at the start of a poll, after settling open intents.
type StaleRemover interface {
	RemoveStale(ctx context.Context) (removed int, err error)
}

// ourName matches the names newName makes; the P part is the writer's pid.
var ourName = regexp.MustCompile(`^[0-9]+\.M[0-9]+P([0-9]+)Q[0-9]+R[0-9a-f]{8}\.(.+)$`)

// RemoveStale removes files in tmp/ that a popsync process on this host
// began and can no longer finish, because that process is gone. Files of
// other programs (an LDA writing into the same Maildir) and of live
// processes are left alone, as the Maildir spec asks.
func (m *Maildir) RemoveStale(ctx context.Context) (int, error) {
	ents, err := os.ReadDir(filepath.Join(m.dir, "tmp"))
	if err != nil {
		return 0, m.fileErr("reading", "tmp", err)
	}
	removed := 0
	var errs []error
	for _, de := range ents {
		if err := ctx.Err(); err != nil {
			return removed, fmt.Errorf("maildir %s: removing stale files: %w", m.dir, err)
		}
		sub := ourName.FindStringSubmatch(de.Name())
		if sub == nil || sub[2] != m.host {
			continue
		}
		pid, err := strconv.Atoi(sub[1])
		if err != nil || pid == os.Getpid() || osfile.ProcessAlive(pid) {
			continue
		}
		err = os.Remove(filepath.Join(m.dir, "tmp", de.Name()))
		switch {
		case err == nil:
			removed++
		case !errors.Is(err, fs.ErrNotExist):
			errs = append(errs, m.fileErr("removing", "tmp/"+de.Name(), err))
		}
	}
	return removed, errors.Join(errs...)
}
