package cgroup

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	v1 "github.com/leanshim/leanshim/proto/cgroups/v1"
)

// userHZ is the unit of cpuacct.stat: USER_HZ ticks, 100 per second on every
// Linux ABI (times(2); the kernel converts with jiffies_64_to_clock_t).
const userHZ = 100

// statsV1 reads each controller of a v1 cgroup into its part of a Metrics,
// with the files and rules of containerd/cgroups v1.0.4 (containerd 1.6).
func (c *Cgroup) statsV1() (*v1.Metrics, error) {
	if !c.exists() {
		return nil, fmt.Errorf("%s: %w", c, ErrNotFound)
	}
	// containerd always sends cpu with both parts, even without cpuacct.
	m := &v1.Metrics{Cpu: &v1.CPUStat{Usage: &v1.CPUUsage{}, Throttling: &v1.Throttle{}}}
	readers := []struct {
		controller string
		read       func(dir string, m *v1.Metrics) error
	}{
		{"cpuacct", readCPUAcct},
		{"cpu", readThrottling},
		{"memory", readMemoryV1},
		{"pids", readPidsV1},
		{"blkio", c.readBlkio},
		{"hugetlb", readHugetlbV1},
	}
	for _, r := range readers {
		dir, ok := c.dirs[r.controller]
		if !ok || !isDir(dir) {
			continue
		}
		if err := r.read(dir, m); err != nil {
			return nil, fmt.Errorf("%s stats: %w", r.controller, err)
		}
	}
	return m, nil
}

// readCPUAcct reads cpuacct.usage, cpuacct.usage_percpu and cpuacct.stat.
func readCPUAcct(dir string, m *v1.Metrics) error {
	u := m.Cpu.Usage
	var err error
	if u.Total, err = readUint(dir, "cpuacct.usage", 0); err != nil {
		return err
	}
	percpu, err := readFile(dir, "cpuacct.usage_percpu")
	if err != nil {
		return err
	}
	for _, f := range strings.Fields(string(percpu)) {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return fmt.Errorf("parse %s: %w", filepath.Join(dir, "cpuacct.usage_percpu"), err)
		}
		u.PerCpu = append(u.PerCpu, v)
	}
	stat, err := readKV(dir, "cpuacct.stat")
	if err != nil {
		return err
	}
	u.User = stat["user"] * (1e9 / userHZ)
	u.Kernel = stat["system"] * (1e9 / userHZ)
	return nil
}

// readThrottling reads the CFS bandwidth counters of cpu.stat.
func readThrottling(dir string, m *v1.Metrics) error {
	stat, err := readKV(dir, "cpu.stat")
	if err != nil {
		return err
	}
	t := m.Cpu.Throttling
	pick(stat, []uintStep{
		{"nr_periods", &t.Periods},
		{"nr_throttled", &t.ThrottledPeriods},
		{"throttled_time", &t.ThrottledTime},
	})
	return nil
}

// readMemoryV1 reads memory.stat, memory.oom_control and the four counter
// families (memory, memsw, kmem, kmem.tcp). A family the kernel lacks (memsw
// without swap accounting) stays zero but present, as in containerd.
func readMemoryV1(dir string, m *v1.Metrics) error {
	stat, err := readKV(dir, "memory.stat")
	if err != nil {
		return err
	}
	s := &v1.MemoryStat{Usage: &v1.MemoryEntry{}, Swap: &v1.MemoryEntry{}, Kernel: &v1.MemoryEntry{}, KernelTcp: &v1.MemoryEntry{}}
	pick(stat, memoryStatSteps(s))
	families := []struct {
		prefix string
		e      *v1.MemoryEntry
	}{
		{"memory.", s.Usage},
		{"memory.memsw.", s.Swap},
		{"memory.kmem.", s.Kernel},
		{"memory.kmem.tcp.", s.KernelTcp},
	}
	for _, f := range families {
		if err := readUints(dir, 0, []uintStep{
			{f.prefix + "usage_in_bytes", &f.e.Usage},
			{f.prefix + "max_usage_in_bytes", &f.e.Max},
			{f.prefix + "failcnt", &f.e.Failcnt},
			{f.prefix + "limit_in_bytes", &f.e.Limit},
		}); err != nil {
			return err
		}
	}
	oom, err := readKV(dir, "memory.oom_control")
	if err != nil {
		return err
	}
	o := &v1.MemoryOomControl{}
	pick(oom, []uintStep{{"oom_kill_disable", &o.OomKillDisable}, {"under_oom", &o.UnderOom}, {"oom_kill", &o.OomKill}})
	m.Memory, m.MemoryOomControl = s, o
	return nil
}

// memoryStatSteps maps memory.stat keys to MemoryStat fields.
func memoryStatSteps(s *v1.MemoryStat) []uintStep {
	return []uintStep{
		{"cache", &s.Cache}, {"rss", &s.Rss}, {"rss_huge", &s.RssHuge}, {"mapped_file", &s.MappedFile},
		{"dirty", &s.Dirty}, {"writeback", &s.Writeback}, {"pgpgin", &s.PgPgIn}, {"pgpgout", &s.PgPgOut},
		{"pgfault", &s.PgFault}, {"pgmajfault", &s.PgMajFault}, {"inactive_anon", &s.InactiveAnon},
		{"active_anon", &s.ActiveAnon}, {"inactive_file", &s.InactiveFile}, {"active_file", &s.ActiveFile},
		{"unevictable", &s.Unevictable}, {"hierarchical_memory_limit", &s.HierarchicalMemoryLimit},
		{"hierarchical_memsw_limit", &s.HierarchicalSwapLimit},
		{"total_cache", &s.TotalCache}, {"total_rss", &s.TotalRss}, {"total_rss_huge", &s.TotalRssHuge},
		{"total_mapped_file", &s.TotalMappedFile}, {"total_dirty", &s.TotalDirty},
		{"total_writeback", &s.TotalWriteback}, {"total_pgpgin", &s.TotalPgPgIn},
		{"total_pgpgout", &s.TotalPgPgOut}, {"total_pgfault", &s.TotalPgFault},
		{"total_pgmajfault", &s.TotalPgMajFault}, {"total_inactive_anon", &s.TotalInactiveAnon},
		{"total_active_anon", &s.TotalActiveAnon}, {"total_inactive_file", &s.TotalInactiveFile},
		{"total_active_file", &s.TotalActiveFile}, {"total_unevictable", &s.TotalUnevictable},
	}
}

// readPidsV1 reads pids.current and pids.max ("max" is 0 on v1, as in
// containerd).
func readPidsV1(dir string, m *v1.Metrics) error {
	p := &v1.PidsStat{}
	if err := readUints(dir, 0, []uintStep{{"pids.current", &p.Current}, {"pids.max", &p.Limit}}); err != nil {
		return err
	}
	m.Pids = p
	return nil
}

// readBlkio reads the CFQ statistics, or, when they are absent or empty (no
// CFQ: every kernel since 5.0), the throttle ones, as containerd does.
func (c *Cgroup) readBlkio(dir string, m *v1.Metrics) error {
	b := &v1.BlkIOStat{}
	m.Blkio = b
	devs, err := devices(c.proc)
	if err != nil {
		return err
	}
	type file struct {
		name string
		dst  *[]*v1.BlkIOEntry
	}
	read := func(files []file) (int, error) {
		n := 0
		for _, f := range files {
			entries, err := readBlkioFile(dir, f.name, devs)
			if err != nil {
				return 0, err
			}
			*f.dst = entries
			n += len(entries)
		}
		return n, nil
	}
	n, err := read([]file{
		{"blkio.sectors_recursive", &b.SectorsRecursive},
		{"blkio.io_service_bytes_recursive", &b.IoServiceBytesRecursive},
		{"blkio.io_serviced_recursive", &b.IoServicedRecursive},
		{"blkio.io_queued_recursive", &b.IoQueuedRecursive},
		{"blkio.io_service_time_recursive", &b.IoServiceTimeRecursive},
		{"blkio.io_wait_time_recursive", &b.IoWaitTimeRecursive},
		{"blkio.io_merged_recursive", &b.IoMergedRecursive},
		{"blkio.time_recursive", &b.IoTimeRecursive},
	})
	if err != nil || n > 0 {
		return err
	}
	_, err = read([]file{
		{"blkio.throttle.io_serviced", &b.IoServicedRecursive},
		{"blkio.throttle.io_service_bytes", &b.IoServiceBytesRecursive},
	})
	return err
}

// readBlkioFile parses "MAJ:MIN [OP] VALUE" lines; "Total N" lines are
// skipped.
func readBlkioFile(dir, name string, devs map[[2]uint64]string) ([]*v1.BlkIOEntry, error) {
	b, err := readFile(dir, name)
	if err != nil {
		return nil, err
	}
	var out []*v1.BlkIOEntry
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) == 0 || f[0] == "Total" {
			continue
		}
		e, err := blkioEntry(f)
		if err != nil {
			return nil, fmt.Errorf("parse %s line %q: %w", filepath.Join(dir, name), s.Text(), err)
		}
		e.Device = devs[[2]uint64{e.Major, e.Minor}]
		out = append(out, e)
	}
	return out, s.Err()
}

func blkioEntry(f []string) (*v1.BlkIOEntry, error) {
	if len(f) != 2 && len(f) != 3 {
		return nil, fmt.Errorf("%d fields", len(f))
	}
	e := &v1.BlkIOEntry{}
	var err error
	if e.Major, e.Minor, err = majorMinor(f[0]); err != nil {
		return nil, err
	}
	if len(f) == 3 {
		e.Op = f[1]
	}
	e.Value, err = strconv.ParseUint(f[len(f)-1], 10, 64)
	return e, err
}

func majorMinor(s string) (uint64, uint64, error) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("device %q is not major:minor", s)
	}
	major, err := strconv.ParseUint(a, 10, 64)
	if err != nil {
		return 0, 0, err
	}
	minor, err := strconv.ParseUint(b, 10, 64)
	return major, minor, err
}

// devices maps major:minor to /dev/<name> from /proc/partitions.
func devices(proc string) (map[[2]uint64]string, error) {
	b, err := readFile(proc, "partitions")
	if err != nil {
		return nil, err
	}
	out := make(map[[2]uint64]string)
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) != 4 {
			continue
		}
		major, err1 := strconv.ParseUint(f[0], 10, 64)
		minor, err2 := strconv.ParseUint(f[1], 10, 64)
		if err1 == nil && err2 == nil { // skips the header line
			out[[2]uint64{major, minor}] = "/dev/" + f[3]
		}
	}
	return out, nil
}

// readHugetlbV1 reads usage, max usage and failcnt for each huge page size
// that has a hugetlb.<size>.usage_in_bytes file, sizes in name order.
func readHugetlbV1(dir string, m *v1.Metrics) error {
	sizes, err := hugePageSizes(dir, ".usage_in_bytes")
	if err != nil {
		return err
	}
	for _, size := range sizes {
		h := &v1.HugetlbStat{Pagesize: size}
		p := "hugetlb." + size + "."
		if err := readUints(dir, 0, []uintStep{
			{p + "usage_in_bytes", &h.Usage}, {p + "max_usage_in_bytes", &h.Max}, {p + "failcnt", &h.Failcnt},
		}); err != nil {
			return err
		}
		m.Hugetlb = append(m.Hugetlb, h)
	}
	return nil
}

// hugePageSizes lists the <size> of dir's hugetlb.<size><suffix> files,
// sorted.
func hugePageSizes(dir, suffix string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var sizes []string
	for _, e := range entries {
		if size, ok := strings.CutPrefix(e.Name(), "hugetlb."); ok {
			if size, ok = strings.CutSuffix(size, suffix); ok && !strings.Contains(size, ".") {
				sizes = append(sizes, size)
			}
		}
	}
	slices.Sort(sizes)
	return sizes, nil
}
