package cgroup

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	v1 "github.com/leanshim/leanshim/proto/cgroups/v1"
	v2 "github.com/leanshim/leanshim/proto/cgroups/v2"
)

// Cgroup is one container's cgroup: on v1 a directory per controller, on v2
// one directory. It holds no file descriptors (Stats opens and closes the
// files on each call) and is safe for concurrent use.
type Cgroup struct {
	version Version
	dirs    map[string]string // V1: controller → directory
	dir     string            // V2: the directory
	proc    string            // procfs mount point, for /proc/partitions
}

// Metrics is what Stats returns: a *v1.Metrics or a *v2.Metrics. Its method
// set is gogo's proto.Message, so proto.Marshal and proto.MessageName take it
// as it is; the name is the bare type_url containerd expects.
type Metrics interface {
	Reset()
	String() string
	ProtoMessage()
}

var (
	_ Metrics = (*v1.Metrics)(nil)
	_ Metrics = (*v2.Metrics)(nil)
)

// Version returns the cgroup's hierarchy version.
func (c *Cgroup) Version() Version { return c.version }

// String names the cgroup's directories, for logs and errors.
func (c *Cgroup) String() string {
	if c.version == V2 {
		return c.dir
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(c.dirs)) {
		out = append(out, k+"="+c.dirs[k])
	}
	return strings.Join(out, ",")
}

// memoryDir returns the directory of the memory controller, "" if none.
func (c *Cgroup) memoryDir() string {
	if c.version == V2 {
		return c.dir
	}
	return c.dirs["memory"]
}

// Stats reads the cgroup's counters: a *v1.Metrics on v1 (cpuacct, cpu,
// memory, pids, blkio, hugetlb) or a *v2.Metrics on v2 (cpu, memory, memory
// events, pids, io, hugetlb, pressure). A controller or file the kernel
// does not provide leaves its fields zero. When the cgroup no longer exists
// (its container was deleted) it returns ErrNotFound.
func (c *Cgroup) Stats() (Metrics, error) {
	s := getScratch()
	defer putScratch(s)
	switch c.version {
	case V1:
		m, err := c.statsV1(s)
		if err != nil {
			return nil, err
		}
		return m, nil
	case V2:
		m, err := c.statsV2(s)
		if err != nil {
			return nil, err
		}
		return m, nil
	}
	return nil, fmt.Errorf("stats of %s: %w", c.version, ErrNoCgroups)
}

// exists reports whether any of the cgroup's directories exists.
func (c *Cgroup) exists(s *scratch) bool {
	if c.version == V2 {
		return s.isDir(c.dir)
	}
	for _, d := range c.dirs {
		if s.isDir(d) {
			return true
		}
	}
	return false
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
