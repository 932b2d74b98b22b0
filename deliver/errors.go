package deliver

import (
	"errors"
	"fmt"
	"strings"
)

// Errors of the confirming targets (SMTP, LMTP, MDA). They arrive wrapped
// in a *DeliveryError; test them with errors.Is.
var (
	// ErrTooLarge: the message is larger than the server's SIZE limit
	// (RFC 1870), so it was refused before or while sending.
	ErrTooLarge = errors.New("message larger than the server accepts")
	// ErrInsecureAuth: smtp_user is set but the connection is neither TLS
	// nor to a loopback or Unix socket address, so the password is not
	// sent.
	ErrInsecureAuth = errors.New("refusing to authenticate over an unencrypted connection to a non-loopback address")
	// ErrNoAuth: smtp_user is set but the server does not offer AUTH PLAIN.
	ErrNoAuth = errors.New("server does not offer AUTH PLAIN")
	// ErrPartial: an LMTP server accepted the message for some recipients
	// and not for others (see DeliveryError.Rcpts).
	ErrPartial = errors.New("delivered to some recipients only")
	// ErrPlaintextInjection: the server sent bytes after its 220 reply to
	// STARTTLS and before the TLS handshake, or its 220 arrived before
	// the command was sent; such bytes would be plaintext smuggled into
	// the session the handshake is meant to protect (RFC 3207 §4).
	ErrPlaintextInjection = errors.New("server sent plaintext around its STARTTLS reply")
	// ErrIncomplete: the program exited 0 without reading the whole
	// message.
	ErrIncomplete = errors.New("program exited before reading the whole message")
)

// Stages of a delivery, as reported in DeliveryError.Stage. A failure at
// one of the session stages (connect, hello, auth, start) says nothing
// about the message: the target cannot take any message now, and the
// target fails fast for the rest of its life (see DeliveryError.TargetDown).
const (
	StageConnect = "connect" // dialing, implicit TLS, the greeting
	StageHello   = "hello"   // EHLO/LHLO, STARTTLS
	StageAuth    = "auth"    // AUTH PLAIN
	StageSize    = "size"    // refused by popsync against the server's SIZE
	StageMail    = "mail"    // MAIL FROM
	StageRcpt    = "rcpt"    // RCPT TO
	StageData    = "data"    // the DATA command and the message bytes
	StageReply   = "reply"   // the reply (per recipient for LMTP) to the final dot
	StageStart   = "start"   // MDA: finding and starting the program
	StageExit    = "exit"    // MDA: writing to the program and its exit status
)

// DeliveryError is a failed delivery to a confirming target, classified by
// what the fetcher should do with the message:
//
//   - Temporary: leave it on the server, do not record it, try again at
//     the next poll (SMTP/LMTP 4xx, timeouts, refused or dropped
//     connections, a session that could not be set up, MDA exit 75 or a
//     killed MDA).
//   - Permanent (!Temporary): the target judged this message and refused
//     it (SMTP/LMTP 5xx at MAIL, RCPT, DATA or after the final dot; a
//     message over the server's SIZE; any other MDA exit status). Retrying
//     will not help; the fetcher's on_reject policy applies.
//
// An error from a target that is not a *DeliveryError counts as temporary:
// see IsTemporary.
type DeliveryError struct {
	Target    string // the target's String()
	Stage     string // one of the Stage constants
	Temporary bool
	// Code is the SMTP/LMTP reply code (for LMTP after the final dot: the
	// code that decided, see Rcpts), or the MDA's exit status; 0 when there
	// was no reply (a network error, a timeout) or the program was killed.
	Code int
	// Text is the server's reply text (with its enhanced status code, RFC
	// 3463) or the last 4 KiB of the MDA's standard error.
	Text string
	// Rcpts holds one reply per recipient when recipients were answered
	// one by one and not all accepted: RCPT TO replies at StageRcpt, LMTP's
	// replies after the final dot at StageReply (RFC 2033 §4.2). At
	// StageReply a Code of 250 means that recipient has the message; at
	// StageRcpt nobody has it (DATA was not sent).
	Rcpts []RcptReply
	Err   error // the underlying error, if any
}

// RcptReply is the server's answer for one recipient.
type RcptReply struct {
	Rcpt string
	Code int    // 250 for accepted; 0 when no reply came
	Text string // reply text with its enhanced status code
}

func (e *DeliveryError) Error() string {
	var b strings.Builder
	b.WriteString(e.Target)
	if e.Stage != "" {
		b.WriteString(": ")
		b.WriteString(stageNames[e.Stage])
	}
	switch {
	case len(e.Rcpts) > 0:
		b.WriteString(":")
		for i, r := range e.Rcpts {
			if i > 0 {
				b.WriteString(";")
			}
			fmt.Fprintf(&b, " <%s> ", r.Rcpt)
			if r.Code == 0 {
				b.WriteString("no reply")
			} else {
				fmt.Fprintf(&b, "%d %s", r.Code, oneLine(r.Text))
			}
		}
		if e.Err != nil {
			fmt.Fprintf(&b, "; %v", e.Err)
		}
	case e.Code != 0 && (e.Stage == StageExit || e.Stage == StageStart):
		fmt.Fprintf(&b, ": exit status %d", e.Code)
		if e.Text != "" {
			fmt.Fprintf(&b, ": %s", oneLine(e.Text))
		}
	case e.Code != 0:
		fmt.Fprintf(&b, ": %d %s", e.Code, oneLine(e.Text))
	default:
		if e.Err != nil {
			fmt.Fprintf(&b, ": %v", e.Err)
		}
		if e.Text != "" {
			fmt.Fprintf(&b, ": %s", oneLine(e.Text))
		}
	}
	if e.Temporary {
		b.WriteString(" (temporary)")
	} else {
		b.WriteString(" (permanent)")
	}
	return b.String()
}

func (e *DeliveryError) Unwrap() error { return e.Err }

// TargetDown reports whether the failure was the target's rather than the
// message's: the session could not be set up or the program could not be
// started. Such errors are always temporary, and the target returns the
// same error from every later Begin until it is closed, so that a poll
// does not dial a dead server once per message.
func (e *DeliveryError) TargetDown() bool {
	switch e.Stage {
	case StageConnect, StageHello, StageAuth, StageStart:
		return true
	}
	return false
}

// Delivered lists the recipients that accepted the message although the
// delivery as a whole failed (an LMTP server that answered 250 for some
// recipients only). A retry sends the message to every recipient again,
// so these get it twice: the one known at-least-once case besides a crash.
func (e *DeliveryError) Delivered() []string {
	if e.Stage != StageReply {
		return nil
	}
	var out []string
	for _, r := range e.Rcpts {
		if r.Code == 250 {
			out = append(out, r.Rcpt)
		}
	}
	return out
}

var stageNames = map[string]string{
	StageConnect: "connecting",
	StageHello:   "greeting",
	StageAuth:    "authenticating",
	StageSize:    "checking size",
	StageMail:    "MAIL FROM",
	StageRcpt:    "RCPT TO",
	StageData:    "DATA",
	StageReply:   "end of data",
	StageStart:   "starting",
	StageExit:    "running",
	StageAppend:  "APPEND",
	StageLookup:  "looking for delivered messages",
}

// IsPermanent reports whether err (or an error it wraps) is a
// *DeliveryError that is not temporary: the target refused this message
// and will refuse it again.
func IsPermanent(err error) bool {
	var de *DeliveryError
	return errors.As(err, &de) && !de.Temporary
}

// IsTemporary reports whether err is a failure worth retrying: any non-nil
// error that is not permanent. An error that is not a *DeliveryError (a
// Maildir disk error, a canceled context, ErrState) is temporary, so that
// only a target's explicit verdict can make the fetcher give up on a
// message.
func IsTemporary(err error) bool {
	return err != nil && !IsPermanent(err)
}

// oneLine joins a multi-line reply into one line for an error message.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\r", "")), " ")
}
