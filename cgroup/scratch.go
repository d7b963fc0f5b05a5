package cgroup

import (
	"bytes"
	"sync"
)

// scratch is the memory one Stats call reads cgroup files with. containerd's
// CRI plugin calls Stats once per second per container and per pod; with
// os.ReadFile, bufio.Scanner and maps per file, that garbage made a shim
// collect every few seconds. One scratch, reused, leaves only the returned
// metrics behind. A scratch is used by one goroutine at a time.
type scratch struct {
	path  []byte   // NUL-terminated path for openat(2)
	buf   []byte   // the file last read; grown when a file does not fit
	tmp   []byte   // a name being built, before intern
	names []string // interned strings, see intern
	devs  []device // /proc/partitions, see readDevices
	sizes []string // huge page sizes, see hugePageSizes
}

// maxInterned bounds scratch.names: the strings interned (blkio ops, device
// names, huge page sizes and their file names) are a few dozen per machine.
const maxInterned = 256

// scratchPool holds the scratches of finished Stats calls. It is package
// state only as an allocation cache: no value read through it outlives a
// call except interned strings, which are immutable. The GC empties it, so
// an idle shim does not keep the buffers.
var scratchPool = sync.Pool{New: func() any { return newScratch() }}

// newScratch sizes buf for every file Stats reads on a usual machine:
// memory.stat, the largest, is under 2 KiB.
func newScratch() *scratch {
	return &scratch{path: make([]byte, 0, 256), buf: make([]byte, 4096), tmp: make([]byte, 0, 64)}
}

func getScratch() *scratch { return scratchPool.Get().(*scratch) }

func putScratch(s *scratch) { scratchPool.Put(s) }

// intern returns b as a string, the same string each time b has the same
// bytes, so names that recur on every call (blkio ops, device and huge page
// names) are allocated once.
func (s *scratch) intern(b []byte) string {
	for _, n := range s.names {
		if n == string(b) {
			return n
		}
	}
	n := string(b)
	if len(s.names) < maxInterned {
		s.names = append(s.names, n)
	}
	return n
}

// concat interns the concatenation of parts, e.g. a hugetlb file name.
func (s *scratch) concat(parts ...string) string {
	s.tmp = s.tmp[:0]
	for _, p := range parts {
		s.tmp = append(s.tmp, p...)
	}
	return s.intern(s.tmp)
}

// device is one line of /proc/partitions.
type device struct {
	major, minor uint64
	name         string // "/dev/<name>"
}

// readDevices reads /proc/partitions into s.devs, afresh on each call: a
// disk can be added while the shim runs.
func (s *scratch) readDevices(proc string) error {
	b, err := s.read(proc, "partitions")
	if err != nil {
		return err
	}
	s.devs = s.devs[:0]
	for len(b) > 0 {
		var line []byte
		line, b = cutLine(b)
		var f [4][]byte
		if fieldsN(line, f[:]) != 4 {
			continue
		}
		if !isDigits(f[0]) || !isDigits(f[1]) {
			continue // the header line; checked first, a parse error allocates
		}
		major, err1 := parseUint(f[0])
		minor, err2 := parseUint(f[1])
		if err1 == nil && err2 == nil {
			s.devs = append(s.devs, device{major, minor, s.concat("/dev/", string(f[3]))})
		}
	}
	return nil
}

// deviceName returns the /dev name of major:minor from s.devs, "" if none;
// a later line wins, as it did in a map.
func (s *scratch) deviceName(major, minor uint64) string {
	for i := len(s.devs) - 1; i >= 0; i-- {
		if d := s.devs[i]; d.major == major && d.minor == minor {
			return d.name
		}
	}
	return ""
}

// addSize adds <size> to s.sizes if name is hugetlb.<size><suffix>.
func (s *scratch) addSize(name []byte, suffix string) {
	size, ok := bytes.CutPrefix(name, []byte("hugetlb."))
	if !ok {
		return
	}
	if size, ok = bytes.CutSuffix(size, []byte(suffix)); ok && bytes.IndexByte(size, '.') < 0 {
		s.sizes = append(s.sizes, s.intern(size))
	}
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}
