package fetch

import (
	"context"
	"fmt"
	"time"

	"popsync/state"
)

// markPartial records that the target with targetID already accepted
// uidl, so that a retry does not deliver it there again.
func (p *pollRun) markPartial(uidl, targetID string) {
	if p.partial == nil {
		p.partial = make(map[string]map[string]bool)
	}
	if p.partial[uidl] == nil {
		p.partial[uidl] = make(map[string]bool)
	}
	p.partial[uidl][targetID] = true
}

// claimer is a staging target that can take staged files away from the
// deliveries that staged them (deliver.Maildir.Claim).
type claimer interface {
	Claim(ctx context.Context, tokens []string) (map[string]bool, error)
}

// lateCommitter is a staging target whose server may still commit a
// message for a while after the client that sent it is gone: an IMAP
// server that received an APPEND's literal stores the message whether or
// not anyone waits for its tagged answer (deliver.IMAP). LateCommit is
// how long that may take; 0 means no such window.
type lateCommitter interface {
	LateCommit() time.Duration
}

// waitFor notes that the message uidl waits for a target to settle until
// the time given; the latest time wins.
func (p *pollRun) waitFor(uidl string, until time.Time) {
	if p.waiting == nil {
		p.waiting = make(map[string]time.Time)
	}
	if until.After(p.waiting[uidl]) {
		p.waiting[uidl] = until
	}
}

// resolveIntents settles deliveries a crash interrupted: an intent whose
// file every target published is recorded as delivered; any other is
// dropped, its leftovers removed, and the message fetched again. Intents
// of confirming targets that accepted a message are kept: they spare that
// target a second copy when the message is fetched again.
//
// The poller that left an intent may be alive: a daemon paused past its
// lease, whose account this poll took over, can wake up between its last
// lease check and its rename into new/. So a staging target that can
// (claimer) first takes the staged files away from it, and only then is
// asked what was published: a file claimed is never published by
// anyone, a file not found was published already (or never staged), and
// either way the answer holds. A poll that lost its own lease touches
// nothing: the files belong to the new holder.
//
// A target that cannot take a delivery away (lateCommitter: IMAP, whose
// server may still commit an APPEND it received from a killed run or
// over a broken connection) answers "not found" without that answer
// holding yet. Such an intent younger than the target's LateCommit is
// neither recorded nor dropped: it stays open, its message waits
// (p.waiting: neither RETR'd nor DELE'd by this poll), and a later poll
// asks again. Its age is measured from Intent.Created, which is the
// clock of the process that recorded it: in a fleet, another node's;
// clocks apart by more than LateCommit shorten or stretch the wait
// accordingly.
func (p *pollRun) resolveIntents(ctx context.Context) error {
	if err := p.held(); err != nil {
		return err
	}
	// Recomputed on each call from what is open now.
	p.waiting = nil
	all, err := p.o.Store.Intents(ctx, p.id)
	if err != nil || len(all) == 0 {
		return err
	}
	var intents []state.Intent
	for _, in := range all {
		if in.Confirmed {
			// An ID from schema 1 names the target by its index.
			id := in.Target
			if t, ok, _ := p.targetByID(id); ok {
				id = t.id
			}
			p.markPartial(in.UIDL, id)
			continue
		}
		intents = append(intents, in)
	}
	if len(intents) == 0 {
		return nil
	}
	tokens := make(map[string][]string)
	for _, in := range intents {
		tokens[in.Target] = append(tokens[in.Target], in.Token)
	}
	found := make(map[string]map[string]bool, len(tokens))
	settle := make(map[string]time.Duration, len(tokens))
	for ti, toks := range tokens {
		t, ok, err := p.targetByID(ti)
		if err != nil {
			return err
		}
		if !ok {
			continue // the target left the config: treat as not delivered
		}
		if lc, ok := t.Target.(lateCommitter); ok {
			settle[ti] = lc.LateCommit()
		}
		if c, ok := t.Target.(claimer); ok {
			claimed, err := c.Claim(ctx, toks)
			if err != nil {
				return fmt.Errorf("taking over interrupted deliveries: %w", err)
			}
			n := 0
			for _, took := range claimed {
				if took {
					n++
				}
			}
			if n > 0 {
				p.log.Info("took over the staged files of interrupted deliveries; they are fetched again",
					"target", t.String(), "files", n)
			}
		}
		f, err := t.Delivered(ctx, toks)
		if err != nil {
			return fmt.Errorf("looking for interrupted deliveries: %w", err)
		}
		found[ti] = f
	}
	type verdict struct {
		all, any, quarantine bool
		wait                 bool      // a target may still commit it
		until                time.Time // when the last such window ends
		size                 int64
		at                   time.Time
	}
	now := p.o.now()
	byUIDL := make(map[string]*verdict)
	var order []string
	for _, in := range intents {
		v := byUIDL[in.UIDL]
		if v == nil {
			v = &verdict{all: true, size: in.Size, at: in.Created}
			byUIDL[in.UIDL] = v
			order = append(order, in.UIDL)
		}
		v.quarantine = v.quarantine || in.Target == state.QuarantineTarget
		if found[in.Target][in.Token] {
			v.any = true
			continue
		}
		v.all = false
		if d := settle[in.Target]; d > 0 {
			if end := in.Created.Add(d); now.Before(end) {
				v.wait = true
				if end.After(v.until) {
					v.until = end
				}
			}
		}
	}
	var recs []state.Record
	var drop []string
	for _, u := range order {
		v := byUIDL[u]
		if v.all {
			st := state.Delivered
			if v.quarantine {
				st = state.Quarantined
			}
			recs = append(recs, state.Record{UIDL: u, State: st, Size: v.size, FirstSeen: v.at, DeliveredAt: v.at})
			continue
		}
		if v.wait {
			// Not found yet, and the server may still commit it: asking
			// again later is the only answer that holds. Its intents
			// and leftovers stay as they are.
			p.waitFor(u, v.until)
			continue
		}
		if v.any {
			p.log.Warn("interrupted delivery reached only some targets; fetching it again for all", "uidl", u)
		}
		drop = append(drop, u)
	}
	waitTok := make(map[string]bool)
	for _, in := range intents {
		if _, ok := p.waiting[in.UIDL]; ok {
			waitTok[in.Token] = true
		}
	}
	for ti, toks := range tokens {
		t, ok, _ := p.targetByID(ti)
		if !ok {
			continue
		}
		var left []string
		for _, tok := range toks {
			if !found[ti][tok] && !waitTok[tok] {
				left = append(left, tok)
			}
		}
		if len(left) > 0 {
			if err := t.Cleanup(ctx, left); err != nil {
				p.log.Warn("removing leftovers of interrupted deliveries", "target", t.String(), "error", err.Error())
			}
		}
	}
	if err := p.held(); err != nil {
		return err
	}
	if len(recs) > 0 {
		if err := p.o.Store.MarkDelivered(ctx, p.id, recs); err != nil {
			return err
		}
		p.log.Info("recorded deliveries completed before an interruption", "messages", len(recs))
	}
	if len(drop) > 0 {
		if err := p.o.Store.DropIntents(ctx, p.id, drop); err != nil {
			return err
		}
	}
	return nil
}
