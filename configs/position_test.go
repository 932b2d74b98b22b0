package configs

import (
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func TestScanPositions(t *testing.T) {
	src := `# comment with key = "x" and [[account]]
top = 1
"quoted.key" = 2
dotted.inner = 3   # trailing comment

[daemon]
  metrics = "a # not a comment"
text = """
[[account]]
host = "in a string"
\"""
"""
lit = '''
[state]
'''

[[account]]
name = "a"
cmd = [
  "x",   # comment in an array
  [1, 2],
  "y",
]
inline = {a = 1, b = { c = "}" }}
  [[account.deliver]]
  maildir = "one"
  [[account.deliver]]
  maildir = "two"

[[account]]
name = "b"
when = 1979-05-27 07:32:00Z
deliver = [
  {maildir = "x"},
  {maildir = "y",
   smtp = "z"},
]
[account.extra]
k = 1
`
	if _, err := toml.Decode(src, new(map[string]any)); err != nil {
		t.Fatalf("test document is not valid TOML: %v", err)
	}
	pos := scanPositions(src)
	for _, tc := range []struct {
		path []string
		line int
	}{
		{[]string{"top"}, 2},
		{[]string{"quoted.key"}, 3},
		{[]string{"dotted"}, 4},
		{[]string{"dotted", "inner"}, 4},
		{[]string{"daemon"}, 6},
		{[]string{"daemon", "metrics"}, 7},
		{[]string{"daemon", "text"}, 8},
		{[]string{"daemon", "lit"}, 13},
		{[]string{"account"}, 17},
		{[]string{"account", index(0)}, 17},
		{[]string{"account", index(0), "name"}, 18},
		{[]string{"account", index(0), "cmd"}, 19},
		{[]string{"account", index(0), "cmd", index(0)}, 20},
		{[]string{"account", index(0), "cmd", index(1)}, 21},
		{[]string{"account", index(0), "cmd", index(1), index(1)}, 21},
		{[]string{"account", index(0), "cmd", index(2)}, 22},
		{[]string{"account", index(0), "inline", "b", "c"}, 24},
		{[]string{"account", index(0), "deliver", index(0)}, 25},
		{[]string{"account", index(0), "deliver", index(0), "maildir"}, 26},
		{[]string{"account", index(0), "deliver", index(1), "maildir"}, 28},
		{[]string{"account", index(1)}, 30},
		{[]string{"account", index(1), "name"}, 31},
		{[]string{"account", index(1), "when"}, 32},
		{[]string{"account", index(1), "deliver", index(0), "maildir"}, 34},
		{[]string{"account", index(1), "deliver", index(1), "maildir"}, 35},
		{[]string{"account", index(1), "deliver", index(1), "smtp"}, 36},
		{[]string{"account", index(1), "extra", "k"}, 39},
		// Unknown paths fall back to the nearest ancestor.
		{[]string{"account", index(1), "deliver", index(1), "rcpt"}, 35},
		{[]string{"nothing"}, 0},
	} {
		if got := pos.line(tc.path); got != tc.line {
			t.Errorf("line(%q) = %d, want %d", strings.Join(tc.path, "/"), got, tc.line)
		}
	}
	// Nothing inside a string was taken for a key or table.
	for k := range pos {
		if strings.Contains(k, "host") || strings.HasPrefix(k, "state") {
			t.Errorf("found %q inside a string", k)
		}
	}
}

func TestScanPositionsEscapedKeys(t *testing.T) {
	src := "\ufeff[\"a\\u0062\"]\n'lit.x' = 1\n\"\\x41\" = 2\n"
	if _, err := toml.Decode(src, new(map[string]any)); err != nil {
		t.Skipf("parser does not take this document: %v", err)
	}
	pos := scanPositions(src)
	if got := pos.line([]string{"ab", "lit.x"}); got != 2 {
		t.Errorf("lit.x on line %d", got)
	}
	if got := pos.line([]string{"ab", "A"}); got != 3 {
		t.Errorf(`"\x41" on line %d`, got)
	}
}

// FuzzScanPositions checks the position reader on every document the TOML
// parser accepts: it must not panic, and must find every key the parser saw.
func FuzzScanPositions(f *testing.F) {
	for _, s := range []string{
		validAccount,
		"a = \"\"\"x\ny\"\"\"\"\"\nb = '''\n'''''\n",
		"x = [[1], [\n2]]\n[[t]]\n[[t.u]]\nk = {a.b = 1}\n[[t]]\n",
		"d = 1979-05-27 07:32:00\ne = [1979-05-27 07:32:00, 1]\n",
		"\"a.b\".'c d' . e = 1\n[ x . \"y\" ]\nz = 2\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		var tree map[string]any
		md, err := toml.Decode(src, &tree)
		if err != nil {
			return
		}
		s := &posScanner{src: src, line: 1, pos: positions{}, arrays: map[string]int{}}
		s.run() // no recover: a panic fails the fuzz case

		seen := make(map[string]bool)
		for k := range s.pos {
			var segs []string
			for _, seg := range strings.Split(k, "\x00") {
				if !strings.HasPrefix(seg, "\x01") {
					segs = append(segs, seg)
				}
			}
			seen[strings.Join(segs, "\x00")] = true
		}
		for _, k := range md.Keys() {
			if !seen[strings.Join(k, "\x00")] {
				t.Fatalf("key %q not found by the position reader", k.String())
			}
		}
	})
}
