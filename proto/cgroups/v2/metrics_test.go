package v2_test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/gogo/protobuf/proto"
	"github.com/gogo/protobuf/protoc-gen-gogo/descriptor"

	v2 "github.com/leanshim/leanshim/proto/cgroups/v2"
)

// wantFields lists every field, checked one by one against containerd/cgroups
// v1.0.4 v2/stats/metrics.proto (vendored by containerd v1.6.20) and, for the
// fields marked (v3), cgroups v3.1.3 cgroup2/stats/metrics.proto (containerd
// v2.4.2). The marks are stripped before comparing.
const wantFields = `
Metrics      1 pids PidsStat | 2 cpu CPUStat | 4 memory MemoryStat | 5 rdma RdmaStat | 6 io IOStat | 7 hugetlb repeated HugeTlbStat | 8 memory_events MemoryEvents | 9 network repeated NetworkStat (v3)
PSIData      1 avg10 double | 2 avg60 double | 3 avg300 double | 4 total uint64 (v3)
PSIStats     1 some PSIData | 2 full PSIData (v3)
PidsStat     1 current uint64 | 2 limit uint64
CPUStat      1 usage_usec uint64 | 2 user_usec uint64 | 3 system_usec uint64 | 4 nr_periods uint64 | 5 nr_throttled uint64 | 6 throttled_usec uint64 | 7 psi PSIStats (v3) | 8 nr_bursts uint64 (v3) | 9 burst_usec uint64 (v3)
MemoryStat   1 anon uint64 | 2 file uint64 | 3 kernel_stack uint64 | 4 slab uint64 | 5 sock uint64 | 6 shmem uint64 | 7 file_mapped uint64 | 8 file_dirty uint64 | 9 file_writeback uint64 | 10 anon_thp uint64 | 11 inactive_anon uint64 | 12 active_anon uint64 | 13 inactive_file uint64 | 14 active_file uint64 | 15 unevictable uint64 | 16 slab_reclaimable uint64 | 17 slab_unreclaimable uint64 | 18 pgfault uint64 | 19 pgmajfault uint64 | 20 workingset_refault uint64 | 21 workingset_activate uint64 | 22 workingset_nodereclaim uint64 | 23 pgrefill uint64 | 24 pgscan uint64 | 25 pgsteal uint64 | 26 pgactivate uint64 | 27 pgdeactivate uint64 | 28 pglazyfree uint64 | 29 pglazyfreed uint64 | 30 thp_fault_alloc uint64 | 31 thp_collapse_alloc uint64 | 32 usage uint64 | 33 usage_limit uint64 | 34 swap_usage uint64 | 35 swap_limit uint64 | 36 max_usage uint64 (v3) | 37 swap_max_usage uint64 (v3) | 38 psi PSIStats (v3)
MemoryEvents 1 low uint64 | 2 high uint64 | 3 max uint64 | 4 oom uint64 | 5 oom_kill uint64 | 6 oom_group_kill uint64 (v3)
RdmaStat     1 current repeated RdmaEntry | 2 limit repeated RdmaEntry
RdmaEntry    1 device string | 2 hca_handles uint32 | 3 hca_objects uint32
IOStat       1 usage repeated IOEntry | 2 psi PSIStats (v3)
IOEntry      1 major uint64 | 2 minor uint64 | 3 rbytes uint64 | 4 wbytes uint64 | 5 rios uint64 | 6 wios uint64
HugeTlbStat  1 current uint64 | 2 max uint64 | 3 pagesize string | 4 failcnt uint64 (v3)
NetworkStat  1 name string | 2 rx_bytes uint64 | 3 rx_packets uint64 | 4 rx_errors uint64 | 5 rx_dropped uint64 | 6 tx_bytes uint64 | 7 tx_packets uint64 | 8 tx_errors uint64 | 9 tx_dropped uint64 (v3)
`

const pkg = "io.containerd.cgroups.v2."

type described interface {
	proto.Message
	Descriptor() ([]byte, []int)
}

func TestFieldNumbers(t *testing.T) {
	msgs := []described{
		&v2.Metrics{}, &v2.PSIData{}, &v2.PSIStats{}, &v2.PidsStat{}, &v2.CPUStat{}, &v2.MemoryStat{},
		&v2.MemoryEvents{}, &v2.RdmaStat{}, &v2.RdmaEntry{}, &v2.IOStat{}, &v2.IOEntry{},
		&v2.HugeTlbStat{}, &v2.NetworkStat{},
	}
	want := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(wantFields), "\n") {
		name, fields, _ := strings.Cut(line, " ")
		fields = strings.ReplaceAll(fields, "(v3)", "")
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
// field numbers above.
func TestWireVector(t *testing.T) {
	m := &v2.Metrics{
		Cpu:          &v2.CPUStat{UsageUsec: 5, NrThrottled: 1},
		Memory:       &v2.MemoryStat{Usage: 4096, UsageLimit: math.MaxUint64},
		MemoryEvents: &v2.MemoryEvents{OomKill: 2},
	}
	want := []byte{
		0x12, 0x04, 0x08, 0x05, 0x28, 0x01, // 2 cpu {1: 5, 5: 1}
		0x22, 0x10, // 4 memory, 16 bytes
		0x80, 0x02, 0x80, 0x20, // 32 usage 4096
		0x88, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, // 33 usage_limit 2^64-1
		0x42, 0x02, 0x28, 0x02, // 8 memory_events {5: 2}
	}
	got, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got  %s\nwant %s", hex.EncodeToString(got), hex.EncodeToString(want))
	}
	if proto.MessageName(m) != "io.containerd.cgroups.v2.Metrics" {
		t.Fatalf("registered as %q", proto.MessageName(m))
	}
}
