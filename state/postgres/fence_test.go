package postgres

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"popsync/state"
)

// TestFenceRefusesStaleToken: a daemon whose lease was taken over while
// it did not look (paused: its lease expired in the database and another
// daemon acquired the account with the next token) still believes it
// holds the lease, so its writes go to the database with the old token.
// Each kind that matters, a delivery, an intent and a deletion, is
// refused there by popsync_fence inside the write's own transaction:
// the error is state.ErrLeaseLost wrapping the function's SQLSTATE, the
// statements queued after the fence left nothing behind, and the
// refused-commits counter (popsync_fleet_fenced_commits_refused_total)
// counts each one. Each write gets a round of its own, because the first
// refusal ends the old lease and later writes would then be refused
// before they reach the database.
func TestFenceRefusesStaleToken(t *testing.T) {
	ctx := t.Context()
	url := newDB(t)
	// d1's TTL is long: its next renewal, which would notice the loss, is
	// 20 s away, longer than the test. The database clock ends its lease.
	d1 := open(t, url, Options{DaemonID: "d1", LeaseTTL: time.Minute, RequireLease: true})
	d2 := open(t, url, Options{DaemonID: "d2", LeaseTTL: time.Minute, RequireLease: true})
	at := time.Now().Add(-time.Hour).Truncate(time.Second)

	// What d1 wrote while it held the lease: a delivered record, and an
	// open intent of another message.
	l, err := d1.Acquire(ctx, acctA)
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.MarkDelivered(ctx, acctA, []state.Record{{UIDL: "old", State: state.Delivered, Size: 10, FirstSeen: at, DeliveredAt: at}}); err != nil {
		t.Fatal(err)
	}
	if err := d1.AddIntents(ctx, acctA, []state.Intent{{UIDL: "open", Target: "maildir:m", Token: "tok-open", Size: 5, Created: at}}); err != nil {
		t.Fatal(err)
	}
	l.Release()

	for _, w := range []struct {
		name  string
		write func() error
	}{
		{"MarkDelivered", func() error {
			// It would also close the open intent of "open".
			return d1.MarkDelivered(ctx, acctA, []state.Record{
				{UIDL: "open", State: state.Delivered, Size: 5, FirstSeen: at, DeliveredAt: at},
				{UIDL: "new", State: state.Delivered, Size: 7, FirstSeen: at, DeliveredAt: at}})
		}},
		{"AddIntents", func() error {
			return d1.AddIntents(ctx, acctA, []state.Intent{{UIDL: "new", Target: "maildir:m", Token: "tok-new", Size: 7, Created: at}})
		}},
		{"MarkDeleted", func() error {
			return d1.MarkDeleted(ctx, acctA, []string{"old"}, at)
		}},
	} {
		t.Run(w.name, func(t *testing.T) {
			l1, err := d1.Acquire(ctx, acctA)
			if err != nil {
				t.Fatal(err)
			}
			defer l1.Release()
			expireLeases(t, url) // d1 paused past its TTL
			l2, err := d2.Acquire(ctx, acctA)
			if err != nil {
				t.Fatalf("takeover: %v", err)
			}
			defer l2.Release()
			if l2.Token() != l1.Token()+1 {
				t.Fatalf("token after the takeover %d, want %d", l2.Token(), l1.Token()+1)
			}
			if err := l1.Err(); err != nil {
				t.Fatalf("d1 knows of the loss before it writes (%v): the write would not reach the fence", err)
			}
			before := d1.Stats()

			err = w.write()
			if !errors.Is(err, state.ErrLeaseLost) {
				t.Fatalf("%s with the old token: %v, want state.ErrLeaseLost", w.name, err)
			}
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != fenceCode {
				t.Fatalf("%s with the old token: %v; want the refusal of popsync_fence (SQLSTATE %s) in the database", w.name, err, fenceCode)
			}
			if got := d1.Stats(); got.Refused != before.Refused+1 || got.Lost != before.Lost+1 {
				t.Errorf("d1's counters %+v after the refusal, before %+v: want one more refused commit and one more lost lease", got, before)
			}
			select {
			case <-l1.Done():
			default:
				t.Error("the old lease did not end with the refused write")
			}

			// Nothing of the write is in the database.
			known, err := state.Known(ctx, d2, acctA, []string{"old", "open", "new"})
			if err != nil {
				t.Fatal(err)
			}
			if len(known) != 1 || known["old"].State != state.Delivered || !known["old"].DeletedAt.IsZero() {
				t.Errorf("records after the refused %s: %+v; want only \"old\", delivered and not deleted", w.name, known)
			}
			in, err := d2.Intents(ctx, acctA)
			if err != nil {
				t.Fatal(err)
			}
			if len(in) != 1 || in[0].UIDL != "open" || in[0].Token != "tok-open" {
				t.Errorf("intents after the refused %s: %+v; want the one of \"open\" only", w.name, in)
			}
		})
	}
	// The refusals were the database's: d2, the holder, saw none.
	if got := d2.Stats(); got.Refused != 0 {
		t.Errorf("d2's refused commits = %d, want 0", got.Refused)
	}
}
