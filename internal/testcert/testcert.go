// Package testcert makes throwaway self-signed TLS certificates for tests,
// the fake POP3 server and `popsync demo`: one generator, so that every
// test server's certificate is made, and can be trusted or pinned, the
// same way.
//
// It is not for certificates anyone should trust outside a test: the key is
// made in memory, each certificate is its own CA, and nothing is checked
// about the names it is given.
package testcert

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

// Options describe a certificate.
type Options struct {
	// Hosts are the DNS names and IP addresses the certificate is for;
	// empty means 127.0.0.1, ::1 and localhost. The first is also its
	// common name.
	Hosts []string
	// NotBefore and NotAfter bound its validity; zero means a day before
	// and a day after now.
	NotBefore, NotAfter time.Time
	// Organization names its maker in the subject; "" means "popsync test".
	Organization string
}

// Cert is a self-signed ECDSA P-256 certificate and its key. It is its own
// issuer and marked as a CA, so a pool holding it verifies it.
type Cert struct {
	TLS  tls.Certificate   // for a tls.Config; Leaf is set
	X509 *x509.Certificate // the parsed certificate
}

// New makes a certificate.
func New(o Options) (Cert, error) {
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
	if o.Organization == "" {
		o.Organization = "popsync test"
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Cert{}, fmt.Errorf("generating key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return Cert{}, fmt.Errorf("generating serial number: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hosts[0], Organization: []string{o.Organization}},
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
		return Cert{}, fmt.Errorf("creating certificate: %w", err)
	}
	x, err := x509.ParseCertificate(der)
	if err != nil {
		return Cert{}, fmt.Errorf("parsing certificate: %w", err)
	}
	return Cert{TLS: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: x}, X509: x}, nil
}

// CertPEM is the certificate in PEM, for a CA file.
func (c Cert) CertPEM() []byte { return PEM(c.X509) }

// PEM encodes a certificate in PEM, for a CA file.
func PEM(x *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: x.Raw})
}

// KeyPEM is the private key in PKCS #8 PEM, for a server's key file.
func (c Cert) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(c.TLS.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("encoding key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Fingerprint is the SHA-256 of the certificate's DER in lower-case hex,
// the form a client pins.
func (c Cert) Fingerprint() string { return Fingerprint(c.X509) }

// Fingerprint is the SHA-256 of x's DER in lower-case hex.
func Fingerprint(x *x509.Certificate) string {
	sum := sha256.Sum256(x.Raw)
	return hex.EncodeToString(sum[:])
}

// Pool is a certificate pool that trusts only c.
func (c Cert) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.X509)
	return p
}
