package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go supports (sysconf(_SC_CLK_TCK)).
const clockTicks = 100

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER from <linux/prctl.h>.
const prSetChildSubreaper = 36

// becomeSubreaper makes the orphaned descendants of the bench (shim daemons,
// whose start process exits at once) its children, so reapShims can reap
// them: pid 1 on this machine kind does not.
func becomeSubreaper() error {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", errno)
	}
	return nil
}

// reapShims reaps the exited shim daemons re-parented to the bench. It
// waits for those pids only: every other child belongs to an exec.Cmd,
// whose Wait must not find it gone. Shim daemons are the only zombies
// whose comm is "containerd-shim" (both binaries' names, truncated).
func reapShims() {
	self := os.Getpid()
	for _, pid := range allPids() {
		st, err := readStat(pid)
		if err != nil || st.ppid != self || st.state != "Z" || !strings.HasPrefix(st.comm, "containerd-shim") {
			continue
		}
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	}
}

// waitGone waits until pid has exited, reaping it if it is ours.
func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		reapShims()
		st, err := readStat(pid)
		if err != nil || st.state == "Z" && st.ppid != os.Getpid() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func allPids() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// procStat is what the bench reads from /proc/PID/stat.
type procStat struct {
	comm  string
	state string
	ppid  int
	cpu   float64 // utime+stime, seconds; children not included
}

func readStat(pid int) (procStat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// comm may hold spaces and parens: it ends at the last ')' (proc(5)).
	open, end := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return procStat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(data[end+1:]))
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// After comm: state(3) ppid(4) ... utime(14) stime(15), 1-based in proc(5).
	ppid, err1 := strconv.Atoi(f[1])
	utime, err2 := strconv.ParseInt(f[11], 10, 64)
	stime, err3 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return procStat{
		comm:  string(data[open+1 : end]),
		state: f[0],
		ppid:  ppid,
		cpu:   float64(utime+stime) / clockTicks,
	}, nil
}

// mem is one process's memory from /proc/PID/smaps_rollup, in KiB. USS is
// Private_Clean + Private_Dirty: what the kernel frees if the process exits
// (it includes the binary's text when no other process maps it); anon is
// Anonymous: heap, stacks and runtime metadata, never text.
type mem struct {
	rss, pss, uss, anon float64
}

// readMem reads smaps_rollup. Run sync first: pages of a freshly written
// binary count as Private_Dirty until written back (ENVIRONMENT.md).
func readMem(pid int) (mem, error) {
	fields, err := readKeyed(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Rss", "Pss", "Private_Clean", "Private_Dirty", "Anonymous")
	if err != nil {
		return mem{}, err
	}
	return mem{rss: fields[0], pss: fields[1], uss: fields[2] + fields[3], anon: fields[4]}, nil
}

// readThreads returns the number of OS threads of pid.
func readThreads(pid int) (int, error) {
	f, err := readKeyed(fmt.Sprintf("/proc/%d/status", pid), "Threads")
	return int(f[0]), err
}

// readSwitches returns the voluntary plus involuntary context switches of
// all of pid's threads: /proc/PID/status counts only the thread group leader.
func readSwitches(pid int) (int64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, t := range tasks {
		f, err := readKeyed(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()),
			"voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")
		if err != nil {
			continue // the thread exited meanwhile
		}
		sum += int64(f[0] + f[1])
	}
	return sum, nil
}

// readKeyed returns the first number after each "key:" in a proc file.
func readKeyed(path string, keys ...string) ([]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	vals := make([]float64, len(keys))
	found := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		for i, k := range keys {
			if key != k {
				continue
			}
			fields := strings.Fields(rest)
			if len(fields) == 0 {
				return nil, fmt.Errorf("%s: %s has no value", path, key)
			}
			if vals[i], err = strconv.ParseFloat(fields[0], 64); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", path, key, err)
			}
			found++
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if found < len(keys) {
		return nil, fmt.Errorf("%s: missing one of %v", path, keys)
	}
	return vals, nil
}

// shimOf returns the shim serving the container whose init is taskPid: its
// parent, since the shim is the subreaper runc's init is re-parented to.
// It checks that the parent runs s's binary.
func shimOf(taskPid int, s shim) (int, error) {
	st, err := readStat(taskPid)
	if err != nil {
		return 0, err
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", st.ppid))
	if err != nil {
		return 0, fmt.Errorf("parent %d of task %d: %w", st.ppid, taskPid, err)
	}
	if !strings.HasPrefix(filepath.Base(exe), s.name()) {
		return 0, fmt.Errorf("parent %d of task %d runs %s, not %s", st.ppid, taskPid, exe, s.name())
	}
	return st.ppid, nil
}

// shimsOfNamespace returns the pids of processes running one of the shim
// binaries in names with "-namespace ns" on their command line.
func shimsOfNamespace(ns string, names []string) []int {
	var pids []int
	for _, pid := range allPids() {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(data) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
		if !containsBase(names, args[0]) {
			continue
		}
		for i := 1; i+1 < len(args); i++ {
			if args[i] == "-namespace" && args[i+1] == ns {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

func containsBase(names []string, path string) bool {
	for _, n := range names {
		if filepath.Base(path) == n {
			return true
		}
	}
	return false
}

// listeningSockets returns the paths of the unix sockets pid has open,
// matched by inode through /proc/net/unix.
func listeningSockets(pid int) []string {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if ino, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	data, _ := os.ReadFile("/proc/net/unix")
	var paths []string
	for _, line := range strings.Split(string(data), "\n") {
		// Num RefCount Protocol Flags Type St Inode Path
		f := strings.Fields(line)
		if len(f) == 8 && inodes[f[6]] {
			paths = append(paths, f[7])
		}
	}
	return paths
}

// parallel runs fn(0..n-1) at once and joins their errors.
func parallel(n int, fn func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = fn(i) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
