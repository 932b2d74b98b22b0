package pop3test

import (
	"crypto/tls"
	"crypto/x509"
	"time"

	"popsync/internal/testcert"
)

// CertOptions describes a throwaway self-signed certificate.
type CertOptions struct {
	// Hosts are the DNS names and IP addresses the certificate is for;
	// empty means 127.0.0.1, ::1 and localhost.
	Hosts []string
	// NotBefore and NotAfter bound its validity; zero means a day before
	// and a day after now.
	NotBefore, NotAfter time.Time
}

// NewCert makes a self-signed ECDSA P-256 certificate (testcert.New). The
// certificate is its own issuer and marked as a CA, so a pool holding it
// verifies it.
func NewCert(o CertOptions) (tls.Certificate, *x509.Certificate, error) {
	c, err := testcert.New(testcert.Options{Hosts: o.Hosts, NotBefore: o.NotBefore, NotAfter: o.NotAfter, Organization: "pop3test"})
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return c.TLS, c.X509, nil
}

// SelfSigned makes a certificate for hosts (default 127.0.0.1, ::1 and
// localhost), valid from a day ago to a day from now.
func SelfSigned(hosts ...string) (tls.Certificate, *x509.Certificate, error) {
	return NewCert(CertOptions{Hosts: hosts})
}

// ExpiredCert makes a certificate for hosts (default as SelfSigned) that
// expired a day ago.
func ExpiredCert(hosts ...string) (tls.Certificate, *x509.Certificate, error) {
	now := time.Now()
	return NewCert(CertOptions{Hosts: hosts, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
}

// WrongHostCert makes an otherwise valid certificate for a name no test
// dials (wrong-host.invalid), to provoke a host name mismatch.
func WrongHostCert() (tls.Certificate, *x509.Certificate, error) {
	return NewCert(CertOptions{Hosts: []string{"wrong-host.invalid"}})
}

// CertPEM encodes a certificate as PEM, for a CA file.
func CertPEM(c *x509.Certificate) []byte { return testcert.PEM(c) }

// Fingerprint is the SHA-256 of the certificate's DER in lower-case hex,
// the form a client pins.
func Fingerprint(c *x509.Certificate) string { return testcert.Fingerprint(c) }
