package fetch

import (
	"errors"
	"strings"
)

// ErrDelivery is matched by errors.Is for every poll error that a delivery
// target caused (a Maildir that cannot be created or written, a failed
// publish), as opposed to the server, the network or the state.
var ErrDelivery = errors.New("delivery failed")

// targetError marks an error as a delivery target's (ErrDelivery) without
// changing its text.
type targetError struct{ err error }

func (e *targetError) Error() string        { return e.err.Error() }
func (e *targetError) Unwrap() error        { return e.err }
func (e *targetError) Is(target error) bool { return target == ErrDelivery }

func asTargetError(err error) error {
	if err == nil {
		return nil
	}
	return &targetError{err}
}

// Message results reported through Options.OnMessage.
const (
	MessageDelivered = "delivered" // durable in every target and recorded
	MessageDeferred  = "deferred"  // a target failed for now; left on the server for the next poll
	MessageRejected  = "rejected"  // a target refused it for good; on_reject applies
	MessageSkipped   = "skipped"   // over max_size, left on the server
	MessageRefused   = "refused"   // the server answered -ERR to RETR
)

// MessageEvent is what happened to one message in a poll, for a verbose
// listing (`popsync fetch -v`).
type MessageEvent struct {
	Account string
	UIDL    string
	Size    int64
	Target  string // the targets, comma-separated; "" when none was involved
	Result  string // one of the Message* constants
	Err     error  // why, for every result but delivered
}

// onMessage reports ev to Options.OnMessage, if set.
func (p *pollRun) onMessage(m serverMsg, size int64, targets []target, result string, err error) {
	if p.o.OnMessage == nil {
		return
	}
	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = t.String()
	}
	p.o.OnMessage(MessageEvent{Account: p.a.Name, UIDL: m.key, Size: size,
		Target: strings.Join(names, ", "), Result: result, Err: err})
}
