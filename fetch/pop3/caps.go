package pop3

import (
	"strconv"
	"strings"
	"time"
)

// Capabilities is what the server announced in reply to CAPA (RFC 2449
// §5). The zero value means the server sent nothing (no CAPA support). A
// Capabilities value is never modified once built.
type Capabilities struct {
	names []string            // upper case, in the server's order
	args  map[string][]string // by upper case name
}

func buildCapabilities(lines [][]string) Capabilities {
	c := Capabilities{args: make(map[string][]string, len(lines))}
	for _, l := range lines {
		name := l[0]
		if _, dup := c.args[name]; dup {
			continue
		}
		c.names = append(c.names, name)
		c.args[name] = l[1:]
	}
	return c
}

// Has reports whether the capability name (case-insensitive) was
// announced.
func (c Capabilities) Has(name string) bool {
	_, ok := c.args[strings.ToUpper(name)]
	return ok
}

// Args returns the arguments announced with the capability name.
func (c Capabilities) Args(name string) []string {
	return append([]string(nil), c.args[strings.ToUpper(name)]...)
}

// Names returns the announced capability names in upper case, in the
// server's order.
func (c Capabilities) Names() []string {
	return append([]string(nil), c.names...)
}

// Empty reports whether nothing was announced.
func (c Capabilities) Empty() bool { return len(c.names) == 0 }

// SASL returns the SASL mechanisms (RFC 2449 §6.3, RFC 5034) in upper case.
func (c Capabilities) SASL() []string {
	a := c.args["SASL"]
	out := make([]string, len(a))
	for i, m := range a {
		out[i] = strings.ToUpper(m)
	}
	return out
}

// HasSASL reports whether the SASL mechanism mech was announced.
func (c Capabilities) HasSASL(mech string) bool {
	for _, m := range c.args["SASL"] {
		if strings.EqualFold(m, mech) {
			return true
		}
	}
	return false
}

// Pipelining reports PIPELINING (RFC 2449 §6.6).
func (c Capabilities) Pipelining() bool { return c.Has("PIPELINING") }

// Implementation returns the IMPLEMENTATION text (RFC 2449 §6.9), or "".
func (c Capabilities) Implementation() string {
	return strings.Join(c.args["IMPLEMENTATION"], " ")
}

// LoginDelay returns the minimum delay between logins announced with
// LOGIN-DELAY (RFC 2449 §6.5).
func (c Capabilities) LoginDelay() (time.Duration, bool) {
	a := c.args["LOGIN-DELAY"]
	if len(a) == 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(a[0], 10, 32)
	if err != nil || n < 0 {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

// Expire returns the retention policy announced with EXPIRE (RFC 2449
// §6.7): the number of days the server keeps a retrieved message, 0 for
// "deleted at once", and -1 for NEVER. ok is false when EXPIRE is absent
// or malformed.
func (c Capabilities) Expire() (days int, ok bool) {
	a := c.args["EXPIRE"]
	if len(a) == 0 {
		return 0, false
	}
	if strings.EqualFold(a[0], "NEVER") {
		return -1, true
	}
	n, err := strconv.ParseInt(a[0], 10, 32)
	if err != nil || n < 0 {
		return 0, false
	}
	return int(n), true
}

// String lists the capabilities one per line, as the server sent them.
func (c Capabilities) String() string {
	var b strings.Builder
	for i, n := range c.names {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(n)
		for _, a := range c.args[n] {
			b.WriteByte(' ')
			b.WriteString(a)
		}
	}
	return b.String()
}
