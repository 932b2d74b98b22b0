package main

import (
	_ "embed"
	"strings"
)

// configRef is the README's "Configuration reference" section, copied by
// go generate (a test keeps the copy equal to the README), so that the
// man page carries the same reference as the README.
//
//go:embed configref.md
var configRef string

// markdownToRoff renders the small Markdown subset the reference uses:
// headings, paragraphs, pipe tables (the first column becomes the tag of
// an indented paragraph) and fenced code blocks.
func markdownToRoff(md string) string {
	var b strings.Builder
	lines := strings.Split(strings.TrimRight(md, "\n"), "\n")
	var header []string
	inCode, inPara := false, false
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "```"):
			if inCode {
				b.WriteString(".fi\n.RE\n")
			} else {
				b.WriteString(".PP\n.RS\n.nf\n")
			}
			inCode, inPara = !inCode, false
		case inCode:
			b.WriteString(roffLine(roffText(l)) + "\n")
		case strings.HasPrefix(l, "## "):
			// The section's own title: the man page has its own.
		case strings.HasPrefix(l, "### "):
			b.WriteString(".SS \"" + strings.ReplaceAll(inline(l[4:], false), `"`, `\(dq`) + "\"\n")
			header, inPara = nil, false
		case strings.HasPrefix(l, "|"):
			cells := tableCells(l)
			switch {
			case header == nil:
				header = cells
			case strings.HasPrefix(strings.TrimSpace(cells[0]), "---"):
			default:
				b.WriteString(".TP\n" + inline(cells[0], true) + "\n")
				var parts []string
				for i := 1; i < len(cells); i++ {
					c := strings.TrimSpace(cells[i])
					if c == "" {
						continue
					}
					if i < len(cells)-1 && i < len(header) {
						c = strings.TrimSpace(header[i]) + ": " + c + "."
					}
					parts = append(parts, inline(c, false))
				}
				b.WriteString(strings.Join(parts, " ") + "\n")
			}
			inPara = false
		case strings.TrimSpace(l) == "":
			header, inPara = nil, false
		default:
			if !inPara {
				b.WriteString(".PP\n")
				inPara = true
			}
			b.WriteString(roffLine(inline(l, false)) + "\n")
		}
	}
	return b.String()
}

// tableCells splits a Markdown table row; `\|` is a literal bar.
func tableCells(l string) []string {
	l = strings.TrimSpace(l)
	l = strings.TrimPrefix(strings.TrimSuffix(l, "|"), "|")
	l = strings.ReplaceAll(l, `\|`, "\x00")
	cells := strings.Split(l, "|")
	for i, c := range cells {
		cells[i] = strings.ReplaceAll(c, "\x00", "|")
	}
	return cells
}

// inline renders `code` in bold and escapes the rest; bold makes the
// whole text bold (a table's tag).
func inline(s string, bold bool) string {
	s = strings.TrimSpace(s)
	parts := strings.Split(s, "`")
	var b strings.Builder
	if bold {
		b.WriteString(`\fB`)
	}
	for i, p := range parts {
		p = roffText(p)
		if i%2 == 1 && !bold {
			b.WriteString(`\fB` + p + `\fR`)
		} else {
			b.WriteString(p)
		}
	}
	if bold {
		b.WriteString(`\fR`)
	}
	return b.String()
}

// roffText escapes backslashes and hyphens.
func roffText(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	return strings.ReplaceAll(s, "-", `\-`)
}

// roffLine protects a line that would start with a control character.
func roffLine(s string) string {
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		return `\&` + s
	}
	return s
}
