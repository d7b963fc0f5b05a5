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
