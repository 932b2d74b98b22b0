// Package pop3test is an in-memory POP3 server for tests and for
// `popsync demo`.
//
// It implements the server side of RFC 1939 (POP3), RFC 2449 (CAPA,
// response codes, PIPELINING), RFC 2595 (STLS), RFC 5034 (AUTH with PLAIN,
// LOGIN, CRAM-MD5, XOAUTH2 and OAUTHBEARER) and RFC 3206 (the AUTH and
// SYS response codes) over one in-memory maildrop for one user. It checks
// credentials for real (APOP and CRAM-MD5 digests included), keeps the
// RFC 1939 UPDATE-state rule that deletions happen only when QUIT is
// answered, and holds an exclusive maildrop lock per session.
//
// On top of that it injects faults on demand (see Faults): dropped
// connections mid-RETR or at QUIT, -ERR or garbage replies to chosen
// commands, login refusals with RFC 2449/3206 codes, slow or silent replies
// and LIST sizes that lie. It records what clients did (Transcripts, Stats)
// and can flag clients that pipeline without PIPELINING being advertised
// (Config.StrictLockstep).
//
// It also makes sample mail (SampleMessages, LargeMessage) and throwaway
// certificates (SelfSigned, ExpiredCert, NewCert).
//
// It is not a production server: there is one maildrop, nothing is
// persisted, and it trusts the caller's configuration. It does not import
// the popsync POP3 client, so the two can be tested against each other.
package pop3test
