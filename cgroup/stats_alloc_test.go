package cgroup

import (
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkStats measures one Stats call, the work containerd's CRI stats
// collector asks of a shim once per second per container and per pod; its
// B/op and allocs/op are the garbage that call leaves behind.
func BenchmarkStats(b *testing.B) {
	b.Run("v1-fixture", func(b *testing.B) {
		benchStats(b, fixtureV1Stats())
	})
	b.Run("v2-fixture", func(b *testing.B) {
		benchStats(b, &Cgroup{version: V2, dir: "testdata/v2", proc: "testdata/proc"})
	})
	b.Run("real-own", func(b *testing.B) {
		h, err := Detect()
		if err != nil {
			b.Skip(err)
		}
		cg, err := h.ForPid(os.Getpid())
		if err != nil {
			b.Fatal(err)
		}
		benchStats(b, cg)
	})
}

func benchStats(b *testing.B, cg *Cgroup) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cg.Stats(); err != nil {
			b.Fatal(err)
		}
	}
}

// fixtureV1Stats is fixtureCgroupV1 for benchmarks, which have no *testing.T.
func fixtureV1Stats() *Cgroup {
	c := &Cgroup{version: V1, dirs: map[string]string{}, proc: "testdata/proc"}
	for _, ctrl := range []string{"cpu", "cpuacct", "memory", "pids", "blkio", "hugetlb"} {
		c.dirs[ctrl] = filepath.Join("testdata/v1", ctrl)
	}
	return c
}

// TestStatsAllocs bounds the allocations of one Stats call on the fixtures
// with a warm scratch (the pool is left out: under -race it drops items on
// purpose). The bound protects what this package's readers were reworked
// for: one call allocates the returned metrics and nothing else, because a
// shim under CRI makes one call per second per container and per pod, and
// the garbage made it collect every few seconds. v1: 20 messages and slices
// (Metrics, cpu 3 and per-cpu, memory 6, pids, blkio 1 plus 2 per file,
// hugetlb 3) and the method value c.readBlkio in statsV1's table. v2: 21
// messages and slices. A new allocation per file or line shows up here.
func TestStatsAllocs(t *testing.T) {
	v1, v2 := fixtureCgroupV1(t, "testdata/v1"), &Cgroup{version: V2, dir: "testdata/v2"}
	for _, tc := range []struct {
		name  string
		stats func(*scratch) error
		max   float64
	}{
		{"v1", func(s *scratch) error { _, err := v1.statsV1(s); return err }, 21},
		{"v2", func(s *scratch) error { _, err := v2.statsV2(s); return err }, 21},
	} {
		s := newScratch()
		var err error
		n := testing.AllocsPerRun(20, func() { err = tc.stats(s) })
		if err != nil {
			t.Fatal(err)
		}
		if n > tc.max {
			t.Errorf("%s: %v allocations per Stats call, want at most %v", tc.name, n, tc.max)
		}
	}
}
