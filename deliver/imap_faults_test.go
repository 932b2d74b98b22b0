package deliver_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"popsync/deliver"
	"popsync/internal/credential"
)

// syncLog collects log output across goroutines.
type syncLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func fakeTarget(t *testing.T, f *fakeIMAP, mailbox string, mod func(*deliver.IMAPOptions)) (*deliver.IMAP, *syncLog) {
	t.Helper()
	log := &syncLog{}
	opts := deliver.IMAPOptions{
		Addr:     "imap.example.net:993",
		TLS:      deliver.TLSNone,
		User:     "me",
		Password: credential.Literal("secret-password"),
		Mailbox:  mailbox,
		Create:   true,
		SpoolDir: filepath.Join(t.TempDir(), "spool"),
		Timeout:  fakeTimeout,
		// One connection, unless a test asks for more: these tests
		// count connections and rely on the order of the APPENDs.
		Connections: 1,
		Dial:        f.dial,
		Logger:      slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&opts)
	}
	tg := newIMAP(t, opts)
	t.Cleanup(func() {
		tg.Close()
		expectEmpty(t, opts.SpoolDir)
		if strings.Contains(log.String(), "secret-password") {
			t.Error("the password reached the log")
		}
	})
	return tg, log
}

// stageAll begins, writes, closes and prepares msgs.
func stageAll(t *testing.T, tg deliver.Target, msgs ...[]byte) []deliver.Delivery {
	t.Helper()
	var ds []deliver.Delivery
	for _, m := range msgs {
		d, err := tg.Begin(t.Context(), deliver.Meta{UIDL: "u", Size: int64(len(m))})
		if err != nil {
			t.Fatalf("Begin: %v", err)
		}
		if _, err := d.Write(m); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		ds = append(ds, d)
	}
	if err := tg.Prepare(t.Context(), ds); err != nil {
		t.Fatal(err)
	}
	return ds
}

func abortAll(ds []deliver.Delivery) {
	for _, d := range ds {
		d.Abort()
	}
}

// sized is a message of about n bytes: over 4096, go-imap sends it as a
// synchronizing literal.
func sized(n int) []byte {
	return append([]byte("Subject: sized\r\n\r\n"), bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n"), n/64+1)...)
}

// warned reports whether a Warn line of the log holds text.
func warned(log, text string) bool {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "level=WARN") && strings.Contains(l, text) {
			return true
		}
	}
	return false
}

func deliveryErr(d deliver.Delivery) *deliver.DeliveryError {
	var de *deliver.DeliveryError
	errors.As(d.(*deliver.IMAPDelivery).Err(), &de)
	return de
}

// TestIMAPTryCreate: a missing mailbox is created once for the whole
// batch (small and synchronizing literals alike) and the batch appended
// again; without create it stays a temporary failure.
func TestIMAPTryCreate(t *testing.T) {
	f := newFakeIMAP(t, "IMAP4rev1 LITERAL+ UIDPLUS AUTH=PLAIN")
	tg, log := fakeTarget(t, f, "Gmail/Label", nil)
	msgs := [][]byte{sized(100), sized(10000), sized(200)}
	ds := stageAll(t, tg, msgs...)
	if err := tg.Publish(t.Context(), ds); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	got := f.messages("Gmail/Label")
	if len(got) != 3 {
		t.Fatalf("%d messages stored, want 3", len(got))
	}
	for i, m := range got {
		if _, rest, _ := bytes.Cut(m, []byte("\r\n")); !bytes.Equal(rest, msgs[i]) {
			t.Errorf("message %d differs", i)
		}
		if uid, ok := ds[i].(*deliver.IMAPDelivery).UID(); !ok || uid.UID != uint32(i+1) || uid.UIDValidity != 500 {
			t.Errorf("message %d: APPENDUID %v %v", i, uid, ok)
		}
	}
	if _, _, creates, _ := f.stats(); creates != 1 {
		t.Errorf("%d CREATEs, want 1", creates)
	}
	if !strings.Contains(log.String(), "created mailbox") {
		t.Errorf("creation not logged:\n%s", log)
	}

	f2 := newFakeIMAP(t, "IMAP4rev1 LITERAL+ UIDPLUS AUTH=PLAIN")
	tg2, _ := fakeTarget(t, f2, "Missing", func(o *deliver.IMAPOptions) { o.Create = false })
	ds = stageAll(t, tg2, sized(100))
	err := tg2.Publish(t.Context(), ds)
	if !deliver.IsTemporary(err) || deliveryErr(ds[0]) == nil || !strings.Contains(err.Error(), "TRYCREATE") {
		t.Errorf("without create: %v, want a temporary TRYCREATE failure", err)
	}
	if _, _, creates, _ := f2.stats(); creates != 0 {
		t.Errorf("%d CREATEs without create", creates)
	}
	abortAll(ds)
}

// TestIMAPServerVerdicts: per message, OVERQUOTA and friends are
// temporary, a plain NO is permanent, the rest of the batch goes through
// (after a refused synchronizing literal, over a new connection), and
// Published lists exactly the appended ones.
func TestIMAPServerVerdicts(t *testing.T) {
	replies := map[int]string{
		1: "NO [OVERQUOTA] mailbox is full",
		2: "NO [CANNOT] message refused by policy",
		3: "NO [LIMIT] too many appends",
		4: "NO [INUSE] mailbox locked",
		5: "NO [UNAVAILABLE] backend down",
		6: "NO message refused",
		7: "BAD what was that",
	}
	f := newFakeIMAP(t, "IMAP4rev1 LITERAL+ UIDPLUS AUTH=PLAIN", "INBOX")
	f.appendHook = func(n int, size int64) fakeAppend { return fakeAppend{Reply: replies[n]} }
	tg, _ := fakeTarget(t, f, "INBOX", nil)
	// Message 2 is large: its NO comes instead of the continuation.
	msgs := [][]byte{sized(10), sized(10), sized(9000), sized(10), sized(10), sized(10), sized(10), sized(10), sized(10)}
	ds := stageAll(t, tg, msgs...)
	err := tg.Publish(t.Context(), ds)
	var pe *deliver.PublishError
	if !errors.As(err, &pe) {
		t.Fatalf("Publish: %v, want a *PublishError", err)
	}
	if want := []int{0, 8}; len(pe.Published) != 2 || pe.Published[0] != 0 || pe.Published[1] != 8 {
		t.Errorf("Published %v, want %v", pe.Published, want)
	}
	for i, d := range ds {
		de := deliveryErr(d)
		switch i {
		case 0, 8:
			if de != nil {
				t.Errorf("message %d: %v", i, de)
			}
		case 2, 6:
			if de == nil || de.Temporary || de.Stage != deliver.StageAppend || !strings.Contains(de.Error(), strings.TrimPrefix(replies[i], "NO ")) {
				t.Errorf("message %d: %v, want permanent with the server's text", i, de)
			}
		default:
			if de == nil || !de.Temporary || de.TargetDown() {
				t.Errorf("message %d: %v, want temporary", i, de)
			}
		}
	}
	if n := len(f.messages("INBOX")); n != 2 {
		t.Errorf("%d messages stored, want 2", n)
	}
	if conns, appends, _, _ := f.stats(); conns != 2 || appends != 9 {
		t.Errorf("%d connections and %d APPENDs; want 2 (one replaced after the refused literal) and 9", conns, appends)
	}
	abortAll(ds)
}

// TestIMAPAppendLimit: a message over APPENDLIMIT is refused before it is
// sent, in Begin by the LIST size or in Close by the real size; a bare
// APPENDLIMIT is asked of the mailbox with STATUS; NO [TOOBIG] counts the
// same.
func TestIMAPAppendLimit(t *testing.T) {
	f := newFakeIMAP(t, "IMAP4rev1 LITERAL+ UIDPLUS AUTH=PLAIN APPENDLIMIT=1000", "INBOX")
	tg, _ := fakeTarget(t, f, "INBOX", nil)
	_, err := tg.Begin(t.Context(), deliver.Meta{Size: 5000})
	var de *deliver.DeliveryError
	if !errors.Is(err, deliver.ErrAppendLimit) || !errors.As(err, &de) || !de.Temporary || de.Stage != deliver.StageSize ||
		!strings.Contains(err.Error(), "5000") || !strings.Contains(err.Error(), "1000") {
		t.Errorf("Begin over the limit: %v, want ErrAppendLimit naming size and limit", err)
	}
	d, err := tg.Begin(t.Context(), deliver.Meta{Size: 10}) // the LIST size lied
	if err != nil {
		t.Fatal(err)
	}
	d.Write(sized(2000))
	err = d.Close()
	if !errors.Is(err, deliver.ErrAppendLimit) || !deliver.IsTemporary(err) {
		t.Errorf("Close over the limit: %v, want a temporary ErrAppendLimit", err)
	}
	ds := stageAll(t, tg, sized(500))
	if err := tg.Publish(t.Context(), ds); err != nil {
		t.Fatal(err)
	}
	if _, appends, _, _ := f.stats(); appends != 1 {
		t.Errorf("%d APPENDs, want only the small message's", appends)
	}

	// A bare APPENDLIMIT: the fake's STATUS says 500.
	f2 := newFakeIMAP(t, "IMAP4rev1 LITERAL+ UIDPLUS AUTH=PLAIN APPENDLIMIT", "INBOX")
	tg2, _ := fakeTarget(t, f2, "INBOX", nil)
	if _, err := tg2.Begin(t.Context(), deliver.Meta{Size: 600}); !errors.Is(err, deliver.ErrAppendLimit) || !strings.Contains(err.Error(), "500") {
		t.Errorf("Begin over the mailbox's limit: %v", err)
	}

	f3 := newFakeIMAP(t, "IMAP4rev1 LITERAL+ UIDPLUS AUTH=PLAIN", "INBOX")
	f3.appendHook = func(int, int64) fakeAppend { return fakeAppend{Reply: "NO [TOOBIG] too big"} }
	tg3, _ := fakeTarget(t, f3, "INBOX", nil)
	ds = stageAll(t, tg3, sized(9000))
	err = tg3.Publish(t.Context(), ds)
	if !errors.Is(err, deliver.ErrAppendLimit) || !deliver.IsTemporary(err) {
		t.Errorf("NO [TOOBIG]: %v, want a temporary ErrAppendLimit", err)
	}
	abortAll(ds)
}

// TestIMAPConnectionFaults: a drop in the middle of a literal, a server
// that never answers, and a BYE: all temporary, nothing reported
// published, the text of the BYE in the log, and the next Publish works
// over a new connection.
func TestIMAPConnectionFaults(t *testing.T) {
	cases := []struct {
		name string
		act  fakeAppend
		log  string
	}{
		{"drop mid-literal", fakeAppend{DropAfter: 3000}, ""},
		{"drop mid-small-literal", fakeAppend{DropAfter: 50}, ""},
		{"no tagged reply", fakeAppend{Silent: true}, ""},
		{"BYE", fakeAppend{Bye: "server shutting down for maintenance"}, "server shutting down for maintenance"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeIMAP(t, "IMAP4rev1 LITERAL+ UIDPLUS AUTH=PLAIN", "INBOX")
			f.appendHook = func(n int, size int64) fakeAppend {
				if n == 1 {
					return tc.act
				}
				return fakeAppend{}
			}
			tg, log := fakeTarget(t, f, "INBOX", nil)
			ds := stageAll(t, tg, sized(100), sized(8000), sized(100))
			start := time.Now()
			err := tg.Publish(t.Context(), ds)
			took := time.Since(start)
			var pe *deliver.PublishError
			if !errors.As(err, &pe) || !deliver.IsTemporary(err) {
				t.Fatalf("Publish: %v, want a temporary *PublishError", err)
			}
			if len(pe.Published) != 1 || pe.Published[0] != 0 {
				t.Errorf("Published %v, want [0]", pe.Published)
			}
			for _, d := range ds[1:] {
				if de := deliveryErr(d); de == nil || !de.Temporary {
					t.Errorf("delivery error %v, want temporary", de)
				}
			}
			// The message whose APPEND went out unanswered may be on the
			// server: publishing it again is refused; the one never sent
			// may go again.
			if err := tg.Publish(t.Context(), ds[1:2]); !errors.Is(err, deliver.ErrState) {
				t.Errorf("Publish again of the unanswered message: %v, want ErrState", err)
			}
			if took > 20*fakeTimeout {
				t.Errorf("Publish took %v with a timeout of %v", took, fakeTimeout)
			}
			if tc.log != "" && !warned(log.String(), tc.log) {
				t.Errorf("log lacks a warning with %q:\n%s", tc.log, log)
			}
			abortAll(ds[1:])
			// The next batch dials again and goes through.
			ds2 := stageAll(t, tg, sized(100))
			if err := tg.Publish(t.Context(), ds2); err != nil {
				t.Fatalf("Publish after the fault: %v", err)
			}
			if conns, _, _, _ := f.stats(); conns != 2 {
				t.Errorf("%d connections, want 2", conns)
			}
		})
	}
}

// TestIMAPWithoutUIDPlus: a server without UIDPLUS gives no APPENDUID;
// Delivered still finds the message by its token.
func TestIMAPWithoutUIDPlus(t *testing.T) {
	f := newFakeIMAP(t, "IMAP4rev1 LITERAL+ AUTH=PLAIN", "INBOX")
	tg, _ := fakeTarget(t, f, "INBOX", nil)
	ds := stageAll(t, tg, sized(100), sized(100))
	if err := tg.Publish(t.Context(), ds[:1]); err != nil {
		t.Fatal(err)
	}
	if uid, ok := ds[0].(*deliver.IMAPDelivery).UID(); ok {
		t.Errorf("APPENDUID %v from a server without UIDPLUS", uid)
	}
	after, _ := fakeTarget(t, f, "INBOX", nil)
	found, err := after.Delivered(t.Context(), []string{ds[0].Token(), ds[1].Token()})
	if err != nil {
		t.Fatal(err)
	}
	if !found[ds[0].Token()] || found[ds[1].Token()] {
		t.Errorf("Delivered = %v, want only the appended one", found)
	}
	abortAll(ds[1:])
}

// TestIMAPAlertAndSession: [ALERT] texts reach the log; STARTTLS that
// the server refuses, or follows with injected plain text, stops before
// any password is sent; an unknown SASL mechanism is refused.
func TestIMAPAlertAndSession(t *testing.T) {
	f := newFakeIMAP(t, "IMAP4rev1 LITERAL+ UIDPLUS AUTH=PLAIN", "INBOX")
	f.afterLogin = "* OK [ALERT] Your mailbox is 95% full"
	tg, log := fakeTarget(t, f, "INBOX", nil)
	ds := stageAll(t, tg, sized(10))
	if err := tg.Publish(t.Context(), ds); err != nil {
		t.Fatal(err)
	}
	if !warned(log.String(), "Your mailbox is 95% full") {
		t.Errorf("alert not logged:\n%s", log)
	}

	for _, greeting := range []string{"", "inject"} {
		f := newFakeIMAP(t, "IMAP4rev1 AUTH=PLAIN", "INBOX")
		if greeting == "inject" {
			f.caps = "IMAP4rev1 STARTTLS AUTH=PLAIN"
			f.injectAfterSTARTTLS = true
		}
		tg, _ := fakeTarget(t, f, "INBOX", func(o *deliver.IMAPOptions) { o.TLS = deliver.TLSStartTLS })
		_, err := tg.Begin(t.Context(), deliver.Meta{})
		var de *deliver.DeliveryError
		want := "STARTTLS refused"
		if greeting == "inject" {
			want = "data after the reply to STARTTLS"
		}
		if !errors.As(err, &de) || de.Stage != deliver.StageHello || !de.TargetDown() || !strings.Contains(err.Error(), want) {
			t.Errorf("STARTTLS refused (%q): %v, want a failure at the greeting stage", greeting, err)
		}
		if _, _, _, logins := f.stats(); logins != 0 {
			t.Errorf("%d logins after a failed STARTTLS", logins)
		}
	}

	f4 := newFakeIMAP(t, "IMAP4rev1 AUTH=PLAIN", "INBOX")
	tg4, _ := fakeTarget(t, f4, "INBOX", func(o *deliver.IMAPOptions) { o.Auth = deliver.IMAPAuthXOAuth2 })
	if _, err := tg4.Begin(t.Context(), deliver.Meta{}); err == nil || !strings.Contains(err.Error(), "AUTH=XOAUTH2") {
		t.Errorf("XOAUTH2 not offered: %v", err)
	}
}

// TestIMAPCanceledPublish: a context that ends while the server is silent
// stops Publish at once.
func TestIMAPCanceledPublish(t *testing.T) {
	f := newFakeIMAP(t, "IMAP4rev1 LITERAL+ UIDPLUS AUTH=PLAIN", "INBOX")
	ctx, cancel := context.WithCancel(t.Context())
	// The server cancels the context as the APPEND arrives, then stays
	// silent.
	f.appendHook = func(int, int64) fakeAppend { cancel(); return fakeAppend{Silent: true} }
	tg, _ := fakeTarget(t, f, "INBOX", func(o *deliver.IMAPOptions) { o.Timeout = time.Minute })
	ds := stageAll(t, tg, sized(100))
	start := time.Now()
	err := tg.Publish(ctx, ds)
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("Publish took %v after the cancel", took)
	}
	if !errors.Is(err, context.Canceled) || !deliver.IsTemporary(err) {
		t.Errorf("Publish: %v, want context.Canceled", err)
	}
	abortAll(ds)
}

// TestIMAPOAuth2: XOAUTH2 and OAUTHBEARER send the access token that
// Password returns in their own formats, asked for once per connection.
func TestIMAPOAuth2(t *testing.T) {
	for _, tc := range []struct{ auth, want string }{
		{deliver.IMAPAuthXOAuth2, "user=me\x01auth=Bearer ya29.token\x01\x01"},
		{deliver.IMAPAuthOAuthBearer, "n,a=me,\x01auth=Bearer ya29.token\x01\x01"},
		{deliver.IMAPAuthPlain, "\x00me\x00ya29.token"},
	} {
		f := newFakeIMAP(t, "IMAP4rev1 LITERAL+ UIDPLUS AUTH=PLAIN AUTH=XOAUTH2 AUTH=OAUTHBEARER", "INBOX")
		cred := &testCredential{secret: "ya29.token"}
		tg, _ := fakeTarget(t, f, "INBOX", func(o *deliver.IMAPOptions) {
			o.Auth = tc.auth
			o.Password = cred
		})
		ds := stageAll(t, tg, sized(10), sized(10))
		if err := tg.Publish(t.Context(), ds); err != nil {
			t.Fatal(err)
		}
		f.mu.Lock()
		got := f.auth
		f.mu.Unlock()
		if len(got) != 1 || got[0] != tc.want {
			t.Errorf("%s: the server got %q, want %q", tc.auth, got, tc.want)
		}
		if cred.calls != 1 || len(cred.invalidated) != 0 {
			t.Errorf("%s: Password asked %d times for one connection, invalidated %q", tc.auth, cred.calls, cred.invalidated)
		}
	}
}

// testCredential counts the secrets it hands out and remembers those
// invalidated.
type testCredential struct {
	secret      string
	calls       int
	invalidated []string
}

func (c *testCredential) Secret(context.Context) (string, error) { c.calls++; return c.secret, nil }
func (c *testCredential) Invalidate(s string)                    { c.invalidated = append(c.invalidated, s) }

// TestIMAPRefusedTokenInvalidated: a token the server refuses is
// Invalidated, so an OAuth2 source does not offer it again; the failure
// is a temporary one at StageAuth, and the message stays to be retried.
func TestIMAPRefusedTokenInvalidated(t *testing.T) {
	f := newFakeIMAP(t, "IMAP4rev1 UIDPLUS AUTH=XOAUTH2", "INBOX")
	f.refuseAuth = true
	cred := &testCredential{secret: "ya29.expired"}
	tg, _ := fakeTarget(t, f, "INBOX", func(o *deliver.IMAPOptions) {
		o.Auth = deliver.IMAPAuthXOAuth2
		o.Password = cred
	})
	_, err := tg.Begin(t.Context(), deliver.Meta{UIDL: "u1", Size: 10})
	var de *deliver.DeliveryError
	if !errors.As(err, &de) || de.Stage != deliver.StageAuth || !de.Temporary {
		t.Fatalf("Begin with a refused token: %v", err)
	}
	if len(cred.invalidated) != 1 || cred.invalidated[0] != "ya29.expired" {
		t.Errorf("invalidated %q, want the refused token", cred.invalidated)
	}
	if strings.Contains(err.Error(), "ya29.expired") {
		t.Errorf("the error shows the token: %v", err)
	}
}

// TestIMAPLaggingSearch: Delivered reads the token field of the newest
// messages before it searches, so a server whose search index lags
// behind its APPENDs (Gmail) still shows what was appended.
func TestIMAPLaggingSearch(t *testing.T) {
	f := newFakeIMAP(t, "IMAP4rev1 LITERAL+ UIDPLUS AUTH=PLAIN", "INBOX")
	f.searchBlind = true
	tg, _ := fakeTarget(t, f, "INBOX", nil)
	ds := stageAll(t, tg, sized(10), sized(10), sized(10), sized(10))
	if err := tg.Publish(t.Context(), ds[:3]); err != nil {
		t.Fatal(err)
	}
	tokens := []string{ds[0].Token(), ds[1].Token(), ds[2].Token(), ds[3].Token()}
	for _, tc := range []struct {
		scan int
		want []bool
	}{
		{1000, []bool{true, true, true, false}},
		{2, []bool{false, true, true, false}}, // only the newest two are read
		{0, []bool{false, false, false, false}},
	} {
		restore := deliver.SetIMAPRecentScan(tc.scan)
		found, err := tg.Delivered(t.Context(), tokens)
		restore()
		if err != nil {
			t.Fatal(err)
		}
		for i, tok := range tokens {
			if found[tok] != tc.want[i] {
				t.Errorf("scan %d: message %d found %v, want %v", tc.scan, i, found[tok], tc.want[i])
			}
		}
	}
	abortAll(ds[3:])
}

func TestIMAPErrorText(t *testing.T) {
	f := newFakeIMAP(t, "IMAP4rev1 LITERAL+ UIDPLUS AUTH=PLAIN", "INBOX")
	f.appendHook = func(int, int64) fakeAppend { return fakeAppend{Reply: "NO [OVERQUOTA] mailbox is full"} }
	tg, _ := fakeTarget(t, f, "INBOX", nil)
	ds := stageAll(t, tg, sized(10))
	err := tg.Publish(t.Context(), ds)
	got := deliveryErr(ds[0]).Error()
	want := "imap imap.example.net:993 INBOX: APPEND: message " + ds[0].Token() + " (uidl u, " + strconv.FormatInt(ds[0].Size(), 10) + " bytes): refused: NO [OVERQUOTA] mailbox is full (temporary)"
	if got != want || !strings.Contains(err.Error(), want) {
		t.Errorf("error\n got %s\nwant %s", got, want)
	}
	abortAll(ds)
}
