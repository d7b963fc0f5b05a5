package cgroup

import (
	"fmt"
	"strings"
)

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
