package deliver_test

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"popsync/deliver"
	"popsync/deliver/delivertest"
)

// maildirStore gives each test its own Maildir path, the same for every
// target the test opens.
type maildirStore struct {
	mu   sync.Mutex
	dirs map[*testing.T]string
}

func (s *maildirStore) dir(t *testing.T) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dirs == nil {
		s.dirs = make(map[*testing.T]string)
	}
	d, ok := s.dirs[t]
	if !ok {
		d = filepath.Join(t.TempDir(), "Maildir")
		s.dirs[t] = d
		// Runs after the suite closed its targets: whatever the test did,
		// nothing may be left in tmp/.
		t.Cleanup(func() { expectEmpty(t, filepath.Join(d, "tmp")) })
	}
	return d
}

func expectEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left in %s: %s", dir, e.Name())
	}
}

// readMaildir returns the content of every message in new/ and cur/.
func readMaildir(t *testing.T, dir string) [][]byte {
	t.Helper()
	var msgs [][]byte
	for _, sub := range []string{"new", "cur"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(dir, sub, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, b)
		}
	}
	return msgs
}

func TestMaildirSuite(t *testing.T) {
	for _, keep := range []bool{false, true} {
		name := "LF"
		if keep {
			name = "KeepCRLF"
		}
		t.Run(name, func(t *testing.T) {
			var store maildirStore
			newTarget := func(t *testing.T) deliver.Target {
				m, err := deliver.NewMaildir(store.dir(t), deliver.MaildirOptions{KeepCRLF: keep})
				if err != nil {
					t.Fatal(err)
				}
				return m
			}
			read := func(t *testing.T) [][]byte {
				msgs := readMaildir(t, store.dir(t))
				for i, m := range msgs {
					if keep {
						continue
					}
					if bytes.Contains(m, []byte("\r")) {
						t.Errorf("stored message has a CR: %q", m)
					}
					msgs[i] = bytes.ReplaceAll(m, []byte("\n"), []byte("\r\n"))
				}
				return msgs
			}
			delivertest.RunSuite(t, newTarget, read)
		})
	}
}
