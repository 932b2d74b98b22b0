package pop3test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
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

// NewCert makes a self-signed ECDSA P-256 certificate. The certificate is
// its own issuer and marked as a CA, so a pool holding it verifies it.
func NewCert(o CertOptions) (tls.Certificate, *x509.Certificate, error) {
	hosts := o.Hosts
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1", "::1", "localhost"}
	}
	now := time.Now()
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-24 * time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.Add(24 * time.Hour)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("generating key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("generating serial number: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hosts[0], Organization: []string{"pop3test"}},
		NotBefore:             o.NotBefore,
		NotAfter:              o.NotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("creating certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("parsing certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, cert, nil
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
func CertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// Fingerprint is the SHA-256 of the certificate's DER in lower-case hex,
// the form a client pins.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
