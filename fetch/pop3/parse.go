package pop3

import (
	"fmt"
	"strings"
)

// statusKind classifies the first line of a reply.
type statusKind int

const (
	statusOK   statusKind = iota // "+OK"
	statusErr                    // "-ERR"
	statusCont                   // "+" continuation during AUTH (RFC 5034 §4)
)

// parseStatus classifies a reply line (CRLF or LF already removed) and
// returns the text after the indicator and its space. It does not allocate.
// RFC 1939 §3 writes the indicators in upper case; lower case is accepted.
func parseStatus(line []byte) (statusKind, []byte, error) {
	switch {
	case hasIndicator(line, "+OK"):
		return statusOK, afterIndicator(line, 3), nil
	case hasIndicator(line, "-ERR"):
		return statusErr, afterIndicator(line, 4), nil
	case hasIndicator(line, "+"):
		return statusCont, afterIndicator(line, 1), nil
	}
	return 0, nil, fmt.Errorf("%w: status line %q", ErrProtocol, clip(line))
}

func hasIndicator(line []byte, ind string) bool {
	if len(line) < len(ind) {
		return false
	}
	for i := 0; i < len(ind); i++ {
		if upper(line[i]) != ind[i] {
			return false
		}
	}
	return len(line) == len(ind) || line[len(ind)] == ' '
}

func afterIndicator(line []byte, n int) []byte {
	if len(line) > n {
		return line[n+1:]
	}
	return line[n:]
}

func upper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - ('a' - 'A')
	}
	return c
}

// trimEOL removes a trailing LF and a CR before it.
func trimEOL(line []byte) []byte {
	if n := len(line); n > 0 && line[n-1] == '\n' {
		line = line[:n-1]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
	}
	return line
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// nextField splits off the first space separated field of b, skipping
// leading spaces and tabs.
func nextField(b []byte) (field, rest []byte) {
	b = trimLeft(b)
	i := 0
	for i < len(b) && b[i] != ' ' && b[i] != '\t' {
		i++
	}
	return b[:i], b[i:]
}

func trimLeft(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// parseNumber parses a non-negative decimal number of at most 18 digits
// (so it cannot overflow an int64).
func parseNumber(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseMsgNum parses a message number: RFC 1939 §3 numbers messages from 1.
func parseMsgNum(b []byte) (int, bool) {
	n, ok := parseNumber(b)
	if !ok || n < 1 || n > maxMsgNum {
		return 0, false
	}
	return int(n), true
}

const maxMsgNum = 1<<31 - 1

// parseStat parses the text of a STAT reply, "nn mm" (RFC 1939 §5).
func parseStat(rest []byte) (count int, size int64, err error) {
	f1, r := nextField(rest)
	f2, _ := nextField(r)
	c, ok1 := parseNumber(f1)
	s, ok2 := parseNumber(f2)
	if !ok1 || !ok2 || c > maxMsgNum {
		return 0, 0, fmt.Errorf("%w: STAT reply %q", ErrProtocol, clip(rest))
	}
	return int(c), s, nil
}

// parseScanLine parses a scan listing, "msg size" (RFC 1939 §5 LIST). RFC
// 1939 makes no requirement on what follows the size, so text after it is
// ignored.
func parseScanLine(line []byte) (MessageInfo, error) {
	f1, r := nextField(line)
	f2, _ := nextField(r)
	id, ok1 := parseMsgNum(f1)
	size, ok2 := parseNumber(f2)
	if !ok1 || !ok2 {
		return MessageInfo{}, fmt.Errorf("%w: scan listing %q", ErrProtocol, clip(line))
	}
	return MessageInfo{ID: id, Size: size}, nil
}

// parseOctets reads the size a RETR reply announces, as in "+OK 120
// octets" (RFC 1939 §5): a number followed by a word starting with
// "octet". ok is false for any other text, which RFC 1939 allows.
func parseOctets(rest []byte) (n int64, ok bool) {
	f1, r := nextField(rest)
	f2, _ := nextField(r)
	if len(f2) < 5 || !strings.EqualFold(string(f2[:5]), "octet") {
		return 0, false
	}
	return parseNumber(f1)
}

// parseUIDLine parses a unique-id listing, "msg uid" (RFC 1939 §7). Spaces
// between and after the fields are tolerated; the unique-id itself must
// be valid.
func parseUIDLine(line []byte) (UIDEntry, error) {
	f1, r := nextField(line)
	id, ok := parseMsgNum(f1)
	if !ok {
		return UIDEntry{}, fmt.Errorf("%w: unique-id listing %q", ErrProtocol, clip(line))
	}
	uid, r := nextField(r)
	if len(trimSpace(r)) != 0 {
		return UIDEntry{}, fmt.Errorf("%w: unique-id of message %d contains a space", ErrBadUIDL, id)
	}
	if err := checkUID(uid); err != nil {
		return UIDEntry{}, fmt.Errorf("message %d: %w", id, err)
	}
	return UIDEntry{ID: id, UID: string(uid)}, nil
}

// checkUID applies RFC 1939 §7: a unique-id is 1 to 70 characters in the
// range 0x21 to 0x7E.
func checkUID(uid []byte) error {
	if len(uid) < 1 || len(uid) > 70 {
		return fmt.Errorf("%w: length %d, want 1 to 70", ErrBadUIDL, len(uid))
	}
	for _, c := range uid {
		if c < 0x21 || c > 0x7e {
			return fmt.Errorf("%w: byte 0x%02x", ErrBadUIDL, c)
		}
	}
	return nil
}

// parseCapaLine parses one line of a CAPA listing (RFC 2449 §5): a
// capability name and space separated arguments. The name is returned in
// upper case.
func parseCapaLine(line []byte) (name string, args []string, err error) {
	fields := strings.Fields(string(line))
	if len(fields) == 0 {
		return "", nil, fmt.Errorf("%w: empty CAPA line", ErrProtocol)
	}
	for _, f := range fields {
		for i := 0; i < len(f); i++ {
			if f[i] < 0x21 || f[i] > 0x7e {
				return "", nil, fmt.Errorf("%w: CAPA line %q", ErrProtocol, clip(line))
			}
		}
	}
	return strings.ToUpper(fields[0]), fields[1:], nil
}

// apopTimestamp extracts the RFC 1939 §7 timestamp ("<process-ID.clock@
// hostname>") from a greeting text, brackets included, or "".
func apopTimestamp(greeting string) string {
	start := strings.IndexByte(greeting, '<')
	if start < 0 {
		return ""
	}
	end := strings.IndexByte(greeting[start:], '>')
	if end < 0 {
		return ""
	}
	ts := greeting[start : start+end+1]
	for i := 1; i < len(ts)-1; i++ {
		if c := ts[i]; c <= 0x20 || c >= 0x7f || c == '<' {
			return ""
		}
	}
	if len(ts) < 3 {
		return ""
	}
	return ts
}

// clip shortens server text quoted in an error.
func clip(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}
