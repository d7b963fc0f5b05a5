package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// LeafPath returns the path of a cgroup named name under the cgroup parent
// a CRI pod names: a systemd slice ("kubepods-besteffort-pod1.slice") is
// expanded to its path, anything else is read as a path from each
// hierarchy's root.
func LeafPath(parent, name string) (string, error) {
	if name == "" || strings.Contains(name, "/") || name == "." || name == ".." {
		return "", fmt.Errorf("cgroup name %q: %w", name, ErrNotFound)
	}
	dir, err := parentPath(parent)
	if err != nil {
		return "", err
	}
	return path.Join(dir, name), nil
}

// parentPath is LeafPath's reading of a cgroup parent.
func parentPath(parent string) (string, error) {
	if strings.HasSuffix(parent, ".slice") && !strings.Contains(parent, "/") {
		return expandSlice(parent)
	}
	return path.Join("/", parent), nil
}

// ForPodParent returns the cgroup a CRI pod names as its cgroup parent (read
// as LeafPath reads it), which holds all of the pod's cgroups.
func (h *Hierarchy) ForPodParent(parent string) (*Cgroup, error) {
	if parent == "" {
		return nil, fmt.Errorf("no cgroup parent: %w", ErrNotFound)
	}
	p, err := parentPath(parent)
	if err != nil {
		return nil, err
	}
	return h.fromPaths(map[string]string{"": p, "*": p})
}

// MakeJoin creates the cgroup at path (absolute from each hierarchy's root)
// in every hierarchy, with its parents, as runc creates a container's, and
// moves pid into it. A process that is not a container's init is put in a
// leaf of its own: on v2 a cgroup with processes cannot hand controllers to
// children (the "no internal processes" rule), so the pod's cgroup parent,
// where the containers' cgroups go, must stay empty.
func (h *Hierarchy) MakeJoin(pid int, path string) error {
	dirs, err := h.dirs(path)
	if err != nil {
		return fmt.Errorf("make cgroup %s: %w", path, err)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("make cgroup %s: %w", d, err)
		}
	}
	if m, ok := h.v1["cpuset"]; ok && h.version == V1 {
		if err := fillCpuset(m.point, m.dir(path)); err != nil {
			return err
		}
	}
	return h.Join(pid, path)
}

// fillCpuset gives every cgroup from the cpuset mount at point down to dir
// its parent's cpus and mems where it has none: a v1 cpuset cgroup starts
// empty and takes no process until both are set (ENOSPC), which runc does
// for a container's cgroup too.
func fillCpuset(point, dir string) error {
	rel, err := filepath.Rel(point, dir)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return err
	}
	parent := point
	for _, comp := range strings.Split(rel, string(filepath.Separator)) {
		cur := filepath.Join(parent, comp)
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			b, err := os.ReadFile(filepath.Join(cur, f))
			if err != nil {
				return fmt.Errorf("cpuset %s: %w", cur, err)
			}
			if strings.TrimSpace(string(b)) != "" {
				continue
			}
			pb, err := os.ReadFile(filepath.Join(parent, f))
			if err != nil {
				return fmt.Errorf("cpuset %s: %w", parent, err)
			}
			if err := os.WriteFile(filepath.Join(cur, f), pb, 0); err != nil {
				return fmt.Errorf("cpuset %s: %w", cur, err)
			}
		}
		parent = cur
	}
	return nil
}

// RemoveLeaf removes the cgroup at path from every hierarchy, but not its
// parents. A cgroup already gone is not an error; one with processes left
// is (EBUSY).
func (h *Hierarchy) RemoveLeaf(path string) error {
	dirs, err := h.dirs(path)
	if err != nil {
		return fmt.Errorf("remove cgroup %s: %w", path, err)
	}
	var errs []error
	for _, d := range dirs {
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// dirs returns the directories of cgroup path (absolute from each
// hierarchy's root; a relative one is read as absolute): one per distinct
// v1 mount, or the unified one.
func (h *Hierarchy) dirs(p string) ([]string, error) {
	p = path.Join("/", p)
	cg, err := h.fromPaths(map[string]string{"": p, "*": p})
	if err != nil {
		return nil, err
	}
	if cg.version == V2 {
		return []string{cg.dir}, nil
	}
	// Controllers mounted together (cpu,cpuacct) share a directory.
	return slices.Compact(slices.Sorted(maps.Values(cg.dirs))), nil
}
