// Package oauth obtains, stores and refreshes OAuth 2.0 tokens for mail
// logins (SASL XOAUTH2 and OAUTHBEARER), for POP3 accounts and IMAP targets
// alike.
//
// It is responsible for:
//
//   - provider presets (Microsoft, Google, custom endpoints) and the
//     validation of a [Config];
//   - the two interactive logins that produce the first refresh token: the
//     device authorization grant (RFC 8628, [Client.DeviceLogin]) and the
//     authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636) over a
//     loopback redirect (RFC 8252 §7.3, [Client.BrowserLogin]);
//   - refreshing access tokens ([Source]): a token that expires within
//     [RefreshMargin] is refreshed, a rotated refresh token is handed to the
//     [TokenStore] and saved before the new access token is returned, and
//     refreshes of one key never run at the same time;
//   - classifying failures: [ErrLoginNeeded] when the grant is gone,
//     [TemporaryError] when the token endpoint is down, slow or rate
//     limiting.
//
// It is not responsible for where tokens are kept (the caller supplies a
// [TokenStore], normally the state store), for reading client secrets (the
// caller supplies them as a function), or for speaking POP3 or IMAP.
//
// The exchanges themselves are golang.org/x/oauth2's. That package has no
// hook for a rotated refresh token, which is why [Source] wraps its
// TokenSource.
//
// Tokens, codes and client secrets never appear in an error string or in
// [Token]'s formatted output.
package oauth
