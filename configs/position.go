package configs

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// BurntSushi/toml keeps key positions private, and keys them without the
// index of the [[array]] element they belong to, so the line of `host` in the
// second [[account]] cannot be had from it. positions is a second, much
// smaller reader of the same text that only records where each key is.
// It runs on text the TOML parser has already accepted, so it does not
// validate anything; it only needs to step over values correctly (multi-line
// strings and arrays, inline tables) so that it never takes text inside a
// value for a key.

// positions maps a key path (see pathKey) to the 1-based line the key, table
// header or array element starts on.
type positions map[string]int

// pathKey joins path segments. Array elements are segments made by index.
func pathKey(segs []string) string { return strings.Join(segs, "\x00") }

// index is the path segment of array element i.
func index(i int) string { return "\x01" + strconv.Itoa(i) }

// line returns the line of path, or of its nearest ancestor that has one.
func (p positions) line(path []string) int {
	for n := len(path); n > 0; n-- {
		if l, ok := p[pathKey(path[:n])]; ok {
			return l
		}
	}
	return 0
}

type posScanner struct {
	src    string
	i      int
	line   int
	pos    positions
	arrays map[string]int // resolved path of an array of tables -> elements seen
}

// scanPositions records the line of every key, table and array element in
// src. It never fails: a position it cannot find only makes a message point
// at an enclosing table instead.
func scanPositions(src string) (pos positions) {
	s := &posScanner{src: src, line: 1, pos: positions{}, arrays: map[string]int{}}
	defer func() {
		// Positions only decorate messages; a blind spot in this reader must
		// not turn a valid file into a crash.
		if recover() != nil {
			pos = s.pos
		}
	}()
	s.run()
	return s.pos
}

func (s *posScanner) eof() bool { return s.i >= len(s.src) }

func (s *posScanner) peek() byte {
	if s.eof() {
		return 0
	}
	return s.src[s.i]
}

func (s *posScanner) advance(n int) {
	if s.i+n > len(s.src) {
		n = len(s.src) - s.i
	}
	s.line += strings.Count(s.src[s.i:s.i+n], "\n")
	s.i += n
}

func (s *posScanner) has(prefix string) bool { return strings.HasPrefix(s.src[s.i:], prefix) }

func (s *posScanner) skipBlank() {
	for !s.eof() && (s.peek() == ' ' || s.peek() == '\t') {
		s.i++
	}
}

// skipSpace skips blanks, newlines and comments.
func (s *posScanner) skipSpace() {
	for !s.eof() {
		switch s.peek() {
		case ' ', '\t', '\r', '\n':
			s.advance(1)
		case '#':
			s.skipLine()
		default:
			return
		}
	}
}

// skipLine moves past the next newline.
func (s *posScanner) skipLine() {
	if j := strings.IndexByte(s.src[s.i:], '\n'); j >= 0 {
		s.advance(j + 1)
		return
	}
	s.i = len(s.src)
}

func (s *posScanner) record(path []string, line int) {
	k := pathKey(path)
	if _, ok := s.pos[k]; !ok {
		s.pos[k] = line
	}
}

func (s *posScanner) run() {
	if s.has("\ufeff") {
		s.i += len("\ufeff")
	}
	var table []string
	for {
		s.skipSpace()
		if s.eof() {
			return
		}
		start := s.i
		line := s.line
		if s.peek() == '[' {
			isArray := s.has("[[")
			if isArray {
				s.advance(2)
			} else {
				s.advance(1)
			}
			keys := s.keyPath()
			if len(keys) == 0 {
				s.skipLine()
				continue
			}
			t := s.resolve(keys[:len(keys)-1])
			t = append(t, keys[len(keys)-1])
			if isArray {
				k := pathKey(t)
				n := s.arrays[k]
				s.arrays[k] = n + 1
				s.record(t, line)
				t = append(t, index(n))
			}
			table = t
			s.record(table, line)
			s.skipLine()
			continue
		}
		keys := s.keyPath()
		s.skipBlank()
		if len(keys) == 0 || s.peek() != '=' {
			if s.i == start {
				s.skipLine()
			}
			continue
		}
		s.advance(1)
		s.skipBlank()
		path := s.keyRecord(table, keys, line)
		s.value(path)
		s.skipLine()
	}
}

// keyRecord records a (possibly dotted) key defined in table on line, with
// the tables its dots imply, and returns its full path.
func (s *posScanner) keyRecord(table, keys []string, line int) []string {
	path := append(append([]string(nil), table...), keys...)
	for n := len(table) + 1; n <= len(path); n++ {
		s.record(path[:n], line)
	}
	return path
}

// resolve turns a header's parent keys into a path, descending into the last
// element of every array of tables on the way, as TOML does.
func (s *posScanner) resolve(keys []string) []string {
	var path []string
	for _, k := range keys {
		path = append(path, k)
		if n, ok := s.arrays[pathKey(path)]; ok && n > 0 {
			path = append(path, index(n-1))
		}
	}
	return path
}

// keyPath reads a dotted key: bare, "basic" or 'literal' parts.
func (s *posScanner) keyPath() []string {
	var keys []string
	for {
		s.skipBlank()
		var k string
		switch s.peek() {
		case '"':
			k = s.basicKey()
		case '\'':
			s.advance(1)
			j := strings.IndexAny(s.src[s.i:], "'\n")
			if j < 0 {
				j = len(s.src) - s.i
			}
			k = s.src[s.i : s.i+j]
			s.advance(j + 1)
		default:
			j := s.i
			for j < len(s.src) && !strings.ContainsRune(" \t\r\n=.[]#\"',{}", rune(s.src[j])) {
				j++
			}
			if j == s.i {
				return keys
			}
			k = s.src[s.i:j]
			s.i = j
		}
		keys = append(keys, k)
		s.skipBlank()
		if s.peek() != '.' {
			return keys
		}
		s.advance(1)
	}
}

// basicKey reads a "quoted" key and decodes its escapes (TOML 1.1 §String).
func (s *posScanner) basicKey() string {
	s.advance(1)
	var b strings.Builder
	for !s.eof() {
		c := s.peek()
		switch {
		case c == '"' || c == '\n':
			s.advance(1)
			return b.String()
		case c == '\\' && s.i+1 < len(s.src):
			e := s.src[s.i+1]
			s.advance(2)
			switch e {
			case 'b':
				b.WriteByte('\b')
			case 't':
				b.WriteByte('\t')
			case 'n':
				b.WriteByte('\n')
			case 'f':
				b.WriteByte('\f')
			case 'r':
				b.WriteByte('\r')
			case 'e':
				b.WriteByte(0x1b)
			case 'x', 'u', 'U':
				n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[e]
				if s.i+n <= len(s.src) {
					if v, err := strconv.ParseUint(s.src[s.i:s.i+n], 16, 32); err == nil && utf8.ValidRune(rune(v)) {
						b.WriteRune(rune(v))
					}
					s.advance(n)
				}
			default:
				b.WriteByte(e)
			}
		default:
			b.WriteByte(c)
			s.advance(1)
		}
	}
	return b.String()
}

// value steps over one value, recording the elements of arrays and the keys
// of inline tables under path.
func (s *posScanner) value(path []string) {
	switch {
	case s.has(`"""`):
		s.multiline(`"""`, true)
	case s.has(`'''`):
		s.multiline(`'''`, false)
	case s.peek() == '"':
		s.advance(1)
		for !s.eof() && s.peek() != '"' && s.peek() != '\n' {
			if s.peek() == '\\' {
				s.advance(1)
			}
			s.advance(1)
		}
		s.advance(1)
	case s.peek() == '\'':
		s.advance(1)
		j := strings.IndexAny(s.src[s.i:], "'\n")
		if j < 0 {
			j = len(s.src) - s.i
		}
		s.advance(j + 1)
	case s.peek() == '[':
		s.array(path)
	case s.peek() == '{':
		s.inlineTable(path)
	default:
		s.bare()
	}
}

// multiline steps over a multi-line string. Its closing delimiter may be
// followed by up to two more quotes that belong to the content.
func (s *posScanner) multiline(delim string, escapes bool) {
	s.advance(3)
	for !s.eof() {
		if escapes && s.peek() == '\\' {
			s.advance(2)
			continue
		}
		if s.has(delim) {
			n := 0
			for n < 5 && s.i+n < len(s.src) && s.src[s.i+n] == delim[0] {
				n++
			}
			s.advance(n)
			return
		}
		s.advance(1)
	}
}

func (s *posScanner) array(path []string) {
	s.advance(1)
	for n := 0; ; {
		s.skipSpace()
		switch s.peek() {
		case 0:
			return
		case ']':
			s.advance(1)
			return
		case ',':
			s.advance(1)
			continue
		}
		elem := append(append([]string(nil), path...), index(n))
		s.record(elem, s.line)
		start := s.i
		s.value(elem)
		if s.i == start {
			s.advance(1)
		}
		n++
	}
}

func (s *posScanner) inlineTable(path []string) {
	s.advance(1)
	for {
		s.skipSpace()
		switch s.peek() {
		case 0:
			return
		case '}':
			s.advance(1)
			return
		case ',':
			s.advance(1)
			continue
		}
		line := s.line
		start := s.i
		keys := s.keyPath()
		s.skipBlank()
		if len(keys) == 0 || s.peek() != '=' {
			if s.i == start {
				s.advance(1)
			}
			continue
		}
		s.advance(1)
		s.skipBlank()
		s.value(s.keyRecord(path, keys, line))
	}
}

// bare steps over a number, boolean or date-time. A date and a time may be
// separated by a space (TOML 1.1 §Offset Date-Time).
func (s *posScanner) bare() {
	start := s.i
	for !s.eof() && !strings.ContainsRune(" \t\r\n,]}#", rune(s.peek())) {
		s.i++
	}
	if s.i-start == 10 && s.src[start+4] == '-' && s.src[start+7] == '-' &&
		s.i+1 < len(s.src) && s.src[s.i] == ' ' && s.src[s.i+1] >= '0' && s.src[s.i+1] <= '9' {
		s.i++
		s.bare()
	}
}
