package fetch

import (
	"context"
	"fmt"

	"popsync/configs"
	"popsync/fetch/pop3"
	"popsync/state"
)

// handleRejected applies on_reject to the messages a target refused for
// good: never bounced, never silently dropped. "keep" leaves a message on
// the server and records it so it is reported once; "quarantine" (the
// default) fetches it again into the quarantine Maildir; "delete" does
// that and then deletes it from the server. It returns what to DELE.
func (p *pollRun) handleRejected(ctx context.Context, c *pop3.Client) ([]serverMsg, error) {
	if len(p.rejected) == 0 {
		return nil, nil
	}
	p.res.Rejected = len(p.rejected)
	now := p.o.now()
	var kept []state.Record
	var toQ []serverMsg
	notes := make(map[string]string)
	deleteAfter := make(map[string]bool)
	for _, r := range p.rejected {
		p.log.Error("message rejected by its target; not bounced", "uidl", r.m.key,
			"on_reject", r.onReject, "error", r.reason)
		note := rejectedNote + r.reason
		if r.onReject == configs.OnRejectKeep {
			kept = append(kept, state.Record{UIDL: r.m.key, State: state.Skipped, Size: r.m.size, FirstSeen: now, Note: note})
			continue
		}
		toQ = append(toQ, r.m)
		notes[r.m.key] = note
		deleteAfter[r.m.key] = r.onReject == configs.OnRejectDelete
	}
	if len(kept) > 0 {
		if err := p.held(); err != nil {
			return nil, err
		}
		if err := p.o.Store.MarkSkipped(ctx, p.id, kept); err != nil {
			return nil, fmt.Errorf("recording rejected messages: %w", err)
		}
	}
	if len(toQ) == 0 {
		return nil, nil
	}
	q, err := p.quarantine()
	if err != nil {
		return nil, err
	}
	done, err := p.fetchAll(ctx, c, toQ, sink{targets: []target{q}, state: state.Quarantined, notes: notes})
	var dele []serverMsg
	for _, m := range done {
		p.log.Warn("rejected message quarantined", "uidl", m.key, "quarantine", q.String())
		if deleteAfter[m.key] {
			dele = append(dele, m)
		}
	}
	if err != nil {
		return dele, fmt.Errorf("quarantining rejected messages: %w", err)
	}
	return dele, nil
}

// rejectedNote starts the seen-set note of a message a target refused
// for good; such a record is not retried when max_size changes.
const rejectedNote = "rejected: "

// rejection is a message a target refused for good.
type rejection struct {
	m        serverMsg
	onReject string
	reason   string
}
