package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
func readUint(dir, name string, unlimited uint64) (uint64, error) {
	b, err := readFile(dir, name)
	if err != nil || b == nil {
		return 0, err
	}
	s := string(bytes.TrimSpace(b))
	if s == "max" {
		return unlimited, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", filepath.Join(dir, name), err)
	}
	return v, nil
}

// readKV reads a flat keyed file ("key value" lines, e.g. memory.stat,
// cpu.stat, memory.events); an absent file gives an empty map.
func readKV(dir, name string) (map[string]uint64, error) {
	b, err := readFile(dir, name)
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64)
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(s.Text()), " ")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("parse %s line %q: %w", filepath.Join(dir, name), s.Text(), err)
		}
		out[k] = n
	}
	return out, s.Err()
}

// uintStep names one file (or key) and where its value goes; the readers
// below are tables of these.
type uintStep struct {
	name string
	dst  *uint64
}

// readUints reads every step's file from dir.
func readUints(dir string, unlimited uint64, steps []uintStep) error {
	for _, s := range steps {
		v, err := readUint(dir, s.name, unlimited)
		if err != nil {
			return err
		}
		*s.dst = v
	}
	return nil
}

// pick copies every step's key from kv.
func pick(kv map[string]uint64, steps []uintStep) {
	for _, s := range steps {
		*s.dst = kv[s.name]
	}
}
