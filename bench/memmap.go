package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The memory map (issue 16): where every KiB of a running leanshim goes, at
// four moments of one grouped shim's life: one idle container; K more idle
// containers (reported per container); one exec running in the first
// container; after that exec's Delete. Two identical shims walk the same
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

// goDump is what the shim's SIGUSR1 handler logs: its runtime.MemStats
// (bytes) and every goroutine, by the function that created it.
type goDump struct {
	stats   map[string]float64
	byMaker map[string]int
	total   int
}

// dumpGo signals the shim pid and parses its answer from containerd's log.
func (b *bench) dumpGo(ctx context.Context, pid int) (*goDump, error) {
	before, err := os.ReadFile(b.d.logPath)
	if err != nil {
		return nil, err
	}
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(5 * time.Second)
	var last *goDump
	for time.Now().Before(deadline) {
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
		all, err := os.ReadFile(b.d.logPath)
		if err != nil || len(all) < len(before) {
			continue
		}
		if last = parseDump(string(all[len(before):])); last != nil && last.complete() {
			return last, nil
		}
	}
	if last != nil {
		return last, nil // the table says it is incomplete
	}
	return nil, fmt.Errorf("shim %d: no goroutine dump in %s after SIGUSR1:\n%s", pid, b.d.logPath, tail(b.d.logPath))
}

// parseDump finds one memstats line and the goroutine lines after it in
// log; it returns nil until it has as many goroutines as memstats counts.
func parseDump(log string) *goDump {
	d := &goDump{stats: map[string]float64{}, byMaker: map[string]int{}}
	haveStats := false
	for _, line := range strings.Split(log, "\n") {
		switch {
		case strings.Contains(line, "msg=memstats"):
			for _, kv := range strings.Fields(line) {
				k, v, ok := strings.Cut(kv, "=")
				if x, err := strconv.ParseFloat(v, 64); ok && err == nil {
					d.stats[k] = x
				}
			}
			haveStats = true
		case haveStats && strings.Contains(line, "msg=goroutine "):
			_, q, ok := strings.Cut(line, " stack=")
			if !ok {
				continue
			}
			g, err := strconv.Unquote(strings.TrimSpace(q))
			if err != nil || !strings.HasPrefix(g, "goroutine ") {
				continue
			}
			d.total++
			d.byMaker[goroutineMaker(g)]++
		}
	}
	if !haveStats {
		return nil
	}
	return d
}

// complete reports whether the dump holds every goroutine its memstats
// line counted (a line the log FIFO could not take is dropped).
func (d *goDump) complete() bool { return float64(d.total) >= d.stats["goroutines"] }

// goroutineMaker names a goroutine by the function that started it (its
// "created by" line), or by its own first frame for goroutine 1.
func goroutineMaker(g string) string {
	lines := strings.Split(g, "\n")
	for _, l := range lines {
		if rest, ok := strings.CutPrefix(l, "created by "); ok {
			fn, _, _ := strings.Cut(rest, " in goroutine")
			return shortFunc(fn)
		}
	}
	if len(lines) > 1 {
		fn, _, _ := strings.Cut(lines[len(lines)-2], "(")
		return shortFunc(fn)
	}
	return "?"
}

func shortFunc(fn string) string {
	if i := strings.LastIndexByte(fn, '/'); i >= 0 {
		fn = fn[i+1:]
	}
	return fn
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
	uss := func(i int) float64 { return m[i].smap.total(m[i].smap.uss) }
	b.res.add("map: per extra grouped container, USS", "KiB", 0, (uss(2)-uss(0))/float64(extra), nanf(), maxValue(100))
	b.res.add("map: each container after the second, USS", "KiB", 0, (uss(2)-uss(1))/float64(extra-1), nanf())
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

// renderMap renders the map as markdown: smaps by area (measured shim),
// then fds, threads, goroutines and Go runtime statistics.
func renderMap(m, in []mapStep, extra int) string {
	var sb strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	w("## Memory map of one grouped leanshim (issue 16)\n\n")
	w("`make bench` phase `map`. Columns: the shim with one idle container (absolute); what the second adds; what "+
		"each further one adds (per container, from the second to the %d-th); what one running exec adds; what is "+
		"left once it is deleted (both against the %d-container shim). KiB from /proc/PID/smaps, after `sync`.\n\n",
		extra+1, extra+1)
	head := func(first string) {
		w("| %s | one container | the second adds | each further adds | + one exec running | left after exec Delete |\n"+
			"|---|--:|--:|--:|--:|--:|\n", first)
	}
	col := func(get func(mapStep) float64) mapCols { return colOf(m, extra, get) }
	w("How to read it (issue 16). The binary's text and read-only data are file pages: private here only because " +
		"this map's shim is the one process mapping its binary; on a node every leanshim shares them, so a shim's PSS " +
		"is its anonymous memory plus the binary's resident pages divided by the number of shims. The Go heap of a " +
		"one-container shim is about 200 KiB of package initialisation (protobuf descriptors of grpc status, " +
		"descriptorpb and the generated APIs; `GODEBUG=inittrace=1`) plus what start-up, Create and Start allocated: " +
		"such a shim never collects (GOGC 40 until the first cycle), because the first collection leaves 0.5-1 MiB " +
		"of collector state behind for good, more than the garbage it frees. A shim that grows past that first goal " +
		"(a few containers, or execs) pays it once, then runs at GOGC 25 and hands free pages back after each " +
		"container's Create, Start and Delete (cmd/shim/tuning_linux.go), so each further container keeps its " +
		"live memory: the goroutines below (an init watcher, stdout and stderr copiers, a stdin copier, and the two " +
		"goroutines of the ttrpc connection containerd 1.6 dials per task), their stacks, its structs and fds.\n\n")
	head("USS by area (KiB)")
	for _, area := range areas {
		c := col(func(s mapStep) float64 { return s.smap.uss[area] })
		if c == (mapCols{}) {
			continue
		}
		c.row(w, area)
	}
	for _, t := range []struct {
		name string
		get  func(smapsSplit) map[string]float64
	}{{"**USS**", func(s smapsSplit) map[string]float64 { return s.uss }},
		{"**PSS**", func(s smapsSplit) map[string]float64 { return s.pss }},
		{"RSS", func(s smapsSplit) map[string]float64 { return s.rss }}} {
		col(func(s mapStep) float64 { return s.smap.total(t.get(s.smap)) }).row(w, t.name)
	}
	col(func(s mapStep) float64 { return float64(s.thr) }).row(w, "OS threads")
	// fds by kind
	kinds := map[string]bool{}
	for _, s := range m {
		for k := range s.fds {
			kinds[k] = true
		}
	}
	w("\n")
	head("open fds by kind")
	for _, kind := range slices.Sorted(maps.Keys(kinds)) {
		col(func(s mapStep) float64 { return float64(s.fds[kind]) }).row(w, kind)
	}
	if len(in) == 5 && in[0].gos != nil {
		w("\n")
		head("goroutines, by creator (introspected twin)")
		makers := map[string]bool{}
		for _, s := range in {
			for k := range s.gos.byMaker {
				makers[k] = true
			}
		}
		for _, mk := range slices.Sorted(maps.Keys(makers)) {
			colOf(in, extra, func(s mapStep) float64 { return float64(s.gos.byMaker[mk]) }).row(w, mk)
		}
		colOf(in, extra, func(s mapStep) float64 { return float64(s.gos.total) }).row(w, "**all listed**")
		colOf(in, extra, func(s mapStep) float64 { return s.gos.stats["goroutines"] }).row(w, "runtime.NumGoroutine")
		w("\n")
		head("Go runtime.MemStats (KiB, introspected twin)")
		for _, k := range []string{"heap_alloc", "heap_inuse", "heap_sys", "heap_released", "heap_objects", "stack_inuse", "stack_sys", "mspan_inuse", "mspan_sys", "mcache_sys", "gc_sys", "other_sys", "buckhash_sys", "sys", "num_gc"} {
			div := 1024.0
			if k == "num_gc" || k == "heap_objects" {
				div = 1
			}
			colOf(in, extra, func(s mapStep) float64 { return s.gos.stats[k] / div }).row(w, k)
		}
	}
	return sb.String()
}

// mapCols is one row of the map: absolute with one container, what the
// second adds, what each further one adds (from the second to the last),
// what a running exec adds and what it leaves after its Delete (both
// against the shim with every container).
type mapCols struct{ one, second, further, exec, left float64 }

func colOf(s []mapStep, extra int, get func(mapStep) float64) mapCols {
	return mapCols{
		one:     get(s[0]),
		second:  get(s[1]) - get(s[0]),
		further: (get(s[2]) - get(s[1])) / float64(extra-1),
		exec:    get(s[3]) - get(s[2]),
		left:    get(s[4]) - get(s[2]),
	}
}

// row writes one map row; frac decimals for the per-container column.
func (c mapCols) row(w func(string, ...any), name string) {
	w("| %s | %.0f | %.0f | %.1f | %.0f | %.0f |\n", name, c.one, c.second, c.further, c.exec, c.left)
}
