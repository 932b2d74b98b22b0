package pop3

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func pipelineStart(pipelining bool) string {
	s := `
		S: +OK ready
		C: CAPA
		S: +OK
		S: UIDL
		S: TOP
`
	if pipelining {
		s += "S: PIPELINING\n"
	}
	return s + "S: .\n"
}

// retrScript answers RETR 1..n in order; ids divisible by 7 get -ERR.
func retrScript(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "C: RETR %d\n", i)
		if i%7 == 0 {
			fmt.Fprintf(&b, "S: -ERR [SYS/TEMP] message %d is busy\n", i)
			continue
		}
		fmt.Fprintf(&b, "S: +OK\nS: Message-ID: <%d@x>\nS: \nS: ..body %d\nS: .\n", i, i)
	}
	return b.String()
}

func seq(n int) []int {
	ids := make([]int, n)
	for i := range ids {
		ids[i] = i + 1
	}
	return ids
}

func TestRetrEachPipelined(t *testing.T) {
	const n = 150 // more than two windows
	s := start(t, plain, pipelineStart(true)+retrScript(n)+"C: NOOP\nS: +OK\n")
	var got []int
	err := s.c.RetrEach(bg, seq(n), func(id int, body io.Reader, err error) error {
		got = append(got, id)
		if id%7 == 0 {
			var e *Error
			if !errors.As(err, &e) || e.Command != "RETR" || e.Code != "SYS/TEMP" || body != nil {
				return fmt.Errorf("id %d: err %v body %v", id, err, body)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("id %d: %w", id, err)
		}
		b, rerr := readAll(body)
		if want := fmt.Sprintf("Message-ID: <%d@x>\r\n\r\n.body %d\r\n", id, id); rerr != nil || string(b) != want {
			return fmt.Errorf("id %d: body %q, %v", id, b, rerr)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("fn called %d times", len(got))
	}
	if err := s.c.Noop(bg); err != nil {
		t.Fatal(err)
	}
	s.done()
	// Commands really were in flight together: line 1 is CAPA, line 2
	// RETR 1; RETR 2 arrived before the reply to RETR 1 was complete.
	arr := s.f.arrivals()
	if arr[2] >= 3 {
		t.Fatalf("RETR 2 arrived after the reply to RETR 1 (arrivals %v)", arr[:5])
	}
	// And never more than a window ahead: RETR k+64 not before reply k.
	for k := 1; k+PipelineWindow <= n; k++ {
		line := k + PipelineWindow // index of RETR k+64
		if arr[line] < int64(2+k) {
			t.Fatalf("RETR %d arrived with only %d replies done", k+PipelineWindow, arr[line]-2)
		}
	}
}

func TestRetrEachLockstep(t *testing.T) {
	const n = 20
	s := start(t, plain, pipelineStart(false)+retrScript(n)+`
		C: DELE 1
		S: +OK
		C: DELE 2
		S: -ERR no such message
		C: DELE 3
		S: +OK
`)
	calls := 0
	err := s.c.RetrEach(bg, seq(n), func(id int, body io.Reader, err error) error {
		calls++
		if body != nil {
			_, err = io.Copy(io.Discard, body)
		}
		if id%7 == 0 {
			return nil
		}
		return err
	})
	if err != nil || calls != n {
		t.Fatalf("RetrEach = %v after %d calls", err, calls)
	}
	perID, err := s.c.DeleEach(bg, []int{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	var e *Error
	if perID[0] != nil || !errors.As(perID[1], &e) || e.Arg != "2" || perID[2] != nil {
		t.Fatalf("DeleEach = %v", perID)
	}
	s.done()
	// Without PIPELINING, line k (CAPA is 0) arrives only after k+1 reply
	// blocks (greeting included) were complete.
	for k, a := range s.f.arrivals() {
		if a < int64(k+1) {
			t.Fatalf("line %d sent with only %d replies complete: not lockstep", k, a)
		}
	}
}

func TestRetrEachCallbackError(t *testing.T) {
	// fn fails on message 2 without reading it: the rest of that body and
	// the replies already requested (3 and 4, pipelined) are drained, no
	// further command is sent, the session goes on.
	stop := errors.New("target full")
	s := start(t, plain, pipelineStart(true)+`
		C: RETR 1
		C: RETR 2
		C: RETR 3
		C: RETR 4
		S: +OK
		S: one
		S: .
		S: +OK
		S: two
		S: two again
		S: .
		S: -ERR gone
		S: +OK
		S: four
		S: .
		C: NOOP
		S: +OK`)
	var seen []int
	err := s.c.RetrEach(bg, []int{1, 2, 3, 4}, func(id int, body io.Reader, err error) error {
		seen = append(seen, id)
		if id == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || fmt.Sprint(seen) != "[1 2]" {
		t.Fatalf("RetrEach = %v, seen %v", err, seen)
	}
	if err := s.c.Noop(bg); err != nil {
		t.Fatal(err)
	}
	s.done()
}

func TestRetrEachBodyAfterCallback(t *testing.T) {
	s := start(t, plain, pipelineStart(false)+`
		C: RETR 1
		S: +OK
		S: line
		S: .`)
	var kept io.Reader
	err := s.c.RetrEach(bg, []int{1}, func(id int, body io.Reader, err error) error {
		kept = body
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kept.Read(make([]byte, 10)); !errors.Is(err, ErrBodyClosed) {
		t.Fatalf("Read after the callback = %v, want ErrBodyClosed", err)
	}
	s.done()
}

func TestRetrEachDropPoisons(t *testing.T) {
	s := start(t, plain, pipelineStart(true)+`
		C: RETR 1
		C: RETR 2
		S: +OK
		S: one
		S: .
		S: +OK
		S: half
		DROP`)
	var bodyErr error
	err := s.c.RetrEach(bg, []int{1, 2}, func(id int, body io.Reader, err error) error {
		if id == 2 {
			_, bodyErr = io.ReadAll(body)
		}
		return nil
	})
	if !errors.Is(err, io.ErrUnexpectedEOF) || !errors.Is(bodyErr, io.ErrUnexpectedEOF) {
		t.Fatalf("RetrEach = %v, body %v", err, bodyErr)
	}
	if err := s.c.Quit(bg); !errors.Is(err, ErrPoisoned) {
		t.Fatalf("Quit = %v", err)
	}
	s.done()
}

func TestTopEachPipelined(t *testing.T) {
	s := start(t, plain, pipelineStart(true)+`
		C: TOP 3 0
		C: TOP 5 0
		S: +OK
		S: Subject: three
		S: .
		S: +OK
		S: Subject: five
		S: .`)
	var got []string
	err := s.c.TopEach(bg, []int{3, 5}, 0, func(id int, body io.Reader, err error) error {
		b, err := io.ReadAll(body)
		got = append(got, fmt.Sprintf("%d:%s", id, b))
		return err
	})
	if err != nil || fmt.Sprint(got) != "[3:Subject: three\r\n 5:Subject: five\r\n]" {
		t.Fatalf("TopEach = %v, %q", err, got)
	}
	s.done()
}

func TestDeleEachWindow(t *testing.T) {
	var script strings.Builder
	script.WriteString(pipelineStart(true))
	for i := 1; i <= 100; i++ {
		fmt.Fprintf(&script, "C: DELE %d\n", i)
		if i == 50 {
			script.WriteString("S: -ERR [SYS/TEMP] busy\n")
		} else {
			script.WriteString("S: +OK\n")
		}
	}
	s := start(t, plain, script.String())
	perID, err := s.c.DeleEach(bg, seq(100))
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range perID {
		if (e != nil) != (i == 49) {
			t.Fatalf("perID[%d] = %v", i, e)
		}
	}
	s.done()
	arr := s.f.arrivals()
	if arr[2] >= 3 {
		t.Fatal("DELE not pipelined")
	}
}
