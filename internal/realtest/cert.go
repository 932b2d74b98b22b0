package realtest

import (
	"fmt"
	"time"

	"popsync/internal/testcert"
)

// selfSigned is a server certificate that is its own CA.
type selfSigned struct {
	certPEM, keyPEM []byte
	sha256          string // hex SHA-256 of the DER certificate
}

// newSelfSigned makes a certificate for localhost, 127.0.0.1 and ::1
// (testcert.New) that can be the only entry of a client's root pool.
func newSelfSigned() (*selfSigned, error) {
	c, err := testcert.New(testcert.Options{
		Hosts: []string{"localhost", "127.0.0.1", "::1"},
		// Valid from before 2000-01-01, the start of testing/synctest's
		// fake clock, so a client under synctest still accepts it.
		NotBefore:    time.Date(1999, 12, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		Organization: "popsync realtest",
	})
	if err != nil {
		return nil, fmt.Errorf("making the test certificate: %w", err)
	}
	key, err := c.KeyPEM()
	if err != nil {
		return nil, err
	}
	return &selfSigned{certPEM: c.CertPEM(), keyPEM: key, sha256: c.Fingerprint()}, nil
}
