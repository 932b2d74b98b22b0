// Package pop3 is the POP3 client of popsync: RFC 1939 with CAPA and
// PIPELINING (RFC 2449), STLS (RFC 2595), SASL AUTH (RFC 5034) and extended
// response codes (RFC 2449 §8, RFC 3206).
//
// It is responsible for the wire and nothing else: connecting (implicit TLS,
// STLS, or plaintext when asked for by name), verifying certificates,
// authenticating, running the POP3 commands, streaming message bodies with
// dot-unstuffing, and defending itself against a broken or hostile server
// (line and listing limits, UIDL validation, a deadline on every read and
// write, context cancellation). It knows nothing of which messages are new,
// where mail is delivered or when mail may be deleted: that is package fetch.
//
// # Using a Client
//
// A Client is not safe for concurrent use. Commands run one after another;
// a body returned by Retr or Top must be read to EOF before the next
// command, or the next command drains it first (and the old reader then
// fails with ErrBodyClosed); a rest longer than MaxDrain is not drained
// but poisons the client (ErrDrainLimit). RetrEach, TopEach and DeleEach send many
// commands at once when the server advertises PIPELINING and fall back to
// lockstep otherwise.
//
// # Framing
//
// RFC 1939 §3 defines lines by CRLF, and so does this client: only CRLF
// "." CRLF ends a multi-line reply (RETR, TOP, LIST, UIDL, CAPA), and only
// a "." right after CRLF is a stuffing dot. In a message body a bare LF is
// data, and a "." after it is passed on unchanged, so a message holding
// "\n.\n+OK" cannot end early at a server that stuffs only after CRLF and
// have its tail read as the reply to the next command. A status or
// listing line carries no message data, so one that ends in a bare LF is
// a protocol error.
//
// The one exception is a server that does not speak CRLF at all: when the
// greeting ends in a bare LF, LF ends every line of that session, bodies
// included. Only the session's own status lines choose this: the
// greeting, and after STLS the first reply over TLS (what was seen in the
// clear does not count). Message bytes never do.
//
// RetrEachListed also checks every message against its LIST size. LIST
// should count exactly the octets RETR sends (RFC 1939 §5), but servers
// count line endings and stuffing dots their own way, so the tolerance is
// wide: a body is refused only below MinOctets, half the LIST size less
// SizeSlack (1 KiB), which no honest way of counting reaches. A "+OK n
// octets" reply must name the LIST size exactly. Either failure is a
// doubt about where replies begin and end: the client is poisoned with
// ErrSizeMismatch, and the message is never handed out whole.
//
// # Errors and poisoning
//
// A -ERR reply is returned as *Error and leaves the connection usable. Any
// I/O error, malformed reply, exceeded limit or context cancellation in the
// middle of a command poisons the Client: the connection is closed at once,
// every later call returns an error wrapping ErrPoisoned and the original
// cause, and QUIT is never sent, because RFC 1939 §6 commits DELE marks only
// when QUIT is answered. A dropped connection therefore never deletes mail.
//
// # Tracing
//
// With Options.Logger set, every protocol line sent and received is logged
// at LevelTrace (below slog.LevelDebug). Message bodies are summarised as one
// record per body. Passwords, tokens and SASL responses appear as
// "<redacted>" unless Options.TraceAuth is set, in which case those lines are
// logged unredacted at LevelTraceAuth, a level lower still.
package pop3
