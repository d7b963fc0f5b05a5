package cgroup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/leanshim/leanshim/proto/cgroups/v1"
)

// realV1 returns this machine's hierarchy, skipping unless it is cgroup v1
// and the test runs as root (creating cgroups needs both).
func realV1(t *testing.T) *Hierarchy {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	h, err := Detect()
	if err != nil {
		t.Fatal(err)
	}
	if h.Version() != V1 {
		t.Skipf("machine is %s; the v2 code is tested on fixtures", h.Version())
	}
	return h
}

// makeV1 creates the cgroup /leanshim-test-<pid>-<name> in each of
// controllers, writes settings (file → value, in order) and removes the
// directories when the test ends. It returns the Cgroup.
func makeV1(t *testing.T, h *Hierarchy, name string, controllers []string, settings [][2]string) *Cgroup {
	t.Helper()
	p := fmt.Sprintf("/leanshim-test-%d-%s", os.Getpid(), name)
	cg, err := h.fromPaths(map[string]string{"": p, "*": p})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range controllers {
		dir, ok := cg.dirs[c]
		if !ok {
			t.Skipf("controller %s not mounted", c)
		}
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			// rmdir(2) of a cgroup works once it has no task; the test's
			// processes are waited for by earlier cleanups.
			if err := os.Remove(dir); err != nil && !os.IsNotExist(err) {
				t.Errorf("remove cgroup: %v", err)
			}
		})
	}
	for _, s := range settings {
		ctrl, _, _ := strings.Cut(s[0], ".")
		p := filepath.Join(cg.dirs[ctrl], s[0])
		if _, err := os.Stat(p); os.IsNotExist(err) && strings.Contains(s[0], "memsw") {
			continue // no swap accounting
		}
		if err := os.WriteFile(p, []byte(s[1]), 0); err != nil {
			t.Fatalf("set %s: %v", s[0], err)
		}
	}
	return cg
}

// TestStatsV1Real runs a shell in fresh v1 cgroups of this machine, makes it
// spend some CPU there, finds its cgroup from its pid and reads the stats.
func TestStatsV1Real(t *testing.T) {
	h := realV1(t)
	controllers := []string{"memory", "cpu", "cpuacct", "pids", "blkio"}
	cg := makeV1(t, h, "stats", controllers, [][2]string{{"memory.limit_in_bytes", "67108864"}, {"pids.max", "50"}})

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", `read x; i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; echo done; exec sleep 60`)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }) // runs before the rmdirs
	pid := cmd.Process.Pid
	for _, c := range controllers {
		if err := os.WriteFile(filepath.Join(cg.dirs[c], "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "done\n" {
		t.Fatalf("child said %q, %v", line, err)
	}

	found, err := h.ForPid(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range controllers {
		if found.dirs[c] != cg.dirs[c] {
			t.Fatalf("ForPid %s dir %q, want %q", c, found.dirs[c], cg.dirs[c])
		}
	}
	got, err := found.Stats()
	if err != nil {
		t.Fatal(err)
	}
	m := got.(*v1.Metrics)
	t.Logf("memory usage %d, cpu total %d ns, percpu %v", m.Memory.Usage.Usage, m.Cpu.Usage.Total, m.Cpu.Usage.PerCpu)
	if m.Memory.Usage.Limit != 64<<20 || m.Memory.HierarchicalMemoryLimit != 64<<20 {
		t.Errorf("memory limit %d / %d, want 64 MiB", m.Memory.Usage.Limit, m.Memory.HierarchicalMemoryLimit)
	}
	if m.Memory.Usage.Usage == 0 || m.Memory.Usage.Max < m.Memory.Usage.Usage {
		t.Errorf("memory usage %d max %d", m.Memory.Usage.Usage, m.Memory.Usage.Max)
	}
	if m.Pids.Current != 1 || m.Pids.Limit != 50 {
		t.Errorf("pids %+v, want 1 of 50", m.Pids)
	}
	var sum uint64
	for _, v := range m.Cpu.Usage.PerCpu {
		sum += v
	}
	// usage_percpu is read after usage, and the counters only grow.
	if m.Cpu.Usage.Total == 0 || sum < m.Cpu.Usage.Total {
		t.Errorf("cpu total %d, sum of per-cpu %d", m.Cpu.Usage.Total, sum)
	}
	if m.Blkio == nil || m.MemoryOomControl == nil || m.Cpu.Throttling == nil {
		t.Errorf("missing parts: %s", m)
	}
}

// TestDetectReal detects this machine's layout and reads this test's own
// cgroup; no root needed. On this machine kind (v1 controllers plus a
// cgroup2 mount at /sys/fs/cgroup/unified) that must be V1.
func TestDetectReal(t *testing.T) {
	h, err := Detect()
	if errors.Is(err, ErrNoCgroups) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.oom_control"); err == nil && h.Version() != V1 {
		t.Fatalf("v1 memory controller mounted, detected %s", h.Version())
	}
	cg, err := h.ForPid(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	m, err := cg.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s, own cgroup %s", h.Version(), cg)
	if mv1, ok := m.(*v1.Metrics); ok && (mv1.Memory == nil || mv1.Memory.Usage.Usage == 0 || mv1.Pids == nil) {
		t.Fatalf("own cgroup stats lack memory or pids: %s", m)
	}
}
