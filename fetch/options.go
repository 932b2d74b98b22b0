package fetch

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"popsync/configs"
	"popsync/deliver"
	"popsync/fetch/pop3"
	"popsync/internal/credential"
	"popsync/state"
)

// Defaults for Options fields left zero.
const (
	DefaultBatchSize  = 512
	defaultBatchBytes = 64 << 20
	defaultPruneGrace = 7 * 24 * time.Hour
)

// Options configure polls. Store is required; the rest has defaults.
type Options struct {
	Store  state.Store
	Logger *slog.Logger
	// Dial connects and greets; nil means pop3.Dial. Tests inject their own.
	Dial func(ctx context.Context, addr string, opts pop3.Options) (*pop3.Client, error)
	// OpenTarget builds one delivery target; nil means OpenTarget.
	OpenTarget func(a *configs.Account, d configs.Deliver) (deliver.Target, error)
	// Credential returns what an account logs in with; nil means its
	// password source (configs.Account.Password). An OAuth2 account's is
	// credential.FromTokens of its token source.
	Credential func(a *configs.Account) (credential.Credential, error)
	// TargetCredential returns what an IMAP target with
	// [account.deliver.oauth2] logs in with (Tokens.TargetCredential);
	// nil fails such a target when it is opened.
	TargetCredential func(a *configs.Account, t *configs.IMAPTarget) (credential.Credential, error)
	Now              func() time.Time
	Hostname         string // for the Received: header; default os.Hostname
	DryRun           bool   // report what would be fetched and deleted; change nothing
	Trace            bool   // log the POP3 dialogue at pop3.LevelTrace
	TraceAuth        bool   // include credentials in the trace (never by default)
	BatchSize        int    // at most this many messages per durability batch
	BatchBytes       int64  // a batch ends once it holds this many bytes
	PruneGrace       time.Duration
	// Progress, when set, is called after each delivered message.
	Progress func(Progress)
	// QuietFailures logs a failed poll at Warn instead of Error, for a
	// caller (the daemon's scheduler) that reports failure streaks itself.
	QuietFailures bool
	// OnMessage, when set, is called once for each message a poll
	// delivered, deferred, rejected, skipped or could not retrieve. It is
	// called from the poll's goroutines, for several accounts at once
	// under PollAll, so it must be safe for concurrent use.
	OnMessage func(MessageEvent)
	// QuarantineDir holds the default quarantine Maildirs, one per account
	// (QuarantineDir/NAME), for messages a target refuses for good and
	// whose deliver entry names no quarantine of its own.
	QuarantineDir string
	// Configured, when set, returns the config's accounts, for
	// CheckIdentity: an identity one of them has is never taken for
	// another account's old one. It is called for every poll, so that a
	// daemon's reload counts.
	Configured func() []*configs.Account
}

// Progress is a snapshot of a running poll, for a progress display.
type Progress struct {
	Account    string
	Done, Todo int
	Bytes      int64
}

// Result is the outcome of one poll of one account.
type Result struct {
	Account   string
	OnServer  int // messages on the server
	New       int // of those, not in the seen-set
	Delivered int
	Deleted   int
	Skipped   int // newly found over max_size, left on the server
	Rejected  int // refused for good by a target: quarantined or kept
	Failed    int // messages the server refused to hand out this time
	// Waiting counts messages whose interrupted delivery a target may
	// still be committing (an IMAP APPEND a killed run sent): left
	// alone, neither fetched nor deleted, until a later poll finds them
	// or their window (WaitUntil) has passed. A normal outcome, not a
	// failure.
	Waiting   int
	WaitUntil time.Time // the latest end of those windows; zero if none
	Bytes     int64
	Duration  time.Duration
	Err       error
	// Plan is what a dry run would do, per message: new ones in server
	// order, then those over max_size, then those it would delete.
	Plan []PlannedMessage
}

func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// credential returns what the account logs in with.
func (o *Options) credential(a *configs.Account) (credential.Credential, error) {
	if o.Credential == nil {
		return a.Password, nil
	}
	return o.Credential(a)
}

// secret returns the secret the account logs in with now, and its
// Credential, to invalidate it if the server refuses it.
func (o *Options) secret(ctx context.Context, a *configs.Account) (string, credential.Credential, error) {
	cred, err := o.credential(a)
	if err == nil {
		var s string
		if s, err = cred.Secret(ctx); err == nil {
			return s, cred, nil
		}
	}
	return "", nil, fmt.Errorf("account %q: %w", a.Name, err)
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}
