package pop3

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"
)

// Security selects how the connection is protected.
type Security int

const (
	// SecurityImplicit runs TLS from the first byte (port 995, RFC 8314).
	SecurityImplicit Security = iota
	// SecuritySTARTTLS connects in plaintext and requires STLS (RFC 2595)
	// before anything else; a server that does not offer it is an error.
	SecuritySTARTTLS
	// SecurityNone is plaintext. It is never a fallback: only a caller that
	// names it gets it, and only then may Auth send secrets in the clear.
	SecurityNone
)

func (s Security) String() string {
	switch s {
	case SecurityImplicit:
		return "implicit"
	case SecuritySTARTTLS:
		return "starttls"
	case SecurityNone:
		return "none"
	}
	return fmt.Sprintf("Security(%d)", int(s))
}

// Trace levels, below slog.LevelDebug.
const (
	// LevelTrace carries every protocol line, credentials redacted.
	LevelTrace = slog.Level(-8)
	// LevelTraceAuth carries the unredacted authentication lines when
	// Options.TraceAuth is set.
	LevelTraceAuth = slog.Level(-12)
)

// Limits and defaults.
const (
	// DefaultTimeout is the per read and per write deadline when
	// Options.Timeout is zero.
	DefaultTimeout = 60 * time.Second
	// DefaultMaxListEntries caps LIST and UIDL listings when
	// Options.MaxListEntries is zero.
	DefaultMaxListEntries = 1_000_000
	// MaxLineLength caps every line of a status reply, a CAPA, LIST or
	// UIDL listing and an AUTH challenge, CRLF included. RFC 2449 §4 limits
	// replies to 512 octets; the rest is slack for servers that exceed it
	// a little (long IMPLEMENTATION strings, chatty greetings). Message
	// body lines are not limited: they are streamed.
	MaxLineLength = 1024
	// PipelineWindow is the number of commands kept in flight when the
	// server advertises PIPELINING.
	PipelineWindow = 64
	// MaxDrain caps what the client reads and throws away of a message
	// body the caller left unread (and, in RetrEach and TopEach, of the
	// replies in flight when fn stopped the loop). A longer rest poisons
	// the client instead: a server can make a body endless, and reading
	// one at full speed never times out.
	MaxDrain = 1 << 20

	// maxCommandLength is the RFC 2449 §4 limit on a command line, CRLF
	// included; RFC 5034 §4 applies it to AUTH with an initial response.
	maxCommandLength = 255
	// maxCapaLines caps the number of capabilities in a CAPA listing.
	maxCapaLines = 256
	// maxSASLRounds caps the challenges of one AUTH exchange.
	maxSASLRounds  = 8
	readBufferSize = 64 << 10
)

// Options configure a Client. The zero value is implicit TLS verified
// against the system roots with the default limits.
type Options struct {
	Security Security
	// ServerName is the name the certificate is verified against and sent
	// as SNI. Dial defaults it to the host part of addr; NewClient needs it
	// (or TLSConfig.ServerName) unless the certificate is pinned.
	ServerName string
	// CAFile is a PEM file of CA certificates trusted instead of the
	// system roots.
	CAFile string
	// Fingerprint pins the server's leaf certificate by the SHA-256 of its
	// DER encoding, in hex; colons, spaces and case are ignored. A pin
	// replaces chain and host name verification.
	Fingerprint string
	// TLSConfig is an optional base configuration; it is cloned, never
	// modified. The options above override it, and TLS 1.2 is the minimum
	// whatever it says.
	TLSConfig *tls.Config
	// Timeout bounds each write call on the connection, and the time the
	// client waits for the server to send MinProgress octets; every
	// command sent starts a new wait. A slow but live server is fine; a
	// silent one fails after Timeout, and so does one that trickles (a
	// few octets per Timeout). Zero means DefaultTimeout.
	Timeout time.Duration
	// Logger receives the protocol trace at LevelTrace; nil logs nothing.
	Logger *slog.Logger
	// TraceAuth logs authentication lines unredacted at LevelTraceAuth.
	TraceAuth bool
	// MaxListEntries caps the entries of a LIST or UIDL listing; zero
	// means DefaultMaxListEntries.
	MaxListEntries int
}

func (o Options) withDefaults() (Options, error) {
	switch o.Security {
	case SecurityImplicit, SecuritySTARTTLS, SecurityNone:
	default:
		return o, fmt.Errorf("%w: unknown security %v", ErrBadOption, o.Security)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxListEntries <= 0 {
		o.MaxListEntries = DefaultMaxListEntries
	}
	return o, nil
}

// tlsConfig builds the client TLS configuration. fallbackHost is used as
// server name when neither ServerName nor TLSConfig.ServerName is set.
func (o Options) tlsConfig(fallbackHost string) (*tls.Config, error) {
	cfg := &tls.Config{}
	if o.TLSConfig != nil {
		cfg = o.TLSConfig.Clone()
	}
	if cfg.MinVersion < tls.VersionTLS12 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if o.ServerName != "" {
		cfg.ServerName = o.ServerName
	}
	if cfg.ServerName == "" {
		cfg.ServerName = fallbackHost
	}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: reading CA file: %w", ErrBadOption, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: no PEM certificate in CA file %s", ErrBadOption, o.CAFile)
		}
		cfg.RootCAs = pool
	}
	if o.Fingerprint != "" {
		want, err := ParseFingerprint(o.Fingerprint)
		if err != nil {
			return nil, err
		}
		// The pin replaces chain verification: accept if and only if the
		// leaf's DER hash matches. VerifyConnection runs even with
		// InsecureSkipVerify.
		cfg.InsecureSkipVerify = true
		base := cfg.VerifyConnection
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("%w: no certificate presented", ErrFingerprintMismatch)
			}
			got := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if subtle.ConstantTimeCompare(got[:], want) != 1 {
				return fmt.Errorf("%w: server presented SHA-256 %s", ErrFingerprintMismatch, FormatFingerprint(got[:]))
			}
			if base != nil {
				return base(cs)
			}
			return nil
		}
	} else if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		return nil, fmt.Errorf("%w: no server name to verify the certificate against (set ServerName)", ErrBadOption)
	}
	return cfg, nil
}

// ClientTLSConfig is the TLS configuration the client would use: the
// options' server name (else fallbackHost), CA file and fingerprint pin,
// TLS 1.2 at least. Other clients that verify a server the way this one
// does (the IMAP delivery target) use it too.
func (o Options) ClientTLSConfig(fallbackHost string) (*tls.Config, error) {
	return o.tlsConfig(fallbackHost)
}

// ParseFingerprint decodes a SHA-256 fingerprint written in hex, with or
// without colons or spaces, in any case, optionally prefixed "sha256:".
func ParseFingerprint(s string) ([]byte, error) {
	t := strings.TrimSpace(s)
	if len(t) > 7 && strings.EqualFold(t[:7], "sha256:") {
		t = t[7:]
	}
	t = strings.NewReplacer(":", "", " ", "").Replace(t)
	b, err := hex.DecodeString(t)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("%w: fingerprint is not a hex SHA-256 (64 hex digits)", ErrBadOption)
	}
	return b, nil
}

// FormatFingerprint writes a fingerprint as colon separated upper case hex,
// the form certificate tools print and ParseFingerprint reads.
func FormatFingerprint(sum []byte) string {
	const digits = "0123456789ABCDEF"
	b := make([]byte, 0, len(sum)*3)
	for i, c := range sum {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, digits[c>>4], digits[c&0xf])
	}
	return string(b)
}

// certError turns a failed verification into an error that names the
// problem and the presented certificate's fingerprint, so the user can pin
// it. Other handshake errors pass through.
func certError(err error, serverName string) error {
	var cve *tls.CertificateVerificationError
	if !errors.As(err, &cve) || len(cve.UnverifiedCertificates) == 0 {
		return err
	}
	sum := sha256.Sum256(cve.UnverifiedCertificates[0].Raw)
	fp := FormatFingerprint(sum[:])
	var (
		unknown  x509.UnknownAuthorityError
		invalid  x509.CertificateInvalidError
		hostname x509.HostnameError
		reason   string
	)
	switch {
	case errors.As(cve.Err, &unknown):
		reason = "signed by an unknown authority"
	case errors.As(cve.Err, &invalid) && invalid.Reason == x509.Expired:
		reason = "expired or not yet valid"
	case errors.As(cve.Err, &hostname):
		reason = fmt.Sprintf("not valid for host %q", serverName)
	default:
		reason = "invalid"
	}
	return fmt.Errorf("%w: certificate %s (%w); if you trust it, pin its SHA-256 fingerprint %s",
		ErrCertificate, reason, cve.Err, fp)
}

// hostOf returns the host part of a connection's remote address, for use
// as a TLS server name, or "".
func hostOf(conn net.Conn) string {
	if conn.RemoteAddr() == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(conn.RemoteAddr().String())
	if err != nil {
		return ""
	}
	return host
}
