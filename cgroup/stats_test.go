package cgroup

import (
	"errors"
	"math"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/gogo/protobuf/proto"

	v1 "github.com/leanshim/leanshim/proto/cgroups/v1"
	v2 "github.com/leanshim/leanshim/proto/cgroups/v2"
)

func fixtureCgroupV1(t *testing.T, root string) *Cgroup {
	t.Helper()
	c := &Cgroup{version: V1, dirs: map[string]string{}, proc: "testdata/proc"}
	for _, ctrl := range []string{"cpu", "cpuacct", "memory", "pids", "blkio", "hugetlb"} {
		c.dirs[ctrl] = filepath.Join(root, ctrl)
	}
	return c
}

// wantV1 is what testdata/v1 holds, field by field.
func wantV1() *v1.Metrics {
	const ns = 1e9 / userHZ
	return &v1.Metrics{
		Hugetlb: []*v1.HugetlbStat{
			{Pagesize: "1GB"},
			{Usage: 4194304, Max: 6291456, Failcnt: 1, Pagesize: "2MB"},
		},
		Pids: &v1.PidsStat{Current: 3, Limit: 0}, // "max"
		Cpu: &v1.CPUStat{
			Usage:      &v1.CPUUsage{Total: 2380562460663, Kernel: 126906 * ns, User: 111149 * ns, PerCpu: []uint64{1169717220554, 1210845240109}},
			Throttling: &v1.Throttle{Periods: 120, ThrottledPeriods: 7, ThrottledTime: 3456789},
		},
		Memory: &v1.MemoryStat{
			Cache: 10838016, Rss: 7327744, RssHuge: 2097152, MappedFile: 6950912, Dirty: 126976, Writeback: 4096,
			PgPgIn: 35720, PgPgOut: 31285, PgFault: 46694, PgMajFault: 7, InactiveAnon: 11, ActiveAnon: 1531904,
			InactiveFile: 172032, ActiveFile: 1499136, Unevictable: 14962688,
			HierarchicalMemoryLimit: 16777216, HierarchicalSwapLimit: 33554432,
			TotalCache: 20838016, TotalRss: 17327744, TotalRssHuge: 4194304, TotalMappedFile: 16950912,
			TotalDirty: 226976, TotalWriteback: 8192, TotalPgPgIn: 135720, TotalPgPgOut: 131285,
			TotalPgFault: 146694, TotalPgMajFault: 17, TotalInactiveAnon: 111, TotalActiveAnon: 2531904,
			TotalInactiveFile: 272032, TotalActiveFile: 2499136, TotalUnevictable: 24962688,
			Usage:     &v1.MemoryEntry{Limit: 16777216, Usage: 18165760, Max: 16777216, Failcnt: 42},
			Swap:      &v1.MemoryEntry{Limit: 33554432, Usage: 18173952, Max: 18300000, Failcnt: 3},
			Kernel:    &v1.MemoryEntry{Limit: 9223372036854771712, Usage: 1048576, Max: 2097152},
			KernelTcp: &v1.MemoryEntry{Limit: 9223372036854771712, Max: 4096, Failcnt: 1},
		},
		// The CFQ files exist but are empty (no CFQ on the device): the
		// throttle files are read instead, as containerd does.
		Blkio: &v1.BlkIOStat{
			IoServiceBytesRecursive: []*v1.BlkIOEntry{
				{Op: "Read", Device: "/dev/vda", Major: 254, Value: 4096},
				{Op: "Write", Device: "/dev/vda", Major: 254, Value: 8192},
				{Op: "Sync", Device: "/dev/vda", Major: 254, Value: 12288},
				{Op: "Async", Device: "/dev/vda", Major: 254},
				{Op: "Discard", Device: "/dev/vda", Major: 254},
				{Op: "Total", Device: "/dev/vda", Major: 254, Value: 12288},
				{Op: "Read", Device: "/dev/sdb", Major: 8, Minor: 16, Value: 512},
			},
			IoServicedRecursive: []*v1.BlkIOEntry{
				{Op: "Read", Device: "/dev/vda", Major: 254, Value: 1},
				{Op: "Write", Device: "/dev/vda", Major: 254, Value: 2},
				{Op: "Sync", Device: "/dev/vda", Major: 254, Value: 3},
				{Op: "Async", Device: "/dev/vda", Major: 254},
				{Op: "Discard", Device: "/dev/vda", Major: 254},
				{Op: "Total", Device: "/dev/vda", Major: 254, Value: 3},
			},
		},
		MemoryOomControl: &v1.MemoryOomControl{UnderOom: 1, OomKill: 2},
	}
}

func TestStatsV1Fixture(t *testing.T) {
	m, err := fixtureCgroupV1(t, "testdata/v1").Stats()
	if err != nil {
		t.Fatal(err)
	}
	if name := proto.MessageName(m); name != "io.containerd.cgroups.v1.Metrics" {
		t.Fatalf("type %q", name)
	}
	assertMetrics(t, m, wantV1())
}

func TestStatsV1CFQ(t *testing.T) {
	c := &Cgroup{version: V1, dirs: map[string]string{"blkio": "testdata/v1cfq/blkio"}, proc: "testdata/proc"}
	m, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	sda := func(op string, v uint64) *v1.BlkIOEntry {
		return &v1.BlkIOEntry{Op: op, Device: "/dev/sda", Major: 8, Value: v}
	}
	want := &v1.Metrics{
		Cpu: &v1.CPUStat{Usage: &v1.CPUUsage{}, Throttling: &v1.Throttle{}}, // always present
		Blkio: &v1.BlkIOStat{
			IoServiceBytesRecursive: []*v1.BlkIOEntry{sda("Read", 100), sda("Write", 200), sda("Sync", 300), sda("Async", 0), sda("Total", 300)},
			IoServicedRecursive:     []*v1.BlkIOEntry{sda("Read", 1), sda("Write", 2), sda("Sync", 3), sda("Async", 0), sda("Total", 3)},
			SectorsRecursive:        []*v1.BlkIOEntry{sda("", 64)},
		},
	}
	assertMetrics(t, m, want)
}

// TestStatsV1ForPid reads the fixture through the path a shim takes: the
// init's /proc/PID/cgroup, then Stats.
func TestStatsV1ForPid(t *testing.T) {
	cg, err := fixtureV1(t).ForPid(4242)
	if err != nil {
		t.Fatal(err)
	}
	m, err := cg.Stats()
	if err != nil {
		t.Fatal(err)
	}
	want := wantV1()
	want.Hugetlb = nil // hugetlb is not in /proc/4242/cgroup
	assertMetrics(t, m, want)
}

func TestStatsV2Fixture(t *testing.T) {
	m, err := (&Cgroup{version: V2, dir: "testdata/v2", proc: "testdata/proc"}).Stats()
	if err != nil {
		t.Fatal(err)
	}
	if name := proto.MessageName(m); name != "io.containerd.cgroups.v2.Metrics" {
		t.Fatalf("type %q", name)
	}
	zeroPSI := &v2.PSIStats{Some: &v2.PSIData{}, Full: &v2.PSIData{}}
	want := &v2.Metrics{
		Pids: &v2.PidsStat{Current: 2, Limit: 100},
		Cpu: &v2.CPUStat{
			UsageUsec: 52342, UserUsec: 31000, SystemUsec: 21342, NrPeriods: 10, NrThrottled: 2, ThrottledUsec: 1500,
			NrBursts: 1, BurstUsec: 300,
			Psi: &v2.PSIStats{Some: &v2.PSIData{Avg10: 1.5, Avg60: 0.25, Total: 12345}, Full: &v2.PSIData{}},
		},
		Memory: &v2.MemoryStat{
			Anon: 4325376, File: 1056768, KernelStack: 65536, Slab: 215000, Sock: 4096, Shmem: 8192,
			FileMapped: 466944, FileDirty: 12288, FileWriteback: 4096, AnonThp: 2097152,
			InactiveAnon: 4300800, ActiveAnon: 20480, InactiveFile: 811008, ActiveFile: 245760, Unevictable: 3,
			SlabReclaimable: 120000, SlabUnreclaimable: 95000, Pgfault: 3210, Pgmajfault: 4,
			WorkingsetNodereclaim: 7, Pgrefill: 10, Pgscan: 8, Pgsteal: 9, Pgactivate: 11, Pgdeactivate: 12,
			Pglazyfree: 13, Pglazyfreed: 14, ThpFaultAlloc: 15, ThpCollapseAlloc: 16,
			// workingset_refault/activate are split into _anon/_file since
			// Linux 5.9; the old keys are absent, as with containerd.
			Usage: 5677056, UsageLimit: 16777216, MaxUsage: 6000000,
			SwapUsage: 0, SwapLimit: math.MaxUint64, SwapMaxUsage: 4096,
			Psi: &v2.PSIStats{Some: &v2.PSIData{Total: 10}, Full: &v2.PSIData{Total: 5}},
		},
		MemoryEvents: &v2.MemoryEvents{Max: 17, Oom: 2, OomKill: 1},
		Io: &v2.IOStat{
			Usage: []*v2.IOEntry{
				{Major: 254, Rbytes: 1048576, Wbytes: 4096, Rios: 20, Wios: 1},
				{Major: 8, Minor: 16, Rbytes: 512, Rios: 1},
			},
			Psi: zeroPSI,
		},
		Hugetlb: []*v2.HugeTlbStat{
			{Pagesize: "1GB"},
			{Current: 2097152, Max: math.MaxUint64, Pagesize: "2MB", Failcnt: 3},
		},
	}
	assertMetrics(t, m, want)
}

func TestStatsNotFound(t *testing.T) {
	for _, c := range []*Cgroup{
		{version: V1, dirs: map[string]string{"memory": "testdata/gone/memory", "cpu": "testdata/gone/cpu"}},
		{version: V2, dir: "testdata/gone"},
	} {
		if _, err := c.Stats(); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", c.version, err)
		}
	}
}

func assertMetrics(t *testing.T, got Metrics, want Metrics) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("metrics differ\n got: %s\nwant: %s", got, want)
	}
}
