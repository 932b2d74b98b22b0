package fetch_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"popsync/configs"
	"popsync/deliver"
	"popsync/fetch"
	"popsync/fetch/pop3/pop3test"
	"popsync/state"
)

// confirmer is an in-memory confirming target (like SMTP): it delivers in
// Delivery.Close and answers with the scripted error for a UIDL.
type confirmer struct {
	deliver.Confirming
	name string
	mu   sync.Mutex
	fail map[string]error  // UIDL → error from Close
	got  map[string]int    // UIDL → times accepted
	body map[string][]byte // UIDL → last bytes accepted
}

func newConfirmer(name string) *confirmer {
	return &confirmer{name: name, fail: map[string]error{}, got: map[string]int{}, body: map[string][]byte{}}
}

func (c *confirmer) String() string { return "fake " + c.name }
func (c *confirmer) Begin(ctx context.Context, m deliver.Meta) (deliver.Delivery, error) {
	return &confirmDelivery{c: c, uidl: m.UIDL}, nil
}
func (c *confirmer) Close() error { return nil }

func (c *confirmer) setFail(uidl string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		delete(c.fail, uidl)
	} else {
		c.fail[uidl] = err
	}
}

func (c *confirmer) count(uidl string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got[uidl]
}

type confirmDelivery struct {
	c    *confirmer
	uidl string
	buf  bytes.Buffer
}

func (d *confirmDelivery) Write(b []byte) (int, error) { return d.buf.Write(b) }
func (d *confirmDelivery) Close() error {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	if err := d.c.fail[d.uidl]; err != nil {
		return err
	}
	d.c.got[d.uidl]++
	d.c.body[d.uidl] = d.buf.Bytes()
	return nil
}
func (d *confirmDelivery) Abort() error  { return nil }
func (d *confirmDelivery) Token() string { return "" }
func (d *confirmDelivery) Size() int64   { return int64(d.buf.Len()) }

var (
	tempFail = &deliver.DeliveryError{Target: "fake", Stage: deliver.StageReply, Temporary: true, Code: 451, Text: "4.3.0 try later"}
	permFail = &deliver.DeliveryError{Target: "fake", Stage: deliver.StageReply, Code: 550, Text: "5.7.1 rejected as spam"}
)

// withConfirmers replaces the account's targets: "maildir" entries stay
// real Maildirs, "smtp" entries become the named confirmers.
func (e *env) withConfirmers(entries []configs.Deliver, cs map[string]*confirmer) {
	e.acct.Deliver = entries
	e.opts.QuarantineDir = filepath.Join(e.dir, "quarantine")
	e.opts.OpenTarget = func(a *configs.Account, d configs.Deliver) (deliver.Target, error) {
		if st, ok := d.Target.(*configs.SMTPTarget); ok && cs[st.Addr] != nil {
			return cs[st.Addr], nil
		}
		return fetch.OpenTarget(a, d)
	}
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		n += len(ents)
	}
	return n
}

func TestTemporaryRejectionIsRetriedNextPoll(t *testing.T) {
	msgs := pop3test.SampleMessages(6, 30)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	mta := newConfirmer("mta")
	mta.setFail(msgs[2].UID, tempFail)
	e.withConfirmers([]configs.Deliver{{Target: &configs.SMTPTarget{Addr: "mta"}}}, map[string]*confirmer{"mta": mta})
	r := e.mustPoll()
	if r.Delivered != 5 || r.Failed != 1 || r.Deleted != 5 {
		t.Fatalf("first poll: %+v", r)
	}
	e.wantOnServer(msgs[2].UID)
	mta.setFail(msgs[2].UID, nil)
	r = e.mustPoll()
	if r.Delivered != 1 || r.Deleted != 1 {
		t.Fatalf("retry: %+v", r)
	}
	for _, m := range msgs {
		if n := mta.count(m.UID); n != 1 {
			t.Fatalf("%s delivered %d times", m.UID, n)
		}
	}
	e.wantOnServer()
}

func TestPermanentRejectionIsQuarantinedAndKept(t *testing.T) {
	msgs := pop3test.SampleMessages(4, 31)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	mta := newConfirmer("mta")
	mta.setFail(msgs[1].UID, permFail)
	e.withConfirmers([]configs.Deliver{{Target: &configs.SMTPTarget{Addr: "mta"}}}, map[string]*confirmer{"mta": mta})
	r := e.mustPoll()
	if r.Delivered != 3 || r.Rejected != 1 || r.Deleted != 3 {
		t.Fatalf("poll: %+v", r)
	}
	// Kept on the server, a copy in the quarantine, recorded: the next
	// poll neither retries nor reports it.
	e.wantOnServer(msgs[1].UID)
	q := filepath.Join(e.opts.QuarantineDir, "test")
	if n := countFiles(t, q); n != 1 {
		t.Fatalf("quarantine holds %d messages, want 1", n)
	}
	known, err := state.Known(t.Context(), e.store, e.acct.Identity(), []string{msgs[1].UID})
	if err != nil || known[msgs[1].UID].State != state.Quarantined {
		t.Fatalf("seen-set: %+v, %v", known, err)
	}
	r = e.mustPoll()
	if r.New != 0 || r.Rejected != 0 || r.Deleted != 0 {
		t.Fatalf("second poll: %+v", r)
	}
	if countFiles(t, q) != 1 || mta.count(msgs[1].UID) != 0 {
		t.Fatal("the rejected message was tried again")
	}
}

func TestOnRejectKeepAndDelete(t *testing.T) {
	for _, policy := range []string{"keep", "delete"} {
		t.Run(policy, func(t *testing.T) {
			msgs := pop3test.SampleMessages(3, 32)
			e := newEnv(t, msgs, pop3test.Config{})
			mta := newConfirmer("mta")
			mta.setFail(msgs[0].UID, permFail)
			e.withConfirmers([]configs.Deliver{{Target: &configs.SMTPTarget{Addr: "mta"}, OnReject: policy}}, map[string]*confirmer{"mta": mta})
			r := e.mustPoll()
			if r.Delivered != 2 || r.Rejected != 1 {
				t.Fatalf("poll: %+v", r)
			}
			q := filepath.Join(e.opts.QuarantineDir, "test")
			switch policy {
			case "keep":
				e.wantOnServer(uids(msgs)...)
				if countFiles(t, q) != 0 {
					t.Fatal("on_reject = keep quarantined the message")
				}
			case "delete":
				e.wantOnServer(msgs[1].UID, msgs[2].UID)
				if countFiles(t, q) != 1 {
					t.Fatal("on_reject = delete did not quarantine before deleting")
				}
			}
			if r := e.mustPoll(); r.New != 0 || r.Rejected != 0 {
				t.Fatalf("second poll: %+v", r)
			}
		})
	}
}

func TestRetryDoesNotDeliverTwiceToTargetsThatConfirmed(t *testing.T) {
	msgs := pop3test.SampleMessages(3, 33)
	e := newEnv(t, msgs, pop3test.Config{})
	a, b := newConfirmer("a"), newConfirmer("b")
	b.setFail(msgs[1].UID, tempFail)
	e.withConfirmers([]configs.Deliver{{Target: &configs.SMTPTarget{Addr: "a"}}, {Target: &configs.MaildirTarget{Path: e.maildir}}, {Target: &configs.SMTPTarget{Addr: "b"}}},
		map[string]*confirmer{"a": a, "b": b})
	if r := e.mustPoll(); r.Delivered != 2 || r.Failed != 1 {
		t.Fatalf("first poll: %+v", r)
	}
	// The Maildir did not publish the message b refused.
	if n := countFiles(t, e.maildir); n != 2 {
		t.Fatalf("Maildir holds %d, want 2", n)
	}
	b.setFail(msgs[1].UID, nil)
	if r := e.mustPoll(); r.Delivered != 1 {
		t.Fatalf("retry: %+v", r)
	}
	for _, m := range msgs {
		if a.count(m.UID) != 1 || b.count(m.UID) != 1 {
			t.Fatalf("%s: a got it %d times, b %d times", m.UID, a.count(m.UID), b.count(m.UID))
		}
	}
	e.wantExactlyOnce(msgs)
	in, err := e.store.Intents(t.Context(), e.acct.Identity())
	if err != nil || len(in) != 0 {
		t.Fatalf("intents left: %v %v", in, err)
	}
}
