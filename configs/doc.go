// Package configs reads popsync's TOML configuration file: it defines the
// types the rest of popsync receives (Config, Account, Deliver and one
// TargetConfig per delivery kind), fills in defaults, validates the file as
// a whole and reports every problem at once with its line, resolves paths,
// computes an account's identity (Account.Identity) and says where each
// secret comes from (a credential.Source: literal, file, environment
// variable or command), which package credential reads.
//
// Layering: a key given in an [[account]] table wins over the same key in
// [defaults], which wins over the built-in default. The password sources form
// one group (an account naming any of them ignores those in [defaults]), and
// an account's [[account.deliver]] entries replace those of
// [[defaults.deliver]] as a whole.
//
// The package is not responsible for connecting, scheduling or delivering:
// it says what the user asked for and refuses what cannot work, nothing more.
// Validation does not open the files and programs a config names (CA file,
// password file, password command, Maildir); those are checked when they are
// used, so that `popsync check` and a daemon reload see the same answer as a
// poll does. Only the config file's own permissions are checked at load time.
package configs
