package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDetectVersion(t *testing.T) {
	tests := []struct {
		name        string
		mountinfo   string
		controllers map[string][]string // cgroup.controllers by mount point
		want        Version
		wantV2      string // V2: the unified mount point
		wantErr     error
	}{
		// This machine: v1 controllers, and a cgroup2 mount holding only
		// hugetlb (not bound to v1): memory decides, so V1.
		{"hybrid", "hybrid", map[string][]string{"/sys/fs/cgroup/unified": {"hugetlb"}}, V1, "", nil},
		{"unified", "unified", map[string][]string{"/sys/fs/cgroup": {"cpuset", "cpu", "io", "memory", "pids"}}, V2, "/sys/fs/cgroup", nil},
		{"unified without controllers", "unified", nil, V2, "/sys/fs/cgroup", nil},
		{"legacy", "legacy", nil, V1, "", nil},
		{"none", "none", nil, 0, "", ErrNoCgroups},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v1, v2 := mountInfo(t, tc.mountinfo)
			got, m, err := pickVersion(v1, v2, func(p string) []string { return tc.controllers[p] })
			if !errors.Is(err, tc.wantErr) || got != tc.want || m.point != tc.wantV2 {
				t.Fatalf("got %v %q %v, want %v %q %v", got, m.point, err, tc.want, tc.wantV2, tc.wantErr)
			}
		})
	}
}

func mountInfo(t *testing.T, name string) (map[string]mount, []mount) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "mountinfo", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v1, v2, err := parseMountInfo(f)
	if err != nil {
		t.Fatal(err)
	}
	return v1, v2
}

func TestParseMountInfo(t *testing.T) {
	v1, v2 := mountInfo(t, "legacy")
	want := map[string]mount{
		"name=systemd": {"/sys/fs/cgroup/systemd", "/"},
		"cpu":          {"/sys/fs/cgroup/cpu,cpuacct", "/"},
		"cpuacct":      {"/sys/fs/cgroup/cpu,cpuacct", "/"},
		"memory":       {"/sys/fs/cgroup/memory", "/docker/abc"},
		"hugetlb":      {"/sys/fs/cgroup/hugetlb", "/"},
		"pids":         {"/mnt/odd dir/pids", "/"}, // \040 unescaped; the first mount wins
	}
	if !reflect.DeepEqual(v1, want) || len(v2) != 0 {
		t.Fatalf("got %v %v\nwant %v", v1, v2, want)
	}
	_, v2 = mountInfo(t, "unified")
	if !reflect.DeepEqual(v2, []mount{{"/sys/fs/cgroup", "/"}}) {
		t.Fatalf("unified: %v", v2)
	}
}

func TestMountDir(t *testing.T) {
	m := mount{point: "/sys/fs/cgroup/memory", root: "/docker/abc"}
	tests := []struct{ path, want string }{
		{"/docker/abc", "/sys/fs/cgroup/memory"},
		{"/docker/abc/ctr", "/sys/fs/cgroup/memory/ctr"},
		{"/docker/abcd", "/sys/fs/cgroup/memory/docker/abcd"}, // not under root: a prefix is not a parent
		{"/ctr", "/sys/fs/cgroup/memory/ctr"},
	}
	for _, tc := range tests {
		if got := m.dir(tc.path); got != tc.want {
			t.Errorf("dir(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
	if got := (mount{"/sys/fs/cgroup", "/"}).dir("/a/b"); got != "/sys/fs/cgroup/a/b" {
		t.Errorf("root mount: %q", got)
	}
}

func TestParseProcCgroup(t *testing.T) {
	got, err := parseProcCgroup("12:cpu,cpuacct:/a\n1:name=systemd:/s\n0::/u\n")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"cpu": "/a", "cpuacct": "/a", "name=systemd": "/s", "": "/u"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v", got)
	}
	if _, err := parseProcCgroup("garbage\n"); err == nil {
		t.Fatal("malformed line accepted")
	}
}

// fixtureV1 is a V1 Hierarchy over testdata: each controller's mount root is
// /ctr/c1, so the cgroup /ctr/c1 of testdata/proc/4242 is testdata/v1/<ctrl>.
func fixtureV1(t *testing.T) *Hierarchy {
	t.Helper()
	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	h := &Hierarchy{version: V1, proc: abs("testdata/proc"), v1: map[string]mount{}}
	for _, c := range []string{"cpu", "cpuacct", "memory", "pids", "blkio", "hugetlb"} {
		h.v1[c] = mount{point: abs(filepath.Join("testdata/v1", c)), root: "/ctr/c1"}
	}
	h.v1["name=systemd"] = mount{point: "/nonexistent/systemd", root: "/"}
	return h
}

func TestForPid(t *testing.T) {
	h := fixtureV1(t)
	cg, err := h.ForPid(4242)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cg.dirs["memory"], h.v1["memory"].point; got != want {
		t.Fatalf("memory dir %q, want %q", got, want)
	}
	// hugetlb is not in /proc/4242/cgroup (not bound on that machine).
	if _, ok := cg.dirs["hugetlb"]; ok || len(cg.dirs) != 6 {
		t.Fatalf("dirs %v", cg.dirs)
	}
	if _, err := h.ForPid(999999); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing pid: %v", err)
	}
}

// parseMountInfo allocates nothing for the lines of other file systems: a
// node's hundreds of overlay mounts must not grow the shim's heap.
func TestParseMountInfoSkipsOtherMountsFree(t *testing.T) {
	cg := "30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n"
	other := "99 25 0:99 / /run/containerd/io.containerd.runtime.v2.task/ns/c/rootfs rw,relatime - overlay overlay rw,lowerdir=/a:/b,upperdir=/c,workdir=/d\n"
	allocs := func(n int) float64 {
		text := cg + strings.Repeat(other, n)
		return testing.AllocsPerRun(20, func() {
			if _, _, err := parseMountInfo(strings.NewReader(text)); err != nil {
				t.Fatal(err)
			}
		})
	}
	if few, many := allocs(1), allocs(500); many > few {
		t.Fatalf("%v allocations with 500 overlay mounts, %v with 1", many, few)
	}
}
