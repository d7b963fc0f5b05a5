package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Version is a cgroup hierarchy version.
type Version uint8

// The two layouts. Hybrid machines (v1 controllers plus a cgroup2 mount with
// no memory controller, e.g. systemd's /sys/fs/cgroup/unified) are V1, as
// containerd sees them.
const (
	V1 Version = iota + 1 // one hierarchy per controller
	V2                    // the unified hierarchy
)

func (v Version) String() string {
	switch v {
	case V1:
		return "cgroup v1"
	case V2:
		return "cgroup v2"
	}
	return "cgroup version " + strconv.Itoa(int(v))
}

// Sentinels of this package.
var (
	// ErrNotFound: the cgroup (or the process naming it) does not exist,
	// e.g. because the container was deleted.
	ErrNotFound = errors.New("cgroup not found")
	// ErrNoCgroups: no cgroup hierarchy is mounted.
	ErrNoCgroups = errors.New("no cgroup hierarchy mounted")
	// ErrNoMemory: the cgroup has no memory controller to watch.
	ErrNoMemory = errors.New("no memory controller")
	// ErrClosed: the OOMWatcher was closed.
	ErrClosed = errors.New("oom watcher closed")
)

// mount is where one hierarchy is mounted: point is the mount point and root
// the cgroup (relative to the hierarchy's root) that appears there.
type mount struct {
	point, root string
}

// dir returns the directory of cgroup path p in the hierarchy mounted at m.
func (m mount) dir(p string) string {
	if m.root != "/" {
		if rel, ok := strings.CutPrefix(p, m.root); ok && (rel == "" || rel[0] == '/') {
			p = rel
		}
	}
	return filepath.Join(m.point, p)
}

// Hierarchy is the machine's cgroup layout as this process sees it. It is
// immutable and safe for concurrent use.
type Hierarchy struct {
	version Version
	proc    string           // procfs mount point
	v1      map[string]mount // V1: controller (or "name=...") → its mount
	v2      mount            // V2: the unified mount
}

// Detect reads /proc/self/mountinfo and decides the version: V1 when the
// memory controller is on a v1 hierarchy, V2 when a cgroup2 mount offers it
// (its cgroup.controllers lists memory), else V1 if any v1 controller is
// mounted, else V2 if a cgroup2 mount exists.
func Detect() (*Hierarchy, error) {
	return detect("/proc", readControllers)
}

func detect(proc string, controllers func(point string) []string) (*Hierarchy, error) {
	f, err := os.Open(filepath.Join(proc, "self", "mountinfo"))
	if err != nil {
		return nil, fmt.Errorf("cgroup mounts: %w", err)
	}
	defer f.Close() // read-only
	v1, v2, err := parseMountInfo(f)
	if err != nil {
		return nil, fmt.Errorf("cgroup mounts: %w", err)
	}
	h := &Hierarchy{proc: proc, v1: v1}
	if h.version, h.v2, err = pickVersion(v1, v2, controllers); err != nil {
		return nil, err
	}
	return h, nil
}

// pickVersion applies Detect's rule.
func pickVersion(v1 map[string]mount, v2 []mount, controllers func(point string) []string) (Version, mount, error) {
	if _, ok := v1["memory"]; ok {
		return V1, mount{}, nil
	}
	for _, m := range v2 {
		if slices.Contains(controllers(m.point), "memory") {
			return V2, m, nil
		}
	}
	for c := range v1 {
		if !strings.HasPrefix(c, "name=") {
			return V1, mount{}, nil
		}
	}
	if len(v2) > 0 {
		return V2, v2[0], nil
	}
	return 0, mount{}, ErrNoCgroups
}

// readControllers lists the controllers a cgroup2 mount offers.
func readControllers(point string) []string {
	b, err := os.ReadFile(filepath.Join(point, "cgroup.controllers"))
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}

// parseMountInfo returns the v1 cgroup mounts by controller and the cgroup2
// mounts, from proc(5) mountinfo lines:
//
//	ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
//
// A v1 hierarchy's controllers are in its super options ("rw,cpu,cpuacct").
// The first mount of a hierarchy wins.
//
// Lines of other file systems are skipped before anything is allocated for
// them: a node has hundreds of mounts (every container's rootfs), and the
// shim runs this once at start, when every byte of garbage stays resident
// in a shim that never collects (bench/RESULTS.md, memory map).
func parseMountInfo(r io.Reader) (map[string]mount, []mount, error) {
	v1 := make(map[string]mount)
	var v2 []mount
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 4096), 1<<20)
	for s.Scan() {
		if !cgroupLine(s.Bytes()) {
			continue
		}
		pre, post, ok := strings.Cut(s.Text(), " - ")
		if !ok {
			continue
		}
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(tail) < 3 {
			return nil, nil, fmt.Errorf("malformed mountinfo line %q", s.Text())
		}
		m := mount{root: unescape(fields[3]), point: unescape(fields[4])}
		switch tail[0] {
		case "cgroup2":
			v2 = append(v2, m)
		case "cgroup":
			for _, opt := range strings.Split(tail[2], ",") {
				if !isController(opt) {
					continue
				}
				if _, dup := v1[opt]; !dup {
					v1[opt] = m
				}
			}
		}
	}
	return v1, v2, s.Err()
}

// cgroupLine reports whether a mountinfo line may be a cgroup or cgroup2
// mount, from the first field after its " - " separator; a line without one
// is kept so that parseMountInfo reports it as malformed.
func cgroupLine(line []byte) bool {
	i := bytes.Index(line, []byte(" - "))
	if i < 0 {
		return true
	}
	fstype, _, _ := bytes.Cut(line[i+3:], []byte(" "))
	return bytes.Equal(fstype, []byte("cgroup")) || bytes.Equal(fstype, []byte("cgroup2"))
}

// isController tells a controller ("memory", "name=systemd") from the other
// super options of a v1 mount ("rw", "xattr", "release_agent=...").
func isController(opt string) bool {
	switch opt {
	case "rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode", "favordynmods":
		return false
	}
	return !strings.Contains(opt, "=") || strings.HasPrefix(opt, "name=")
}

// unescape undoes mountinfo's octal escapes (\040 for a space, proc(5)).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Version returns the hierarchy's version.
func (h *Hierarchy) Version() Version { return h.version }

// ForPid returns the cgroup of process pid, from /proc/PID/cgroup. It is what
// the shim should use for a container's init: it holds whatever path the
// runtime chose, systemd slices included. A process that no longer exists
// gives ErrNotFound.
func (h *Hierarchy) ForPid(pid int) (*Cgroup, error) {
	b, err := os.ReadFile(filepath.Join(h.proc, strconv.Itoa(pid), "cgroup"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("cgroup of pid %d: %w", pid, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("cgroup of pid %d: %w", pid, err)
	}
	paths, err := parseProcCgroup(string(b))
	if err != nil {
		return nil, fmt.Errorf("cgroup of pid %d: %w", pid, err)
	}
	return h.fromPaths(paths)
}

// fromPaths builds the Cgroup of per-controller cgroup paths as in
// /proc/PID/cgroup: key "" is the unified path, "*" stands for every v1
// controller without its own key.
func (h *Hierarchy) fromPaths(paths map[string]string) (*Cgroup, error) {
	if h.version == V2 {
		p, ok := paths[""]
		if !ok {
			return nil, fmt.Errorf("no cgroup v2 path: %w", ErrNotFound)
		}
		return &Cgroup{version: V2, dir: h.v2.dir(p), proc: h.proc}, nil
	}
	dirs := make(map[string]string)
	for c, m := range h.v1 {
		p, ok := paths[c]
		if !ok {
			p, ok = paths["*"]
		}
		if ok {
			dirs[c] = m.dir(p)
		}
	}
	if len(dirs) == 0 {
		return nil, fmt.Errorf("no cgroup v1 path: %w", ErrNotFound)
	}
	return &Cgroup{version: V1, dirs: dirs, proc: h.proc}, nil
}

// parseProcCgroup parses /proc/PID/cgroup (cgroups(7)):
// "hierarchy-ID:controller,controller:path" lines, "0::path" for v2.
func parseProcCgroup(s string) (map[string]string, error) {
	paths := make(map[string]string)
	for line := range strings.Lines(s) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("malformed /proc/PID/cgroup line %q", line)
		}
		if parts[0] == "0" && parts[1] == "" {
			paths[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			paths[c] = parts[2]
		}
	}
	return paths, nil
}
