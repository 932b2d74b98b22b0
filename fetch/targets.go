package fetch

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"popsync/configs"
	"popsync/deliver"
	"popsync/internal/credential"
	"popsync/state"
)

// openers builds the delivery target of each kind of deliver entry. A new
// kind is its TargetConfig in configs, its Target in deliver and one row
// here.
var openers = map[string]func(a *configs.Account, d configs.Deliver, tc targetCredential) (deliver.Target, error){
	configs.KindMaildir: opener(func(a *configs.Account, t *configs.MaildirTarget, _ targetCredential) (deliver.Target, error) {
		return deliver.NewMaildir(t.Path, deliver.MaildirOptions{})
	}),
	configs.KindSMTP: opener(func(a *configs.Account, t *configs.SMTPTarget, _ targetCredential) (deliver.Target, error) {
		return deliver.NewSMTP(deliver.SMTPOptions{Addr: t.Addr, TLS: t.TLS, Helo: t.Helo, Rcpt: t.Rcpt,
			From: t.From, User: t.User, Password: t.Password, Connections: t.Connections})
	}),
	configs.KindLMTP: opener(func(a *configs.Account, t *configs.LMTPTarget, _ targetCredential) (deliver.Target, error) {
		// RFC 2033: LMTP is for local delivery; no STARTTLS here.
		return deliver.NewLMTP(deliver.SMTPOptions{Addr: t.Addr, TLS: deliver.TLSNone, Helo: t.Helo,
			Rcpt: t.Rcpt, From: t.From, Connections: t.Connections})
	}),
	configs.KindMDA: opener(func(a *configs.Account, t *configs.MDATarget, _ targetCredential) (deliver.Target, error) {
		return deliver.NewMDA(deliver.MDAOptions{Command: t.Command, From: t.From, Env: a.ChildEnv.Environ()})
	}),
	configs.KindIMAP: opener(func(a *configs.Account, t *configs.IMAPTarget, tc targetCredential) (deliver.Target, error) {
		if t.OAuth2 == nil {
			return openIMAP(a, t, t.Password)
		}
		// [account.deliver.oauth2]: the access token `popsync login`
		// stored under the target's key, refreshed as it expires.
		if tc == nil {
			return nil, fmt.Errorf("%s uses [account.deliver.oauth2], but no token store is open (TargetCredential is nil)", t)
		}
		cred, err := tc(a, t)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t, err)
		}
		return openIMAP(a, t, cred)
	}),
}

// opener adapts the constructor of one kind to the settings type of its
// entries.
func opener[T configs.TargetConfig](open func(*configs.Account, T, targetCredential) (deliver.Target, error)) func(*configs.Account, configs.Deliver, targetCredential) (deliver.Target, error) {
	return func(a *configs.Account, d configs.Deliver, tc targetCredential) (deliver.Target, error) {
		t, ok := d.Target.(T)
		if !ok {
			return nil, fmt.Errorf("%s entry with settings %T", d.Kind(), d.Target)
		}
		return open(a, t, tc)
	}
}

// targetCredential is Options.TargetCredential: what an IMAP target with
// [account.deliver.oauth2] logs in with.
type targetCredential = func(a *configs.Account, t *configs.IMAPTarget) (credential.Credential, error)

// OpenTarget builds the delivery target a [[account.deliver]] entry names.
// An IMAP target with [account.deliver.oauth2] needs a token store: open
// it with OpenTargetWith.
func OpenTarget(a *configs.Account, d configs.Deliver) (deliver.Target, error) {
	return OpenTargetWith(a, d, nil)
}

// OpenTargetWith is OpenTarget with tc for the access token of an IMAP
// target with [account.deliver.oauth2] (Tokens.TargetCredential).
func OpenTargetWith(a *configs.Account, d configs.Deliver, tc func(*configs.Account, *configs.IMAPTarget) (credential.Credential, error)) (deliver.Target, error) {
	open, ok := openers[d.Kind()]
	if !ok {
		return nil, fmt.Errorf("account %q: deliver entry (line %d): no supported target", a.Name, d.Line)
	}
	t, err := open(a, d, tc)
	if err != nil {
		return nil, fmt.Errorf("account %q: deliver entry (line %d): %w", a.Name, d.Line, err)
	}
	return t, nil
}

// target is one open delivery target of the poll.
type target struct {
	deliver.Target
	id       string // stable ID in intents: configs.Deliver.ID, or state.QuarantineTarget
	onReject string // on_reject of its entry; "" for a staging target
}

func (p *pollRun) openTargets() error {
	open := p.o.OpenTarget
	if open == nil {
		open = func(a *configs.Account, d configs.Deliver) (deliver.Target, error) {
			return OpenTargetWith(a, d, p.o.TargetCredential)
		}
	}
	for _, d := range p.a.Deliver {
		t, err := open(p.a, d)
		if err != nil {
			p.closeTargets()
			return asTargetError(fmt.Errorf("opening delivery target: %w", err))
		}
		if lt, ok := t.(loggingTarget); ok {
			lt.SetLogger(p.log)
		}
		p.targets = append(p.targets, target{Target: t, id: d.ID(), onReject: d.OnReject})
	}
	if len(p.targets) == 0 {
		return errors.New("no delivery target configured")
	}
	return nil
}

// removeStale clears what a killed earlier run left half-written. A
// failure here costs disk space only, so it is logged, not fatal.
func (p *pollRun) removeStale(ctx context.Context) {
	for _, t := range p.targets {
		sr, ok := t.Target.(deliver.StaleRemover)
		if !ok {
			continue
		}
		n, err := sr.RemoveStale(ctx)
		if err != nil {
			p.log.Warn("removing files left by an interrupted run", "target", t.String(), "error", err.Error())
		}
		if n > 0 {
			p.log.Info("removed files left by an interrupted run", "target", t.String(), "files", n)
		}
	}
}

func (p *pollRun) closeTargets() {
	all := p.targets
	if p.qTarget != nil {
		all = append(all, *p.qTarget)
	}
	for _, t := range all {
		if err := t.Close(); err != nil {
			p.log.Warn("closing delivery target", "target", t.String(), "error", err.Error())
		}
	}
	p.targets, p.qTarget = nil, nil
}

// quarantine opens the account's quarantine Maildir: the first deliver
// entry's quarantine key, else Options.QuarantineDir/NAME. Its intents
// name it state.QuarantineTarget wherever it is.
func (p *pollRun) quarantine() (target, error) {
	if p.qTarget != nil {
		return *p.qTarget, nil
	}
	path := ""
	for _, d := range p.a.Deliver {
		if d.Quarantine != "" {
			path = d.Quarantine
			break
		}
	}
	if path == "" {
		if p.o.QuarantineDir == "" {
			return target{}, errors.New("no quarantine Maildir: set quarantine in the deliver entry")
		}
		path = filepath.Join(p.o.QuarantineDir, p.a.Name)
	}
	t, err := deliver.NewMaildir(path, deliver.MaildirOptions{})
	if err != nil {
		return target{}, fmt.Errorf("opening the quarantine: %w", err)
	}
	p.qTarget = &target{Target: t, id: state.QuarantineTarget}
	return *p.qTarget, nil
}

// deletesRejected reports whether a deliver entry asks for rejected
// messages to be deleted from the server once quarantined.
func (p *pollRun) deletesRejected() bool {
	for _, d := range p.a.Deliver {
		if d.OnReject == configs.OnRejectDelete {
			return true
		}
	}
	return false
}

// targetByID returns the target an intent's Target names, or false when
// the config no longer has it. An ID from before target IDs existed
// (state.LegacyTarget) names the target at that index of the config.
func (p *pollRun) targetByID(id string) (target, bool, error) {
	if id == state.QuarantineTarget {
		t, err := p.quarantine()
		return t, err == nil, err
	}
	for _, t := range p.targets {
		if t.id == id {
			return t, true, nil
		}
	}
	if n, ok := strings.CutPrefix(id, "index:"); ok && id == state.LegacyTarget(atoi(n)) {
		if i := atoi(n); i < len(p.targets) {
			return p.targets[i], true, nil
		}
	}
	return target{}, false, nil
}

// atoi is strconv.Atoi with -1 for anything but a number.
func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}
