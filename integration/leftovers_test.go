package integration

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	leftoverTimeout = 10 * time.Second
	// socketDir is where containerd 1.6's shims put their sockets (PROTOCOL.md §1.7).
	socketDir = "/run/containerd/s"
)

// shimSocket is the socket a shim serving (d.ns, id) listens on:
// <socket dir>/<sha256 of filepath.Join(grpc address, ns, id)> (PROTOCOL.md §1.7).
func (d *daemon) shimSocket(id string) string {
	sum := sha256.Sum256([]byte(filepath.Join(d.address, d.ns, id)))
	return filepath.Join(d.socketDir, hex.EncodeToString(sum[:]))
}

// runcStateDir is runc's state for the container, under the runc root both
// runc shims use by default.
func (d *daemon) runcStateDir(id string) string {
	return filepath.Join(runcRoot, d.ns, id)
}

// assertNoLeftovers fails tb unless, within leftoverTimeout, every trace of
// the deleted tasks ids is gone: their shim processes, sockets, mounts under
// and the bundle dirs themselves, work dirs, runc state dirs and cgroups.
func assertNoLeftovers(tb testing.TB, d *daemon, ids ...string) {
	tb.Helper()
	var found []string
	if !poll(leftoverTimeout, func() bool {
		found = leftovers(d, ids...)
		return len(found) == 0
	}) {
		tb.Errorf("leftovers %s after deleting %v:\n  %s", leftoverTimeout, ids, strings.Join(found, "\n  "))
	}
}

// trace is a path whose existence betrays a task that was not cleaned up.
type trace struct{ what, path string }

// leftovers lists what still exists for (d.ns, id) for each id, one line each.
func leftovers(d *daemon, ids ...string) []string {
	shims := shimProcesses(d.ns)
	mounts := mountPoints()
	var found []string
	for _, id := range ids {
		for _, pid := range shims[id] {
			found = append(found, fmt.Sprintf("%s: shim process %d: %s", id, pid, cmdline(pid)))
		}
		bundle := d.bundleDir(id)
		for _, m := range mounts {
			if isUnder(m, bundle) {
				found = append(found, fmt.Sprintf("%s: mount %s", id, m))
			}
		}
		paths := []trace{
			{"shim socket", d.shimSocket(id)},
			{"bundle dir", bundle},
			{"work dir", d.workDir(id)},
			{"runc state dir", d.runcStateDir(id)},
		}
		// cgroup v1 has one hierarchy per controller, v2 a single one.
		cgroups, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", d.ns, id))
		for _, cg := range append(cgroups, filepath.Join("/sys/fs/cgroup", d.ns, id)) {
			paths = append(paths, trace{"cgroup", cg})
		}
		for _, p := range paths {
			if _, err := os.Lstat(p.path); err == nil {
				found = append(found, fmt.Sprintf("%s: %s %s", id, p.what, p.path))
			}
		}
	}
	return found
}

// shimProcesses maps container id to the pids of live processes running the
// shim under test with `-namespace ns` and `-id <id>` in their argv, or, as
// containerd 1.6's v1 runtime starts it, `-workdir <dir>/<id>`. Zombies
// have an empty cmdline and are not counted: they hold no resources but a pid.
func shimProcesses(ns string) map[string][]int {
	entries, _ := os.ReadDir("/proc")
	procs := make(map[string][]int)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		argv := readArgv(pid)
		if len(argv) == 0 || !isShimBinary(pid, argv[0]) || flagValue(argv, "namespace") != ns {
			continue
		}
		id := flagValue(argv, "id")
		if w := flagValue(argv, "workdir"); id == "" && w != "" {
			id = filepath.Base(w)
		}
		if id != "" {
			procs[id] = append(procs[id], pid)
		}
	}
	return procs
}

// isShimBinary reports whether argv0 or the executable of pid is the shim
// under test (a shim may re-exec itself through /proc/self/exe).
func isShimBinary(pid int, argv0 string) bool {
	if filepath.Base(argv0) == suite.shimName {
		return true
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return err == nil && filepath.Base(strings.TrimSuffix(exe, " (deleted)")) == suite.shimName
}

func readArgv(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(data) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
}

func cmdline(pid int) string {
	return strings.Join(readArgv(pid), " ")
}

// flagValue returns the value of Go-flag-style -name/--name (as "-name v" or
// "-name=v"), or "". Without the shim's flag set it cannot tell boolean flags
// from the others, so a flag followed by a non-flag is taken to consume it;
// that at worst skips the final action word ("start", "delete").
func flagValue(argv []string, name string) string {
	for i := 1; i < len(argv); i++ {
		a, ok := strings.CutPrefix(argv[i], "-")
		if !ok {
			continue
		}
		a = strings.TrimPrefix(a, "-")
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
		hasValue := i+1 < len(argv) && !strings.HasPrefix(argv[i+1], "-")
		if a == name && hasValue {
			return argv[i+1]
		}
		if hasValue && !strings.Contains(a, "=") {
			i++
		}
	}
	return ""
}

// parentPid returns the PPid of pid from /proc/<pid>/status, or 0.
func parentPid(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			ppid, _ := strconv.Atoi(strings.TrimSpace(v))
			return ppid
		}
	}
	return 0
}

// mountPoints lists the mount points in this process's mount namespace
// (field 5 of /proc/self/mountinfo, octal escapes decoded).
func mountPoints() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 {
			points = append(points, unescapeMount(fields[4]))
		}
	}
	return points
}

// mountsUnder lists mount points at or below dir, outermost first.
func mountsUnder(dir string) []string {
	var under []string
	for _, m := range mountPoints() {
		if isUnder(m, dir) {
			under = append(under, m)
		}
	}
	slices.Sort(under)
	return under
}

func isUnder(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// unescapeMount decodes the \ooo escapes mountinfo uses for space, tab,
// newline and backslash.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
