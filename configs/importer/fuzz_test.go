package importer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// checkErr is what every parser promises: no panic (the fuzzer sees
// one), and an error that names the file and a line of it.
func checkErr(t *testing.T, name string, data []byte, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var ie *Error
	if !errors.As(err, &ie) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	n := strings.Count(string(data), "\n") + 1
	if ie.File != name || ie.Line < 1 || ie.Line > n {
		t.Fatalf("error %v: file %q line %d, want %q and a line in 1..%d", err, ie.File, ie.Line, name, n)
	}
	if !strings.HasPrefix(err.Error(), name+":") {
		t.Fatalf("error %q does not start with the file name", err)
	}
}

func seedDir(f *testing.F, dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil {
			f.Add(b)
		}
	}
}

func FuzzFetchmailrc(f *testing.F) {
	seedDir(f, "testdata/fetchmail")
	f.Add([]byte(`poll "x"y proto pop3 user 'a b' password "a\"b c" is x = y here`))
	f.Add([]byte("set daemon 60\ndefaults keep\npoll h user u there is l here no keep"))
	f.Fuzz(func(t *testing.T, data []byte) {
		im, err := ConvertFetchmail("rc", data, FetchmailOptions{LocalUser: "u", Home: "/h"})
		checkErr(t, "rc", data, err)
		if err == nil {
			Emit(im, EmitOptions{StatePath: "s.db"})
		}
	})
}

func FuzzGetmailrc(f *testing.F) {
	seedDir(f, "testdata/getmail")
	f.Add([]byte("[retriever]\ntype = SimplePOP3Retriever\nserver = h\nusername = u\npassword_command = ('a',\n  \"b\\\"\")\n[destination]\ntype = MultiDestination\ndestinations = ('[d]', '~/M/')\n[d]\ntype = MDA_external\npath = /bin/x\narguments = ('%(sender)',)\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		im, err := ConvertGetmail("getmailrc", data, GetmailOptions{Home: "/h", DataDir: "/h/.getmail"})
		checkErr(t, "getmailrc", data, err)
		if err == nil {
			Emit(im, EmitOptions{StatePath: "s.db"})
		}
	})
}

func FuzzMpoprc(f *testing.F) {
	seedDir(f, "testdata/mpop")
	f.Add([]byte("defaults\ntls\naccount a\nhost h\naccount b : a, c\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		im, err := ConvertMpop("mpoprc", data, MpopOptions{Home: "/h"})
		checkErr(t, "mpoprc", data, err)
		if err == nil {
			Emit(im, EmitOptions{StatePath: "s.db"})
		}
	})
}

func FuzzSeenState(f *testing.F) {
	f.Add([]byte("me@x@pop.example.net 000000016b1129f1\n"))
	f.Add([]byte("a-b\x001764750000\n"))
	f.Add([]byte("# mpop\n 2 h u\na\nb\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := ParseFetchids("ids", data)
		checkErr(t, "ids", data, err)
		s, err := ParseOldmail("oldmail", data)
		checkErr(t, "oldmail", data, err)
		if err == nil {
			Records(Getmail, &Account{slashAsDash: true}, s)
		}
		_, err = ParseMpopUIDLs("uidls", data)
		checkErr(t, "uidls", data, err)
	})
}
