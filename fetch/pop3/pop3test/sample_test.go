package pop3test

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func validUID(uid string) bool {
	if len(uid) < 1 || len(uid) > 70 { // RFC 1939 §7
		return false
	}
	for i := 0; i < len(uid); i++ {
		if uid[i] < 0x21 || uid[i] > 0x7e {
			return false
		}
	}
	return true
}

// checkCRLF reports the first line ending that is not CRLF.
func checkCRLF(data []byte) error {
	for i, c := range data {
		if c == '\n' && (i == 0 || data[i-1] != '\r') {
			return fmt.Errorf("bare LF at %d", i)
		}
		if c == '\r' && (i+1 == len(data) || data[i+1] != '\n') {
			return fmt.Errorf("bare CR at %d", i)
		}
	}
	return nil
}

func TestSampleMessages(t *testing.T) {
	msgs := SampleMessages(30, 42)
	if len(msgs) != 30 {
		t.Fatalf("%d messages", len(msgs))
	}
	if !reflect.DeepEqual(msgs, SampleMessages(30, 42)) {
		t.Error("not deterministic")
	}
	if !reflect.DeepEqual(msgs[:9], SampleMessages(9, 42)) {
		t.Error("a shorter run is not a prefix")
	}
	other := SampleMessages(30, 43)
	seen := map[string]bool{}
	for _, m := range append(slices.Clone(msgs), other...) {
		if seen[m.UID] {
			t.Errorf("duplicate UID %q", m.UID)
		}
		seen[m.UID] = true
		if !validUID(m.UID) {
			t.Errorf("invalid UID %q", m.UID)
		}
	}
	if len(SampleMessages(0, 1)) != 0 || len(SampleMessages(-1, 1)) != 0 {
		t.Error("n <= 0 should give no messages")
	}

	var (
		dotLines, longLine, noFinalNL, attachment, utf8Body, alternative bool
		minSize, maxSize                                                 = 1 << 30, 0
	)
	for i, m := range msgs {
		data := m.Data
		minSize, maxSize = min(minSize, len(data)), max(maxSize, len(data))
		if err := checkCRLF(data); err != nil {
			t.Errorf("message %d: %v", i, err)
		}
		msg, err := mail.ReadMessage(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("message %d does not parse: %v", i, err)
		}
		for _, h := range []string{"Date", "From", "To", "Subject", "Message-Id", "Mime-Version", "Content-Type"} {
			if msg.Header.Get(h) == "" {
				t.Errorf("message %d has no %s", i, h)
			}
		}
		if _, err := msg.Header.Date(); err != nil {
			t.Errorf("message %d Date: %v", i, err)
		}
		if _, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject")); err != nil {
			t.Errorf("message %d Subject: %v", i, err)
		}
		if _, err := mail.ParseAddress(decodeHeader(t, msg.Header.Get("From"))); err != nil {
			t.Errorf("message %d From: %v", i, err)
		}
		body, _ := io.ReadAll(msg.Body)
		for _, l := range strings.Split(string(data), "\r\n") {
			dotLines = dotLines || strings.HasPrefix(l, ".")
			longLine = longLine || len(l) > 1000
		}
		if !bytes.HasSuffix(data, []byte("\r\n")) {
			noFinalNL = true
		}
		mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
		if err != nil {
			t.Errorf("message %d Content-Type: %v", i, err)
			continue
		}
		if params["charset"] == "utf-8" && !utf8.Valid(body) {
			t.Errorf("message %d: invalid UTF-8", i)
		}
		if mediaType == "text/plain" && msg.Header.Get("Content-Transfer-Encoding") == "8bit" && utf8.Valid(body) && !isASCII(body) {
			utf8Body = true
		}
		if strings.HasPrefix(mediaType, "multipart/") {
			if mediaType == "multipart/alternative" {
				alternative = true
			}
			mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
			for {
				p, err := mr.NextRawPart()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("message %d part: %v", i, err)
				}
				raw, err := io.ReadAll(p)
				if err != nil {
					t.Fatalf("message %d part: %v", i, err)
				}
				if p.Header.Get("Content-Transfer-Encoding") == "base64" {
					dec, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(raw), "\r\n", ""))
					if err != nil {
						t.Errorf("message %d attachment: %v", i, err)
					}
					if len(dec) < 2048 || len(dec) > 8192 {
						t.Errorf("message %d attachment of %d octets", i, len(dec))
					}
					attachment = true
				}
			}
		}
	}
	for name, ok := range map[string]bool{
		"lines starting with a dot": dotLines, "a line over 1000 octets": longLine,
		"no final newline": noFinalNL, "a base64 attachment": attachment,
		"an 8bit UTF-8 body": utf8Body, "multipart/alternative": alternative,
	} {
		if !ok {
			t.Errorf("no sample with %s", name)
		}
	}
	if minSize > 2000 || maxSize < 5000 {
		t.Errorf("sizes %d..%d do not vary enough", minSize, maxSize)
	}
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

func decodeHeader(t *testing.T, s string) string {
	t.Helper()
	d, err := new(mime.WordDecoder).DecodeHeader(s)
	if err != nil {
		t.Fatalf("decoding %q: %v", s, err)
	}
	return d
}

// Every sample survives RETR byte for byte (after unstuffing).
func TestSampleMessagesRoundTrip(t *testing.T) {
	msgs := SampleMessages(14, 7)
	_, addr := start(t, baseConfig(), msgs...)
	c, _ := connect(t, addr)
	c.login()
	for i, m := range msgs {
		c.ok(fmt.Sprintf("RETR %d", i+1))
		if got, want := c.body()+".\r\n", stuff(string(m.Data)); got != want {
			t.Errorf("message %d differs on the wire", i+1)
		}
	}
	c.ok("UIDL")
	for i, l := range c.lines() {
		if l != fmt.Sprintf("%d %s", i+1, msgs[i].UID) {
			t.Errorf("UIDL line %q", l)
		}
	}
}

func TestLargeMessage(t *testing.T) {
	for _, size := range []int{100, 10 << 10, 1 << 20} {
		m := LargeMessage(size, 3)
		if !bytes.Equal(m.Data, LargeMessage(size, 3).Data) {
			t.Errorf("%d: not deterministic", size)
		}
		if !validUID(m.UID) {
			t.Errorf("UID %q", m.UID)
		}
		if err := checkCRLF(m.Data); err != nil {
			t.Errorf("%d: %v", size, err)
		}
		if size >= 10<<10 {
			if d := len(m.Data) - size; d < -80 || d > 80 {
				t.Errorf("LargeMessage(%d) is %d octets", size, len(m.Data))
			}
		}
		msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
		if err != nil {
			t.Fatal(err)
		}
		_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
		if err != nil {
			t.Fatal(err)
		}
		mr := multipart.NewReader(msg.Body, params["boundary"])
		parts := 0
		for {
			p, err := mr.NextRawPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%d: %v", size, err)
			}
			raw, _ := io.ReadAll(p)
			if p.Header.Get("Content-Transfer-Encoding") == "base64" {
				if _, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(raw), "\r\n", "")); err != nil {
					t.Errorf("%d: attachment: %v", size, err)
				}
			}
			parts++
		}
		if parts != 2 {
			t.Errorf("%d: %d parts", size, parts)
		}
	}
}

func TestCertificates(t *testing.T) {
	verify := func(c *x509.Certificate, host string) error {
		pool := x509.NewCertPool()
		pool.AddCert(c)
		_, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: host})
		return err
	}

	cert, leaf, err := SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "::1", "localhost"} {
		if err := verify(leaf, host); err != nil {
			t.Errorf("SelfSigned for %s: %v", host, err)
		}
	}
	if cert.Leaf != leaf || len(cert.Certificate) != 1 || cert.PrivateKey == nil {
		t.Error("tls.Certificate incomplete")
	}
	if leaf.NotBefore.After(time.Now().Add(-23*time.Hour)) || leaf.NotAfter.Before(time.Now().Add(23*time.Hour)) {
		t.Errorf("validity %v..%v", leaf.NotBefore, leaf.NotAfter)
	}
	if _, other, _ := SelfSigned(); Fingerprint(other) == Fingerprint(leaf) {
		t.Error("two certificates with one fingerprint")
	}
	if fp := Fingerprint(leaf); len(fp) != 64 || strings.ToLower(fp) != fp {
		t.Errorf("fingerprint %q", fp)
	}
	if p := string(CertPEM(leaf)); !strings.HasPrefix(p, "-----BEGIN CERTIFICATE-----\n") {
		t.Errorf("PEM %q", p)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(CertPEM(leaf)) {
		t.Error("PEM does not load")
	}

	_, named, err := SelfSigned("mail.example.test")
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(named, "mail.example.test"); err != nil {
		t.Errorf("named: %v", err)
	}

	_, expired, err := ExpiredCert()
	if err != nil {
		t.Fatal(err)
	}
	var invalid x509.CertificateInvalidError
	if err := verify(expired, "127.0.0.1"); !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
		t.Errorf("expired certificate: %v", err)
	}

	_, wrong, err := WrongHostCert()
	if err != nil {
		t.Fatal(err)
	}
	var hostErr x509.HostnameError
	if err := verify(wrong, "127.0.0.1"); !errors.As(err, &hostErr) {
		t.Errorf("wrong host: %v", err)
	}
}
