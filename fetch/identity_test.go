package fetch_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"popsync/configs"
	"popsync/fetch"
	"popsync/state"
)

// TestCheckIdentity: an account is refused only when its name was polled
// under another identity that no configured account has, and its own
// identity has no state; new_identity lets it through.
func TestCheckIdentity(t *testing.T) {
	ctx := t.Context()
	st, err := state.OpenSQLite(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	acct := func(name, host string) *configs.Account {
		return &configs.Account{Name: name, Host: host, Port: 995, User: "me"}
	}
	home, work := acct("home", "pop.home.example"), acct("work", "pop.work.example")
	for _, a := range []*configs.Account{home, work} {
		if err := st.RecordPoll(ctx, state.Poll{Name: a.Name, Account: a.Identity(), Start: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	moved := acct("home", "POP.other.example.")
	err = fetch.CheckIdentity(ctx, st, moved, []*configs.Account{moved, work})
	var ic *fetch.IdentityChangedError
	if !errors.As(err, &ic) || !errors.Is(err, fetch.ErrIdentityChanged) {
		t.Fatalf("moved account: %v, want *IdentityChangedError", err)
	}
	if len(ic.Old) != 1 || ic.Old[0] != home.Identity() || ic.New != moved.Identity() {
		t.Errorf("error names %v -> %v, want %v -> %v", ic.Old, ic.New, home.Identity(), moved.Identity())
	}
	// Known names, unknown names, renames and swaps pass.
	for _, c := range []struct {
		a   *configs.Account
		cfg []*configs.Account
	}{
		{home, []*configs.Account{home, work}},
		{acct("new", "pop.new.example"), nil},
		{acct("house", home.Host), nil},
		// "home" now has work's old identity, and "work" home's: the
		// state under each is another configured account's.
		{acct("home", work.Host), []*configs.Account{acct("home", work.Host), acct("work", home.Host)}},
	} {
		if err := fetch.CheckIdentity(ctx, st, c.a, c.cfg); err != nil {
			t.Errorf("%s at %s: %v", c.a.Name, c.a.Identity(), err)
		}
	}
	moved.NewIdentity = true
	if err := fetch.CheckIdentity(ctx, st, moved, nil); err != nil {
		t.Errorf("with new_identity: %v", err)
	}
}
