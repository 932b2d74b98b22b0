package pop3_test

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"popsync/fetch/pop3"
	"popsync/internal/realtest"
)

func TestDovecotProbe(t *testing.T) {
	t0 := time.Now()
	d := realtest.StartDovecot(t, realtest.DovecotOptions{APOP: true, Mechanisms: []string{"CRAM-MD5"},
		Config: "login_log_format_elements = user=<%u> method=%m rip=%r rport=%{rport} lip=%l mpid=%e %c session=<%{session}>"})
	t.Logf("start %v", time.Since(t0))
	d.Deliver(t, []byte("Subject: a\n\nline1\nno newline"), []byte("Subject: b\r\n\r\nx\r\n.\r\nlast"), []byte("Subject: c\n\n.\n"))
	ctx := context.Background()
	c, err := pop3.Dial(ctx, d.Addr, pop3.Options{Security: pop3.SecurityNone})
	if err != nil { t.Fatal(err) }
	t.Logf("greeting %q caps %v", c.Greeting(), c.Caps())
	c.Close()
	c, err = pop3.Dial(ctx, d.Addr, pop3.Options{Security: pop3.SecuritySTARTTLS, CAFile: d.CAFile})
	if err != nil { t.Fatal(err) }
	t.Logf("stls caps %v", c.Caps())
	if err := c.Auth(ctx, "auto", d.User, d.Password); err != nil { t.Fatal(err) }
	t.Logf("after caps %v", c.Caps())
	l, _ := c.List(ctx)
	u, _ := c.UIDL(ctx)
	t.Logf("%v %v", l, u)
	for i := 1; i <= 3; i++ {
		r, _ := c.Retr(ctx, i)
		b, _ := io.ReadAll(r)
		t.Logf("%d %q", i, b)
		r, _ = c.Top(ctx, i, 0)
		b, _ = io.ReadAll(r)
		t.Logf("top %d %q", i, b)
	}
	for _, m := range []string{"x"} { fmt.Println(m) }
	err = c.Auth(ctx, "plain", d.User, "bad")
	t.Log(err)
	c.Quit(ctx)
	c, _ = pop3.Dial(ctx, d.TLSAddr, pop3.Options{CAFile: d.CAFile})
	for _, m := range []string{"user", "apop", "plain", "login", "cram-md5"} {
		t1 := time.Now()
		err = c.Auth(ctx, m, d.User, "bad-secret")
		t.Log(time.Since(t1))
		t.Logf("%s: %#v %v", m, err, err)
	}
	err = c.Auth(ctx, "apop", d.User, d.Password)
	t.Log(err)
	c.Quit(ctx)
	t.Log(d.Log(t))
}
