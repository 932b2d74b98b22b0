package deliver

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// Delivered reports which tokens' messages are in the mailbox (see IMAP).
// A mailbox that does not exist holds none.
func (t *IMAP) Delivered(ctx context.Context, tokens []string) (map[string]bool, error) {
	uids, err := t.DeliveredUIDs(ctx, tokens)
	if err != nil {
		return nil, err
	}
	found := make(map[string]bool, len(tokens))
	for _, tok := range tokens {
		_, found[tok] = uids[tok]
	}
	return found, nil
}

// DeliveredUIDs is Delivered with where each found message is now: its
// UID under the mailbox's current UIDVALIDITY. If the mailbox was
// recreated or renumbered since the APPEND (a UIDVALIDITY other than the
// APPENDUID's), the message is still found by its token, under its new
// UID; an APPENDUID recorded earlier no longer names it. A token with
// more than one message (a copy made by a user) reports the lowest UID.
func (t *IMAP) DeliveredUIDs(ctx context.Context, tokens []string) (map[string]IMAPUID, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: looking for delivered messages: %w", t.name, err)
	}
	for _, tok := range tokens {
		if !validIMAPToken(tok) {
			return nil, fmt.Errorf("%s: looking for %q: %w", t.name, tok, ErrBadToken)
		}
	}
	out := make(map[string]IMAPUID)
	if len(tokens) == 0 {
		return out, nil
	}
	t.sessMu.Lock()
	defer t.sessMu.Unlock()
	s, err := t.session(ctx, 0)
	if err != nil {
		return nil, err
	}
	s.conn.begin()
	defer s.conn.end()
	stop := context.AfterFunc(ctx, func() { s.conn.Conn.Close() })
	defer stop()
	err = t.lookup(s, tokens, out)
	if err != nil {
		if !errors.As(err, new(*imap.Error)) {
			t.dropSession(0)
		}
		return nil, t.failure(StageLookup, ctxErr(ctx, err))
	}
	return out, nil
}

// lookup runs EXAMINE, a FETCH of the token field of the newest
// messages, one UID SEARCH HEADER per token not found there (pipelined),
// one UID FETCH of the token field for every hit, and UNSELECT.
func (t *IMAP) lookup(s *imapSession, tokens []string, out map[string]IMAPUID) error {
	sel, err := s.c.Select(t.opts.Mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		var ie *imap.Error
		if !errors.As(err, &ie) {
			return fmt.Errorf("EXAMINE %s: %w", t.opts.Mailbox, err)
		}
		exists, lerr := t.mailboxExists(context.Background(), s)
		if lerr != nil {
			return lerr
		}
		if !exists {
			return nil
		}
		return fmt.Errorf("EXAMINE %s: %w", t.opts.Mailbox, err)
	}
	defer t.unselect(s)
	if sel.NumMessages == 0 {
		return nil
	}
	want := make(map[string]bool, len(tokens))
	for _, tok := range tokens {
		want[tok] = true
	}
	section := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{IMAPTokenHeader}, Peek: true}
	record := func(set imap.NumSet) error {
		msgs, err := s.c.Fetch(set, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{section}}).Collect()
		if err != nil {
			return fmt.Errorf("FETCH %s: %w", IMAPTokenHeader, err)
		}
		for _, m := range msgs {
			v, ok := field(m.FindBodySection(section), strings.ToLower(IMAPTokenHeader))
			tok := strings.TrimSpace(v)
			if !ok || !want[tok] || m.UID == 0 {
				continue
			}
			if prev, seen := out[tok]; !seen || uint32(m.UID) < prev.UID {
				out[tok] = IMAPUID{UIDValidity: sel.UIDValidity, UID: uint32(m.UID)}
			}
		}
		return nil
	}
	// The newest messages are read directly: an interrupted batch sits at
	// the end of the mailbox, and a server's search index may not hold a
	// message yet that it has just stored (Gmail builds it afterwards).
	if imapRecentScan > 0 {
		var recent imap.SeqSet
		recent.AddRange(sel.NumMessages-min(sel.NumMessages, uint32(imapRecentScan))+1, sel.NumMessages)
		if err := record(recent); err != nil {
			return err
		}
	}
	var missing []string
	for _, tok := range tokens {
		if _, ok := out[tok]; !ok {
			missing = append(missing, tok)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	searches := make([]*imapclient.SearchCommand, len(missing))
	for i, tok := range missing {
		searches[i] = s.c.UIDSearch(&imap.SearchCriteria{
			Header: []imap.SearchCriteriaHeaderField{{Key: IMAPTokenHeader, Value: tok}},
		}, nil)
	}
	var hits imap.UIDSet
	var serr error
	for _, sc := range searches {
		data, err := sc.Wait()
		if err != nil {
			serr = errors.Join(serr, fmt.Errorf("UID SEARCH HEADER %s: %w", IMAPTokenHeader, err))
			continue
		}
		for _, uid := range data.AllUIDs() {
			hits.AddNum(uid)
		}
	}
	if serr != nil {
		return serr
	}
	if len(hits) == 0 {
		return nil
	}
	return record(hits)
}

// imapRecentScan is how many of a mailbox's newest messages Delivered
// reads the token field of before it searches (tests change it).
var imapRecentScan = 1000

// unselect leaves the mailbox: UNSELECT (RFC 3691) where offered, else
// CLOSE, which expunges nothing in a mailbox opened with EXAMINE (RFC 3501
// §6.4.2).
func (t *IMAP) unselect(s *imapSession) {
	var err error
	if s.caps.Has(imap.CapUnselect) || s.caps.Has(imap.CapIMAP4rev2) {
		err = s.c.Unselect().Wait()
	} else {
		err = s.c.UnselectAndExpunge().Wait()
	}
	if err != nil {
		t.log.Debug("leaving the mailbox", "error", err)
	}
}

// mailboxExists asks LIST whether the mailbox exists.
func (t *IMAP) mailboxExists(ctx context.Context, s *imapSession) (bool, error) {
	s.conn.begin()
	defer s.conn.end()
	list, err := s.c.List("", t.opts.Mailbox, nil).Collect()
	if err != nil {
		return false, fmt.Errorf("LIST %s: %w", t.opts.Mailbox, err)
	}
	for _, l := range list {
		for _, a := range l.Attrs {
			if a == imap.MailboxAttrNonExistent || a == imap.MailboxAttrNoSelect {
				return false, nil
			}
		}
	}
	return len(list) > 0, nil
}
