package pop3test

import (
	"slices"
	"strings"
	"time"
)

// Faults are misbehaviours to inject. Set them with Server.SetFaults, at
// any time: a running session picks up the new faults at its next command.
//
// Faults that name a message select it with Msg, the message number in the
// session (1-based, in maildrop order), and/or UID; a zero Msg and an empty
// UID match any message. Entries with Times > 0 fire that many times and
// are then spent; Times == 0 fires every time. SetFaults resets the counts.
// When several entries of a list match, the first one not spent wins.
type Faults struct {
	// Login refuses an otherwise successful login.
	Login LoginFault
	// Commands replace the reply to matching commands.
	Commands []CommandFault
	// RetrDrops drop the connection in the middle of a RETR reply.
	RetrDrops []RetrDrop
	// Sizes make LIST, STAT and the RETR status line report a size other
	// than the real one.
	Sizes []SizeFault
	// RetrSizes make only the "+OK n octets" line of RETR report a size
	// other than the real one (and than LIST); they win over Sizes there.
	RetrSizes []SizeFault

	// QuitDrop closes the connection when QUIT arrives in the TRANSACTION
	// state: no reply, nothing committed.
	QuitDrop bool
	// QuitNoCommit answers QUIT +OK but commits nothing, as a server that
	// lost its UPDATE state would.
	QuitNoCommit bool
	// SilentAfterGreeting makes the server read and record commands but
	// never answer them (from the next command on, for running sessions).
	SilentAfterGreeting bool

	// ReplyDelay pauses before the first line of every reply, the
	// greeting included.
	ReplyDelay time.Duration
	// LineDelay pauses before every line sent, message lines included;
	// what was written before is flushed first.
	LineDelay time.Duration
	// ChunkDelay pauses after every ChunkSize bytes written to the
	// connection. Both must be positive to take effect.
	ChunkSize  int
	ChunkDelay time.Duration
}

// LoginFault refuses logins with correct credentials, answering
// "-ERR [Code] Text". Code is typically "IN-USE", "LOGIN-DELAY" or
// "SYS/TEMP" (RFC 2449 §8.1, RFC 3206 §4); an empty Code disables the
// fault. An empty Text gets a stock text for the code.
type LoginFault struct {
	Code  string
	Text  string
	Times int
}

// CommandFault replaces the reply to a matching command. The command is
// not executed: a DELE is not marked, a RETR is not counted. A replaced
// QUIT commits nothing and ends the session after the reply.
type CommandFault struct {
	// Command is the keyword to match, case-insensitive ("RETR", "CAPA").
	Command string
	// Msg and UID select by the command's message-number argument; for a
	// command without one only the zero selector matches.
	Msg int
	UID string
	// Code and Text make the reply "-ERR [Code] Text" (default text
	// "injected failure").
	Code, Text string
	// Raw, when set, is written verbatim instead of any reply: include
	// the line ending(s) you want, or leave them out.
	Raw string
	// Hang sends no reply at all, and the session stays silent from then
	// on (it still reads and records lines) until the client hangs up,
	// the idle timeout fires or the server closes.
	Hang  bool
	Times int
}

// RetrDrop closes the connection after the "+OK" line of a RETR reply and
// After bytes of the message as sent (dot-stuffed). If After covers the
// whole message, the connection drops before the terminating ".". Nothing
// is committed.
type RetrDrop struct {
	Msg   int
	UID   string
	After int
	Times int
}

// SizeFault makes the server report Size octets for matching messages
// while it still sends their real data.
type SizeFault struct {
	Msg  int
	UID  string
	Size int64
}

// faultUse counts how often each Times-limited fault fired.
type faultUse struct {
	login    int
	commands []int
	drops    []int
}

// SetFaults replaces the injected faults and resets their counts.
func (s *Server) SetFaults(f Faults) {
	f.Commands = slices.Clone(f.Commands)
	f.RetrDrops = slices.Clone(f.RetrDrops)
	f.Sizes = slices.Clone(f.Sizes)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
	s.used = faultUse{
		commands: make([]int, len(f.Commands)),
		drops:    make([]int, len(f.RetrDrops)),
	}
}

// currentFaults returns the faults in force. The slices are never
// modified after SetFaults, so sharing them is safe.
func (s *Server) currentFaults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

func selects(wantMsg int, wantUID string, msg int, uid string) bool {
	return (wantMsg == 0 || wantMsg == msg) && (wantUID == "" || wantUID == uid)
}

func spent(times, used int) bool { return times > 0 && used >= times }

// takeLogin reports whether a login fault fires now, and counts it.
func (s *Server) takeLogin() (LoginFault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lf := s.faults.Login
	if lf.Code == "" || spent(lf.Times, s.used.login) {
		return LoginFault{}, false
	}
	s.used.login++
	return lf, true
}

// takeCommand finds the command fault that fires for this command, and
// counts it. msg is 0 and uid empty for commands without a message.
func (s *Server) takeCommand(verb string, msg int, uid string) (CommandFault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, cf := range s.faults.Commands {
		if !strings.EqualFold(cf.Command, verb) || spent(cf.Times, s.used.commands[i]) {
			continue
		}
		if !selects(cf.Msg, cf.UID, msg, uid) {
			continue
		}
		s.used.commands[i]++
		return cf, true
	}
	return CommandFault{}, false
}

// takeDrop finds the RETR drop that fires for this message, and counts it.
func (s *Server) takeDrop(msg int, uid string) (RetrDrop, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, d := range s.faults.RetrDrops {
		if spent(d.Times, s.used.drops[i]) || !selects(d.Msg, d.UID, msg, uid) {
			continue
		}
		s.used.drops[i]++
		return d, true
	}
	return RetrDrop{}, false
}

// stockLoginText is the text of an injected login refusal without one.
func stockLoginText(code string) string {
	switch strings.ToUpper(code) {
	case "IN-USE":
		return "Mailbox is locked by another POP3 session"
	case "LOGIN-DELAY":
		return "Logged in too recently, try again later"
	case "SYS/TEMP":
		return "Temporary system failure, try again later"
	case "SYS/PERM":
		return "Permanent system failure"
	case "AUTH":
		return "Authentication failed"
	}
	return "Login refused"
}
