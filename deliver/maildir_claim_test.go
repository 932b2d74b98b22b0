package deliver

import (
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// twoOverOne opens two Maildir targets over one folder: a holds the
// deliveries of a poller that was paused before Publish, b resolves their
// intents. Each counts its directory fsyncs by subdirectory.
func twoOverOne(t *testing.T) (a, b *Maildir, synced map[string]int) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "Maildir")
	var err error
	if a, err = NewMaildir(dir, MaildirOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if b, err = NewMaildir(dir, MaildirOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	synced = make(map[string]int)
	var mu sync.Mutex
	inner := b.syncDir
	b.syncDir = func(p string) error {
		mu.Lock()
		synced[filepath.Base(p)]++
		mu.Unlock()
		return inner(p)
	}
	return a, b, synced
}

// TestMaildirClaimBeforePublish: the resolver claims the staged file of a
// paused publisher before it decides; when the publisher goes on, its
// rename fails and the message is not published, so the resolver's
// decision (not published: fetch it again) stays true.
func TestMaildirClaimBeforePublish(t *testing.T) {
	a, b, synced := twoOverOne(t)
	ds := []Delivery{stageMsg(t, a, []byte("one\r\n")), stageMsg(t, a, []byte("two\r\n"))}
	if err := a.Prepare(bg, ds); err != nil {
		t.Fatal(err)
	}
	toks := []string{ds[0].Token(), ds[1].Token()}
	// The first message was published before the pause.
	if err := a.Publish(bg, ds[:1]); err != nil {
		t.Fatal(err)
	}

	claimed, err := b.Claim(bg, append(slices.Clone(toks), "1.M2P3Q4.never-staged"))
	if err != nil {
		t.Fatal(err)
	}
	if claimed[toks[0]] || !claimed[toks[1]] || claimed["1.M2P3Q4.never-staged"] {
		t.Errorf("Claim = %v, want only the unpublished %s", claimed, toks[1])
	}
	if synced["tmp"] != 1 {
		t.Errorf("tmp/ fsynced %d times after the claim, want 1", synced["tmp"])
	}
	if got := names(t, b, "tmp"); len(got) != 0 {
		t.Errorf("tmp/ after the claim = %v", got)
	}
	found, err := b.Delivered(bg, toks)
	if err != nil {
		t.Fatal(err)
	}
	if !found[toks[0]] || found[toks[1]] {
		t.Errorf("Delivered = %v, want the first only", found)
	}
	if synced["new"] != 1 {
		t.Errorf("new/ fsynced %d times by Delivered, want 1 (it found a file there)", synced["new"])
	}

	// The paused publisher goes on: its rename finds nothing.
	err = a.Publish(bg, ds[1:])
	var pe *PublishError
	if !errors.As(err, &pe) || len(pe.Published) != 0 {
		t.Fatalf("Publish after the claim = %v, want a *PublishError with nothing published", err)
	}
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "claimed") || !strings.Contains(err.Error(), toks[1]) {
		t.Errorf("error does not say the file was claimed: %v", err)
	}
	if got := names(t, a, "new"); !slices.Equal(got, toks[:1]) {
		t.Errorf("new/ = %v, want only %s", got, toks[0])
	}
	for _, d := range ds {
		if err := d.Abort(); err != nil {
			t.Errorf("Abort after the claim: %v", err)
		}
	}
	// A second resolver (or a retry) finds nothing left to claim.
	claimed, err = b.Claim(bg, toks)
	if err != nil || claimed[toks[0]] || claimed[toks[1]] {
		t.Errorf("second Claim = %v, %v; want nothing claimed", claimed, err)
	}
	if synced["tmp"] != 1 {
		t.Errorf("tmp/ fsynced again by a claim that removed nothing")
	}
}

// TestMaildirClaimAfterPublish: a publisher that renamed before the claim
// wins; the claim finds no file and Delivered reports the message.
func TestMaildirClaimAfterPublish(t *testing.T) {
	a, b, synced := twoOverOne(t)
	d := stageMsg(t, a, []byte("x\r\n"))
	deliverAll(t, a, d)
	claimed, err := b.Claim(bg, []string{d.Token()})
	if err != nil || claimed[d.Token()] {
		t.Fatalf("Claim = %v, %v; want nothing claimed", claimed, err)
	}
	if synced["tmp"] != 0 {
		t.Errorf("tmp/ fsynced by a claim that removed nothing")
	}
	found, err := b.Delivered(bg, []string{d.Token()})
	if err != nil || !found[d.Token()] {
		t.Fatalf("Delivered = %v, %v", found, err)
	}
	if got := readNew(t, b, d.Token()); string(got) != "x\n" {
		t.Errorf("new/%s = %q", d.Token(), got)
	}
}

// TestMaildirClaimRacesPublish runs a publish and a claim at once, many
// times: exactly one of them gets the file, and Delivered after the claim
// agrees with whichever it was.
func TestMaildirClaimRacesPublish(t *testing.T) {
	a, b, _ := twoOverOne(t)
	for i := range 200 {
		d := stageMsg(t, a, []byte("race\r\n"))
		if err := a.Prepare(bg, []Delivery{d}); err != nil {
			t.Fatal(err)
		}
		var pubErr, claimErr error
		var claimed map[string]bool
		var wg sync.WaitGroup
		wg.Go(func() { pubErr = a.Publish(bg, []Delivery{d}) })
		wg.Go(func() { claimed, claimErr = b.Claim(bg, []string{d.Token()}) })
		wg.Wait()
		if claimErr != nil {
			t.Fatal(claimErr)
		}
		found, err := b.Delivered(bg, []string{d.Token()})
		if err != nil {
			t.Fatal(err)
		}
		published := pubErr == nil
		if published == claimed[d.Token()] || published != found[d.Token()] {
			t.Fatalf("round %d: published %v (%v), claimed %v, Delivered %v", i, published, pubErr, claimed[d.Token()], found[d.Token()])
		}
		d.Abort()
	}
	if got := names(t, a, "tmp"); len(got) != 0 {
		t.Errorf("tmp/ holds %v", got)
	}
}

func TestMaildirClaimBadToken(t *testing.T) {
	m := newTestMaildir(t, MaildirOptions{})
	for _, tok := range []string{"", "../new/x", ".hidden", "a:2,S"} {
		if _, err := m.Claim(bg, []string{tok}); !errors.Is(err, ErrBadToken) {
			t.Errorf("Claim(%q) = %v, want ErrBadToken", tok, err)
		}
	}
}
