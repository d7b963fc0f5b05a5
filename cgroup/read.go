package cgroup

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// absent reports whether err means the kernel does not provide a file: it
// does not exist (controller or feature missing, e.g. memory.memsw.* without
// swap accounting) or cannot be read by design (EOPNOTSUPP, ENODEV).
func absent(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENODEV)
}

// readFile returns the content of dir/name; nil, nil when absent.
func readFile(dir, name string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		if absent(err) {
			return nil, nil
		}
		return nil, err
	}
	return b, nil
}

// readUint reads a single-number file; an absent file is 0. The word "max"
// (no limit) reads as unlimited.
func (s *scratch) readUint(dir, name string, unlimited uint64) (uint64, error) {
	b, err := s.read(dir, name)
	if err != nil || b == nil {
		return 0, err
	}
	b = bytes.TrimSpace(b)
	if string(b) == "max" {
		return unlimited, nil
	}
	v, err := parseUint(b)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", filepath.Join(dir, name), err)
	}
	return v, nil
}

// uintStep names one file (or key) and where its value goes; the readers
// are tables of these.
type uintStep struct {
	name string
	dst  *uint64
}

// readUints reads every step's file from dir.
func (s *scratch) readUints(dir string, unlimited uint64, steps []uintStep) error {
	for _, st := range steps {
		v, err := s.readUint(dir, st.name, unlimited)
		if err != nil {
			return err
		}
		*st.dst = v
	}
	return nil
}

// walkKV reads a flat keyed file ("key value" lines, e.g. memory.stat,
// cpu.stat, memory.events) and sets each step whose name is a key; a step
// whose key is absent is left as it is, a key that repeats sets its last
// value. It returns how many lines it parsed, 0 for an absent file. Every
// line's value must parse, not only the steps'.
func (s *scratch) walkKV(dir, name string, steps []uintStep) (int, error) {
	b, err := s.read(dir, name)
	if err != nil {
		return 0, err
	}
	n := 0
	for len(b) > 0 {
		var line []byte
		line, b = cutLine(b)
		k, v, ok := bytes.Cut(bytes.TrimSpace(line), []byte(" "))
		if !ok {
			continue
		}
		u, err := parseUint(bytes.TrimSpace(v))
		if err != nil {
			return 0, fmt.Errorf("parse %s line %q: %w", filepath.Join(dir, name), scanText(line), err)
		}
		n++
		for _, st := range steps {
			if st.name == string(k) {
				*st.dst = u
			}
		}
	}
	return n, nil
}

// parseUint is strconv.ParseUint of b in base 10. The string conversion of
// a number this short stays on the stack: strconv copies the text it
// keeps in a NumError.
func parseUint(b []byte) (uint64, error) {
	return strconv.ParseUint(string(b), 10, 64)
}

// cutLine splits b after its first newline; line keeps the "\n", as with
// strings.Lines.
func cutLine(b []byte) (line, rest []byte) {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i+1], b[i+1:]
	}
	return b, nil
}

// scanText is line as bufio.ScanLines gives it, without "\n" and the "\r"
// before it; error messages quote lines this way.
func scanText(line []byte) []byte {
	return bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
}

// isSpace is unicode.IsSpace for ASCII; cgroup and proc files are ASCII.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// cutField returns b's first space-separated field and what follows it; an
// empty field means b has no more.
func cutField(b []byte) (field, rest []byte) {
	i := 0
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	j := i
	for j < len(b) && !isSpace(b[j]) {
		j++
	}
	return b[i:j], b[j:]
}

// fieldsN puts b's first len(f) fields, as strings.Fields splits them, into
// f and returns how many fields b has in all.
func fieldsN(b []byte, f [][]byte) int {
	n := 0
	for {
		var field []byte
		field, b = cutField(b)
		if len(field) == 0 {
			return n
		}
		if n < len(f) {
			f[n] = field
		}
		n++
	}
}
