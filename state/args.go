package state

import (
	"fmt"
	"slices"
	"time"
)

// What every backend does with its arguments before it touches its
// database: validation and defaults live here, once, so that a second
// backend checks and fills in exactly what the first does (the conformance
// suite in statetest holds them to it). Each function returns the account
// in canonical form and copies of the values with the defaults filled in;
// it never modifies its arguments. now is the time a zero time stands for.

// CanonicalAccount validates a and returns its canonical form.
func CanonicalAccount(a Account) (Account, error) {
	if err := a.Validate(); err != nil {
		return a, err
	}
	return a.Canonical(), nil
}

// PrepareIntents checks the arguments of Store.AddIntents and fills in a
// zero Created with now.
func PrepareIntents(a Account, in []Intent, now time.Time) (Account, []Intent, error) {
	a, err := CanonicalAccount(a)
	if err != nil {
		return a, nil, fmt.Errorf("adding intents: %w", err)
	}
	out := slices.Clone(in)
	for i := range out {
		it := &out[i]
		switch {
		case it.UIDL == "":
			return a, nil, fmt.Errorf("adding intents for %s: intent #%d has no UIDL", a, i+1)
		case it.Token == "" && !it.Confirmed:
			return a, nil, fmt.Errorf("adding intents for %s: intent for UIDL %q has no token", a, it.UIDL)
		case it.Token != "" && it.Confirmed:
			return a, nil, fmt.Errorf("adding intents for %s: confirmed intent for UIDL %q has a token", a, it.UIDL)
		case it.Target == "":
			return a, nil, fmt.Errorf("adding intents for %s: intent for UIDL %q has no target", a, it.UIDL)
		}
		if it.Created.IsZero() {
			it.Created = now
		}
	}
	return a, out, nil
}

// PrepareDelivered checks the arguments of Store.MarkDelivered and fills
// in a zero DeliveredAt with now and a zero FirstSeen with DeliveredAt.
func PrepareDelivered(a Account, recs []Record, now time.Time) (Account, []Record, error) {
	a, err := CanonicalAccount(a)
	if err != nil {
		return a, nil, fmt.Errorf("marking delivered: %w", err)
	}
	out := slices.Clone(recs)
	for i := range out {
		r := &out[i]
		switch {
		case r.UIDL == "":
			return a, nil, fmt.Errorf("marking delivered for %s: record #%d has no UIDL", a, i+1)
		case !r.State.recordedByMarkDelivered():
			return a, nil, fmt.Errorf("marking delivered for %s: UIDL %q has state %v, want delivered or quarantined", a, r.UIDL, r.State)
		}
		if r.DeliveredAt.IsZero() {
			r.DeliveredAt = now
		}
		if r.FirstSeen.IsZero() {
			r.FirstSeen = r.DeliveredAt
		}
	}
	return a, out, nil
}

// PrepareSkipped checks the arguments of Store.MarkSkipped, sets State
// Skipped and fills in a zero FirstSeen with now.
func PrepareSkipped(a Account, recs []Record, now time.Time) (Account, []Record, error) {
	a, err := CanonicalAccount(a)
	if err != nil {
		return a, nil, fmt.Errorf("marking skipped: %w", err)
	}
	out := slices.Clone(recs)
	for i := range out {
		r := &out[i]
		switch {
		case r.UIDL == "":
			return a, nil, fmt.Errorf("marking skipped for %s: record #%d has no UIDL", a, i+1)
		case r.State != 0 && r.State != Skipped:
			return a, nil, fmt.Errorf("marking skipped for %s: UIDL %q has state %v", a, r.UIDL, r.State)
		}
		r.State = Skipped
		if r.FirstSeen.IsZero() {
			r.FirstSeen = now
		}
	}
	return a, out, nil
}

// PrepareImported checks the arguments of MarkImported, sets State
// Imported, fills in a zero DeliveredAt (the old tool kept no time) with
// now and a zero FirstSeen with DeliveredAt.
func PrepareImported(a Account, recs []Record, now time.Time) (Account, []Record, error) {
	a, err := CanonicalAccount(a)
	if err != nil {
		return a, nil, fmt.Errorf("importing seen-state: %w", err)
	}
	out := slices.Clone(recs)
	for i := range out {
		r := &out[i]
		switch {
		case r.UIDL == "":
			return a, nil, fmt.Errorf("importing seen-state for %s: record #%d has no UIDL", a, i+1)
		case r.State != 0 && r.State != Imported:
			return a, nil, fmt.Errorf("importing seen-state for %s: UIDL %q has state %v, want imported", a, r.UIDL, r.State)
		}
		r.State = Imported
		if r.DeliveredAt.IsZero() {
			r.DeliveredAt = now
		}
		if r.FirstSeen.IsZero() {
			r.FirstSeen = r.DeliveredAt
		}
	}
	return a, out, nil
}

// PrepareDeleted checks the arguments of Store.MarkDeleted and returns at,
// or now for a zero at.
func PrepareDeleted(a Account, at, now time.Time) (Account, time.Time, error) {
	a, err := CanonicalAccount(a)
	if err != nil {
		return a, at, fmt.Errorf("marking deleted: %w", err)
	}
	if at.IsZero() {
		at = now
	}
	return a, at, nil
}

// PreparePoll checks the argument of Store.RecordPoll and returns it with
// its account in canonical form.
func PreparePoll(p Poll) (Poll, error) {
	a, err := CanonicalAccount(p.Account)
	if err != nil {
		return p, fmt.Errorf("recording poll %q: %w", p.Name, err)
	}
	switch {
	case p.Name == "":
		return p, fmt.Errorf("recording poll of %s: no account name", a)
	case p.Start.IsZero():
		return p, fmt.Errorf("recording poll of %s: no start time", a)
	}
	p.Account = a
	return p, nil
}
