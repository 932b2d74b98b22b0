package fetch

import (
	"context"
	"time"

	"popsync/configs"
	"popsync/fetch/pop3"
)

// PollReport is what the scheduler learns from one poll: its Result and
// what the server said about when to come back.
type PollReport struct {
	Result
	// LoginDelay is the minimum time between logins the server announced
	// with the LOGIN-DELAY capability (RFC 2449 §6.5); 0 if none.
	LoginDelay time.Duration
	// SessionAt is when the session was opened; zero if no connection was
	// made. LOGIN-DELAY counts from here.
	SessionAt time.Time
}

// PollReport runs Poll and also reports the session's LOGIN-DELAY
// capability, which the scheduler honours.
func (o *Options) PollReport(ctx context.Context, a *configs.Account) PollReport {
	var (
		c  *pop3.Client
		at time.Time
	)
	dial := o.Dial
	if dial == nil {
		dial = pop3.Dial
	}
	po := *o
	po.Dial = func(ctx context.Context, addr string, opts pop3.Options) (*pop3.Client, error) {
		start := po.now()
		cl, err := dial(ctx, addr, opts)
		if err == nil {
			c, at = cl, start
		}
		return cl, err
	}
	rep := PollReport{Result: po.Poll(ctx, a), SessionAt: at}
	if c != nil {
		// Poll has returned: the client is no longer in use, and Caps
		// holds what the server announced last (after login, RFC 2449 §5).
		if d, ok := c.Caps().LoginDelay(); ok {
			rep.LoginDelay = d
		}
	}
	return rep
}
