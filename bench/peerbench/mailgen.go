package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"mime/quotedprintable"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Mailbox mixes the generator knows.
const (
	// mixReal is the size mix of a real inbox: about 89.6% text messages
	// (log-normal, median near 8 KB; plain or multipart/alternative with
	// quoted-printable HTML), 10% of 50-200 KB with base64 attachments and
	// 0.4% of 1-5 MB (at least one from 100 messages on).
	mixReal = "real"
	// mixSmall is short text messages (0.5-3 KB of body): the mailbox of
	// the 100,000-message poll, where sizes do not matter but disk does.
	mixSmall = "small"
	// mixHuge is one message of goldSpec.HugeMiB MiB (a base64 attachment).
	mixHuge = "huge"
)

// goldSpec names a generated mailbox. The same spec always gives
// byte-identical files.
type goldSpec struct {
	Mix     string
	N       int
	Seed    uint64
	Account int // part of every Message-ID, so accounts never share one
	HugeMiB int
}

func (s goldSpec) key() string {
	k := fmt.Sprintf("%s-n%d-s%d-a%d", s.Mix, s.N, s.Seed, s.Account)
	if s.Mix == mixHuge {
		k += fmt.Sprintf("-%dmib", s.HugeMiB)
	}
	return k
}

// golden is a generated mailbox: the source of the server's Maildir and
// what every tool's output is checked against.
type golden struct {
	spec  goldSpec
	dir   string // the Maildir; messages are in dir/new
	msgs  []goldMsg
	byMID map[string]int
	bytes int64 // on disk (LF mostly)
	wire  int64 // as the server lists them (CRLF)
}

type goldMsg struct {
	mid  string // without angle brackets
	file string // name in new/
	size int64
	wire int64
}

// loadOrGenerate returns the golden mailbox of spec under root, generating
// it once; the files belong to who (the server user), because the server
// Maildirs are hard links to them.
func loadOrGenerate(root string, spec goldSpec, who *osUser, logf func(string, ...any)) (*golden, error) {
	base := filepath.Join(root, spec.key())
	g := &golden{spec: spec, dir: filepath.Join(base, "Maildir")}
	manifest := filepath.Join(base, "manifest.tsv")
	if _, err := os.Stat(filepath.Join(base, ".done")); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		t0 := time.Now()
		if err := os.RemoveAll(base); err != nil {
			return nil, err
		}
		if err := generate(g.dir, manifest, spec); err != nil {
			return nil, fmt.Errorf("generating mailbox %s: %w", spec.key(), err)
		}
		if err := who.chownTree(base); err != nil {
			return nil, err
		}
		if err := os.Chmod(base, 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(base, ".done"), nil, 0o644); err != nil {
			return nil, err
		}
		logf("generated mailbox %s in %.1fs", spec.key(), time.Since(t0).Seconds())
	}
	if err := g.readManifest(manifest); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *golden) readManifest(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading manifest: %w", err)
	}
	g.byMID = make(map[string]int)
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 4 {
			return fmt.Errorf("manifest %s: bad line %q", path, line)
		}
		size, err1 := strconv.ParseInt(f[2], 10, 64)
		wire, err2 := strconv.ParseInt(f[3], 10, 64)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("manifest %s: bad line %q", path, line)
		}
		g.byMID[f[0]] = len(g.msgs)
		g.msgs = append(g.msgs, goldMsg{mid: f[0], file: f[1], size: size, wire: wire})
		g.bytes += size
		g.wire += wire
	}
	if len(g.msgs) != g.spec.N {
		return fmt.Errorf("manifest %s: %d messages, want %d", path, len(g.msgs), g.spec.N)
	}
	return nil
}

// Word pools for text. Plain words and a few non-ASCII ones for 8-bit
// bodies; neither matters beyond looking like mail.
var (
	plainWords = strings.Fields(`the of and to in is you that it for on are as with they at be this have from
	or one had by word but not what all were we when your can said there use an each which she do how their if
	will up other about out many then them these so some her would make like him into time has look two more
	write go see number no way could people my than first water been call who its now find long down day did get
	come made may part meeting invoice report schedule project budget deadline review attached please thanks
	regards update server deploy release customer contract quarterly analysis summary draft agenda minutes
	follow-up proposal feedback approval shipment order tracking account password security notice newsletter
	weekend conference travel booking receipt payment reminder support ticket resolved pending backup
	migration database network latency throughput`)
	accentWords = strings.Fields(`café naïve Grüße Straße façade déjà-vu Ærø Привет спасибо 東京 メール 你好 邮件
	안녕하세요 Ελληνικά שלום مرحبا नमस्ते ¿Qué? €100 — … “quoted” ✅ 📎`)
	people  = strings.Fields("Ada Brook Chen Dara Elif Femi Goran Hana Ivo Jules Kasia Lior Mina Noor Otto Priya Quinn Rafa Sanne Tomas")
	surname = strings.Fields("Okafor Lindqvist Moreau Castillo Yilmaz Novak Haddad Sato Brennan Rossi Kowalczyk Duarte Varga Ng")
	domains = strings.Fields("example.com example.org example.net mail.example.com lists.example.org corp.example.net")
	agents  = []string{"Thunderbird/128.4.0", "Microsoft Outlook 16.0", "Apple Mail (2.3826)", "Roundcube Webmail/1.6.9", "Mutt/2.2.13", "K-9 Mail for Android"}
	attachs = []struct{ ctype, name string }{
		{"application/pdf", "statement-%d.pdf"}, {"image/jpeg", "IMG_%04d.jpg"}, {"application/zip", "export-%d.zip"},
		{"image/png", "chart-%d.png"}, {"application/vnd.openxmlformats-officedocument.wordprocessingml.document", "notes-%d.docx"},
	}
)

// edge cases a message may carry, with how often they occur.
type edges struct {
	dot       bool // lines starting with ".", a line ".", a last line "."
	utf8      bool // 8-bit UTF-8 body
	long      bool // one line of 1,000-20,000 octets
	crlf      bool // stored with CRLF line ends
	noFinalNL bool // last line without a line end
	from      bool // body lines starting with "From "
	empty     bool // no body
}

func (g *gen) pickEdges() edges {
	p := g.r.Float64
	return edges{dot: p() < 0.15, utf8: p() < 0.3, long: p() < 0.02, crlf: p() < 0.05,
		noFinalNL: p() < 0.01, from: p() < 0.03, empty: p() < 0.005}
}

type gen struct {
	r     *rand.Rand
	bytes *rand.ChaCha8 // attachment content
	spec  goldSpec
	base  time.Time
}

func generate(dir, manifest string, spec goldSpec) error {
	for _, sub := range []string{"new", "cur", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return err
		}
	}
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], spec.Seed)
	binary.LittleEndian.PutUint64(seed[8:], uint64(spec.Account))
	g := &gen{
		r:     rand.New(rand.NewPCG(spec.Seed, uint64(spec.Account)<<32|uint64(spec.N))),
		bytes: rand.NewChaCha8(seed),
		spec:  spec,
		base:  time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC),
	}
	mf, err := os.Create(manifest)
	if err != nil {
		return err
	}
	defer mf.Close()
	mw := bufio.NewWriter(mf)
	classes := g.classes()
	for i := range spec.N {
		var m goldMsg
		var err error
		if classes[i] == mixHuge && spec.Mix == mixHuge {
			m, err = g.writeHuge(dir, i, int64(spec.HugeMiB)<<20)
		} else {
			m, err = g.writeMessage(dir, i, classes[i])
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(mw, "%s\t%s\t%d\t%d\n", m.mid, m.file, m.size, m.wire)
	}
	if err := mw.Flush(); err != nil {
		return err
	}
	return mf.Close()
}

// classes decides every message's size class up front: "normal", "large"
// or mixHuge.
func (g *gen) classes() []string {
	c := make([]string, g.spec.N)
	huge := false
	for i := range c {
		switch {
		case g.spec.Mix == mixHuge:
			c[i] = mixHuge
		case g.spec.Mix == mixSmall:
			c[i] = mixSmall
		default:
			x := g.r.Float64()
			switch {
			case x < 0.004:
				c[i], huge = mixHuge, true
			case x < 0.104:
				c[i] = "large"
			default:
				c[i] = "normal"
			}
		}
	}
	if g.spec.Mix == mixReal && !huge && g.spec.N >= 100 {
		c[g.spec.N/2] = mixHuge
	}
	return c
}

func (g *gen) mid(i int) string {
	return fmt.Sprintf("pb.%d.%d.%d@peerbench.test", g.spec.Seed, g.spec.Account, i)
}

func (g *gen) fileName(i int, size, wire int64) string {
	t := g.base.Add(time.Duration(i) * 47 * time.Second)
	return fmt.Sprintf("%d.M%dP%d.peerbench,S=%d,W=%d", t.Unix(), i, g.spec.Account, size, wire)
}

func (g *gen) person() (name, addr string) {
	f, l := people[g.r.IntN(len(people))], surname[g.r.IntN(len(surname))]
	return f + " " + l, strings.ToLower(f+"."+l) + "@" + domains[g.r.IntN(len(domains))]
}

func (g *gen) b64(n int) string {
	b := make([]byte, n)
	g.bytes.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// header writes the header block (without the blank line) of message i.
func (g *gen) header(w *bytes.Buffer, i int, e edges, ctype []string) {
	t := g.base.Add(time.Duration(i) * 47 * time.Second)
	name, addr := g.person()
	dom := addr[strings.IndexByte(addr, '@')+1:]
	to := fmt.Sprintf("user%d@peerbench.test", g.spec.Account)
	fmt.Fprintf(w, "Return-Path: <%s>\n", addr)
	fmt.Fprintf(w, "Delivered-To: %s\n", to)
	hops := 2 + g.r.IntN(3)
	for h := range hops {
		fmt.Fprintf(w, "Received: from out%d.%s (out%d.%s [203.0.113.%d])\n\tby mx%d.peerbench.test (Postfix) with ESMTPS id %08X%04X\n\tfor <%s>; %s\n",
			h, dom, h, dom, 1+g.r.IntN(254), h, g.r.Uint32(), g.r.Uint32()&0xffff, to,
			t.Add(time.Duration(hops-h)*time.Second).Format(time.RFC1123Z))
	}
	sig := g.b64(256)
	var folded strings.Builder
	for len(sig) > 72 {
		folded.WriteString(sig[:72])
		folded.WriteString("\n\t ")
		sig = sig[72:]
	}
	folded.WriteString(sig)
	fmt.Fprintf(w, "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=%s; s=k%d;\n\tt=%d; h=from:to:subject:date:message-id:mime-version;\n\tbh=%s;\n\tb=%s\n",
		dom, 1+g.r.IntN(4), t.Unix(), g.b64(32), folded.String())
	if e.utf8 && g.r.IntN(4) == 0 {
		fmt.Fprintf(w, "From: \"%s %s\" <%s>\n", name, accentWords[g.r.IntN(len(accentWords))], addr)
	} else {
		fmt.Fprintf(w, "From: \"%s\" <%s>\n", name, addr)
	}
	fmt.Fprintf(w, "To: %s\n", to)
	if g.r.IntN(4) == 0 {
		_, a1 := g.person()
		_, a2 := g.person()
		fmt.Fprintf(w, "Cc: %s,\n\t%s\n", a1, a2)
	}
	subj := g.words(3+g.r.IntN(6), false)
	switch g.r.IntN(6) {
	case 0:
		subj = "Re: " + subj
	case 1:
		subj = "=?UTF-8?B?" + base64.StdEncoding.EncodeToString([]byte(subj+" "+accentWords[g.r.IntN(len(accentWords))])) + "?="
	}
	fmt.Fprintf(w, "Subject: %s\n", subj)
	fmt.Fprintf(w, "Date: %s\n", t.Format(time.RFC1123Z))
	fmt.Fprintf(w, "Message-ID: <%s>\n", g.mid(i))
	fmt.Fprintf(w, "MIME-Version: 1.0\n")
	for _, l := range ctype {
		w.WriteString(l)
		w.WriteByte('\n')
	}
	fmt.Fprintf(w, "User-Agent: %s\n", agents[g.r.IntN(len(agents))])
}

func (g *gen) words(n int, utf8 bool) string {
	ws := make([]string, n)
	for k := range ws {
		if utf8 && g.r.IntN(6) == 0 {
			ws[k] = accentWords[g.r.IntN(len(accentWords))]
		} else {
			ws[k] = plainWords[g.r.IntN(len(plainWords))]
		}
	}
	return strings.Join(ws, " ")
}

// text returns about n octets of paragraphs, lines of at most 76 octets.
func (g *gen) text(n int, utf8 bool) []string {
	var lines []string
	size := 0
	for size < n {
		for range 2 + g.r.IntN(6) {
			l := g.words(6+g.r.IntN(8), utf8)
			if g.r.IntN(8) == 0 {
				l = "> " + l
			}
			lines = append(lines, l)
			size += len(l) + 1
		}
		lines = append(lines, "")
		size++
	}
	return lines
}

// decorate mixes the edge-case lines of e into lines.
func (g *gen) decorate(lines []string, e edges) []string {
	at := func() int { return g.r.IntN(len(lines) + 1) }
	ins := func(l string) { k := at(); lines = append(lines[:k], append([]string{l}, lines[k:]...)...) }
	if e.dot {
		for _, l := range []string{".", "..", ".hidden", "...", ". dot and space", "..double"} {
			if g.r.IntN(2) == 0 {
				ins(l)
			}
		}
		ins(".")
		if g.r.IntN(2) == 0 {
			lines = append(lines, ".")
		}
	}
	if e.from {
		ins("From the desk of the director: please read below.")
		ins("From nobody Mon Jan  5 08:00:00 2026")
	}
	if e.long {
		n := 1000 + g.r.IntN(19000)
		var b strings.Builder
		for b.Len() < n {
			b.WriteString(g.words(12, e.utf8))
			b.WriteByte(' ')
		}
		ins(b.String()[:n])
	}
	return lines
}

func (g *gen) textPart(n int, e edges) (charset, cte string, body []byte) {
	lines := g.decorate(g.text(n, e.utf8), e)
	if g.r.IntN(2) == 0 {
		lines = append(lines, "-- ", "sent by peerbench")
	}
	charset, cte = "us-ascii", "7bit"
	if e.utf8 {
		charset, cte = "utf-8", "8bit"
	}
	if e.long {
		cte = "8bit"
	}
	return charset, cte, []byte(strings.Join(lines, "\n") + "\n")
}

func (g *gen) htmlPart(n int, e edges) []byte {
	var raw bytes.Buffer
	raw.WriteString("<html><head><meta charset=\"utf-8\"></head><body>\n")
	for _, l := range g.text(n, e.utf8) {
		if l == "" {
			raw.WriteString("<br>\n")
			continue
		}
		fmt.Fprintf(&raw, "<p style=\"margin:0\">%s</p>\n", strings.ReplaceAll(l, ">", "&gt;"))
	}
	raw.WriteString("</body></html>\n")
	var qp bytes.Buffer
	w := quotedprintable.NewWriter(&qp)
	w.Write(raw.Bytes())
	w.Close()
	return bytes.ReplaceAll(qp.Bytes(), []byte("\r\n"), []byte("\n"))
}

// attachment returns base64 lines (76 columns) of about n octets.
func (g *gen) attachment(n int) []byte {
	raw := make([]byte, max(64, n*57/77))
	g.bytes.Read(raw)
	enc := base64.StdEncoding.EncodeToString(raw)
	var b bytes.Buffer
	for len(enc) > 76 {
		b.WriteString(enc[:76])
		b.WriteByte('\n')
		enc = enc[76:]
	}
	b.WriteString(enc)
	b.WriteByte('\n')
	return b.Bytes()
}

func (g *gen) writeMessage(dir string, i int, class string) (goldMsg, error) {
	e := g.pickEdges()
	var target int
	switch class {
	case "normal":
		// log-normal around 7 KB: the bulk of real mail
		target = int(math.Exp(math.Log(7000) + 0.8*g.r.NormFloat64()))
		target = min(max(target, 900), 150_000)
	case "large":
		target = 50_000 + g.r.IntN(150_000)
	case mixHuge:
		target = 1_000_000 + g.r.IntN(4_000_000)
	case mixSmall:
		target = 2500 + g.r.IntN(2500)
		e.long, e.crlf = false, false
	}
	const headerEstimate = 1700
	boundary := fmt.Sprintf("=_pb_%d_%08x", i, g.r.Uint32())
	var ctype []string
	var body bytes.Buffer
	switch {
	case e.empty:
		ctype = []string{"Content-Type: text/plain; charset=us-ascii"}
	case class == mixSmall || (class == "normal" && g.r.IntN(100) < 55):
		cs, cte, txt := g.textPart(max(200, target-headerEstimate), e)
		ctype = []string{"Content-Type: text/plain; charset=" + cs + "; format=flowed", "Content-Transfer-Encoding: " + cte}
		body.Write(txt)
	case class == "normal":
		avail := max(400, target-headerEstimate-400)
		cs, cte, txt := g.textPart(avail*2/5, e)
		html := g.htmlPart(avail*2/5, e)
		ctype = []string{`Content-Type: multipart/alternative; boundary="` + boundary + `"`}
		fmt.Fprintf(&body, "This is a multi-part message in MIME format.\n\n--%s\nContent-Type: text/plain; charset=%s\nContent-Transfer-Encoding: %s\n\n%s\n--%s\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n%s\n--%s--\n",
			boundary, cs, cte, txt, boundary, html, boundary)
	default:
		textN := 500 + g.r.IntN(5000)
		cs, cte, txt := g.textPart(textN, e)
		ctype = []string{`Content-Type: multipart/mixed; boundary="` + boundary + `"`}
		fmt.Fprintf(&body, "This is a multi-part message in MIME format.\n\n--%s\nContent-Type: text/plain; charset=%s\nContent-Transfer-Encoding: %s\n\n%s",
			boundary, cs, cte, txt)
		parts := 1
		if class == "large" {
			parts = 1 + g.r.IntN(3)
		}
		each := max(1000, target-headerEstimate-textN-600) / parts
		for range parts {
			a := attachs[g.r.IntN(len(attachs))]
			name := fmt.Sprintf(a.name, g.r.IntN(10000))
			fmt.Fprintf(&body, "\n--%s\nContent-Type: %s; name=\"%s\"\nContent-Disposition: attachment; filename=\"%s\"\nContent-Transfer-Encoding: base64\n\n",
				boundary, a.ctype, name, name)
			body.Write(g.attachment(each))
		}
		fmt.Fprintf(&body, "\n--%s--\n", boundary)
	}
	var msg bytes.Buffer
	g.header(&msg, i, e, ctype)
	msg.WriteByte('\n')
	msg.Write(body.Bytes())
	data := msg.Bytes()
	if e.noFinalNL {
		data = bytes.TrimRight(data, "\n")
	}
	if e.crlf {
		data = bytes.ReplaceAll(data, []byte("\n"), []byte("\r\n"))
	}
	m := goldMsg{mid: g.mid(i), size: int64(len(data)), wire: wireSize(data)}
	m.file = g.fileName(i, m.size, m.wire)
	if err := os.WriteFile(filepath.Join(dir, "new", m.file), data, 0o600); err != nil {
		return m, err
	}
	return m, nil
}

// wireSize is the size of data with CRLF line ends (Dovecot's W= field).
func wireSize(data []byte) int64 {
	return int64(len(data) + bytes.Count(data, []byte("\n")) - bytes.Count(data, []byte("\r\n")))
}

// writeHuge streams one message of about size octets (a base64
// attachment) to disk, never holding more than a chunk in memory.
func (g *gen) writeHuge(dir string, i int, size int64) (goldMsg, error) {
	m := goldMsg{mid: g.mid(i)}
	tmp := filepath.Join(dir, "tmp", "huge")
	f, err := os.Create(tmp)
	if err != nil {
		return m, err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	boundary := fmt.Sprintf("=_pb_%d_%08x", i, g.r.Uint32())
	var head bytes.Buffer
	g.header(&head, i, edges{}, []string{`Content-Type: multipart/mixed; boundary="` + boundary + `"`})
	_, _, txt := g.textPart(2000, edges{})
	fmt.Fprintf(&head, "\nThis is a multi-part message in MIME format.\n\n--%s\nContent-Type: text/plain; charset=us-ascii\n\n%s\n--%s\nContent-Type: video/mp4; name=\"recording.mp4\"\nContent-Disposition: attachment; filename=\"recording.mp4\"\nContent-Transfer-Encoding: base64\n\n",
		boundary, txt, boundary)
	tail := fmt.Sprintf("\n--%s--\n", boundary)
	written := int64(head.Len())
	lfs := int64(bytes.Count(head.Bytes(), []byte("\n")))
	w.Write(head.Bytes())
	const rawLine = 57 // 76 base64 columns
	raw := make([]byte, rawLine*1024)
	enc := make([]byte, base64.StdEncoding.EncodedLen(rawLine))
	for written+int64(len(tail)) < size {
		g.bytes.Read(raw)
		for k := 0; k < len(raw) && written+int64(len(tail)) < size; k += rawLine {
			base64.StdEncoding.Encode(enc, raw[k:k+rawLine])
			w.Write(enc)
			w.WriteByte('\n')
			written += int64(len(enc)) + 1
			lfs++
		}
	}
	w.WriteString(tail)
	written += int64(len(tail))
	lfs += 2
	if err := w.Flush(); err != nil {
		return m, err
	}
	if err := f.Close(); err != nil {
		return m, err
	}
	m.size, m.wire = written, written+lfs
	m.file = g.fileName(i, m.size, m.wire)
	return m, os.Rename(tmp, filepath.Join(dir, "new", m.file))
}
