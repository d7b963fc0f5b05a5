//go:build !linux

package cgroup

import (
	"os"
	"slices"
)

// The shim runs on Linux only; these portable versions keep the package
// building, and its fixture tests running, elsewhere.

func (s *scratch) isDir(p string) bool { return isDir(p) }

func (s *scratch) read(dir, name string) ([]byte, error) { return readFile(dir, name) }

func (s *scratch) hugePageSizes(dir, suffix string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	s.sizes = s.sizes[:0]
	for _, e := range entries {
		s.addSize([]byte(e.Name()), suffix)
	}
	slices.Sort(s.sizes)
	return s.sizes, nil
}
