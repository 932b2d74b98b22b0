package deliver

import "crypto/tls"

// clientTLS is the TLS configuration a target dials with: a copy of base
// (TLS 1.2 at least when base is nil), verifying host unless base names
// another server.
func clientTLS(base *tls.Config, host string) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if base != nil {
		cfg = base.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	return cfg
}
