package state

import (
	"context"
	"fmt"
	"time"
)

// SeenSet is one account's seen-set as Store.ReadSeen read it: a snapshot
// the poll compares with the server's list. The read overlaps the server's
// login, and the records come back in a slice aligned with that list, which
// for a large mailbox is cheaper than a map, for the store and the planner.
//
// A SeenSet is only right while nothing else writes the account's records:
// the caller holds the account's lease (LockAccount) from ReadSeen to
// Reconcile. It is used by one goroutine.
type SeenSet interface {
	// Account is the canonical identity the set was read for.
	Account() Account
	// Lookup returns, for each UIDL of uidls, its record (recs[i] for
	// uidls[i]; the zero Record, State 0, where the UIDL is not known),
	// and writes nothing: for a dry run.
	Lookup(uidls []string) []Record
	// Reconcile takes the server's current UIDL list and returns the
	// records aligned with it like Lookup. In one transaction it marks
	// known UIDLs absent from the list as gone (since now, unless they
	// already are), clears "gone" for present ones, and deletes records
	// gone for longer than grace (gone since before now-grace). Duplicate
	// UIDLs in the list are tolerated. Arguments are checked with
	// CheckReconcile.
	Reconcile(ctx context.Context, uidls []string, now time.Time, grace time.Duration) ([]Record, error)
}

// ReconcileList is ReadSeen and SeenSet.Reconcile at once.
func ReconcileList(ctx context.Context, s Store, a Account, uidls []string, now time.Time, grace time.Duration) ([]Record, error) {
	seen, err := s.ReadSeen(ctx, a)
	if err != nil {
		return nil, err
	}
	return seen.Reconcile(ctx, uidls, now, grace)
}

// Reconcile is ReconcileList with the known records keyed by UIDL, Skipped
// ones included, for callers that do not walk the server's list in order.
func Reconcile(ctx context.Context, s Store, a Account, uidls []string, now time.Time, grace time.Duration) (map[string]Record, error) {
	recs, err := ReconcileList(ctx, s, a, uidls, now, grace)
	if err != nil {
		return nil, err
	}
	return known(recs), nil
}

// Known returns the records of the given UIDLs that the seen-set holds,
// keyed by UIDL, writing nothing.
func Known(ctx context.Context, s Store, a Account, uidls []string) (map[string]Record, error) {
	seen, err := s.ReadSeen(ctx, a)
	if err != nil {
		return nil, err
	}
	return known(seen.Lookup(uidls)), nil
}

func known(recs []Record) map[string]Record {
	m := make(map[string]Record)
	for _, r := range recs {
		if r.State != 0 {
			m[r.UIDL] = r
		}
	}
	return m
}

// CheckReconcile checks the arguments of SeenSet.Reconcile of a.
func CheckReconcile(a Account, uidls []string, now time.Time, grace time.Duration) error {
	switch {
	case now.IsZero():
		return fmt.Errorf("reconciling %s: zero time", a)
	case grace < 0:
		return fmt.Errorf("reconciling %s: negative grace period %v", a, grace)
	}
	if err := checkUIDLs(uidls); err != nil {
		return fmt.Errorf("reconciling %s: %w", a, err)
	}
	return nil
}

func checkUIDLs(uidls []string) error {
	for i, u := range uidls {
		if u == "" {
			return fmt.Errorf("UIDL #%d is empty", i+1)
		}
	}
	return nil
}
