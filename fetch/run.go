package fetch

import (
	"context"
	"fmt"
	"sync"

	"popsync/configs"
)

// PollAll polls accounts, at most maxParallel at once, and returns their
// results in the order given. One account's failure, even a panic, is
// contained in its own Result.
func (o *Options) PollAll(ctx context.Context, accounts []*configs.Account, maxParallel int) []Result {
	if maxParallel <= 0 {
		maxParallel = 1
	}
	results := make([]Result, len(accounts))
	sem := make(chan struct{}, maxParallel)
	var wg sync.WaitGroup
	for i, a := range accounts {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			results[i] = Result{Account: a.Name, Err: fmt.Errorf("not polled: %w", context.Cause(ctx))}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = o.Poll(ctx, a)
		}()
	}
	wg.Wait()
	return results
}
