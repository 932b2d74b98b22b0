package state

import (
	"fmt"
	"sync"
)

// Lease is one poller's hold on one account, from Store.LockAccount. While
// it is held no other poller (goroutine, process or, with a shared store,
// another host) works on the account. A lease can be lost before it is
// released, for example when a shared store cannot renew it in time: the
// poller checks Err before each step that commits something (recording a
// delivery, DELE, QUIT) and stops without committing once it is lost.
//
// The SQLite store's lease is an flock(2) and is never lost while the
// process lives; it ends with Release, Store.Close or the process.
type Lease interface {
	// Done is closed when the lease ends: lost, released, or its Store
	// closed.
	Done() <-chan struct{}
	// Err is nil while the lease is held. Once it ended it says why:
	// an error wrapping ErrLeaseLost, or ErrLeaseReleased.
	Err() error
	// Release gives the account back. It may be called more than once.
	Release()
}

// LeaseState is the bookkeeping a backend's Lease shares: the Done channel,
// the reason it ended, and a release that runs once. A backend embeds it,
// calls End when the lease is lost, and implements nothing else.
type LeaseState struct {
	once    sync.Once
	done    chan struct{}
	mu      sync.Mutex
	err     error
	release func() // gives the account back in the backend; run once
}

// NewLeaseState returns a held lease whose Release runs release once.
func NewLeaseState(release func()) *LeaseState {
	return &LeaseState{done: make(chan struct{}), release: release}
}

// Done implements Lease.
func (l *LeaseState) Done() <-chan struct{} { return l.done }

// Err implements Lease.
func (l *LeaseState) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Release implements Lease.
func (l *LeaseState) Release() { l.End(ErrLeaseReleased) }

// End ends the lease with err (the first reason given stays), closes Done
// and releases the account in the backend. A backend calls it with an
// error wrapping ErrLeaseLost when it finds the lease lost.
func (l *LeaseState) End(err error) {
	l.once.Do(func() {
		l.mu.Lock()
		l.err = err
		l.mu.Unlock()
		close(l.done)
		if l.release != nil {
			l.release()
		}
	})
}

// lostLease is the reason of a lease whose Store was closed under it.
func lostLease(a Account, why string) error {
	return fmt.Errorf("lease on %s: %s: %w", a, why, ErrLeaseLost)
}
