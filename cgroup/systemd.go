package cgroup

import (
	"fmt"
	"path"
	"strings"
)

// systemdPath turns a cgroupsPath of the systemd driver, "slice:prefix:name",
// into the cgroup path systemd gives the unit, as runc's systemd driver
// names it: the unit is "<prefix>-<name>.scope" (or name itself when it is a
// slice) under slice, whose dashes nest ("a-b.slice" is
// /a.slice/a-b.slice); an empty slice is system.slice and "-" the root.
// Any other cgroupsPath is returned unchanged.
func systemdPath(cgroupsPath string) (string, error) {
	if strings.HasPrefix(cgroupsPath, "/") || strings.Count(cgroupsPath, ":") != 2 {
		return cgroupsPath, nil
	}
	parts := strings.SplitN(cgroupsPath, ":", 3)
	slice, prefix, name := parts[0], parts[1], parts[2]
	if name == "" {
		return "", fmt.Errorf("systemd cgroupsPath %q has no name: %w", cgroupsPath, ErrNotFound)
	}
	if slice == "" {
		slice = "system.slice"
	}
	dir, err := expandSlice(slice)
	if err != nil {
		return "", err
	}
	unit := name
	if !strings.HasSuffix(name, ".slice") {
		unit = prefix + "-" + name + ".scope"
	}
	return path.Join(dir, unit), nil
}

// expandSlice returns the cgroup path of a systemd slice unit
// (systemd.slice(5)): each dash-separated prefix is a parent slice.
func expandSlice(slice string) (string, error) {
	if slice == "-" || slice == "-.slice" {
		return "/", nil
	}
	base, ok := strings.CutSuffix(slice, ".slice")
	if !ok || base == "" || strings.Contains(base, "/") ||
		strings.HasPrefix(base, "-") || strings.HasSuffix(base, "-") || strings.Contains(base, "--") {
		return "", fmt.Errorf("invalid systemd slice %q", slice)
	}
	var b strings.Builder
	prefix := ""
	for _, comp := range strings.Split(base, "-") {
		prefix += comp
		b.WriteString("/" + prefix + ".slice")
		prefix += "-"
	}
	return b.String(), nil
}
