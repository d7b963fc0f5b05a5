package cgroup

import (
	"bytes"
	"fmt"
	"math"
	"strconv"

	v2 "github.com/leanshim/leanshim/proto/cgroups/v2"
)

// statsV2 reads a v2 cgroup into a Metrics, with the files and rules of
// containerd/cgroups v3.1.3 (containerd 2.4; a superset of v1.0.4, which
// containerd 1.6 uses). "max" reads as 2^64-1.
func (c *Cgroup) statsV2(s *scratch) (*v2.Metrics, error) {
	if !c.exists(s) {
		return nil, fmt.Errorf("%s: %w", c, ErrNotFound)
	}
	m := &v2.Metrics{}
	readers := []struct {
		name string
		read func(s *scratch, dir string, m *v2.Metrics) error
	}{
		{"pids", readPidsV2},
		{"cpu", readCPUV2},
		{"memory", readMemoryV2},
		{"memory events", readMemoryEvents},
		{"io", readIOV2},
		{"hugetlb", readHugetlbV2},
	}
	for _, r := range readers {
		if err := r.read(s, c.dir, m); err != nil {
			return nil, fmt.Errorf("%s stats: %w", r.name, err)
		}
	}
	return m, nil
}

func readPidsV2(s *scratch, dir string, m *v2.Metrics) error {
	m.Pids = &v2.PidsStat{}
	return s.readUints(dir, math.MaxUint64, []uintStep{{"pids.current", &m.Pids.Current}, {"pids.max", &m.Pids.Limit}})
}

func readCPUV2(s *scratch, dir string, m *v2.Metrics) error {
	c := &v2.CPUStat{}
	if _, err := s.walkKV(dir, "cpu.stat", []uintStep{
		{"usage_usec", &c.UsageUsec}, {"user_usec", &c.UserUsec}, {"system_usec", &c.SystemUsec},
		{"nr_periods", &c.NrPeriods}, {"nr_throttled", &c.NrThrottled}, {"throttled_usec", &c.ThrottledUsec},
		{"nr_bursts", &c.NrBursts}, {"burst_usec", &c.BurstUsec},
	}); err != nil {
		return err
	}
	var err error
	if c.Psi, err = readPSI(s, dir, "cpu.pressure"); err != nil {
		return err
	}
	m.Cpu = c
	return nil
}

func readMemoryV2(sc *scratch, dir string, m *v2.Metrics) error {
	s := &v2.MemoryStat{}
	if _, err := sc.walkKV(dir, "memory.stat", []uintStep{
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
	}); err != nil {
		return err
	}
	if err := sc.readUints(dir, math.MaxUint64, []uintStep{
		{"memory.current", &s.Usage}, {"memory.max", &s.UsageLimit}, {"memory.peak", &s.MaxUsage},
		{"memory.swap.current", &s.SwapUsage}, {"memory.swap.max", &s.SwapLimit}, {"memory.swap.peak", &s.SwapMaxUsage},
	}); err != nil {
		return err
	}
	var err error
	if s.Psi, err = readPSI(sc, dir, "memory.pressure"); err != nil {
		return err
	}
	m.Memory = s
	return nil
}

// readMemoryEvents reads memory.events; without it MemoryEvents stays unset.
func readMemoryEvents(s *scratch, dir string, m *v2.Metrics) error {
	e := &v2.MemoryEvents{}
	n, err := s.walkKV(dir, "memory.events", []uintStep{
		{"low", &e.Low}, {"high", &e.High}, {"max", &e.Max}, {"oom", &e.Oom},
		{"oom_kill", &e.OomKill}, {"oom_group_kill", &e.OomGroupKill},
	})
	if err != nil || n == 0 {
		return err
	}
	m.MemoryEvents = e
	return nil
}

// readIOV2 reads io.stat lines "MAJ:MIN rbytes=N wbytes=N rios=N wios=N ..."
// (unknown keys such as dbytes are skipped) and io.pressure.
func readIOV2(s *scratch, dir string, m *v2.Metrics) error {
	b, err := s.read(dir, "io.stat")
	if err != nil {
		return err
	}
	st := &v2.IOStat{}
	for rest := b; len(rest) > 0; {
		var line []byte
		line, rest = cutLine(rest)
		var f [2][]byte
		if fieldsN(line, f[:]) < 2 {
			continue
		}
		if st.Usage == nil { // sized once, by the line count
			st.Usage = make([]*v2.IOEntry, 0, bytes.Count(b, []byte("\n"))+1)
		}
		e := &v2.IOEntry{}
		if e.Major, e.Minor, err = majorMinor(f[0]); err != nil {
			return fmt.Errorf("parse io.stat line %q: %w", line, err)
		}
		ioCounters(e, line)
		st.Usage = append(st.Usage, e)
	}
	if st.Psi, err = readPSI(s, dir, "io.pressure"); err != nil {
		return err
	}
	m.Io = st
	return nil
}

// ioCounters sets e from the key=value fields after line's first; a value
// that does not parse is skipped, a key that repeats sets its last value.
func ioCounters(e *v2.IOEntry, line []byte) {
	_, rest := cutField(line)
	for f, rest := cutField(rest); len(f) > 0; f, rest = cutField(rest) {
		k, v, _ := bytes.Cut(f, []byte("="))
		n, err := parseUint(v)
		if err != nil {
			continue
		}
		switch string(k) {
		case "rbytes":
			e.Rbytes = n
		case "wbytes":
			e.Wbytes = n
		case "rios":
			e.Rios = n
		case "wios":
			e.Wios = n
		}
	}
}

// readHugetlbV2 reads current, max and the "max" event count for each huge
// page size that has a hugetlb.<size>.current file, sizes in name order.
func readHugetlbV2(s *scratch, dir string, m *v2.Metrics) error {
	sizes, err := s.hugePageSizes(dir, ".current")
	if err != nil {
		return err
	}
	if len(sizes) > 0 {
		m.Hugetlb = make([]*v2.HugeTlbStat, 0, len(sizes))
	}
	for _, size := range sizes {
		h := &v2.HugeTlbStat{Pagesize: size}
		if err := s.readUints(dir, math.MaxUint64, []uintStep{
			{s.concat("hugetlb.", size, ".current"), &h.Current}, {s.concat("hugetlb.", size, ".max"), &h.Max},
		}); err != nil {
			return err
		}
		if _, err := s.walkKV(dir, s.concat("hugetlb.", size, ".events"), []uintStep{{"max", &h.Failcnt}}); err != nil {
			return err
		}
		m.Hugetlb = append(m.Hugetlb, h)
	}
	return nil
}

// readPSI reads a pressure file (Documentation/accounting/psi.rst):
// "some avg10=0.00 avg60=0.00 avg300=0.00 total=0" and a "full" line.
// An absent file (no PSI in the kernel) gives nil.
func readPSI(s *scratch, dir, name string) (*v2.PSIStats, error) {
	b, err := s.read(dir, name)
	if err != nil || b == nil {
		return nil, err
	}
	psi := &v2.PSIStats{}
	for len(b) > 0 {
		var line []byte
		line, b = cutLine(b)
		kind, rest := cutField(line)
		if len(kind) == 0 {
			continue
		}
		var d v2.PSIData
		if err := psiData(&d, rest); err != nil {
			return nil, fmt.Errorf("parse %s line %q: %w", name, line, err)
		}
		switch string(kind) {
		case "some":
			psi.Some = &d
		case "full":
			psi.Full = &d
		}
	}
	return psi, nil
}

// psiData sets d from fields "avg10=N avg60=N avg300=N total=N".
func psiData(d *v2.PSIData, fields []byte) error {
	for p, rest := cutField(fields); len(p) > 0; p, rest = cutField(rest) {
		k, v, _ := bytes.Cut(p, []byte("="))
		var err error
		switch string(k) {
		case "avg10":
			d.Avg10, err = parseFloat(v)
		case "avg60":
			d.Avg60, err = parseFloat(v)
		case "avg300":
			d.Avg300, err = parseFloat(v)
		case "total":
			d.Total, err = parseUint(v)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// parseFloat is strconv.ParseFloat of b; see parseUint.
func parseFloat(b []byte) (float64, error) {
	return strconv.ParseFloat(string(b), 64)
}
