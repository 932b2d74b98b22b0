package statetest

import (
	"errors"
	"sync"
	"testing"

	"popsync/state"
)

func testLockAccount(t *testing.T, s state.Store) {
	ctx := t.Context()
	lease, err := s.LockAccount(ctx, acct)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.LockAccount(ctx, acct); !errors.Is(err, state.ErrLocked) {
		t.Fatalf("second LockAccount: err = %v, want ErrLocked", err)
	}
	shouty := acct
	shouty.Host = "POP.EXAMPLE.NET"
	if _, err := s.LockAccount(ctx, shouty); !errors.Is(err, state.ErrLocked) {
		t.Fatalf("LockAccount of the same identity in capitals: err = %v, want ErrLocked", err)
	}
	leaseOther, err := s.LockAccount(ctx, other)
	if err != nil {
		t.Fatalf("LockAccount of another account: %v", err)
	}
	if err := lease.Err(); err != nil {
		t.Fatalf("held lease: Err() = %v", err)
	}
	select {
	case <-lease.Done():
		t.Fatal("held lease: Done is closed")
	default:
	}
	lease.Release()
	lease.Release() // harmless
	select {
	case <-lease.Done():
	default:
		t.Fatal("released lease: Done is not closed")
	}
	if err := lease.Err(); !errors.Is(err, state.ErrLeaseReleased) || errors.Is(err, state.ErrLeaseLost) {
		t.Fatalf("released lease: Err() = %v, want ErrLeaseReleased", err)
	}
	if err := leaseOther.Err(); err != nil {
		t.Fatalf("releasing one lease ended another: %v", err)
	}
	lease2, err := s.LockAccount(ctx, acct)
	if err != nil {
		t.Fatalf("LockAccount after unlock: %v", err)
	}
	lease2.Release()
	leaseOther.Release()
}

func testLockAccountRace(t *testing.T, s state.Store) {
	ctx := t.Context()
	const n = 16
	var (
		wg       sync.WaitGroup
		start    = make(chan struct{})
		results  = make(chan error, n)
		unlockMu sync.Mutex
		leases   []state.Lease
	)
	for range n {
		wg.Go(func() {
			<-start
			lease, err := s.LockAccount(ctx, acct)
			if err == nil {
				unlockMu.Lock()
				leases = append(leases, lease)
				unlockMu.Unlock()
			}
			results <- err
		})
	}
	close(start)
	wg.Wait()
	close(results)
	won := 0
	for err := range results {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, state.ErrLocked):
			t.Errorf("LockAccount: %v", err)
		}
	}
	if won != 1 {
		t.Errorf("%d of %d concurrent LockAccount calls got the lock, want 1", won, n)
	}
	for _, l := range leases {
		l.Release()
	}
}
