package fetch

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"

	"popsync/configs"
	"popsync/fetch/pop3"
	"popsync/internal/credential"
)

// CheckOptions configure Check.
type CheckOptions struct {
	Logger    *slog.Logger
	Trace     bool
	TraceAuth bool
	Dial      func(ctx context.Context, addr string, opts pop3.Options) (*pop3.Client, error)
	// Credential is as in Options.
	Credential func(a *configs.Account) (credential.Credential, error)
	// TargetCredential is as in Options.
	TargetCredential func(a *configs.Account, t *configs.IMAPTarget) (credential.Credential, error)
}

// CheckResult is what `popsync check --connect` reports of one account.
type CheckResult struct {
	Addr      string
	TLSState  string // "implicit TLS", "STARTTLS", "plaintext"
	Mechanism string
	Caps      []string
	Count     int
	Size      int64
	Targets   []TargetCheck
	Err       error
	// TLS is the session's TLS connection state; nil for plaintext.
	TLS *tls.ConnectionState
}

// TargetCheck is the outcome of trying one delivery target without
// delivering anything: a Maildir opened (created if missing), an MTA
// greeted, an MDA found executable.
type TargetCheck struct {
	Target string
	Err    error
}

// checker is implemented by targets that can test their connection.
type checker interface {
	Check(ctx context.Context) error
}

// Check logs in to a and reports what the server offers and holds. It
// changes nothing: no RETR, no DELE, and the seen-set is not opened.
func Check(ctx context.Context, a *configs.Account, o CheckOptions) (r CheckResult) {
	r.Addr = a.Addr()
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &pollRun{o: &Options{Dial: o.Dial, Trace: o.Trace, TraceAuth: o.TraceAuth, Credential: o.Credential},
		a: a, log: log.With("account", a.Name)}
	secret, _, err := p.o.secret(ctx, a)
	if err != nil {
		r.Err = err
		return r
	}
	c, err := p.dial(ctx)
	if err != nil {
		r.Err = fmt.Errorf("connecting to %s: %w", a.Addr(), err)
		return r
	}
	defer c.Close()
	switch a.TLS {
	case "starttls":
		r.TLSState = "STARTTLS"
	case "none":
		r.TLSState = "plaintext"
	default:
		r.TLSState = "implicit TLS"
	}
	if cs, ok := c.TLSState(); ok {
		r.TLS = &cs
	}
	r.Caps = c.Caps().Names()
	r.Mechanism = a.Auth
	if a.Auth == configs.AuthAuto {
		if m, err := c.AutoMechanism(); err == nil {
			r.Mechanism = "auto: " + m
		}
	}
	if err := c.Auth(ctx, a.Auth, a.User, secret); err != nil {
		r.Err = fmt.Errorf("logging in as %s: %w", a.User, err)
		return r
	}
	r.Count, r.Size, err = c.Stat(ctx)
	if err != nil {
		r.Err = fmt.Errorf("STAT: %w", err)
		return r
	}
	if err := c.Quit(ctx); err != nil {
		r.Err = fmt.Errorf("QUIT: %w", err)
		return r
	}
	for _, d := range a.Deliver {
		if _, ok := d.Target.(*configs.MaildirTarget); ok {
			// Opening a Maildir creates it, and check creates nothing;
			// whether it can be created is a local check of the caller.
			continue
		}
		t, err := OpenTargetWith(a, d, o.TargetCredential)
		if err != nil {
			r.Targets = append(r.Targets, TargetCheck{Target: d.Kind(), Err: err})
			r.Err = err
			continue
		}
		tc := TargetCheck{Target: t.String()}
		if ck, ok := t.(checker); ok {
			tc.Err = ck.Check(ctx)
		}
		t.Close()
		if tc.Err != nil && r.Err == nil {
			r.Err = fmt.Errorf("%s: %w", tc.Target, tc.Err)
		}
		r.Targets = append(r.Targets, tc)
	}
	return r
}
