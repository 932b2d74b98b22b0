package pop3test_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"

	"popsync/fetch/pop3/pop3test"
)

// A server with sample mail, a fault on DELE of message 2, and a raw
// conversation with it.
func Example() {
	srv := pop3test.NewServer(
		pop3test.Config{User: "demo", Password: "demo", Caps: pop3test.Caps{NoPipelining: true}},
		pop3test.SampleMessages(3, 1)...,
	)
	defer srv.Close()
	srv.SetFaults(pop3test.Faults{
		Commands: []pop3test.CommandFault{{Command: "DELE", Msg: 2, Code: "SYS/TEMP", Text: "try later"}},
	})
	addr, err := srv.Listen()
	if err != nil {
		panic(err)
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	say := func(cmd string) {
		if cmd != "" {
			fmt.Fprintf(conn, "%s\r\n", cmd)
		}
		line, _ := r.ReadString('\n')
		fmt.Println(strings.TrimSpace(line))
	}
	say("") // greeting
	say("USER demo")
	say("PASS demo")
	say("DELE 1")
	say("DELE 2")
	say("QUIT")
	fmt.Println(len(srv.Messages()), "messages left;", srv.Stats().DelesCommitted, "deleted")
	// Output:
	// +OK POP3 server ready
	// +OK send PASS
	// +OK Logged in, 3 messages (13995 octets)
	// +OK message 1 deleted
	// -ERR [SYS/TEMP] try later
	// +OK POP3 server signing off (1 messages deleted)
	// 2 messages left; 1 deleted
}
