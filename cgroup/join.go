package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// Join moves process pid into the cgroup at path in every hierarchy where
// that cgroup exists: each v1 controller's that has it, or the unified one.
// path is absolute from each hierarchy's root, as containerd's shim_cgroup
// option names it (a relative one is read as absolute). Join creates no
// cgroup; when none exists it returns ErrNotFound.
func (h *Hierarchy) Join(pid int, path string) error {
	dirs, err := h.dirs(path)
	if err != nil {
		return fmt.Errorf("join cgroup %s: %w", path, err)
	}
	joined := false
	for _, d := range dirs {
		err := writeProcs(d, pid)
		if errors.Is(err, fs.ErrNotExist) {
			continue // the cgroup is not in this hierarchy
		}
		if err != nil {
			return fmt.Errorf("join cgroup %s: %w", d, err)
		}
		joined = true
	}
	if !joined {
		return fmt.Errorf("join cgroup %s: %w", path, ErrNotFound)
	}
	return nil
}

// writeProcs moves pid into the cgroup at dir by writing it to the cgroup's
// cgroup.procs (cgroups(7)). It creates nothing: a dir that is not a cgroup
// gives fs.ErrNotExist.
func writeProcs(dir string, pid int) error {
	f, err := os.OpenFile(filepath.Join(dir, "cgroup.procs"), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(strconv.Itoa(pid)); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
