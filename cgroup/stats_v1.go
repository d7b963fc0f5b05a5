package cgroup

import (
	"bytes"
	"fmt"
	"path/filepath"

	v1 "github.com/leanshim/leanshim/proto/cgroups/v1"
)

// userHZ is the unit of cpuacct.stat: USER_HZ ticks, 100 per second on every
// Linux ABI (times(2); the kernel converts with jiffies_64_to_clock_t).
const userHZ = 100

// statsV1 reads each controller of a v1 cgroup into its part of a Metrics,
// with the files and rules of containerd/cgroups v1.0.4 (containerd 1.6).
func (c *Cgroup) statsV1(s *scratch) (*v1.Metrics, error) {
	if !c.exists(s) {
		return nil, fmt.Errorf("%s: %w", c, ErrNotFound)
	}
	// containerd always sends cpu with both parts, even without cpuacct.
	m := &v1.Metrics{Cpu: &v1.CPUStat{Usage: &v1.CPUUsage{}, Throttling: &v1.Throttle{}}}
	readers := []struct {
		controller string
		read       func(s *scratch, dir string, m *v1.Metrics) error
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
		if !ok || !s.isDir(dir) {
			continue
		}
		if err := r.read(s, dir, m); err != nil {
			return nil, fmt.Errorf("%s stats: %w", r.controller, err)
		}
	}
	return m, nil
}

// readCPUAcct reads cpuacct.usage, cpuacct.usage_percpu and cpuacct.stat.
func readCPUAcct(s *scratch, dir string, m *v1.Metrics) error {
	u := m.Cpu.Usage
	var err error
	if u.Total, err = s.readUint(dir, "cpuacct.usage", 0); err != nil {
		return err
	}
	if u.PerCpu, err = readPerCPU(s, dir); err != nil {
		return err
	}
	var user, system uint64
	if _, err := s.walkKV(dir, "cpuacct.stat", []uintStep{{"user", &user}, {"system", &system}}); err != nil {
		return err
	}
	u.User = user * (1e9 / userHZ)
	u.Kernel = system * (1e9 / userHZ)
	return nil
}

// readPerCPU reads cpuacct.usage_percpu, one number per CPU; nil when it is
// absent or empty. The slice is sized once, to the count of numbers.
func readPerCPU(s *scratch, dir string) ([]uint64, error) {
	b, err := s.read(dir, "cpuacct.usage_percpu")
	if err != nil {
		return nil, err
	}
	n := fieldsN(b, nil)
	if n == 0 {
		return nil, nil
	}
	out := make([]uint64, 0, n)
	for f, rest := cutField(b); len(f) > 0; f, rest = cutField(rest) {
		v, err := parseUint(f)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", filepath.Join(dir, "cpuacct.usage_percpu"), err)
		}
		out = append(out, v)
	}
	return out, nil
}

// readThrottling reads the CFS bandwidth counters of cpu.stat.
func readThrottling(s *scratch, dir string, m *v1.Metrics) error {
	t := m.Cpu.Throttling
	_, err := s.walkKV(dir, "cpu.stat", []uintStep{
		{"nr_periods", &t.Periods},
		{"nr_throttled", &t.ThrottledPeriods},
		{"throttled_time", &t.ThrottledTime},
	})
	return err
}

// readMemoryV1 reads memory.stat, memory.oom_control and the four counter
// families (memory, memsw, kmem, kmem.tcp). A family the kernel lacks (memsw
// without swap accounting) stays zero but present, as in containerd.
func readMemoryV1(sc *scratch, dir string, m *v1.Metrics) error {
	s := &v1.MemoryStat{Usage: &v1.MemoryEntry{}, Swap: &v1.MemoryEntry{}, Kernel: &v1.MemoryEntry{}, KernelTcp: &v1.MemoryEntry{}}
	steps := memoryStatSteps(s)
	if _, err := sc.walkKV(dir, "memory.stat", steps[:]); err != nil {
		return err
	}
	// The file names are spelt out: prefix+name would build 16 strings
	// per call.
	if err := sc.readUints(dir, 0, []uintStep{
		{"memory.usage_in_bytes", &s.Usage.Usage},
		{"memory.max_usage_in_bytes", &s.Usage.Max},
		{"memory.failcnt", &s.Usage.Failcnt},
		{"memory.limit_in_bytes", &s.Usage.Limit},
		{"memory.memsw.usage_in_bytes", &s.Swap.Usage},
		{"memory.memsw.max_usage_in_bytes", &s.Swap.Max},
		{"memory.memsw.failcnt", &s.Swap.Failcnt},
		{"memory.memsw.limit_in_bytes", &s.Swap.Limit},
		{"memory.kmem.usage_in_bytes", &s.Kernel.Usage},
		{"memory.kmem.max_usage_in_bytes", &s.Kernel.Max},
		{"memory.kmem.failcnt", &s.Kernel.Failcnt},
		{"memory.kmem.limit_in_bytes", &s.Kernel.Limit},
		{"memory.kmem.tcp.usage_in_bytes", &s.KernelTcp.Usage},
		{"memory.kmem.tcp.max_usage_in_bytes", &s.KernelTcp.Max},
		{"memory.kmem.tcp.failcnt", &s.KernelTcp.Failcnt},
		{"memory.kmem.tcp.limit_in_bytes", &s.KernelTcp.Limit},
	}); err != nil {
		return err
	}
	o := &v1.MemoryOomControl{}
	if _, err := sc.walkKV(dir, "memory.oom_control", []uintStep{
		{"oom_kill_disable", &o.OomKillDisable}, {"under_oom", &o.UnderOom}, {"oom_kill", &o.OomKill},
	}); err != nil {
		return err
	}
	m.Memory, m.MemoryOomControl = s, o
	return nil
}

// memoryStatSteps maps memory.stat keys to MemoryStat fields. It returns an
// array, which stays on the caller's stack; a slice would be allocated.
func memoryStatSteps(s *v1.MemoryStat) [32]uintStep {
	return [32]uintStep{
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
func readPidsV1(s *scratch, dir string, m *v1.Metrics) error {
	p := &v1.PidsStat{}
	if err := s.readUints(dir, 0, []uintStep{{"pids.current", &p.Current}, {"pids.max", &p.Limit}}); err != nil {
		return err
	}
	m.Pids = p
	return nil
}

// readBlkio reads the CFQ statistics, or, when they are absent or empty (no
// CFQ: every kernel since 5.0), the throttle ones, as containerd does.
func (c *Cgroup) readBlkio(s *scratch, dir string, m *v1.Metrics) error {
	b := &v1.BlkIOStat{}
	m.Blkio = b
	if err := s.readDevices(c.proc); err != nil {
		return err
	}
	n, err := readBlkioFiles(s, dir, []blkioFile{
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
	_, err = readBlkioFiles(s, dir, []blkioFile{
		{"blkio.throttle.io_serviced", &b.IoServicedRecursive},
		{"blkio.throttle.io_service_bytes", &b.IoServiceBytesRecursive},
	})
	return err
}

// blkioFile names one blkio file and the BlkIOStat field it fills.
type blkioFile struct {
	name string
	dst  *[]*v1.BlkIOEntry
}

// readBlkioFiles reads each file into its field and returns the number of
// entries read in all.
func readBlkioFiles(s *scratch, dir string, files []blkioFile) (int, error) {
	n := 0
	for _, f := range files {
		entries, err := readBlkioFile(s, dir, f.name)
		if err != nil {
			return 0, err
		}
		*f.dst = entries
		n += len(entries)
	}
	return n, nil
}

// readBlkioFile parses "MAJ:MIN [OP] VALUE" lines; "Total N" lines are
// skipped. Device names come from s.devs (readDevices). The entries share
// one allocation, sized by the file's line count.
func readBlkioFile(s *scratch, dir, name string) ([]*v1.BlkIOEntry, error) {
	b, err := s.read(dir, name)
	if err != nil {
		return nil, err
	}
	var (
		out     []*v1.BlkIOEntry
		entries []v1.BlkIOEntry
	)
	for rest := b; len(rest) > 0; {
		var line []byte
		line, rest = cutLine(rest)
		var f [3][]byte
		nf := fieldsN(line, f[:])
		if nf == 0 || string(f[0]) == "Total" {
			continue
		}
		if entries == nil {
			lines := bytes.Count(b, []byte("\n")) + 1
			entries, out = make([]v1.BlkIOEntry, 0, lines), make([]*v1.BlkIOEntry, 0, lines)
		}
		entries = append(entries, v1.BlkIOEntry{})
		e := &entries[len(entries)-1]
		if err := blkioEntry(s, e, f[:min(nf, 3)], nf); err != nil {
			return nil, fmt.Errorf("parse %s line %q: %w", filepath.Join(dir, name), scanText(line), err)
		}
		e.Device = s.deviceName(e.Major, e.Minor)
		out = append(out, e)
	}
	return out, nil
}

// blkioEntry fills e from the fields f of a line that has n fields.
func blkioEntry(s *scratch, e *v1.BlkIOEntry, f [][]byte, n int) error {
	if n != 2 && n != 3 {
		return fmt.Errorf("%d fields", n)
	}
	var err error
	if e.Major, e.Minor, err = majorMinor(f[0]); err != nil {
		return err
	}
	if n == 3 {
		e.Op = s.intern(f[1]) // Read, Write, Sync, Async, Discard, Total
	}
	e.Value, err = parseUint(f[n-1])
	return err
}

func majorMinor(b []byte) (uint64, uint64, error) {
	a, c, ok := bytes.Cut(b, []byte(":"))
	if !ok {
		return 0, 0, fmt.Errorf("device %q is not major:minor", b)
	}
	major, err := parseUint(a)
	if err != nil {
		return 0, 0, err
	}
	minor, err := parseUint(c)
	return major, minor, err
}

// readHugetlbV1 reads usage, max usage and failcnt for each huge page size
// that has a hugetlb.<size>.usage_in_bytes file, sizes in name order.
func readHugetlbV1(s *scratch, dir string, m *v1.Metrics) error {
	sizes, err := s.hugePageSizes(dir, ".usage_in_bytes")
	if err != nil {
		return err
	}
	if len(sizes) > 0 {
		m.Hugetlb = make([]*v1.HugetlbStat, 0, len(sizes))
	}
	for _, size := range sizes {
		h := &v1.HugetlbStat{Pagesize: size}
		if err := s.readUints(dir, 0, []uintStep{
			{s.concat("hugetlb.", size, ".usage_in_bytes"), &h.Usage},
			{s.concat("hugetlb.", size, ".max_usage_in_bytes"), &h.Max},
			{s.concat("hugetlb.", size, ".failcnt"), &h.Failcnt},
		}); err != nil {
			return err
		}
		m.Hugetlb = append(m.Hugetlb, h)
	}
	return nil
}
