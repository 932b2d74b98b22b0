package importer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"popsync/configs"
	"popsync/state"
)

// LoadOptions say where the old tool's files are.
type LoadOptions struct {
	Tool string
	// RC are the old config files; empty means the tool's own defaults.
	// Several are allowed for getmail only.
	RC []string
	// FromState overrides where the seen-state is: fetchmail's idfile,
	// getmail's data directory, mpop's UIDLS file.
	FromState string
	Home      string
	Getenv    func(string) string // nil: os.Getenv
	LocalUser string              // fetchmail's default user; empty: $USER
}

// Loaded is a converted old config together with its seen-state.
type Loaded struct {
	*Import
	// Seen holds the records to import per account; SeenFiles names the
	// file they came from.
	Seen      map[*Account][]state.Record
	SeenFiles map[*Account]string
	// Counts is how many UIDLs the old tool recorded per account (Seen
	// may hold more records: getmail's '-' for '/').
	Counts map[*Account]int
	// Warnings: seen-state that matches no account, missing seen-state
	// files, UIDLs that may be fetched again.
	Warnings []string
	// Corrupt are the seen-state files that could not be read, each an
	// *Error naming file and line; their accounts import nothing and
	// carry a TODO.
	Corrupt []error
}

// Load finds, reads and converts the old tool's config and seen-state.
func Load(opt LoadOptions) (*Loaded, error) {
	getenv := opt.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	if opt.LocalUser == "" {
		opt.LocalUser = getenv("USER")
	}
	if opt.Home == "" {
		opt.Home = getenv("HOME")
	}
	var im *Import
	var err error
	switch opt.Tool {
	case Fetchmail:
		im, err = loadFetchmail(opt, getenv)
	case Getmail:
		im, err = loadGetmail(opt, getenv)
	case Mpop:
		im, err = loadMpop(opt, getenv)
	default:
		return nil, fmt.Errorf("unknown tool %q: want fetchmail, getmail or mpop", opt.Tool)
	}
	if err != nil {
		return nil, err
	}
	for _, a := range im.Accounts {
		if strings.ContainsAny(a.Password, "\r\n") {
			// A password file holds one line.
			a.TODO = append(a.TODO, "the password contains a line break, which a password_file cannot hold: give password_command or password_env")
			a.Password = ""
		}
	}
	l := &Loaded{Import: im, Seen: map[*Account][]state.Record{}, SeenFiles: map[*Account]string{}, Counts: map[*Account]int{}}
	l.readSeen(opt)
	return l, nil
}

func readRC(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading old config: %w", err)
	}
	return data, nil
}

func loadFetchmail(opt LoadOptions, getenv func(string) string) (*Import, error) {
	if len(opt.RC) > 1 {
		return nil, errors.New("fetchmail reads one rc file: give --rc once")
	}
	rc := filepath.Join(opt.Home, ".fetchmailrc")
	if d := getenv("FETCHMAILHOME"); d != "" {
		rc = filepath.Join(d, "fetchmailrc")
	}
	if len(opt.RC) == 1 {
		rc = opt.RC[0]
	}
	data, err := readRC(rc)
	if err != nil {
		return nil, err
	}
	home := opt.Home
	im, err := ConvertFetchmail(rc, data, FetchmailOptions{LocalUser: opt.LocalUser, Home: home})
	if err != nil {
		return nil, err
	}
	if d := getenv("FETCHMAILHOME"); d != "" {
		for _, a := range im.Accounts {
			if a.SeenFile == filepath.Join(home, ".fetchids") {
				a.SeenFile = filepath.Join(d, ".fetchids")
			}
		}
	}
	if opt.FromState != "" {
		for _, a := range im.Accounts {
			a.SeenFile = opt.FromState
		}
	}
	return im, nil
}

// getmailDir is getmail's default configuration and data directory:
// $XDG_CONFIG_HOME/getmail if it exists, else ~/.getmail.
func getmailDir(opt LoadOptions, getenv func(string) string) string {
	xdg := getenv("XDG_CONFIG_HOME")
	if xdg == "" {
		xdg = filepath.Join(opt.Home, ".config")
	}
	if fi, err := os.Stat(filepath.Join(xdg, "getmail")); err == nil && fi.IsDir() {
		return filepath.Join(xdg, "getmail")
	}
	return filepath.Join(opt.Home, ".getmail")
}

func loadGetmail(opt LoadOptions, getenv func(string) string) (*Import, error) {
	dir := getmailDir(opt, getenv)
	rcs := opt.RC
	if len(rcs) == 0 {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("looking for getmailrc files: %w", err)
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "getmailrc") && e.Type().IsRegular() {
				rcs = append(rcs, filepath.Join(dir, e.Name()))
			}
		}
		if len(rcs) == 0 {
			return nil, fmt.Errorf("no getmailrc files in %s: name them with --rc", dir)
		}
	}
	data := dir
	if opt.FromState != "" {
		data = opt.FromState
	}
	all := &Import{Tool: Getmail}
	names := map[string]int{}
	for _, rc := range rcs {
		if !filepath.IsAbs(rc) {
			if _, err := os.Stat(rc); err != nil {
				// getmail takes --rcfile relative to its directory.
				rc = filepath.Join(dir, rc)
			}
		}
		b, err := readRC(rc)
		if err != nil {
			return nil, err
		}
		im, err := ConvertGetmail(rc, b, GetmailOptions{Home: opt.Home, DataDir: data, Env: getenv})
		if err != nil {
			return nil, err
		}
		all.Files = append(all.Files, im.Files...)
		for _, a := range im.Accounts {
			old := a.Name
			a.Name = uniqueName(names, a.Name)
			for i := range im.Issues {
				if im.Issues[i].Account == old {
					im.Issues[i].Account = a.Name
				}
			}
		}
		all.Accounts = append(all.Accounts, im.Accounts...)
		all.Issues = append(all.Issues, im.Issues...)
	}
	return all, nil
}

func loadMpop(opt LoadOptions, getenv func(string) string) (*Import, error) {
	if len(opt.RC) > 1 {
		return nil, errors.New("mpop reads one config file: give --rc once")
	}
	var rc string
	if len(opt.RC) == 1 {
		rc = opt.RC[0]
	} else {
		rc = filepath.Join(opt.Home, ".mpoprc")
		if _, err := os.Stat(rc); err != nil {
			xdg := getenv("XDG_CONFIG_HOME")
			if xdg == "" {
				xdg = filepath.Join(opt.Home, ".config")
			}
			rc = filepath.Join(xdg, "mpop", "config")
		}
	}
	data, err := readRC(rc)
	if err != nil {
		return nil, err
	}
	im, err := ConvertMpop(rc, data, MpopOptions{Home: opt.Home})
	if err != nil {
		return nil, err
	}
	if opt.FromState != "" {
		for _, a := range im.Accounts {
			a.SeenFile = opt.FromState
		}
	}
	return im, nil
}

// readSeen reads every seen-state file the accounts name and assigns the
// lists to accounts.
func (l *Loaded) readSeen(opt LoadOptions) {
	files := map[string][]*Account{}
	for _, a := range l.Accounts {
		files[a.SeenFile] = append(files[a.SeenFile], a)
	}
	paths := sortedKeys(files)
	var lists []SeenList
	for _, path := range paths {
		accts := files[path]
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			var names []string
			for _, a := range accts {
				names = append(names, a.Name)
			}
			l.Warnings = append(l.Warnings, fmt.Sprintf("no seen-state file %s: nothing imported for %s; the first poll fetches every message on the server", path, strings.Join(names, ", ")))
			continue
		}
		if err != nil {
			l.corrupt(accts, &Error{Pos: Pos{File: path}, Msg: err.Error()})
			continue
		}
		switch l.Tool {
		case Fetchmail:
			ls, err := ParseFetchids(path, data)
			if err != nil {
				l.corrupt(accts, err)
				continue
			}
			lists = append(lists, ls...)
		case Mpop:
			ls, err := ParseMpopUIDLs(path, data)
			if err != nil {
				l.corrupt(accts, err)
				continue
			}
			lists = append(lists, ls...)
		case Getmail:
			seen, err := ParseOldmail(path, data)
			if err != nil {
				l.corrupt(accts, err)
				continue
			}
			for _, a := range accts {
				lists = append(lists, SeenList{Pos: Pos{path, 1}, Host: a.seenHost, Port: a.seenPort, User: a.seenUser, UIDLs: seen})
			}
		}
	}
	matched, unmatched := Match(l.Accounts, lists)
	for _, u := range unmatched {
		l.Warnings = append(l.Warnings, fmt.Sprintf("%s: seen-state of %s matches no imported account: not imported", u.Pos, u))
	}
	if l.Tool == Getmail {
		l.strayOldmail(opt)
	}
	for _, a := range l.Accounts {
		list, ok := matched[a]
		if !ok {
			continue
		}
		recs, more := Records(l.Tool, a, list)
		l.Seen[a], l.SeenFiles[a], l.Counts[a] = recs, a.SeenFile, len(list)
		if more > 0 {
			l.Warnings = append(l.Warnings, fmt.Sprintf("account %s: %d UIDLs have more than %d '-' (getmail writes '/' as '-'): only their spelling with '-' is imported; if the server's UIDLs hold '/', those messages are fetched again", a.Name, more, slashVariantsMax))
		}
	}
}

// strayOldmail reports oldmail files in getmail's data directory that
// belong to no imported account.
func (l *Loaded) strayOldmail(opt LoadOptions) {
	dirs := map[string]bool{}
	known := map[string]bool{}
	for _, a := range l.Accounts {
		dirs[filepath.Dir(a.SeenFile)] = true
		known[a.SeenFile] = true
	}
	var stray []string
	for d := range dirs {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			p := filepath.Join(d, e.Name())
			if strings.HasPrefix(e.Name(), "oldmail-") && !known[p] {
				stray = append(stray, p)
			}
		}
	}
	sort.Strings(stray)
	for _, p := range stray {
		l.Warnings = append(l.Warnings, fmt.Sprintf("%s: seen-state matches no imported account: not imported", p))
	}
}

func (l *Loaded) corrupt(accts []*Account, err error) {
	l.Corrupt = append(l.Corrupt, err)
	for _, a := range accts {
		a.TODO = append(a.TODO, fmt.Sprintf("seen-state unreadable (%v): nothing was imported; fix or remove the file and import again, or popsync fetches every message on the server again", err))
	}
}

// Identity is the seen-set key popsync will use for a converted account:
// configs.Account.Identity of the account the converted config loads as,
// with the port or its default for the TLS mode.
func Identity(a *Account) state.Account {
	port := a.Port
	if port == 0 {
		port = configs.DefaultPort(a.TLS)
	}
	return (&configs.Account{Host: a.Host, Port: port, User: a.User}).Identity()
}
