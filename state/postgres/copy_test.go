package postgres

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"popsync/internal/credential/oauth"
	"popsync/state"
)

// sqliteState fills an SQLite state file with every kind of fact.
func sqliteState(t *testing.T) *state.SQLite {
	t.Helper()
	ctx := t.Context()
	src, err := state.OpenSQLite(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 123456000, time.UTC)
	for i, a := range accounts(3) {
		var recs []state.Record
		for j := range 50 {
			recs = append(recs, state.Record{UIDL: fmt.Sprintf("uidl-%d-\xff-%d", i, j), State: state.Delivered,
				Size: int64(j * 100), FirstSeen: t0, DeliveredAt: t0.Add(time.Duration(j) * time.Second)})
		}
		recs[3].State, recs[3].Note = state.Quarantined, "unparsable"
		if err := src.MarkDelivered(ctx, a, recs); err != nil {
			t.Fatal(err)
		}
		if err := src.MarkSkipped(ctx, a, []state.Record{{UIDL: "big", Size: 1 << 30, FirstSeen: t0, Note: "larger than max_size"}}); err != nil {
			t.Fatal(err)
		}
		if err := src.MarkDeleted(ctx, a, []string{recs[0].UIDL, recs[1].UIDL}, t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		// All but the last record listed: that one is gone since t0+2h.
		list := []string{"big"}
		for _, r := range recs[:49] {
			list = append(list, r.UIDL)
		}
		if _, err := state.Reconcile(ctx, src, a, list, t0.Add(2*time.Hour), 48*time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := src.AddIntents(ctx, a, []state.Intent{{UIDL: "in-flight", Target: "maildir:home", Token: "1740830400.M1P2.host", Size: 9, Created: t0}}); err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			continue // an account without polls
		}
		for k := range 3 {
			p := state.Poll{Name: fmt.Sprintf("acct%d", i), Account: a, Start: t0.Add(time.Duration(k) * time.Minute),
				End: t0.Add(time.Duration(k)*time.Minute + time.Second), OnServer: 51, New: k, Delivered: k, Bytes: int64(k), Pending: 1}
			if k == 1 {
				p.Err = "logging in: -ERR [AUTH] no"
			}
			if err := src.RecordPoll(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	return src
}

func dumpAll(t *testing.T, d state.Dumper) []state.AccountDump {
	t.Helper()
	var out []state.AccountDump
	if err := d.Dump(t.Context(), func(a state.AccountDump) error {
		out = append(out, a)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// sameDumps compares two dumps field by field, times with Equal.
func sameDumps(t *testing.T, got, want []state.AccountDump) {
	t.Helper()
	norm := func(ds []state.AccountDump) []state.AccountDump {
		out := make([]state.AccountDump, len(ds))
		utc := func(tm time.Time) time.Time {
			if tm.IsZero() {
				return time.Time{}
			}
			return tm.UTC()
		}
		for i, d := range ds {
			c := d
			c.Records = nil
			for _, r := range d.Records {
				r.FirstSeen, r.DeliveredAt, r.DeletedAt, r.GoneSince = utc(r.FirstSeen), utc(r.DeliveredAt), utc(r.DeletedAt), utc(r.GoneSince)
				c.Records = append(c.Records, r)
			}
			c.Intents = nil
			for _, it := range d.Intents {
				it.Created = utc(it.Created)
				c.Intents = append(c.Intents, it)
			}
			c.Polls = nil
			for _, p := range d.Polls {
				p.Start, p.End = utc(p.Start), utc(p.End)
				c.Polls = append(c.Polls, p)
			}
			if d.Status != nil {
				st := *d.Status
				st.LastPoll, st.LastSuccess, st.LastErrorAt = utc(st.LastPoll), utc(st.LastSuccess), utc(st.LastErrorAt)
				c.Status = &st
			}
			out[i] = c
		}
		return out
	}
	g, w := norm(got), norm(want)
	if len(g) != len(w) {
		t.Fatalf("%d accounts, want %d", len(g), len(w))
	}
	for i := range g {
		if !reflect.DeepEqual(g[i], w[i]) {
			t.Errorf("account %d:\n got %+v\nwant %+v", i, g[i], w[i])
		}
	}
}

// TestCopyFromSQLite: every fact of an SQLite state arrives; a non-empty
// target is refused unless forced, and a forced copy replaces instead of
// doubling.
func TestCopyFromSQLite(t *testing.T) {
	ctx := t.Context()
	src := sqliteState(t)
	want := dumpAll(t, src)
	if len(want) != 3 || len(want[0].Records) != 51 || want[0].Status == nil || want[2].Status != nil {
		t.Fatalf("source dump is not what the test made: %d accounts", len(want))
	}
	dst := open(t, newDB(t), Options{})
	st, err := dst.CopyFrom(ctx, src, CopyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st != (CopyStats{Accounts: 3, Records: 153, Intents: 3, Polls: 6}) {
		t.Errorf("CopyStats = %+v", st)
	}
	sameDumps(t, dumpAll(t, dst), want)

	srcStatus, err := src.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dstStatus, err := dst.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(dstStatus) != 2 || len(srcStatus) != 2 {
		t.Fatalf("Status: %d accounts copied, %d in the source", len(dstStatus), len(srcStatus))
	}
	for i := range srcStatus {
		g, w := dstStatus[i], srcStatus[i]
		if g.Name != w.Name || g.Seen != w.Seen || !g.LastPoll.Equal(w.LastPoll) || g.LastError != w.LastError || !g.LastErrorAt.Equal(w.LastErrorAt) {
			t.Errorf("Status %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
	// The copied seen-set works: a reconcile knows every record.
	a := accounts(1)[0]
	m, err := state.Known(ctx, dst, a, []string{"big", want[0].Records[10].UIDL})
	if err != nil || len(m) != 2 {
		t.Errorf("Known after copy = %v, %v", m, err)
	}

	if _, err := dst.CopyFrom(ctx, src, CopyOptions{}); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("second copy: %v, want ErrNotEmpty", err)
	}
	sameDumps(t, dumpAll(t, dst), want)
	if _, err := dst.CopyFrom(ctx, src, CopyOptions{Force: true}); err != nil {
		t.Fatalf("forced copy: %v", err)
	}
	sameDumps(t, dumpAll(t, dst), want)
}

// TestCopyStopsOnError: an error of the source ends the copy with that
// error.
func TestCopyStopsOnError(t *testing.T) {
	dst := open(t, newDB(t), Options{})
	boom := errors.New("disk read error")
	_, err := dst.CopyFrom(t.Context(), failingDumper{boom}, CopyOptions{})
	if !errors.Is(err, boom) {
		t.Fatalf("CopyFrom = %v, want the source's error", err)
	}
}

type failingDumper struct{ err error }

func (f failingDumper) Dump(ctx context.Context, fn func(state.AccountDump) error) error {
	if err := fn(state.AccountDump{Account: state.Account{Host: "h", Port: 1, User: "u"}}); err != nil {
		return err
	}
	return f.err
}

// TestCopyTokens: the tokens of an SQLite state arrive in the fleet's
// table as they were, secrets, expiry, when they were saved and the
// login-needed mark included; a token the database holds already stays
// unless force.
func TestCopyTokens(t *testing.T) {
	ctx := t.Context()
	src, err := state.OpenSQLite(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	exp := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	const (
		ok     = "pop3 ok@pop.example.net:995"
		gone   = "pop3 gone@pop.example.net:995"
		fleets = "pop3 fleet@pop.example.net:995"
	)
	for k, tok := range map[string]oauth.Token{
		ok:     {AccessToken: "at-ok", TokenType: "Bearer", RefreshToken: "rt-ok", Expiry: exp},
		gone:   {AccessToken: "at-gone", RefreshToken: "rt-gone"},
		fleets: {AccessToken: "at-old", RefreshToken: "rt-old"},
	} {
		if err := src.Tokens().Save(ctx, k, tok); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Tokens().MarkLoginNeeded(ctx, gone, "rt-gone", "invalid_grant: revoked"); err != nil {
		t.Fatal(err)
	}
	toks, err := src.Tokens().All(ctx)
	if err != nil {
		t.Fatal(err)
	}

	dst := open(t, newDB(t), Options{}).Tokens()
	// A login against the fleet before the copy.
	if err := dst.Save(ctx, fleets, oauth.Token{AccessToken: "at-new", RefreshToken: "rt-new"}); err != nil {
		t.Fatal(err)
	}
	copied, kept, err := dst.CopyTokens(ctx, toks, false)
	if err != nil || copied != 2 || kept != 1 {
		t.Fatalf("CopyTokens = %d copied, %d kept, %v; want 2 and 1", copied, kept, err)
	}
	for _, st := range toks {
		got, err := dst.Load(ctx, st.Key)
		if err != nil {
			t.Fatal(err)
		}
		want := st.Token
		if st.Key == fleets {
			want = oauth.Token{AccessToken: "at-new", RefreshToken: "rt-new"}
		}
		if got.AccessToken != want.AccessToken || got.TokenType != want.TokenType || got.RefreshToken != want.RefreshToken || !got.Expiry.Equal(want.Expiry) {
			t.Errorf("%s in the database: %+v, want %+v", st.Key, got, want)
		}
		info, err := dst.Info(ctx, st.Key)
		if err != nil {
			t.Fatal(err)
		}
		if st.Key == fleets {
			continue
		}
		if !info.Saved.Equal(st.Saved) {
			t.Errorf("%s: saved %v in the database, %v in the file", st.Key, info.Saved, st.Saved)
		}
		if info.LoginNeeded != (st.Key == gone) || info.NeededBecause != st.LoginNeeded {
			t.Errorf("%s: info %+v; want the mark %q carried over", st.Key, info, st.LoginNeeded)
		}
	}
	// force replaces the fleet's own token too.
	copied, kept, err = dst.CopyTokens(ctx, toks, true)
	if err != nil || copied != 3 || kept != 0 {
		t.Fatalf("CopyTokens with force = %d copied, %d kept, %v; want 3 and 0", copied, kept, err)
	}
	if got, err := dst.Load(ctx, fleets); err != nil || got.RefreshToken != "rt-old" {
		t.Errorf("%s after a forced copy: %+v, %v", fleets, got, err)
	}
	if _, _, err := dst.CopyTokens(ctx, []state.StoredToken{{Key: "bad\x00key"}}, false); err == nil {
		t.Error("a key with NUL was copied")
	}
}
