package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"popsync/configs"
	"popsync/deliver"
	"popsync/fetch/pop3"
	"popsync/internal/credential"
	"popsync/state"
)

// openIMAP builds the IMAP APPEND target of an imap deliver entry, which
// logs in with cred: the entry's password source, or (for auth xoauth2 or
// oauthbearer with an [account.deliver.oauth2] table) credential.FromTokens
// of its token source.
func openIMAP(a *configs.Account, t *configs.IMAPTarget, cred credential.Credential) (deliver.Target, error) {
	opts := deliver.IMAPOptions{
		Addr: t.Addr(), TLS: t.TLS, User: t.User, Password: cred,
		Mailbox: t.Mailbox, Create: t.Create, Flags: t.Flags, InternalDate: t.InternalDate,
		SpoolDir: t.SpoolDir, Timeout: time.Duration(a.Timeout), Connections: t.Connections,
	}
	if t.Auth != configs.IMAPAuthAuto {
		opts.Auth = t.Auth
	}
	if t.TLS != configs.TLSNone {
		// Verified as the POP3 side is: CA file, pinned fingerprint,
		// the name to check the certificate against.
		cfg, err := pop3.Options{ServerName: t.TLSServerName, CAFile: t.TLSCAFile,
			Fingerprint: t.TLSFingerprint}.ClientTLSConfig(t.Host)
		if err != nil {
			return nil, fmt.Errorf("imap %s: %w", t.Addr(), err)
		}
		opts.TLSConfig = cfg
	}
	return deliver.NewIMAP(opts)
}

// loggingTarget is a target that takes the poll's logger after it was
// opened (the IMAP target logs the server's BYE and ALERT texts).
type loggingTarget interface {
	SetLogger(*slog.Logger)
}

// appendLimitNote starts the seen-set note of a message left on the
// server because it is larger than an IMAP target's APPENDLIMIT (RFC
// 7889). Such a record is not retried at every poll: it is reported once.
const appendLimitNote = "over appendlimit: "

// overAppendLimit reports whether every error of errs says the message is
// larger than an IMAP server's APPENDLIMIT, and returns the first one's
// text (size and limit).
func overAppendLimit(errs []error) (string, bool) {
	text := ""
	for _, e := range errs {
		var de *deliver.DeliveryError
		if !errors.Is(e, deliver.ErrAppendLimit) || !errors.As(e, &de) {
			return "", false
		}
		if text == "" {
			text = de.Target + ": " + de.Text
		}
	}
	return text, len(errs) > 0
}

// limited is a message an IMAP target cannot take for its size.
type limited struct {
	m    serverMsg
	note string
}

// recordAppendLimited records the messages found over an APPENDLIMIT in
// this poll as skipped, with the size and the limit, so they stay on the
// server and are reported once, like those over max_size.
func (p *pollRun) recordAppendLimited(ctx context.Context) error {
	if len(p.limited) == 0 {
		return nil
	}
	now := p.o.now()
	recs := make([]state.Record, len(p.limited))
	for i, l := range p.limited {
		recs[i] = state.Record{UIDL: l.m.key, State: state.Skipped, Size: l.m.size, FirstSeen: now, Note: l.note}
	}
	p.limited = nil
	if err := p.held(); err != nil {
		return err
	}
	if err := p.o.Store.MarkSkipped(ctx, p.id, recs); err != nil {
		return fmt.Errorf("recording messages over an APPENDLIMIT: %w", err)
	}
	p.res.Skipped += len(recs)
	return nil
}

// reject adds a message a target refused for good to those on_reject
// handles. Both the streaming and the committing goroutine call it.
func (p *pollRun) reject(r rejection) {
	p.rejectMu.Lock()
	p.rejected = append(p.rejected, r)
	p.rejectMu.Unlock()
}

// publishRejected tells a Publish that failed only because the server
// refused some messages for good (an IMAP server's NO without a code
// about its own state) from any other failure: then it returns the
// refused deliveries of ds, each with its error; every other delivery of
// ds was published. ok is false for any other failure.
func publishRejected(ds []deliver.Delivery, err error) (refused map[deliver.Delivery]error, ok bool) {
	var pe *deliver.PublishError
	if !errors.As(err, &pe) {
		return nil, false
	}
	published := make(map[int]bool, len(pe.Published))
	for _, i := range pe.Published {
		published[i] = true
	}
	refused = make(map[deliver.Delivery]error)
	for i, d := range ds {
		if published[i] {
			continue
		}
		de, isErr := d.(interface{ Err() error })
		var dErr *deliver.DeliveryError
		if !isErr || !errors.As(de.Err(), &dErr) || dErr.Temporary {
			return nil, false
		}
		refused[d] = de.Err()
	}
	return refused, len(refused) > 0
}

// dropRefused takes the messages target ti refused for good at Publish
// out of the batch: their deliveries to the targets after ti are aborted
// and their intents dropped, and on_reject of ti's entry applies to them
// (as to an SMTP 5xx). A target before ti may already hold such a
// message; it is left there, and the warning says so. It returns the
// batch that goes on and the columns without the refused deliveries; the
// refused ones are marked in batch itself.
func (p *pollRun) dropRefused(ctx context.Context, batch []staged, cols [][]deliver.Delivery, s sink, ti int, refused map[deliver.Delivery]error) ([]staged, [][]deliver.Delivery, error) {
	var keep []staged
	var uidls []string
	gone := make(map[deliver.Delivery]bool)
	for i := range batch {
		st := batch[i]
		rerr, ok := refused[st.ds[ti]]
		if st.ds[ti] == nil || !ok {
			keep = append(keep, st)
			continue
		}
		// Marked in the caller's batch too: the committer must not
		// count it as delivered (and DELE it).
		batch[i].refused = true
		uidls = append(uidls, st.m.key)
		var elsewhere []string
		for tj, d := range st.ds {
			if d == nil || tj == ti {
				continue
			}
			if tj < ti {
				elsewhere = append(elsewhere, s.targets[tj].String())
				continue
			}
			d.Abort()
			gone[d] = true
		}
		st.ds[ti].Abort() // its spool file
		if len(elsewhere) > 0 {
			p.log.Warn("message refused by one target after others stored it; they keep their copy",
				"uidl", st.m.key, "stored_in", strings.Join(elsewhere, ", "))
		}
		onReject := s.targets[ti].onReject
		if onReject == "" {
			onReject = configs.DefaultOnReject
		}
		p.reject(rejection{m: st.m, onReject: onReject, reason: rerr.Error()})
		p.onMessage(st.m, st.size, s.targets, MessageRejected, rerr)
	}
	for tj := range cols {
		var c []deliver.Delivery
		for _, d := range cols[tj] {
			if _, r := refused[d]; !gone[d] && !(tj == ti && r) {
				c = append(c, d)
			}
		}
		cols[tj] = c
	}
	if len(uidls) > 0 {
		if err := p.o.Store.DropIntents(ctx, p.id, uidls); err != nil {
			return nil, nil, fmt.Errorf("dropping intents of refused messages: %w", err)
		}
	}
	return keep, cols, nil
}

// logAppendUIDs logs where an IMAP server put each published message
// (UIDPLUS, RFC 4315: APPENDUID).
func (p *pollRun) logAppendUIDs(batch []staged, ti int) {
	if !p.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	for _, st := range batch {
		d, ok := st.ds[ti].(*deliver.IMAPDelivery)
		if !ok {
			continue
		}
		if uid, ok := d.UID(); ok {
			p.log.Debug("appended", "uidl", st.m.key, "uidvalidity", uid.UIDValidity, "uid", uid.UID)
		}
	}
}
