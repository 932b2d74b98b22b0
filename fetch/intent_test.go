package fetch_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"popsync/deliver"
	"popsync/fetch/pop3/pop3test"
	"popsync/state"
)

// TestIntentOfSchemaOneIsResolved: an intent left by a crash under schema
// 1, which named its target by the index of the deliver entry (now
// state.LegacyTarget), still names that entry: a message whose file is
// in new/ is recorded, not fetched again.
func TestIntentOfSchemaOneIsResolved(t *testing.T) {
	msgs := pop3test.SampleMessages(4, 41)
	e := newEnv(t, msgs, pop3test.Config{})
	md, err := deliver.NewMaildir(e.maildir, deliver.MaildirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	md.Close()
	const name = "1740830400.M1P2Q3.client.test"
	body := "Received: from x\n\tby y (popsync) with POP3\n\tfor <z>; now\n" + want(msgs[0])
	if err := os.WriteFile(filepath.Join(e.maildir, "new", name), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.store.AddIntents(t.Context(), e.acct.Identity(), []state.Intent{
		{UIDL: msgs[0].UID, Target: state.LegacyTarget(0), Token: name, Size: 1, Created: time.Now()},
	}); err != nil {
		t.Fatal(err)
	}
	r := e.mustPoll()
	if r.Delivered != 3 || e.srv.Stats().Retrs != 3 {
		t.Fatalf("poll: %+v, %d RETRs; want the 3 messages without an intent", r, e.srv.Stats().Retrs)
	}
	e.wantExactlyOnce(msgs)
	if in, err := e.store.Intents(t.Context(), e.acct.Identity()); err != nil || len(in) != 0 {
		t.Fatalf("intents left: %v, %v", in, err)
	}
}
