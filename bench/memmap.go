package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The memory map (issue 16): where every KiB of a running leanshim goes, at
// five moments of one grouped shim's life: one idle container; K more idle
// containers (reported per container); one exec running in the first
// container; after that exec's Delete; K later idle containers, once the
// shim has collected (per container). Two identical shims walk the same
// steps: the measured one is only read from /proc (smaps, fds, threads);
// the introspected one is also asked, at each step, for its Go runtime
// statistics and goroutines (SIGUSR1, which the shim answers in its log,
// here containerd's), so that the dump's own allocations never reach the
// numbers of the first.

// mapStep is one moment of the walk.
type mapStep struct {
	name string
	smap smapsSplit
	fds  map[string]int
	thr  int
	gos  *goDump // nil for the measured shim
}

// smapsSplit is a process's smaps, in KiB, by where the pages come from.
type smapsSplit struct {
	rss, pss, uss map[string]float64
}

// Where the pages of a Go process come from.
const (
	areaText    = "binary text (r-x)"
	areaData    = "binary data, bss (file-backed)"
	areaHeap    = "Go heap arena (objects, goroutine stacks)"
	areaRuntime = "Go runtime off-heap (spans, arena metadata, bss)"
	areaStack   = "main thread stack"
	areaKernel  = "vdso, vvar"
	areaOther   = "other mappings"
)

var areas = []string{areaText, areaData, areaHeap, areaRuntime, areaStack, areaKernel, areaOther}

// readSmaps splits /proc/PID/smaps by area. Go's heap arenas are the
// anonymous mappings between 4 GiB and the mmap base (the runtime's arena
// hints); its other anonymous mappings are off-heap metadata and the
// binary's bss beyond the file.
func readSmaps(pid int) (smapsSplit, error) {
	s := smapsSplit{rss: map[string]float64{}, pss: map[string]float64{}, uss: map[string]float64{}}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return s, err
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return s, err
	}
	defer f.Close()
	area, hdr := areaOther, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			area = classifyMapping(fields, exe)
			hdr = line
			continue
		}
		if debugSmaps && len(fields) > 1 && fields[0] == "Rss:" && fields[1] != "0" {
			fmt.Fprintf(os.Stderr, "smaps %d: %s [%s] Rss %s\n", pid, hdr, area, fields[1])
		}
		if len(fields) < 2 {
			continue
		}
		v, err := strconv.ParseFloat(fields[1], 64)
		if err != nil {
			continue
		}
		switch fields[0] {
		case "Rss:":
			s.rss[area] += v
		case "Pss:":
			s.pss[area] += v
		case "Private_Clean:", "Private_Dirty:":
			s.uss[area] += v
		}
	}
	return s, sc.Err()
}

func classifyMapping(f []string, exe string) string {
	path := ""
	if len(f) >= 6 {
		path = strings.Join(f[5:], " ")
	}
	lo, _, _ := strings.Cut(f[0], "-")
	start, _ := strconv.ParseUint(lo, 16, 64)
	switch {
	case path == exe && strings.Contains(f[1], "x"):
		return areaText
	case path == exe:
		return areaData
	case path == "[stack]":
		return areaStack
	case path == "[vdso]" || path == "[vvar]" || path == "[vvar_vclock]" || path == "[vsyscall]":
		return areaKernel
	case path == "" && start >= 1<<32 && start < 0x7f0000000000:
		// Go 1.26 randomises the heap's arena hints (no longer
		// 0xc000000000), but they stay below the kernel's mmap base, where
		// the runtime's off-heap mappings land.
		return areaHeap
	case path == "" || path == "[heap]":
		return areaRuntime
	}
	return areaOther
}

func (s smapsSplit) total(m map[string]float64) float64 {
	var t float64
	for _, v := range m {
		t += v
	}
	return t
}

// debugSmaps (LSB_SMAPS=1) prints every mapping with pages at each map step.
var debugSmaps = os.Getenv("LSB_SMAPS") == "1"

// readFDs counts pid's open fds by kind.
func readFDs(pid int) (map[string]int, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	kinds := map[string]int{}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		kinds[fdKind(filepath.Join(dir, e.Name()), target)]++
	}
	return kinds, nil
}

func fdKind(link, target string) string {
	switch {
	case strings.HasPrefix(target, "socket:"):
		return "socket"
	case strings.HasPrefix(target, "pipe:"):
		return "pipe"
	case strings.HasPrefix(target, "anon_inode:"):
		return strings.Trim(strings.TrimPrefix(target, "anon_inode:"), "[]")
	case strings.HasPrefix(target, "/dev/"):
		return target
	}
	var st syscall.Stat_t
	if err := syscall.Stat(link, &st); err == nil && st.Mode&syscall.S_IFMT == syscall.S_IFIFO {
		name := filepath.Base(target) // <container or exec id>-stdout
		if i := strings.LastIndexByte(name, '-'); i >= 0 {
			name = "*" + name[i:]
		}
		return "fifo " + name
	}
	return "file " + filepath.Base(target)
}

// mapPhase walks two grouped leanshims through the steps and writes the
// map as a section of the results.
func (b *bench) mapPhase(ctx context.Context) error {
	lean := b.shims[0]
	extra := max(2, min(10, b.cfg.groupN-1)) // containers after the first
	var walks [2][]mapStep
	for k, introspect := range []bool{false, true} {
		steps, err := b.mapWalk(ctx, lean, k, extra, introspect)
		if err != nil {
			return err
		}
		walks[k] = steps
	}
	b.res.section(renderMap(walks[0], walks[1], extra))
	m, i := walks[0], walks[1]
	b.res.add("map: shim with one idle container, USS", "KiB", 0, m[0].smap.total(m[0].smap.uss), nanf())
	// What a container costs is the shim's own memory it keeps: anonymous
	// pages. The binary's pages are the file's, shared by every shim on a
	// node, and the shim drops them after each container's calls
	// (cmd/shim/text_linux.go), so between two steps they move with what
	// the shim happened to run last, not with what it holds.
	uss := func(i int) float64 {
		u := m[i].smap.uss
		return u[areaHeap] + u[areaRuntime] + u[areaStack]
	}
	b.res.add("map: shim with one idle container, anonymous USS", "KiB", 0, uss(0), nanf())
	b.res.add("map: per extra grouped container, anonymous USS", "KiB", 0, (uss(2)-uss(0))/float64(extra), nanf(), maxValue(100))
	b.res.add("map: each container after the second, anonymous USS", "KiB", 0, (uss(2)-uss(1))/float64(extra-1), nanf())
	b.res.add(fmt.Sprintf("map: each of %d later containers (the shim has collected), anonymous USS", extra), "KiB", 0,
		(uss(5)-uss(4))/float64(extra), nanf())
	if i[0].gos != nil && i[2].gos != nil {
		b.res.add("map: goroutines per extra grouped container", "goroutines", 1,
			float64(i[2].gos.total-i[0].gos.total)/float64(extra), nanf())
	}
	return nil
}

func nanf() float64 { return math.NaN() }

// mapWalk runs one grouped shim through the steps of the map.
func (b *bench) mapWalk(ctx context.Context, s shim, k, extra int, introspect bool) (steps []mapStep, retErr error) {
	group := fmt.Sprintf("%s=bench-map-%d-%d", groupAnnotation, os.Getpid(), k)
	flags := []string{"-d", "--annotation", group}
	var ids []string
	defer func() { retErr = errors.Join(retErr, b.removeAll(ctx, ids)) }()
	var pid int
	take := func(name string) error {
		if err := sleepCtx(ctx, b.cfg.settle); err != nil {
			return err
		}
		syscall.Sync()
		st := mapStep{name: name}
		var err error
		if st.smap, err = readSmaps(pid); err != nil {
			return err
		}
		if st.fds, err = readFDs(pid); err != nil {
			return err
		}
		if st.thr, err = readThreads(pid); err != nil {
			return err
		}
		if introspect {
			if st.gos, err = b.dumpGo(ctx, pid); err != nil {
				return err
			}
		}
		steps = append(steps, st)
		return nil
	}
	for i := range extra + 1 {
		id := b.newID("map", s)
		if _, err := b.d.ctr(ctx, b.runArgs(s, flags, id, sleeper...)...); err != nil {
			return nil, err
		}
		ids = append(ids, id)
		p, err := b.shimOfID(ctx, s, id)
		if err != nil {
			return nil, err
		}
		switch {
		case i == 0:
			pid = p
			if err := take("one idle container"); err != nil {
				return nil, err
			}
		case p != pid:
			return nil, fmt.Errorf("not grouped: %s is served by shim %d, not %d", id, p, pid)
		case i == 1:
			if err := take("two idle containers"); err != nil {
				return nil, err
			}
		}
	}
	if err := take(fmt.Sprintf("%d more idle containers", extra)); err != nil {
		return nil, err
	}
	// One exec that runs until killed: a ctr that waits for it, as a
	// client of `ctr task exec` does, and deletes it once it has exited.
	cmd, cancel := b.d.command(context.WithoutCancel(ctx), "task", "exec", "--exec-id", "mapexec", ids[0], "/bin/sleep", "1000000")
	defer cancel()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	waited := false
	defer func() {
		if !waited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	if err := b.waitExecs(ctx, ids[0], 2); err != nil {
		return nil, err
	}
	if err := take("one exec running"); err != nil {
		return nil, err
	}
	if _, err := b.d.ctr(ctx, "task", "kill", "--exec-id", "mapexec", "-s", "SIGKILL", ids[0]); err != nil {
		return nil, err
	}
	waited = true
	_ = cmd.Wait() // exits non-zero: its process was killed
	if err := b.waitExecs(ctx, ids[0], 1); err != nil {
		return nil, err
	}
	if err := take("after the exec's Delete"); err != nil {
		return nil, err
	}
	// As many again: by now the shim has collected (num_gc in the
	// introspected twin's table), so these show what a container costs
	// without the collector's one-time state.
	for range extra {
		id := b.newID("map", s)
		if _, err := b.d.ctr(ctx, b.runArgs(s, flags, id, sleeper...)...); err != nil {
			return nil, err
		}
		ids = append(ids, id)
		if p, err := b.shimOfID(ctx, s, id); err != nil || p != pid {
			return nil, errors.Join(err, fmt.Errorf("not grouped: %s is served by shim %d, not %d", id, p, pid))
		}
	}
	if err := take(fmt.Sprintf("%d later idle containers", extra)); err != nil {
		return nil, err
	}
	return steps, nil
}

// waitExecs waits until `ctr task ps id` lists n processes.
func (b *bench) waitExecs(ctx context.Context, id string, n int) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		out, err := b.d.ctr(ctx, "task", "ps", id)
		if err == nil && len(strings.Split(strings.TrimSpace(out), "\n"))-1 == n {
			return nil
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("task %s: not %d processes after 30s", id, n)
}
