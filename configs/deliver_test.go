package configs

import "testing"

// TestConfirmingDefaults: SMTP, LMTP and MDA entries are accepted, with
// on_reject and smtp_tls filled in.
func TestConfirmingDefaults(t *testing.T) {
	const head = "[[account]]\nname = \"home\"\nhost = \"pop.example.net\"\nuser = \"me\"\npassword_command = [\"pw\"]\n"
	c := mustParse(t, head+`
[[account.deliver]]
smtp = "127.0.0.1:25"
rcpt = ["me@localhost"]

[[account.deliver]]
smtp = "mail.example.net:587"
rcpt = ["me@example.net"]
smtp_user = "me"
smtp_password = "p"

[[account.deliver]]
smtp = "localhost:2525"
rcpt = ["me@localhost"]
smtp_tls = "implicit"
on_reject = "keep"

[[account.deliver]]
lmtp = "unix:/run/dovecot/lmtp"
rcpt = ["me"]
on_reject = "delete"

[[account.deliver]]
mda = ["/usr/bin/procmail", "-d", "me"]
quarantine = "/var/quarantine"

[[account.deliver]]
maildir = "/m"
`)
	ds := c.Accounts[0].Deliver
	want := []struct{ kind, tls, onReject string }{
		{KindSMTP, TLSNone, OnRejectQuarantine},
		{KindSMTP, TLSStartTLS, OnRejectQuarantine},
		{KindSMTP, TLSImplicit, OnRejectKeep},
		{KindLMTP, "", OnRejectDelete},
		{KindMDA, "", OnRejectQuarantine},
		{KindMaildir, "", ""},
	}
	if len(ds) != len(want) {
		t.Fatalf("%d deliver entries", len(ds))
	}
	for i, w := range want {
		if ds[i].Kind() != w.kind || ds[i].SMTPTLS != w.tls || ds[i].OnReject != w.onReject {
			t.Errorf("entry %d: kind %s smtp_tls %q on_reject %q; want %s %q %q", i, ds[i].Kind(), ds[i].SMTPTLS, ds[i].OnReject, w.kind, w.tls, w.onReject)
		}
	}
	if ds[3].LMTP != "unix:/run/dovecot/lmtp" || ds[4].Quarantine != "/var/quarantine" {
		t.Errorf("lmtp %q quarantine %q", ds[3].LMTP, ds[4].Quarantine)
	}
}

func TestIsLoopbackHostPort(t *testing.T) {
	for hp, want := range map[string]bool{
		"127.0.0.1:25": true, "127.1.2.3:25": true, "[::1]:25": true, "localhost:25": true, "LocalHost:25": true,
		"mail.example.net:25": false, "10.0.0.1:25": false, "[::2]:25": false, "nonsense": false,
	} {
		if got := isLoopbackHostPort(hp); got != want {
			t.Errorf("isLoopbackHostPort(%q) = %v, want %v", hp, got, want)
		}
	}
}
