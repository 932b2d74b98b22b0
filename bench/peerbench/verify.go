package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// verdict is what one tool left in its Maildir(s), compared with the
// golden mailbox by Message-ID.
type verdict struct {
	want      int
	exact     int // byte for byte (after CRLF -> LF and a final newline)
	added     int // the source, with header fields added in front (Received:)
	refolded  int // equal under relaxed canonicalization (RFC 6376 §3.4.2): headers re-wrapped
	differ    int
	missing   int
	dup       int
	unknown   int // files without a known Message-ID
	inTmp     int // files left in tmp/
	firstDiff string
}

func (v verdict) ok() bool {
	return v.differ == 0 && v.missing == 0 && v.dup == 0 && v.unknown == 0 && v.exact+v.added+v.refolded == v.want
}

func (v verdict) String() string {
	s := fmt.Sprintf("%d/%d", v.exact+v.added+v.refolded, v.want)
	var notes []string
	if v.added > 0 {
		notes = append(notes, fmt.Sprintf("%d +hdr", v.added))
	}
	if v.refolded > 0 {
		notes = append(notes, fmt.Sprintf("%d re-folded", v.refolded))
	}
	for _, x := range []struct {
		n    int
		what string
	}{{v.differ, "DIFFER"}, {v.missing, "missing"}, {v.dup, "duplicated"}, {v.unknown, "unknown files"}, {v.inTmp, "left in tmp/"}} {
		if x.n > 0 {
			notes = append(notes, fmt.Sprintf("%d %s", x.n, x.what))
		}
	}
	if len(notes) > 0 {
		s += " (" + strings.Join(notes, ", ") + ")"
	}
	if v.firstDiff != "" {
		s += "; first difference: " + v.firstDiff
	}
	if v.ok() {
		return "OK " + s
	}
	return "FAIL " + s
}

var midRE = regexp.MustCompile(`(?i)message-id:[ \t\r\n]*<(pb\.[0-9]+\.[0-9]+\.[0-9]+@peerbench\.test)>`)

// verify checks that the Maildir md holds every message of g exactly once
// and unchanged but for added header fields.
func verify(g *golden, md string) (verdict, error) {
	v := verdict{want: len(g.msgs)}
	seen := make([]bool, len(g.msgs))
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(md, sub))
		if err != nil {
			return v, fmt.Errorf("reading %s: %w", md, err)
		}
		for _, e := range ents {
			got, err := os.ReadFile(filepath.Join(md, sub, e.Name()))
			if err != nil {
				return v, err
			}
			hdr := got
			if k := bytes.Index(got, []byte("\n\n")); k >= 0 {
				hdr = got[:k]
			}
			if k := bytes.Index(hdr, []byte("\r\n\r\n")); k >= 0 {
				hdr = hdr[:k]
			}
			m := midRE.FindSubmatch(hdr)
			if m == nil {
				v.unknown++
				continue
			}
			i, ok := g.byMID[string(m[1])]
			if !ok {
				v.unknown++
				continue
			}
			if seen[i] {
				v.dup++
				continue
			}
			seen[i] = true
			src, err := os.ReadFile(filepath.Join(g.dir, "new", g.msgs[i].file))
			if err != nil {
				return v, err
			}
			switch k, where := compareMessage(src, got); k {
			case "exact":
				v.exact++
			case "added":
				v.added++
			case "refolded":
				v.refolded++
			default:
				v.differ++
				if v.firstDiff == "" {
					v.firstDiff = g.msgs[i].mid + ": " + where
				}
			}
		}
	}
	for _, s := range seen {
		if !s {
			v.missing++
		}
	}
	if ents, err := os.ReadDir(filepath.Join(md, "tmp")); err == nil {
		v.inTmp = len(ents)
	}
	return v, nil
}

// normalize turns CRLF into LF and makes sure of a final newline: the
// forms a POP3 server serves and Maildir tools store differ only there.
func normalize(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	if len(b) == 0 || b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	return b
}

var (
	foldRE = regexp.MustCompile(`\n[ \t]+`)
	wspRE  = regexp.MustCompile(`[ \t]+`)
)

// relaxed unfolds continuation lines and collapses white space, like
// DKIM's relaxed header canonicalization, everywhere in the message.
func relaxed(b []byte) []byte {
	b = foldRE.ReplaceAll(b, []byte(" "))
	b = wspRE.ReplaceAll(b, []byte(" "))
	return bytes.ReplaceAll(b, []byte(" \n"), []byte("\n"))
}

// compareMessage classifies got against the source src: "exact", "added"
// (the same body, and the source's header fields unchanged and in order
// among added ones: Received: at the top from mpop and popsync, after
// Return-Path: from fetchmail), "refolded" (the same under relaxed
// canonicalization, as getmail re-serializes headers), or "differ" with
// where.
func compareMessage(src, got []byte) (kind, where string) {
	s, d := normalize(src), normalize(got)
	if bytes.Equal(s, d) {
		return "exact", ""
	}
	sh, sb := splitMessage(s)
	dh, db := splitMessage(d)
	if bytes.Equal(sb, db) && subsequence(sh, dh) {
		return "added", ""
	}
	rsh, rsb := splitMessage(relaxed(s))
	rdh, rdb := splitMessage(relaxed(d))
	if bytes.Equal(rsb, rdb) && subsequence(rsh, rdh) {
		return "refolded", ""
	}
	if !bytes.Equal(sb, db) {
		n := 0
		for n < len(sb) && n < len(db) && sb[n] == db[n] {
			n++
		}
		line := bytes.Count(sb[:n], []byte("\n")) + 1
		return "differ", fmt.Sprintf("body line %d (body: source %d octets, delivered %d)", line, len(sb), len(db))
	}
	return "differ", "a header field of the source was changed or dropped"
}

// splitMessage returns the header fields (each with its continuation
// lines) and the body of a normalized message.
func splitMessage(m []byte) (fields [][]byte, body []byte) {
	head := m
	if k := bytes.Index(m, []byte("\n\n")); k >= 0 {
		head, body = m[:k+1], m[k+2:]
	}
	for _, l := range bytes.SplitAfter(head, []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && len(fields) > 0 {
			last := fields[len(fields)-1]
			fields[len(fields)-1] = append(last[:len(last):len(last)], l...)
			continue
		}
		fields = append(fields, l)
	}
	return fields, body
}

// subsequence reports whether every field of want appears in have, in
// order.
func subsequence(want, have [][]byte) bool {
	k := 0
	for _, f := range have {
		if k < len(want) && bytes.Equal(f, want[k]) {
			k++
		}
	}
	return k == len(want)
}
