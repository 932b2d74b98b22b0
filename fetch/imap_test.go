package fetch_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"popsync/configs"
	"popsync/deliver"
	"popsync/fetch"
	"popsync/fetch/pop3/pop3test"
	"popsync/internal/credential"
	"popsync/internal/realtest"
	"popsync/state"
)

// imapEnv is env with a real Dovecot's IMAP mailbox as the only target.
type imapEnv struct {
	*env
	d       *realtest.Dovecot
	mailbox string
	spool   string
}

func newIMAPEnv(t *testing.T, msgs []pop3test.Message, dovecotConfig string) *imapEnv {
	t.Helper()
	d := realtest.StartDovecot(t, realtest.DovecotOptions{IMAP: true, Config: dovecotConfig})
	e := newEnv(t, msgs, pop3test.Config{})
	host, port, _ := net.SplitHostPort(d.IMAPTLSAddr)
	p, _ := strconv.Atoi(port)
	ie := &imapEnv{env: e, d: d, mailbox: "Fetched", spool: filepath.Join(e.dir, "spool", "imap")}
	e.acct.Deliver = []configs.Deliver{{Target: &configs.IMAPTarget{Host: host, Port: p, TLS: configs.TLSImplicit,
		TLSCAFile: d.CAFile, User: d.User, Password: credential.Literal(d.Password), Auth: configs.IMAPAuthAuto,
		Mailbox: ie.mailbox, Create: true, InternalDate: configs.IMAPDateReceived, SpoolDir: ie.spool},
		OnReject: configs.OnRejectQuarantine}}
	e.opts.QuarantineDir = filepath.Join(e.dir, "quarantine")
	return ie
}

// appended returns the mailbox's messages without the X-Popsync-Id and
// Received fields, with LF line endings, sorted.
func (e *imapEnv) appended() []string {
	e.t.Helper()
	msgs, _ := e.d.IMAPMessages(e.t, e.mailbox)
	var out []string
	for _, m := range msgs {
		s := strings.ReplaceAll(string(m.Body), "\r\n", "\n")
		tok, rest, ok := strings.Cut(s, "\n")
		if !ok || !strings.HasPrefix(tok, deliver.IMAPTokenHeader+": ") {
			e.t.Fatalf("appended message does not start with its token field: %.100q", s)
		}
		out = append(out, stripReceived(e.t, rest))
	}
	sort.Strings(out)
	return out
}

// wantAppendedOnce asserts the mailbox holds each of msgs exactly once,
// byte for byte apart from CRLF, and nothing else, and that no spool
// file is left.
func (e *imapEnv) wantAppendedOnce(msgs []pop3test.Message) {
	e.t.Helper()
	var exp []string
	for _, m := range msgs {
		exp = append(exp, want(m))
	}
	sort.Strings(exp)
	got := e.appended()
	if strings.Join(got, "\x00") != strings.Join(exp, "\x00") {
		e.t.Fatalf("mailbox holds %d messages, want %d (or they differ)", len(got), len(exp))
	}
	if ents, _ := os.ReadDir(e.spool); len(ents) != 0 {
		e.t.Fatalf("spool holds %d leftover files", len(ents))
	}
}

func TestIMAPTargetDeliversAndDeletes(t *testing.T) {
	msgs := pop3test.SampleMessages(40, 70)
	e := newIMAPEnv(t, msgs, "")
	e.acct.Keep = false
	r := e.mustPoll()
	if r.Delivered != 40 || r.Deleted != 40 {
		t.Fatalf("poll: %+v", r)
	}
	e.wantAppendedOnce(msgs)
	e.wantOnServer()
	if r := e.mustPoll(); r.New != 0 {
		t.Fatalf("second poll: %+v", r)
	}
}

// TestIMAPTargetInterruptedAfterAppend: killed between the tagged OK to
// APPEND and the record, the next poll finds the messages by their
// tokens before it fetches anything and records them: none is appended
// twice, none fetched again.
func TestIMAPTargetInterruptedAfterAppend(t *testing.T) {
	msgs := pop3test.SampleMessages(12, 71)
	e := newIMAPEnv(t, msgs, "")
	e.opts.BatchSize = 100 // one batch: every message appended, none recorded
	e.opts.Store = &crashStore{Store: e.store, failMark: true}
	if r := e.poll(); r.Err == nil {
		t.Fatal("poll with a failed record succeeded")
	}
	in, err := e.store.Intents(t.Context(), e.acct.Identity())
	if err != nil || len(in) == 0 {
		t.Fatalf("no open intents after the interruption: %v", err)
	}
	retrs := e.srv.Stats().Retrs
	r := e.mustPoll()
	if r.Delivered != 0 || e.srv.Stats().Retrs != retrs {
		t.Fatalf("second poll fetched again: %+v", r)
	}
	e.wantAppendedOnce(msgs)
	if in, err := e.store.Intents(t.Context(), e.acct.Identity()); err != nil || len(in) != 0 {
		t.Fatalf("intents left: %v, %v", in, err)
	}
	known, err := state.Known(t.Context(), e.store, e.acct.Identity(), uids(msgs))
	if err != nil || len(known) != len(msgs) {
		t.Fatalf("recorded %d of %d: %v", len(known), len(msgs), err)
	}
}

// TestIMAPTargetAppendLimit: a message over the server's APPENDLIMIT
// (RFC 7889) is not sent, stays on the server, is recorded as skipped
// with its size and the limit, and is not tried again.
func TestIMAPTargetAppendLimit(t *testing.T) {
	msgs := pop3test.SampleMessages(5, 72)
	limit := 0
	for _, m := range msgs {
		limit = max(limit, 2*len(m.Data)+1000) // room for the trace fields
	}
	big := make([]byte, 0, limit+2000)
	big = append(big, "From: a@example.net\r\nSubject: big\r\nMessage-ID: <big@example.net>\r\n\r\n"...)
	for len(big) < limit+1000 {
		big = append(big, "0123456789012345678901234567890123456789012345678901234567890123456789\r\n"...)
	}
	msgs = append(msgs, pop3test.Message{UID: "big-one", Data: big})
	e := newIMAPEnv(t, msgs, fmt.Sprintf("imap_capability = +APPENDLIMIT=%d", limit))
	e.acct.Keep = false
	r := e.mustPoll()
	if r.Delivered != 5 || r.Skipped != 1 || r.Failed != 0 {
		t.Fatalf("poll: %+v", r)
	}
	e.wantAppendedOnce(msgs[:5])
	e.wantOnServer("big-one")
	known, err := state.Known(t.Context(), e.store, e.acct.Identity(), []string{"big-one"})
	rec := known["big-one"]
	if err != nil || rec.State != state.Skipped || !strings.Contains(rec.Note, fmt.Sprintf("APPENDLIMIT is %d", limit)) {
		t.Fatalf("record of the big message: %+v, %v", rec, err)
	}
	retrs := e.srv.Stats().Retrs
	if r := e.mustPoll(); r.New != 0 || r.Skipped != 0 || e.srv.Stats().Retrs != retrs {
		t.Fatalf("second poll tried it again: %+v", r)
	}
}

// judgingTarget refuses the messages of some UIDLs for good in Publish,
// as an IMAP server's NO to their APPEND does, and publishes the rest
// into the target it wraps.
type judgingTarget struct {
	deliver.Target
	refuse map[string]bool
}

type judgedDelivery struct {
	deliver.Delivery
	uidl string
	err  error
}

func (d *judgedDelivery) Err() error { return d.err }

func (j *judgingTarget) Begin(ctx context.Context, m deliver.Meta) (deliver.Delivery, error) {
	d, err := j.Target.Begin(ctx, m)
	if err != nil {
		return nil, err
	}
	return &judgedDelivery{Delivery: d, uidl: m.UIDL}, nil
}

func inner(ds []deliver.Delivery) []deliver.Delivery {
	out := make([]deliver.Delivery, len(ds))
	for i, d := range ds {
		out[i] = d.(*judgedDelivery).Delivery
	}
	return out
}

func (j *judgingTarget) Prepare(ctx context.Context, ds []deliver.Delivery) error {
	return j.Target.Prepare(ctx, inner(ds))
}

func (j *judgingTarget) Publish(ctx context.Context, ds []deliver.Delivery) error {
	var ok []deliver.Delivery
	var idx []int
	var errs []error
	for i, d := range ds {
		jd := d.(*judgedDelivery)
		if j.refuse[jd.uidl] {
			jd.err = &deliver.DeliveryError{Target: "judge", Stage: deliver.StageAppend, Text: "NO [CANNOT] refused"}
			errs = append(errs, jd.err)
			continue
		}
		ok = append(ok, jd.Delivery)
		idx = append(idx, i)
	}
	if err := j.Target.Publish(ctx, ok); err != nil {
		return err
	}
	if len(errs) > 0 {
		return &deliver.PublishError{Published: idx, Err: errors.Join(errs...)}
	}
	return nil
}

// TestRefusedAtPublishIsQuarantined: a target that refuses a message for
// good in Publish (an IMAP NO) gets the SMTP 5xx treatment: the rest of
// the batch is delivered and recorded, the refused one quarantined and,
// by default, kept on the server, and not tried again.
func TestRefusedAtPublishIsQuarantined(t *testing.T) {
	msgs := pop3test.SampleMessages(9, 73)
	e := newEnv(t, msgs, pop3test.Config{})
	e.acct.Keep = false
	e.acct.Deliver[0].OnReject = configs.OnRejectQuarantine
	e.opts.QuarantineDir = filepath.Join(e.dir, "quarantine")
	var mu sync.Mutex
	e.opts.OpenTarget = func(a *configs.Account, d configs.Deliver) (deliver.Target, error) {
		mu.Lock()
		defer mu.Unlock()
		t, err := fetch.OpenTarget(a, d)
		if err != nil {
			return nil, err
		}
		return &judgingTarget{Target: t, refuse: map[string]bool{msgs[3].UID: true, msgs[8].UID: true}}, nil
	}
	r := e.mustPoll()
	if r.Delivered != 7 || r.Rejected != 2 || r.Deleted != 7 {
		t.Fatalf("poll: %+v", r)
	}
	var rest []pop3test.Message
	for i, m := range msgs {
		if i != 3 && i != 8 {
			rest = append(rest, m)
		}
	}
	e.wantExactlyOnce(rest)
	e.wantOnServer(msgs[3].UID, msgs[8].UID)
	if n := countFiles(t, filepath.Join(e.opts.QuarantineDir, "test")); n != 2 {
		t.Fatalf("quarantine holds %d, want 2", n)
	}
	if in, err := e.store.Intents(t.Context(), e.acct.Identity()); err != nil || len(in) != 0 {
		t.Fatalf("intents left: %v, %v", in, err)
	}
	if r := e.mustPoll(); r.New != 0 || r.Rejected != 0 {
		t.Fatalf("second poll: %+v", r)
	}
}

// TestCheckTriesIMAPTarget: `popsync check --connect` logs in to the
// IMAP target and looks for its mailbox, without appending; a refused
// login is reported with the target's name, never the password.
func TestCheckTriesIMAPTarget(t *testing.T) {
	e := newIMAPEnv(t, pop3test.SampleMessages(2, 74), "")
	r := fetch.Check(t.Context(), e.acct, fetch.CheckOptions{})
	if r.Err != nil || len(r.Targets) != 1 || !strings.HasPrefix(r.Targets[0].Target, "imap ") || r.Targets[0].Err != nil {
		t.Fatalf("check: %+v", r)
	}
	if msgs, _ := e.d.IMAPMessages(t, e.mailbox); len(msgs) != 0 {
		t.Fatalf("check appended %d messages", len(msgs))
	}
	it := e.acct.Deliver[0].Target.(*configs.IMAPTarget)
	it.Password = credential.Literal("wrong-password-xyz")
	r = fetch.Check(t.Context(), e.acct, fetch.CheckOptions{})
	if r.Err == nil || r.Targets[0].Err == nil || !strings.Contains(r.Err.Error(), "imap ") {
		t.Fatalf("check with a wrong IMAP password: %+v", r)
	}
	if strings.Contains(r.Err.Error(), "wrong-password-xyz") {
		t.Fatalf("the error shows the password: %v", r.Err)
	}
}
