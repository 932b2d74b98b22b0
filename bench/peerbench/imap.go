package main

import (
	"context"
	"fmt"
	"path/filepath"
)

// imapUser is the Dovecot user whose INBOX the imap scenario appends to.
const imapUser = "imapdst"

// imapScenario fetches o.imapN messages of the main mailbox, in keep
// mode, once into popsync's Maildir target and once over IMAP into
// imapUser's INBOX on the same Dovecot: the IMAP target's rate and
// memory against the Maildir target's, on the same mailbox. The IMAP
// copy is checked in the server's own Maildir of that user.
func (r *runner) imapScenario(ctx context.Context) error {
	if r.srv.IMAPAddr == "" {
		return fmt.Errorf("dovecot serves no IMAP (install dovecot-imapd)")
	}
	g, err := r.gold(goldSpec{Mix: mixReal, N: r.o.imapN, Seed: r.o.seed})
	if err != nil {
		return err
	}
	logf("mailbox: %d messages, %.1f MB on the wire", len(g.msgs), float64(g.wire)/1e6)
	dest := r.srv.maildir(imapUser)
	for rep := 1; rep <= r.o.repeats; rep++ {
		for _, t := range r.toolsFor("imap") {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := r.populate(ctx, "main", g); err != nil {
				return err
			}
			j, err := r.clientJob(t, []string{"main"}, true)
			if err != nil {
				return err
			}
			if t.name == "popsync-imap" {
				// An empty destination mailbox for every run; no
				// session is open on it between runs.
				if err := r.discard(dest); err != nil {
					return err
				}
				for _, sub := range []string{"new", "cur", "tmp"} {
					if err := r.server.mkdirAll(filepath.Join(dest, sub), 0o700); err != nil {
						return err
					}
				}
				j.imapAddr, j.imapUser = r.srv.IMAPAddr, imapUser
			}
			x, err := r.execute(ctx, t, j, fmt.Sprintf("imap-%s-%d", t.name, rep))
			if err != nil {
				return err
			}
			x.scenario, x.phase, x.rep, x.msgs, x.wire = "imap", "fetch", rep, len(g.msgs), g.wire
			if j.imapAddr != "" {
				j.boxes[0].maildir = dest
			}
			if err := r.check(ctx, &x, t, j, []*golden{g}); err != nil {
				return err
			}
			r.record(x)
		}
	}
	return nil
}
