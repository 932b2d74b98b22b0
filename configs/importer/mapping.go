package importer

import "strings"

// Equivalent is one row of the table of equivalents in the README
// ("Migrating from fetchmail, getmail and mpop"): how each tool spells a
// setting and what the converter makes of it. The README's table is
// Table(), checked by a test, so the two cannot disagree.
type Equivalent struct {
	Fetchmail, Getmail, Mpop, Popsync string // table cells, Markdown
	// The old keywords the row names, which the converters read (checked
	// against each parser's keyword list by a test).
	FetchmailKeys, GetmailKeys, MpopKeys []string
}

// Equivalents is what ConvertFetchmail, ConvertGetmail and ConvertMpop
// do, row by row.
var Equivalents = []Equivalent{
	{"`poll NAME` (`via HOST`)", "`server = HOST`", "`host HOST`", "`host = \"HOST\"`",
		[]string{"via"}, []string{"server"}, []string{"host"}},
	{"`service N` / `port N`", "`port = N`", "`port N`", "`port = N`",
		[]string{"service"}, []string{"port"}, []string{"port"}},
	{"`protocol pop3`", "`type = SimplePOP3Retriever`", "(always POP3)", "(always POP3); IMAP accounts are not imported",
		[]string{"protocol"}, []string{"type"}, nil},
	{"`ssl`", "`type = SimplePOP3SSLRetriever`", "`tls on` + `tls_starttls off`", "`tls = \"implicit\"`",
		[]string{"ssl"}, []string{"type"}, []string{"tls", "tls_starttls"}},
	{"`sslproto tls1.2+` (no `ssl`); neither: STLS if offered", "(none)", "`tls on`", "`tls = \"starttls\"`",
		[]string{"sslproto"}, nil, []string{"tls"}},
	{"`sslproto ''`", "`type = SimplePOP3Retriever`", "`tls off` (default)", "`tls = \"none\"`",
		[]string{"sslproto"}, []string{"type"}, []string{"tls"}},
	{"`sslcertfile FILE`", "`ca_certs = FILE`", "`tls_trust_file FILE`", "`tls_ca_file = \"FILE\"`",
		[]string{"sslcertfile"}, []string{"ca_certs"}, []string{"tls_trust_file"}},
	{"`sslfingerprint` (MD5: not converted)", "`ssl_fingerprints = (SHA256,)`", "`tls_fingerprint` (SHA-256)", "`tls_fingerprint`",
		[]string{"sslfingerprint"}, []string{"ssl_fingerprints"}, []string{"tls_fingerprint"}},
	{"`sslcommonname NAME`", "`ssl_cert_hostname = NAME`", "`tls_host_override NAME`", "`tls_server_name = \"NAME\"`",
		[]string{"sslcommonname"}, []string{"ssl_cert_hostname"}, []string{"tls_host_override"}},
	{"`user NAME`", "`username = NAME`", "`user NAME`", "`user = \"NAME\"`",
		nil, []string{"username"}, []string{"user"}},
	{"`password SECRET`", "`password = SECRET`", "`password SECRET`", "`password_file = \"NAME.password\"` (written 0600)",
		[]string{"password"}, []string{"password"}, []string{"password"}},
	{"", "`password_command = (\"cmd\", \"arg\")`", "`passwordeval CMD`", "`password_command = [\"cmd\", \"arg\"]` / `[\"sh\", \"-c\", \"CMD\"]`",
		nil, []string{"password_command"}, []string{"passwordeval"}},
	{"`auth cram-md5` / `protocol apop`", "`use_apop = true`", "`auth cram-md5` / `auth apop`", "`auth = \"cram-md5\"` / `\"apop\"`",
		[]string{"auth", "protocol"}, []string{"use_apop"}, []string{"auth"}},
	{"`keep`", "`delete = false` (default)", "`keep on`", "`keep = true`",
		[]string{"keep"}, []string{"delete"}, []string{"keep"}},
	{"`no keep` (default)", "`delete = true`", "`keep off` (default)", "`keep = false`",
		[]string{"keep"}, []string{"delete"}, []string{"keep"}},
	{"", "`delete_after = N` (days)", "", "`delete_after = \"Nd\"`",
		nil, []string{"delete_after"}, nil},
	{"`limit N`", "`max_message_size = N`", "`skipsize N`", "`max_size = \"N\"`",
		[]string{"limit"}, []string{"max_message_size"}, []string{"skipsize"}},
	{"`fetchlimit N`", "`max_messages_per_session = N`", "", "`fetch_limit = N`",
		[]string{"fetchlimit"}, []string{"max_messages_per_session"}, nil},
	{"`timeout N`", "`timeout = N`", "`timeout N`", "`timeout = \"Ns\"`",
		[]string{"timeout"}, []string{"timeout"}, []string{"timeout"}},
	{"", "`received = false`", "`received_header off`", "`add_received = false`",
		nil, []string{"received"}, []string{"received_header"}},
	{"`.fetchids` / `set idfile`", "`oldmail-SERVER-PORT-USER`", "`uidls_file` (`~/.mpop_uidls/%U_at_%H`)", "imported into `[state] path`",
		nil, nil, []string{"uidls_file"}},
	{"`mda \"CMD %T %F\"`", "`type = MDA_external`", "`delivery mda CMD`", "`mda = [\"sh\", \"-c\", \"CMD\"]` (`%F`: `$SENDER`)",
		[]string{"mda"}, []string{"type"}, []string{"delivery"}},
	{"`smtphost HOST/PORT` (default `localhost`)", "", "", "`smtp = \"HOST:PORT\"`, `rcpt = [\"LOCAL@localhost\"]`",
		[]string{"smtphost", "smtpaddress", "smtpname"}, nil, nil},
	{"`lmtp` + `smtphost /path` or `HOST/PORT`", "`type = MDA_lmtp` + `override`", "", "`lmtp = \"unix:/path\"`",
		[]string{"lmtp", "smtphost"}, []string{"type"}, nil},
	{"(an MDA that writes a Maildir)", "`type = Maildir`", "`delivery maildir DIR`", "`maildir = \"DIR\"`",
		nil, []string{"type"}, []string{"delivery"}},
	{"", "`type = MultiDestination`", "", "several `[[account.deliver]]`",
		nil, []string{"type"}, nil},
	{"`set daemon N`", "cron", "cron", "`popsync run` with `schedule = \"@every Ns\"`",
		nil, nil, nil},
}

// Table renders Equivalents as the README's Markdown table.
func Table() string {
	var b strings.Builder
	b.WriteString("| fetchmail (`.fetchmailrc`) | getmail (`getmailrc`) | mpop (`.mpoprc`) | popsync |\n")
	b.WriteString("| --- | --- | --- | --- |\n")
	for _, e := range Equivalents {
		b.WriteString("| " + e.Fetchmail + " | " + e.Getmail + " | " + e.Mpop + " | " + e.Popsync + " |\n")
	}
	return b.String()
}
