package deliver

import (
	"bytes"
	"strings"
)

// DefaultMaxHeader bounds how much of a message the SMTP, LMTP and MDA
// targets hold back while they look for the end of its header section (to
// learn the envelope sender from Return-Path before MAIL FROM). A header
// section longer than this is not searched further.
const DefaultMaxHeader = 256 << 10

// headerBuf holds the start of a message until its header section ends:
// at the first empty line (RFC 5322 §2.1), or when max bytes were seen.
type headerBuf struct {
	buf       []byte
	max       int
	lineStart int  // offset of the first line not yet checked for emptiness
	end       int  // length of the header section incl. the empty line; -1 if unknown
	done      bool // no more bytes are taken
}

func newHeaderBuf(max int) headerBuf {
	if max <= 0 {
		max = DefaultMaxHeader
	}
	return headerBuf{max: max, end: -1}
}

// add takes bytes of p until the header section is known to have ended or
// max bytes are held, and returns how many it took. Once done is set, the
// held bytes and p[n:] are the message so far.
func (h *headerBuf) add(p []byte) (n int) {
	if h.done {
		return 0
	}
	n = min(len(p), h.max-len(h.buf))
	h.buf = append(h.buf, p[:n]...)
	for h.end < 0 {
		i := bytes.IndexByte(h.buf[h.lineStart:], '\n')
		if i < 0 {
			break
		}
		line := h.buf[h.lineStart : h.lineStart+i]
		h.lineStart += i + 1
		if len(line) == 0 || len(line) == 1 && line[0] == '\r' {
			h.end = h.lineStart
		}
	}
	if h.end >= 0 || len(h.buf) >= h.max {
		h.done = true
	}
	return n
}

// header returns the header section as far as it is known: all of it when
// it ended (or the message ended inside it), else the held prefix.
func (h *headerBuf) header() []byte {
	if h.end >= 0 {
		return h.buf[:h.end]
	}
	return h.buf
}

// complete reports whether header returns the whole header section, given
// whether the message has ended.
func (h *headerBuf) complete(messageEnded bool) bool {
	return h.end >= 0 || messageEnded
}

// release drops the held bytes.
func (h *headerBuf) release() { h.buf = nil }

// returnPath finds the first Return-Path field of header (the one the last
// delivery added, RFC 5321 §4.4) and returns the address in it: "" with ok
// for the null reverse-path "<>". ok is false when there is no such field
// or its content is not an address popsync can pass on as it is.
func returnPath(header []byte) (addr string, ok bool) {
	v, found := field(header, "return-path")
	if !found {
		return "", false
	}
	return parsePath(v)
}

// field returns the unfolded value of the first header field called name
// (lower case).
func field(header []byte, name string) (string, bool) {
	for len(header) > 0 {
		line, rest := cutLine(header)
		header = rest
		colon := bytes.IndexByte(line, ':')
		if colon < 0 || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		if !strings.EqualFold(string(bytes.TrimRight(line[:colon], " \t")), name) {
			continue
		}
		var v strings.Builder
		v.Write(line[colon+1:])
		// RFC 5322 §2.2.3: a line that starts with white space continues
		// the field.
		for len(header) > 0 && (header[0] == ' ' || header[0] == '\t') {
			line, header = cutLine(header)
			v.WriteByte(' ')
			v.Write(line)
		}
		return v.String(), true
	}
	return "", false
}

// cutLine splits off the first line of b, without its line ending.
func cutLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		line, rest = b, nil
	} else {
		line, rest = b[:i], b[i+1:]
	}
	return bytes.TrimSuffix(line, []byte("\r")), rest
}

// maxPath is the longest reverse-path passed on (RFC 5321 §4.5.3.1.3).
const maxPath = 256

// parsePath reads the content of a Return-Path field: "<addr>", "<>" or,
// from sloppy servers, a bare address. A source route ("<@a,@b:x@y>") is
// dropped, as RFC 5321 §4.1.2 tells receivers to do. Anything else that
// could not go into MAIL FROM unchanged (white space, quotes, comments, no
// domain) is refused.
func parsePath(v string) (string, bool) {
	v = strings.TrimSpace(v)
	if strings.HasPrefix(v, "<") {
		end := strings.IndexByte(v, '>')
		if end < 0 || strings.TrimSpace(v[end+1:]) != "" {
			return "", false
		}
		v = v[1:end]
		if v == "" {
			return "", true
		}
	}
	if strings.HasPrefix(v, "@") {
		_, after, found := strings.Cut(v, ":")
		if !found {
			return "", false
		}
		v = after
	}
	if v == "" || len(v) > maxPath || !strings.Contains(v, "@") || strings.HasPrefix(v, "@") || strings.HasSuffix(v, "@") {
		return "", false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c == 0x7f || strings.IndexByte(`<>()\",;`, c) >= 0 {
			return "", false
		}
	}
	return v, true
}

// isASCII reports whether s holds only 7-bit bytes.
func isASCII[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
