package deliver

import (
	"context"
	"os"

	"golang.org/x/sys/unix"
)

func init() {
	syncStrategies = append(syncStrategies, struct {
		name string
		fn   func(ctx context.Context, files []*os.File) []error
	}{"syncfs", syncFS})
}

// syncFS makes the batch durable with one syncfs(2) on the file system of
// the first file. It is the alternative Prepare was measured against.
func syncFS(_ context.Context, files []*os.File) []error {
	errs := make([]error, len(files))
	if len(files) == 0 {
		return errs
	}
	err := unix.Syncfs(int(files[0].Fd()))
	for i := range errs {
		errs[i] = err
	}
	return errs
}
