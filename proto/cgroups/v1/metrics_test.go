package v1_test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/gogo/protobuf/proto"
	"github.com/gogo/protobuf/protoc-gen-gogo/descriptor"

	v1 "github.com/leanshim/leanshim/proto/cgroups/v1"
)

// wantFields lists every field, checked one by one against containerd/cgroups
// v1.0.4 stats/v1/metrics.proto (vendored by containerd v1.6.20) and
// cgroups v3.1.3 cgroup1/stats/metrics.proto (containerd v2.4.2).
const wantFields = `
Metrics          1 hugetlb repeated HugetlbStat | 2 pids PidsStat | 3 cpu CPUStat | 4 memory MemoryStat | 5 blkio BlkIOStat | 6 rdma RdmaStat | 7 network repeated NetworkStat | 8 cgroup_stats CgroupStats | 9 memory_oom_control MemoryOomControl
HugetlbStat      1 usage uint64 | 2 max uint64 | 3 failcnt uint64 | 4 pagesize string
PidsStat         1 current uint64 | 2 limit uint64
CPUStat          1 usage CPUUsage | 2 throttling Throttle
CPUUsage         1 total uint64 | 2 kernel uint64 | 3 user uint64 | 4 per_cpu repeated uint64
Throttle         1 periods uint64 | 2 throttled_periods uint64 | 3 throttled_time uint64
MemoryStat       1 cache uint64 | 2 rss uint64 | 3 rss_huge uint64 | 4 mapped_file uint64 | 5 dirty uint64 | 6 writeback uint64 | 7 pg_pg_in uint64 | 8 pg_pg_out uint64 | 9 pg_fault uint64 | 10 pg_maj_fault uint64 | 11 inactive_anon uint64 | 12 active_anon uint64 | 13 inactive_file uint64 | 14 active_file uint64 | 15 unevictable uint64 | 16 hierarchical_memory_limit uint64 | 17 hierarchical_swap_limit uint64 | 18 total_cache uint64 | 19 total_rss uint64 | 20 total_rss_huge uint64 | 21 total_mapped_file uint64 | 22 total_dirty uint64 | 23 total_writeback uint64 | 24 total_pg_pg_in uint64 | 25 total_pg_pg_out uint64 | 26 total_pg_fault uint64 | 27 total_pg_maj_fault uint64 | 28 total_inactive_anon uint64 | 29 total_active_anon uint64 | 30 total_inactive_file uint64 | 31 total_active_file uint64 | 32 total_unevictable uint64 | 33 usage MemoryEntry | 34 swap MemoryEntry | 35 kernel MemoryEntry | 36 kernel_tcp MemoryEntry
MemoryEntry      1 limit uint64 | 2 usage uint64 | 3 max uint64 | 4 failcnt uint64
MemoryOomControl 1 oom_kill_disable uint64 | 2 under_oom uint64 | 3 oom_kill uint64
BlkIOStat        1 io_service_bytes_recursive repeated BlkIOEntry | 2 io_serviced_recursive repeated BlkIOEntry | 3 io_queued_recursive repeated BlkIOEntry | 4 io_service_time_recursive repeated BlkIOEntry | 5 io_wait_time_recursive repeated BlkIOEntry | 6 io_merged_recursive repeated BlkIOEntry | 7 io_time_recursive repeated BlkIOEntry | 8 sectors_recursive repeated BlkIOEntry
BlkIOEntry       1 op string | 2 device string | 3 major uint64 | 4 minor uint64 | 5 value uint64
RdmaStat         1 current repeated RdmaEntry | 2 limit repeated RdmaEntry
RdmaEntry        1 device string | 2 hca_handles uint32 | 3 hca_objects uint32
NetworkStat      1 name string | 2 rx_bytes uint64 | 3 rx_packets uint64 | 4 rx_errors uint64 | 5 rx_dropped uint64 | 6 tx_bytes uint64 | 7 tx_packets uint64 | 8 tx_errors uint64 | 9 tx_dropped uint64
CgroupStats      1 nr_sleeping uint64 | 2 nr_running uint64 | 3 nr_stopped uint64 | 4 nr_uninterruptible uint64 | 5 nr_io_wait uint64
`

const pkg = "io.containerd.cgroups.v1."

type described interface {
	proto.Message
	Descriptor() ([]byte, []int)
}

func TestFieldNumbers(t *testing.T) {
	msgs := []described{
		&v1.Metrics{}, &v1.HugetlbStat{}, &v1.PidsStat{}, &v1.CPUStat{}, &v1.CPUUsage{}, &v1.Throttle{},
		&v1.MemoryStat{}, &v1.MemoryEntry{}, &v1.MemoryOomControl{}, &v1.BlkIOStat{}, &v1.BlkIOEntry{},
		&v1.RdmaStat{}, &v1.RdmaEntry{}, &v1.NetworkStat{}, &v1.CgroupStats{},
	}
	want := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(wantFields), "\n") {
		name, fields, _ := strings.Cut(line, " ")
		want[pkg+name] = strings.Join(strings.Fields(fields), " ")
	}
	if len(want) != len(msgs) {
		t.Fatalf("wantFields has %d messages, test lists %d", len(want), len(msgs))
	}
	for _, m := range msgs {
		name := proto.MessageName(m)
		if got := describe(m); got != want[name] {
			t.Errorf("%s\n got: %s\nwant: %s", name, got, want[name])
		}
	}
}

// describe renders m's fields in the notation of wantFields.
func describe(m described) string {
	_, md := descriptor.ForMessage(m)
	var out []string
	for _, f := range md.Field {
		typ := strings.ToLower(strings.TrimPrefix(f.GetType().String(), "TYPE_"))
		if tn := f.GetTypeName(); tn != "" {
			typ = strings.TrimPrefix(tn, "."+pkg)
		}
		if f.GetLabel() == descriptor.FieldDescriptorProto_LABEL_REPEATED {
			typ = "repeated " + typ
		}
		out = append(out, fmt.Sprintf("%d %s %s", f.GetNumber(), f.GetName(), typ))
	}
	return strings.Join(out, " | ")
}

// TestWireVector pins the encoding of a small Metrics, built by hand from the
// field numbers above: what containerd's own generated type produces.
func TestWireVector(t *testing.T) {
	m := &v1.Metrics{
		Pids: &v1.PidsStat{Current: 3, Limit: 100},
		Cpu:  &v1.CPUStat{Usage: &v1.CPUUsage{Total: 1000, PerCpu: []uint64{600, 400}}},
		Memory: &v1.MemoryStat{
			TotalRss: 7,
			Usage:    &v1.MemoryEntry{Limit: 16 << 20, Usage: 4096},
		},
	}
	want := []byte{
		0x12, 0x04, 0x08, 0x03, 0x10, 0x64, // 2 pids {1: 3, 2: 100}
		0x1a, 0x0b, // 3 cpu, 11 bytes
		0x0a, 0x09, // 1 usage, 9 bytes
		0x08, 0xe8, 0x07, // 1 total 1000
		0x22, 0x04, 0xd8, 0x04, 0x90, 0x03, // 4 per_cpu packed [600, 400]
		0x22, 0x0e, // 4 memory, 14 bytes
		0x98, 0x01, 0x07, // 19 total_rss 7
		0x8a, 0x02, 0x08, // 33 usage, 8 bytes
		0x08, 0x80, 0x80, 0x80, 0x08, // 1 limit 16 MiB
		0x10, 0x80, 0x20, // 2 usage 4096
	}
	got, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got  %s\nwant %s", hex.EncodeToString(got), hex.EncodeToString(want))
	}
	if proto.MessageName(m) != "io.containerd.cgroups.v1.Metrics" {
		t.Fatalf("registered as %q", proto.MessageName(m))
	}
}
