package configs

import (
	"net"
	"strings"
)

// What the fetcher does with a message that an SMTP, LMTP or MDA target
// rejected permanently (key on_reject). It is never bounced to its sender.
const (
	OnRejectKeep       = "keep"       // leave it on the server and report it
	OnRejectQuarantine = "quarantine" // keep it, and also store it in the quarantine Maildir
	OnRejectDelete     = "delete"     // delete it from the server once reported
)

// DefaultOnReject is on_reject when not given.
const DefaultOnReject = OnRejectQuarantine

var onRejectModes = []string{OnRejectQuarantine, OnRejectKeep, OnRejectDelete}

// confirmingDefaults fills in the defaults of an SMTP, LMTP or MDA entry
// and checks the keys that depend on each other. It reports whether the
// entry is still good.
//
// smtp_tls defaults to "none" for an MTA on a loopback address (a local
// Postfix rarely has a certificate for 127.0.0.1) and to "starttls"
// otherwise; smtp_user over "none" is refused unless the MTA is on a
// loopback address, since the password would travel in clear text.
func (d *decoder) confirmingDefaults(de *Deliver, r *rawDeliver, kind string) bool {
	ok := true
	if kind != KindSMTP && kind != KindLMTP && kind != KindMDA {
		return ok
	}
	de.OnReject = or(r.onReject, DefaultOnReject)
	if r.quarantine.set && r.onReject.set && !r.onReject.bad && de.OnReject != OnRejectQuarantine {
		d.problem(r.quarantine.w, `needs on_reject = "quarantine", not %q`, de.OnReject)
		ok = false
	}
	if kind != KindSMTP || r.smtp.bad {
		return ok
	}
	loopback := isLoopbackHostPort(de.SMTP)
	if !r.smtpTLS.set {
		de.SMTPTLS = TLSStartTLS
		if loopback {
			de.SMTPTLS = TLSNone
		}
	}
	if r.smtpUser.set && de.SMTPTLS == TLSNone && !r.smtpTLS.bad && !loopback {
		d.problem(r.smtpUser.w, `needs smtp_tls = "starttls" or "implicit": the MTA %s is not on a loopback address and the password would be sent in clear text`, de.SMTP)
		ok = false
	}
	return ok
}

// isLoopbackHostPort reports whether "host:port" names this host:
// localhost or a loopback IP address.
func isLoopbackHostPort(hostPort string) bool {
	h, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return false
	}
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
