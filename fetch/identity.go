package fetch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"popsync/configs"
	"popsync/state"
)

// ErrIdentityChanged is what an *IdentityChangedError is (errors.Is): the
// account's host, port or user changed and polling it would fetch its
// whole mailbox again.
var ErrIdentityChanged = errors.New("account identity changed")

// IdentityChangedError refuses an account whose name the store knows
// under other identities while its current identity has no state: the
// config was edited (another host name, another port, another user), and
// whether the edit names the same mailbox or another one only the user
// knows. Either way out is named in the message.
type IdentityChangedError struct {
	Name string
	Old  []state.Account // the identities the name was polled under, newest poll first
	New  state.Account
}

func (e *IdentityChangedError) Error() string {
	old := make([]string, len(e.Old))
	for i, a := range e.Old {
		old[i] = a.String()
	}
	return fmt.Sprintf("account %q: its identity changed from %s to %s, which has no state yet, "+
		"so polling it would fetch every message on the server again; "+
		"if it is the same mailbox, run: popsync state adopt %s (the new identity takes over the seen-set); "+
		"if it is another mailbox, set new_identity = true on the account (or pass --new-identity %s once)",
		e.Name, strings.Join(old, " and "), e.New, e.Name, e.Name)
}

// Is makes errors.Is(err, ErrIdentityChanged) true.
func (e *IdentityChangedError) Is(target error) bool { return target == ErrIdentityChanged }

// CheckIdentity returns an *IdentityChangedError when a must not be polled
// because its identity changed (see IdentityChangedError), nil when it may
// be. It reads the store and writes nothing. An account with NewIdentity
// set is never refused. configured are the config's accounts: an identity
// one of them has is never taken for a's old one (two accounts that swapped
// names, say).
func CheckIdentity(ctx context.Context, st state.Store, a *configs.Account, configured []*configs.Account) error {
	if a.NewIdentity {
		return nil
	}
	id := a.Identity()
	// The common case first, and cheap: the identity has polled before.
	if polls, err := st.Polls(ctx, id, 1); err != nil {
		return fmt.Errorf("checking the identity of account %q: %w", a.Name, err)
	} else if len(polls) > 0 {
		return nil
	}
	all, err := st.Status(ctx)
	if err != nil {
		return fmt.Errorf("checking the identity of account %q: %w", a.Name, err)
	}
	inUse := make(map[state.Account]bool, len(configured))
	for _, c := range configured {
		inUse[c.Identity()] = true
	}
	var old []state.AccountStatus
	for _, s := range all {
		switch {
		case s.Account.Canonical() == id:
			return nil // the identity has polls: it is known
		case s.Name == a.Name && !inUse[s.Account.Canonical()]:
			old = append(old, s)
		}
	}
	if len(old) == 0 {
		return nil
	}
	// Intents without polls are state too. (Records without polls, which
	// only an import writes, are not seen here: adopting onto such an
	// identity is refused by the store, and new_identity is the way out.)
	in, err := st.Intents(ctx, id)
	if err != nil {
		return fmt.Errorf("checking the identity of account %q: %w", a.Name, err)
	}
	if len(in) > 0 {
		return nil
	}
	slices.SortFunc(old, func(x, y state.AccountStatus) int { return y.LastPoll.Compare(x.LastPoll) })
	e := &IdentityChangedError{Name: a.Name, New: id}
	for _, s := range old {
		e.Old = append(e.Old, s.Account)
	}
	return e
}
