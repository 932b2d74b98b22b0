package realtest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// TestLaunchDovecotForPrograms: LaunchDovecot, for programs without a
// testing.TB (the peer benchmark), serves every mailbox of Users with the
// one password, each in its own Maildir, and Close stops it and removes
// its directory.
func TestLaunchDovecotForPrograms(t *testing.T) {
	Require(t, "dovecot")
	if _, err := serverUser(""); err != nil {
		unavailable(t, err.Error())
	}
	d, err := LaunchDovecot(DovecotOptions{User: "first", Users: []string{"second", "third"}, Password: "pw", Connections: 20})
	if err != nil {
		if d != nil {
			d.Close()
		}
		t.Fatal(err)
	}
	defer d.Close()
	if d.Pid() == 0 {
		t.Error("no master pid")
	}
	for _, u := range []string{"first", "second", "third"} {
		if fi, err := os.Stat(d.MaildirOf(u) + "/new"); err != nil || !fi.IsDir() {
			t.Errorf("Maildir of %s: %v", u, err)
		}
		c, err := net.DialTimeout("tcp", d.Addr, ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(ioTimeout))
		r := bufio.NewReader(c)
		var replies []string
		for _, cmd := range []string{"", "USER " + u, "PASS pw", "STAT", "QUIT"} {
			if cmd != "" {
				fmt.Fprintf(c, "%s\r\n", cmd)
			}
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("%s: %v after %q", u, err, replies)
			}
			replies = append(replies, strings.TrimSpace(line))
		}
		c.Close()
		if !strings.HasPrefix(replies[2], "+OK") || !strings.HasPrefix(replies[3], "+OK 0 0") {
			t.Errorf("%s: %q", u, replies)
		}
	}
	dir := d.Dir
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("instance directory left after Close: %v", err)
	}
}
