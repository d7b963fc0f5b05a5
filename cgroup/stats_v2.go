package cgroup

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	v2 "github.com/leanshim/leanshim/proto/cgroups/v2"
)

// statsV2 reads a v2 cgroup into a Metrics, with the files and rules of
// containerd/cgroups v3.1.3 (containerd 2.4; a superset of v1.0.4, which
// containerd 1.6 uses). "max" reads as 2^64-1.
func (c *Cgroup) statsV2() (*v2.Metrics, error) {
	if !c.exists() {
		return nil, fmt.Errorf("%s: %w", c, ErrNotFound)
	}
	m := &v2.Metrics{}
	readers := []struct {
		name string
		read func(dir string, m *v2.Metrics) error
	}{
		{"pids", readPidsV2},
		{"cpu", readCPUV2},
		{"memory", readMemoryV2},
		{"memory events", readMemoryEvents},
		{"io", readIOV2},
		{"hugetlb", readHugetlbV2},
	}
	for _, r := range readers {
		if err := r.read(c.dir, m); err != nil {
			return nil, fmt.Errorf("%s stats: %w", r.name, err)
		}
	}
	return m, nil
}

func readPidsV2(dir string, m *v2.Metrics) error {
	m.Pids = &v2.PidsStat{}
	return readUints(dir, math.MaxUint64, []uintStep{{"pids.current", &m.Pids.Current}, {"pids.max", &m.Pids.Limit}})
}

func readCPUV2(dir string, m *v2.Metrics) error {
	stat, err := readKV(dir, "cpu.stat")
	if err != nil {
		return err
	}
	c := &v2.CPUStat{}
	pick(stat, []uintStep{
		{"usage_usec", &c.UsageUsec}, {"user_usec", &c.UserUsec}, {"system_usec", &c.SystemUsec},
		{"nr_periods", &c.NrPeriods}, {"nr_throttled", &c.NrThrottled}, {"throttled_usec", &c.ThrottledUsec},
		{"nr_bursts", &c.NrBursts}, {"burst_usec", &c.BurstUsec},
	})
	if c.Psi, err = readPSI(dir, "cpu.pressure"); err != nil {
		return err
	}
	m.Cpu = c
	return nil
}

func readMemoryV2(dir string, m *v2.Metrics) error {
	stat, err := readKV(dir, "memory.stat")
	if err != nil {
		return err
	}
	s := &v2.MemoryStat{}
	pick(stat, []uintStep{
		{"anon", &s.Anon}, {"file", &s.File}, {"kernel_stack", &s.KernelStack}, {"slab", &s.Slab},
		{"sock", &s.Sock}, {"shmem", &s.Shmem}, {"file_mapped", &s.FileMapped}, {"file_dirty", &s.FileDirty},
		{"file_writeback", &s.FileWriteback}, {"anon_thp", &s.AnonThp}, {"inactive_anon", &s.InactiveAnon},
		{"active_anon", &s.ActiveAnon}, {"inactive_file", &s.InactiveFile}, {"active_file", &s.ActiveFile},
		{"unevictable", &s.Unevictable}, {"slab_reclaimable", &s.SlabReclaimable},
		{"slab_unreclaimable", &s.SlabUnreclaimable}, {"pgfault", &s.Pgfault}, {"pgmajfault", &s.Pgmajfault},
		{"workingset_refault", &s.WorkingsetRefault}, {"workingset_activate", &s.WorkingsetActivate},
		{"workingset_nodereclaim", &s.WorkingsetNodereclaim}, {"pgrefill", &s.Pgrefill}, {"pgscan", &s.Pgscan},
		{"pgsteal", &s.Pgsteal}, {"pgactivate", &s.Pgactivate}, {"pgdeactivate", &s.Pgdeactivate},
		{"pglazyfree", &s.Pglazyfree}, {"pglazyfreed", &s.Pglazyfreed}, {"thp_fault_alloc", &s.ThpFaultAlloc},
		{"thp_collapse_alloc", &s.ThpCollapseAlloc},
	})
	if err := readUints(dir, math.MaxUint64, []uintStep{
		{"memory.current", &s.Usage}, {"memory.max", &s.UsageLimit}, {"memory.peak", &s.MaxUsage},
		{"memory.swap.current", &s.SwapUsage}, {"memory.swap.max", &s.SwapLimit}, {"memory.swap.peak", &s.SwapMaxUsage},
	}); err != nil {
		return err
	}
	if s.Psi, err = readPSI(dir, "memory.pressure"); err != nil {
		return err
	}
	m.Memory = s
	return nil
}

// readMemoryEvents reads memory.events; without it MemoryEvents stays unset.
func readMemoryEvents(dir string, m *v2.Metrics) error {
	ev, err := readKV(dir, "memory.events")
	if err != nil || len(ev) == 0 {
		return err
	}
	e := &v2.MemoryEvents{}
	pick(ev, []uintStep{
		{"low", &e.Low}, {"high", &e.High}, {"max", &e.Max}, {"oom", &e.Oom},
		{"oom_kill", &e.OomKill}, {"oom_group_kill", &e.OomGroupKill},
	})
	m.MemoryEvents = e
	return nil
}

// readIOV2 reads io.stat lines "MAJ:MIN rbytes=N wbytes=N rios=N wios=N ..."
// (unknown keys such as dbytes are skipped) and io.pressure.
func readIOV2(dir string, m *v2.Metrics) error {
	b, err := readFile(dir, "io.stat")
	if err != nil {
		return err
	}
	st := &v2.IOStat{}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		e := &v2.IOEntry{}
		if e.Major, e.Minor, err = majorMinor(f[0]); err != nil {
			return fmt.Errorf("parse io.stat line %q: %w", line, err)
		}
		kv := make(map[string]uint64, len(f)-1)
		for _, p := range f[1:] {
			k, v, _ := strings.Cut(p, "=")
			if n, err := strconv.ParseUint(v, 10, 64); err == nil {
				kv[k] = n
			}
		}
		pick(kv, []uintStep{{"rbytes", &e.Rbytes}, {"wbytes", &e.Wbytes}, {"rios", &e.Rios}, {"wios", &e.Wios}})
		st.Usage = append(st.Usage, e)
	}
	if st.Psi, err = readPSI(dir, "io.pressure"); err != nil {
		return err
	}
	m.Io = st
	return nil
}

// readHugetlbV2 reads current, max and the "max" event count for each huge
// page size that has a hugetlb.<size>.current file, sizes in name order.
func readHugetlbV2(dir string, m *v2.Metrics) error {
	sizes, err := hugePageSizes(dir, ".current")
	if err != nil {
		return err
	}
	for _, size := range sizes {
		h := &v2.HugeTlbStat{Pagesize: size}
		p := "hugetlb." + size + "."
		if err := readUints(dir, math.MaxUint64, []uintStep{{p + "current", &h.Current}, {p + "max", &h.Max}}); err != nil {
			return err
		}
		ev, err := readKV(dir, p+"events")
		if err != nil {
			return err
		}
		h.Failcnt = ev["max"]
		m.Hugetlb = append(m.Hugetlb, h)
	}
	return nil
}

// readPSI reads a pressure file (Documentation/accounting/psi.rst):
// "some avg10=0.00 avg60=0.00 avg300=0.00 total=0" and a "full" line.
// An absent file (no PSI in the kernel) gives nil.
func readPSI(dir, name string) (*v2.PSIStats, error) {
	b, err := readFile(dir, name)
	if err != nil || b == nil {
		return nil, err
	}
	psi := &v2.PSIStats{}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		d, err := psiData(f[1:])
		if err != nil {
			return nil, fmt.Errorf("parse %s line %q: %w", name, line, err)
		}
		switch f[0] {
		case "some":
			psi.Some = d
		case "full":
			psi.Full = d
		}
	}
	return psi, nil
}

func psiData(fields []string) (*v2.PSIData, error) {
	d := &v2.PSIData{}
	for _, p := range fields {
		k, v, _ := strings.Cut(p, "=")
		var err error
		switch k {
		case "avg10":
			d.Avg10, err = strconv.ParseFloat(v, 64)
		case "avg60":
			d.Avg60, err = strconv.ParseFloat(v, 64)
		case "avg300":
			d.Avg300, err = strconv.ParseFloat(v, 64)
		case "total":
			d.Total, err = strconv.ParseUint(v, 10, 64)
		}
		if err != nil {
			return nil, err
		}
	}
	return d, nil
}
