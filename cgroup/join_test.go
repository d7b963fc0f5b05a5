package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestJoin moves a pid into a cgroup that exists in only some hierarchies,
// as the shim's start action does with containerd's shim_cgroup.
func TestJoin(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"pids/shim", "cpu,cpuacct/shim", "memory", "v2/shim"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"pids/shim", "cpu,cpuacct/shim", "v2/shim"} {
		if err := os.WriteFile(filepath.Join(root, d, "cgroup.procs"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cpu := mount{point: filepath.Join(root, "cpu,cpuacct"), root: "/"}
	v1 := &Hierarchy{version: V1, v1: map[string]mount{
		"pids":    {point: filepath.Join(root, "pids"), root: "/"},
		"cpu":     cpu,
		"cpuacct": cpu,
		"memory":  {point: filepath.Join(root, "memory"), root: "/"},
	}}
	v2 := &Hierarchy{version: V2, v2: mount{point: filepath.Join(root, "v2"), root: "/"}}
	for _, tc := range []struct {
		name string
		h    *Hierarchy
		path string
		want []string // dirs whose cgroup.procs must hold the pid
	}{
		{"v1, absolute", v1, "/shim", []string{"pids/shim", "cpu,cpuacct/shim"}},
		{"v1, relative read as absolute", v1, "shim", []string{"pids/shim", "cpu,cpuacct/shim"}},
		{"v2", v2, "/shim", []string{"v2/shim"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.h.Join(4242, tc.path); err != nil {
				t.Fatal(err)
			}
			for _, d := range tc.want {
				if b, _ := os.ReadFile(filepath.Join(root, d, "cgroup.procs")); string(b) != "4242" {
					t.Errorf("%s/cgroup.procs = %q, want 4242", d, b)
				}
			}
		})
	}
	if err := v1.Join(4242, "/nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Join of a missing cgroup = %v, want ErrNotFound", err)
	}
	if err := v2.Join(4242, "/nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Join of a missing v2 cgroup = %v, want ErrNotFound", err)
	}
}
