package pop3

import (
	"errors"
	"strconv"
	"strings"
)

// Sentinel errors. Test for them with errors.Is; they are wrapped with the
// context of the failing step.
var (
	// ErrPoisoned is wrapped, together with the original cause, by every
	// call made after an I/O error, a malformed reply, an exceeded limit or a
	// cancellation left the connection in an unknown state.
	ErrPoisoned = errors.New("pop3: connection unusable after an earlier error")
	// ErrClosed is returned by calls made after Quit or Close.
	ErrClosed = errors.New("pop3: client closed")
	// ErrTLSRequired means STLS was required but the server does not offer
	// it (or refused it). Nothing was sent in the clear beyond CAPA and STLS.
	ErrTLSRequired = errors.New("pop3: server does not offer STLS")
	// ErrPlaintextAuth means Auth refused to send credentials over a link
	// that is not encrypted and the caller did not choose SecurityNone.
	ErrPlaintextAuth = errors.New("pop3: refusing to send credentials over an unencrypted connection")
	// ErrNoMechanism means no authentication mechanism could be chosen: an
	// unknown name, APOP without a greeting timestamp, or "auto" with
	// nothing usable offered.
	ErrNoMechanism = errors.New("pop3: no usable authentication mechanism")
	// ErrLineTooLong means a status or listing line exceeded MaxLineLength.
	ErrLineTooLong = errors.New("pop3: line from server too long")
	// ErrBadUIDL means a unique-id violates RFC 1939 §7 (1 to 70 characters
	// in 0x21..0x7E).
	ErrBadUIDL = errors.New("pop3: invalid unique-id from server")
	// ErrTooManyEntries means a LIST or UIDL listing had more entries than
	// Options.MaxListEntries, or a CAPA listing more than maxCapaLines.
	ErrTooManyEntries = errors.New("pop3: too many entries in listing")
	// ErrProtocol means the server sent something that is not POP3.
	ErrProtocol = errors.New("pop3: malformed reply from server")
	// ErrBadArgument means a command argument was refused before anything
	// was sent: CR, LF or NUL in it, a message number below 1, a negative
	// line count.
	ErrBadArgument = errors.New("pop3: invalid command argument")
	// ErrBadOption means Options cannot be used (unknown Security value,
	// unreadable CA file, malformed fingerprint, no TLS server name).
	ErrBadOption = errors.New("pop3: invalid option")
	// ErrCertificate means the server certificate failed verification. The
	// error text names the problem and the certificate's SHA-256
	// fingerprint, which can be pinned with Options.Fingerprint.
	ErrCertificate = errors.New("pop3: server certificate not trusted")
	// ErrFingerprintMismatch means the leaf certificate does not match
	// Options.Fingerprint.
	ErrFingerprintMismatch = errors.New("pop3: server certificate does not match the pinned fingerprint")
	// ErrTooSlow means the server sent something, but less than
	// MinProgress octets in Options.Timeout of waiting: it trickles. The
	// error also wraps os.ErrDeadlineExceeded, and poisons the client.
	ErrTooSlow = errors.New("pop3: server sends too slowly")
	// ErrDrainLimit means the rest of a reply the caller gave up on was
	// longer than MaxDrain octets: instead of reading it, the client
	// closed the connection and is poisoned.
	ErrDrainLimit = errors.New("pop3: unread reply too long to discard")
	// ErrSizeMismatch means a message retrieved with RetrEachListed was
	// far shorter than LIST announced (see MinOctets), or its "+OK n
	// octets" named another size than LIST. Either is a doubt about the
	// server's framing: the client is poisoned, so QUIT is never sent and
	// the server deletes nothing.
	ErrSizeMismatch = errors.New("pop3: message size disagrees with LIST")
	// ErrNotTLS means the TLS handshake of implicit TLS got a reply that
	// is not TLS: most often a plain POP3 greeting, from a port that wants
	// STLS (RFC 2595 §4) or no TLS at all. The error text quotes the start
	// of what the server sent.
	ErrNotTLS = errors.New("pop3: server did not answer TLS")
	// ErrUnexpectedTLS means the server's first bytes on a connection
	// opened without TLS are a TLS record, not a greeting: the port expects
	// implicit TLS (RFC 8314 §3.3, port 995).
	ErrUnexpectedTLS = errors.New("pop3: server answered with TLS on a connection without TLS")
	// ErrBodyClosed is returned when a message body is read after the
	// client moved on to another command and drained it.
	ErrBodyClosed = errors.New("pop3: message body no longer readable")
)

// Error is a -ERR reply from the server. It does not poison the client.
type Error struct {
	// Command is the command keyword in upper case ("RETR", "PASS",
	// "AUTH", "APOP", ...), or "greeting" for a -ERR greeting. It never
	// includes arguments.
	Command string
	// Arg holds the numeric arguments of the command, if any ("5",
	// "5 0"). Text arguments (user names, secrets, mechanisms) are never
	// included.
	Arg string
	// Code is the extended response code (RFC 2449 §8, RFC 3206) without
	// brackets, in upper case: "IN-USE", "LOGIN-DELAY", "SYS/TEMP",
	// "SYS/PERM", "AUTH", or "" when the server sent none.
	Code string
	// Text is the rest of the server's reply, with control characters
	// replaced by '?'.
	Text string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("pop3: ")
	b.WriteString(e.Command)
	if e.Arg != "" {
		b.WriteByte(' ')
		b.WriteString(e.Arg)
	}
	b.WriteString(": server replied -ERR")
	if e.Code != "" {
		b.WriteString(" [")
		b.WriteString(e.Code)
		b.WriteByte(']')
	}
	if e.Text != "" {
		b.WriteByte(' ')
		b.WriteString(e.Text)
	}
	return b.String()
}

// Temporary reports whether the server said the failure is transient:
// IN-USE (RFC 2449 §8.1.1, the maildrop is locked), LOGIN-DELAY (§8.1.2,
// logged in too recently) or SYS/TEMP (RFC 3206 §4). A more specific code
// below one of them ("SYS/TEMP/x") counts too.
func (e *Error) Temporary() bool {
	for _, c := range [...]string{"IN-USE", "LOGIN-DELAY", "SYS/TEMP"} {
		if codeIs(e.Code, c) {
			return true
		}
	}
	return false
}

// codeIs reports whether code is want or a sub-level of it (RFC 2449 §8:
// response codes are hierarchical, separated by "/").
func codeIs(code, want string) bool {
	return code == want || (strings.HasPrefix(code, want) && code[len(want)] == '/')
}

// newError builds the *Error for a -ERR reply; rest is the reply after
// "-ERR ".
func newError(cmd command, rest []byte) *Error {
	code, text := splitRespCode(rest)
	e := &Error{Command: cmd.verb, Code: code, Text: text}
	if cmd.a >= 0 {
		e.Arg = strconv.Itoa(cmd.a)
		if cmd.b >= 0 {
			e.Arg += " " + strconv.Itoa(cmd.b)
		}
	}
	return e
}

// splitRespCode separates an RFC 2449 §8 response code from the text of a
// reply: "[SYS/TEMP] try later" gives "SYS/TEMP", "try later". A bracketed
// prefix that does not follow the grammar is left in the text.
func splitRespCode(rest []byte) (code, text string) {
	if len(rest) > 1 && rest[0] == '[' {
		if end := indexByte(rest, ']'); end > 1 && validRespCode(rest[1:end]) {
			return strings.ToUpper(string(rest[1:end])), sanitize(trimSpace(rest[end+1:]))
		}
	}
	return "", sanitize(trimSpace(rest))
}

// validRespCode checks resp-code = resp-level *("/" resp-level), resp-level
// = 1*rchar, rchar = %x21-2E / %x30-5C / %x5E-7F (RFC 2449 §9).
func validRespCode(b []byte) bool {
	level := 0
	for _, ch := range b {
		switch {
		case ch == '/':
			if level == 0 {
				return false
			}
			level = 0
		case ch >= 0x21 && ch <= 0x7e && ch != ']':
			level++
		default:
			return false
		}
	}
	return level > 0
}

// sanitize makes server text safe to show: control characters become '?'.
func sanitize(b []byte) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, string(b))
}
