package pop3test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"mime"
	"mime/quotedprintable"
	"strings"
	"time"
)

// Sample message kinds, in the order SampleMessages cycles through them.
const (
	kindPlain          = iota // US-ASCII text/plain, a few paragraphs
	kindUTF8                  // 8bit UTF-8 body, RFC 2047 encoded subject and name
	kindAttachment            // multipart/mixed with a base64 attachment of 2 to 8 KiB
	kindDotLines              // lines starting with "." (dot-stuffing)
	kindLongLine              // one line longer than 1000 octets
	kindNoFinalNewline        // the last line has no CRLF
	kindAlternative           // multipart/alternative, quoted-printable text and HTML
	kindCount
)

// SampleMessages returns n realistic RFC 5322 messages with CRLF line
// endings. They cycle through these kinds, so any n >= 7 has all of them:
// plain US-ASCII text; an 8bit UTF-8 body with an RFC 2047 subject;
// multipart/mixed with a base64 attachment of 2 to 8 KiB; a body with
// lines that begin with "." (to exercise dot-stuffing); a line longer than
// 1000 octets; a message whose last line has no CRLF; and
// multipart/alternative in quoted-printable. Sizes vary from a few hundred
// octets to about 12 KiB.
//
// Message i depends only on seed and i, so SampleMessages(5, s) is a prefix
// of SampleMessages(10, s). UIDs are unique for a (seed, i) pair and valid
// RFC 1939 unique-ids.
func SampleMessages(n int, seed int64) []Message {
	out := make([]Message, 0, max(n, 0))
	for i := range n {
		out = append(out, sampleMessage(seed, i))
	}
	return out
}

// LargeMessage returns a multipart/mixed message whose base64 attachment
// makes it about size octets long, for tests of streaming and memory use.
// It is deterministic for (size, seed).
func LargeMessage(size int, seed int64) Message {
	r := rand.New(rand.NewPCG(uint64(seed), uint64(size)))
	g := generator{r: r, seed: seed, i: -1}
	boundary := fmt.Sprintf("=_pop3test_large_%x", uint64(seed))
	var b bytes.Buffer
	g.header(&b, "Large attachment", fmt.Sprintf("multipart/mixed; boundary=%q", boundary), "")
	fmt.Fprintf(&b, "This is a multi-part message in MIME format.\r\n\r\n--%s\r\n", boundary)
	b.WriteString("Content-Type: text/plain; charset=us-ascii\r\n\r\n")
	b.WriteString("The attachment is large on purpose.\r\n\r\n")
	fmt.Fprintf(&b, "--%s\r\n", boundary)
	b.WriteString("Content-Type: application/octet-stream; name=\"large.bin\"\r\n")
	b.WriteString("Content-Transfer-Encoding: base64\r\n")
	b.WriteString("Content-Disposition: attachment; filename=\"large.bin\"\r\n\r\n")
	tail := fmt.Sprintf("\r\n--%s--\r\n", boundary)
	// Each 57 raw octets become one 76-character base64 line plus CRLF.
	left := max(size-b.Len()-len(tail), 0)
	raw := left / 78 * 57
	if rem := left % 78; rem > 6 {
		raw += (rem - 2) / 4 * 3
	}
	g.base64(&b, raw)
	b.WriteString(tail)
	return Message{UID: fmt.Sprintf("large.%016x.%d", uint64(seed), size), Data: b.Bytes()}
}

func sampleMessage(seed int64, i int) Message {
	g := generator{r: rand.New(rand.NewPCG(uint64(seed), uint64(i))), seed: seed, i: i}
	var b bytes.Buffer
	switch i % kindCount {
	case kindPlain:
		g.header(&b, g.subject(), "text/plain; charset=us-ascii", "7bit")
		g.paragraphs(&b, 1+g.r.IntN(8))
	case kindUTF8:
		g.utf8(&b)
	case kindAttachment:
		g.attachment(&b)
	case kindDotLines:
		g.header(&b, "Lines that start with a dot", "text/plain; charset=us-ascii", "7bit")
		b.WriteString("The next lines begin with dots.\r\n")
		b.WriteString(".\r\n..\r\n...\r\n.hidden\r\n. a dot and a space\r\n")
		g.paragraphs(&b, 1)
		b.WriteString(".\r\n")
		b.WriteString("The line above is a lone dot, not the end of the message.\r\n")
	case kindLongLine:
		g.header(&b, "A very long line", "text/plain; charset=us-ascii", "7bit")
		b.WriteString("The next line is longer than RFC 5322 allows:\r\n")
		n := 1200 + g.r.IntN(2800)
		for line := 0; line < n; {
			w := g.word()
			b.WriteString(w)
			b.WriteByte(' ')
			line += len(w) + 1
		}
		b.WriteString("\r\nEnd of the long line.\r\n")
	case kindNoFinalNewline:
		g.header(&b, "No newline at the end", "text/plain; charset=us-ascii", "7bit")
		g.paragraphs(&b, 1+g.r.IntN(3))
		b.WriteString("This last line has no line ending.")
	case kindAlternative:
		g.alternative(&b)
	}
	return Message{UID: fmt.Sprintf("%016x.%d", uint64(seed), i+1), Data: b.Bytes()}
}

type generator struct {
	r    *rand.Rand
	seed int64
	i    int
}

var (
	firstNames = []string{"Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter"}
	lastNames  = []string{"Archer", "Baker", "Carter", "Dalton", "Evans", "Fisher", "Garcia", "Hughes", "Iverson", "Jensen", "Keller", "Lopez", "Moreau", "Nakamura", "Olsen", "Patel"}
	utf8Names  = []string{"Zoë Ångström", "Jürgen Müller", "José Núñez", "Søren Kierkegård", "Łucja Wąsowska", "Ingrid Bjørnstad", "François Lefèvre"}
	words      = strings.Fields(`the a mail server message account report meeting budget draft review
		schedule notes quarterly update project team weekend invoice receipt travel lunch
		question answer plan release test backup migration deadline change request access
		please thanks regards tomorrow today yesterday next last week month year soon later
		attached below above about with without from into over under after before during`)
	subjects = []string{"Quarterly report", "Lunch on Friday?", "Re: migration plan", "Invoice 4711",
		"Fwd: travel receipts", "Meeting notes", "Backup window moved", "Re: Re: access request",
		"Release checklist", "Weekend plans"}
	utf8Subjects = []string{"Grüße aus München", "Café au lait ☕", "Ünïcödé test — ok?", "Заметки со встречи", "会議の議事録", "Smörgåsbord på fredag"}
	utf8Lines    = []string{
		"Grüße aus München, wo es heute schneit.",
		"Les élèves ont reçu leurs cahiers à la rentrée.",
		"Съешь же ещё этих мягких французских булок.",
		"いろはにほへと ちりぬるを わかよたれそ つねならむ",
		"Høj bølge, kølig vind og en kop kaffe.",
		"Zażółć gęślą jaźń.",
		"Emoji survive 8bit transport too: 📬 ✉️ 🗂️",
	}
)

func (g *generator) pick(list []string) string { return list[g.r.IntN(len(list))] }

func (g *generator) word() string { return g.pick(words) }

func (g *generator) subject() string { return g.pick(subjects) }

func (g *generator) address() string {
	first, last := g.pick(firstNames), g.pick(lastNames)
	return fmt.Sprintf("%s %s <%s.%s@example.org>", first, last, strings.ToLower(first), strings.ToLower(last))
}

// header writes the RFC 5322 header and the blank line after it. An empty
// cte leaves Content-Transfer-Encoding out.
func (g *generator) header(b *bytes.Buffer, subject, contentType, cte string) {
	g.headerFrom(b, g.address(), mime.QEncoding.Encode("utf-8", subject), contentType, cte)
}

func (g *generator) headerFrom(b *bytes.Buffer, from, subject, contentType, cte string) {
	base := time.Date(2025, time.January, 6, 9, 0, 0, 0, time.UTC)
	date := base.Add(time.Duration(max(g.i, 0))*37*time.Minute + time.Duration(g.r.IntN(1800))*time.Second)
	id := fmt.Sprintf("%x.%d.%d@mail.example.org", uint64(g.seed), g.i+1, g.r.Uint32())
	fmt.Fprintf(b, "Return-Path: <bounces+%d@example.org>\r\n", g.r.IntN(100000))
	mx := g.r.IntN(9)
	fmt.Fprintf(b, "Received: from mx%d.example.org (mx%d.example.org [192.0.2.%d])\r\n", mx, mx, 1+g.r.IntN(250))
	fmt.Fprintf(b, "\tby pop.example.net with ESMTPS id %08x\r\n", g.r.Uint32())
	fmt.Fprintf(b, "\tfor <me@example.net>; %s\r\n", date.Add(3*time.Second).Format(time.RFC1123Z))
	fmt.Fprintf(b, "Date: %s\r\n", date.Format(time.RFC1123Z))
	fmt.Fprintf(b, "From: %s\r\n", from)
	b.WriteString("To: Me <me@example.net>\r\n")
	fmt.Fprintf(b, "Subject: %s\r\n", subject)
	fmt.Fprintf(b, "Message-ID: <%s>\r\n", id)
	b.WriteString("MIME-Version: 1.0\r\n")
	fmt.Fprintf(b, "Content-Type: %s\r\n", contentType)
	if cte != "" {
		fmt.Fprintf(b, "Content-Transfer-Encoding: %s\r\n", cte)
	}
	b.WriteString("\r\n")
}

// paragraphs writes n paragraphs of words wrapped at 72 columns.
func (g *generator) paragraphs(b *bytes.Buffer, n int) {
	for p := range n {
		if p > 0 {
			b.WriteString("\r\n")
		}
		col := 0
		for range 20 + g.r.IntN(160) {
			w := g.word()
			if col > 0 && col+1+len(w) > 72 {
				b.WriteString("\r\n")
				col = 0
			}
			if col > 0 {
				b.WriteByte(' ')
				col++
			}
			b.WriteString(w)
			col += len(w)
		}
		b.WriteString(".\r\n")
	}
}

func (g *generator) utf8(b *bytes.Buffer) {
	from := mime.QEncoding.Encode("utf-8", g.pick(utf8Names)) + " <intl@example.org>"
	g.headerFrom(b, from, mime.BEncoding.Encode("utf-8", g.pick(utf8Subjects)), "text/plain; charset=utf-8", "8bit")
	for range 3 + g.r.IntN(12) {
		b.WriteString(g.pick(utf8Lines))
		b.WriteString("\r\n")
	}
}

// base64 writes n random octets in base64, 76 characters a line.
func (g *generator) base64(b *bytes.Buffer, n int) {
	raw := make([]byte, 57)
	line := make([]byte, 76)
	for n > 0 {
		k := min(n, 57)
		for j := 0; j < k; j += 8 {
			v := g.r.Uint64()
			for x := j; x < min(j+8, k); x++ {
				raw[x] = byte(v)
				v >>= 8
			}
		}
		m := base64.StdEncoding.EncodedLen(k)
		base64.StdEncoding.Encode(line[:m], raw[:k])
		b.Write(line[:m])
		b.WriteString("\r\n")
		n -= k
	}
}

func (g *generator) attachment(b *bytes.Buffer) {
	boundary := fmt.Sprintf("=_pop3test_%x_%d", uint64(g.seed), g.i+1)
	g.header(b, "Fwd: "+g.subject()+" (with attachment)", fmt.Sprintf("multipart/mixed; boundary=%q", boundary), "")
	fmt.Fprintf(b, "This is a multi-part message in MIME format.\r\n\r\n--%s\r\n", boundary)
	b.WriteString("Content-Type: text/plain; charset=us-ascii\r\n\r\n")
	g.paragraphs(b, 1+g.r.IntN(2))
	name := fmt.Sprintf("scan-%d.pdf", g.i+1)
	fmt.Fprintf(b, "\r\n--%s\r\n", boundary)
	fmt.Fprintf(b, "Content-Type: application/pdf; name=%q\r\n", name)
	b.WriteString("Content-Transfer-Encoding: base64\r\n")
	fmt.Fprintf(b, "Content-Disposition: attachment; filename=%q\r\n\r\n", name)
	g.base64(b, 2048+g.r.IntN(6*1024))
	fmt.Fprintf(b, "\r\n--%s--\r\n", boundary)
}

func (g *generator) alternative(b *bytes.Buffer) {
	boundary := fmt.Sprintf("=_pop3test_alt_%x_%d", uint64(g.seed), g.i+1)
	g.header(b, g.subject(), fmt.Sprintf("multipart/alternative; boundary=%q", boundary), "")
	var text bytes.Buffer
	g.paragraphs(&text, 1+g.r.IntN(3))
	text.WriteString("Price: 20 € — “quoted” text.\r\n")
	fmt.Fprintf(b, "--%s\r\n", boundary)
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	b.WriteString("Content-Transfer-Encoding: quoted-printable\r\n\r\n")
	qp := quotedprintable.NewWriter(b)
	// Writes to a bytes.Buffer do not fail.
	_, _ = qp.Write(text.Bytes())
	_ = qp.Close()
	fmt.Fprintf(b, "\r\n--%s\r\n", boundary)
	b.WriteString("Content-Type: text/html; charset=utf-8\r\n")
	b.WriteString("Content-Transfer-Encoding: quoted-printable\r\n\r\n")
	html := "<html><body><p>" + strings.ReplaceAll(strings.TrimSpace(text.String()), "\r\n", "<br>\r\n") + "</p></body></html>\r\n"
	qp = quotedprintable.NewWriter(b)
	_, _ = qp.Write([]byte(html))
	_ = qp.Close()
	fmt.Fprintf(b, "\r\n--%s--\r\n", boundary)
}
