package fetch_test

import (
	"testing"
	"time"

	"popsync/configs"
	"popsync/fetch/pop3/pop3test"
	"popsync/state"
)

// Messages another tool delivered before popsync took over (state.Imported)
// are seen, so never fetched, and never deleted: not by keep = false and
// not by delete_after, because popsync never delivered them.
func TestImportedNeverFetchedNorDeleted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(e *env)
	}{
		{"keep=false", func(e *env) { e.acct.Keep = false }},
		{"delete_after", func(e *env) { e.acct.DeleteAfter = configs.Duration(24 * time.Hour) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msgs := pop3test.SampleMessages(6, 31)
			e := newEnv(t, msgs, pop3test.Config{})
			now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
			e.opts.Now = func() time.Time { return now }
			tc.setup(e)
			old := msgs[:4]
			var recs []state.Record
			for _, m := range old {
				recs = append(recs, state.Record{UIDL: m.UID, DeliveredAt: now.Add(-365 * 24 * time.Hour)})
			}
			if _, err := e.store.MarkImported(t.Context(), e.acct.Identity(), recs); err != nil {
				t.Fatal(err)
			}
			r := e.mustPoll()
			if r.New != 2 || r.Delivered != 2 {
				t.Fatalf("first poll: %+v, want 2 new and delivered", r)
			}
			now = now.Add(30 * 24 * time.Hour)
			r = e.mustPoll()
			if r.New != 0 || r.Delivered != 0 {
				t.Fatalf("second poll: %+v, want nothing new", r)
			}
			// Only what popsync delivered itself left the server.
			e.wantOnServer(uids(old)...)
			e.wantExactlyOnce(msgs[4:])
			if got := e.srv.Stats().Retrs; got != 2 {
				t.Errorf("%d RETRs, want 2", got)
			}
		})
	}
}
