// Package deliver hands fetched messages to their local destinations:
// delivery targets: a Maildir, SMTP and LMTP reinjection into the local
// mail system, an MDA pipe, and a mailbox on an IMAP server (APPEND). It
// knows nothing of POP3.
//
// Delivery is two-phase and batch-oriented so that durability is paid once
// per batch rather than once per message. For each batch the caller:
//
//  1. streams every message into its own Delivery: Begin, Write..., Close
//     (or Abort);
//  2. calls Prepare with the batch: the staged content becomes durable, and
//     from then on each Delivery's Token may be recorded as an intent;
//  3. calls Publish with the batch: the messages move into place, durably.
//     A *PublishError says which ones made it if Publish stopped midway;
//  4. after a crash, asks Delivered which recorded tokens were published and
//     calls Cleanup for the rest.
//
// The package knows nothing about POP3, UIDLs beyond the Meta it is given,
// the seen-set, or which messages a server may delete: that policy belongs
// to the fetcher. It writes exactly the bytes it is given, apart from the
// line-ending conversion a target documents and the IMAP target's one
// field on top, which names the delivery: Maildir and MDA get LF; SMTP
// and LMTP get CRLF, every bare CR and every bare LF turned into CRLF
// before dot-stuffing, so that no byte sequence in a message can end DATA
// early on any server's reading of line ends. Normalising was chosen over
// refusing such a message: a POP3 server may well hold one, and CRLF is
// what MTAs accept.
//
// A server's plaintext that arrives after its reply to STARTTLS and before
// the TLS handshake is refused, never silently dropped (see SMTP).
package deliver

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// Errors returned by targets and deliveries; they are wrapped with the
// target and the file involved, so test them with errors.Is.
var (
	// ErrClosed is returned by Begin after the target's Close.
	ErrClosed = errors.New("target closed")
	// ErrState is returned when a delivery is used out of order: written
	// or closed after Close, prepared before Close, published before
	// Prepare, used after Abort, or listed twice in one batch.
	ErrState = errors.New("delivery used out of order")
	// ErrForeign is returned when Prepare or Publish is given a delivery
	// that another target began.
	ErrForeign = errors.New("delivery belongs to another target")
	// ErrBadToken is returned by Delivered and Cleanup for a token that
	// this target could never have issued.
	ErrBadToken = errors.New("invalid token")
)

// Meta describes the message a delivery is for. Targets may use it in
// logs and envelopes; it never changes the message content.
type Meta struct {
	Account string // the configured account name
	UIDL    string // the server's unique id for the message
	Size    int64  // the server's LIST size: a hint only, it may be wrong
}

// Target is one delivery destination. A target is safe for concurrent use
// by several goroutines, each with its own deliveries; a Delivery itself is
// used by one goroutine at a time.
//
// Two kinds of target fit this interface:
//
//   - Staging targets (Maildir) write into a private place during the
//     message, make it durable in Prepare and visible in Publish. Their
//     Token names where the message will be, so a caller that records the
//     token before Publish can learn after a crash, through Delivered,
//     whether the message arrived.
//   - Confirming targets (SMTP, LMTP, an MDA) hand the message over while it
//     streams and learn the outcome in Delivery.Close (the reply to the
//     final dot, the program's exit status): a nil Close means delivered.
//     Their Prepare and Publish do nothing, their Token is "" and Delivered
//     reports nothing. Across a crash between Close and the caller's commit
//     such a target delivers at least once, not exactly once.
type Target interface {
	// String names the target for logs, e.g. "maildir /home/me/Maildir".
	String() string
	// Begin starts delivering one message. When the target bounds the
	// deliveries it carries at once (SMTP and LMTP: SMTPOptions.Connections)
	// Begin may block until another delivery of the same target ends
	// (Close or Abort) or ctx ends: a goroutine that holds that many open
	// deliveries of a target must end one before it begins another.
	Begin(ctx context.Context, m Meta) (Delivery, error)
	// Prepare makes the staged content of the closed deliveries ds
	// durable. An error means none of ds may be published; the caller
	// aborts them (or retries Prepare if the error was ctx's).
	Prepare(ctx context.Context, ds []Delivery) error
	// Publish moves the prepared deliveries ds into place and makes that
	// durable. When it fails after publishing some of them, the error is a
	// *PublishError listing those; every other delivery of ds is not
	// published and can be aborted.
	Publish(ctx context.Context, ds []Delivery) error
	// Delivered reports, for each token, whether its message was
	// published, by this process or an earlier one.
	Delivered(ctx context.Context, tokens []string) (map[string]bool, error)
	// Cleanup removes what unpublished deliveries with these tokens left
	// behind (after a crash). Tokens that left nothing are fine.
	Cleanup(ctx context.Context, tokens []string) error
	// Close aborts every delivery that was begun and not published, and
	// releases the target. It must not run concurrently with the use of
	// the target's deliveries.
	Close() error
}

// Delivery is one message on its way into a target. Write streams the
// message (exactly the bytes to deliver, CRLF line endings, already
// dot-unstuffed); Close ends it.
type Delivery interface {
	io.Writer
	// Close ends the message and flushes buffers. An error means this
	// message is not delivered (and a staging target has discarded it).
	Close() error
	// Abort discards the message. It may be called in any state and more
	// than once; on a delivery that was already published it does nothing,
	// since published mail is never taken back.
	Abort() error
	// Token is where the message will be once published (for Maildir, the
	// unique file name), fixed when the delivery begins; "" if the target
	// cannot tell.
	Token() string
	// Size is the number of bytes written to the target so far, after any
	// line-ending conversion.
	Size() int64
}

// Confirming is the part every confirming target (SMTP, LMTP, an MDA, an
// IMAP APPEND) shares; such a target embeds it. A message is delivered
// once its Delivery's Close returned nil, so Prepare and Publish have
// nothing to do, no token is issued, Delivered knows none and Cleanup has
// nothing to remove. A confirming Delivery's Token is "".
type Confirming struct{}

// Prepare does nothing: a delivered message was confirmed in Close.
func (Confirming) Prepare(ctx context.Context, ds []Delivery) error { return nil }

// Publish does nothing: a delivered message was confirmed in Close.
func (Confirming) Publish(ctx context.Context, ds []Delivery) error { return nil }

// Delivered knows no tokens: it reports nothing.
func (Confirming) Delivered(ctx context.Context, tokens []string) (map[string]bool, error) {
	return map[string]bool{}, nil
}

// Cleanup has nothing to clean up.
func (Confirming) Cleanup(ctx context.Context, tokens []string) error { return nil }

// Confirms marks the target as confirming; see IsConfirming.
func (Confirming) Confirms() bool { return true }

// IsConfirming reports whether t confirms each message in Delivery.Close
// (it embeds Confirming) rather than staging it for Publish.
func IsConfirming(t Target) bool {
	c, ok := t.(interface{ Confirms() bool })
	return ok && c.Confirms()
}

// PublishError is returned by Publish when it stopped partway: the
// deliveries at indexes Published (into the ds given to Publish) are
// published and durable; the others are not.
type PublishError struct {
	Published []int // indexes into ds, ascending
	Err       error
}

func (e *PublishError) Error() string {
	return fmt.Sprintf("published %d of the batch, then: %v", len(e.Published), e.Err)
}

func (e *PublishError) Unwrap() error { return e.Err }
