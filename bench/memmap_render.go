package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// The memory map's table (memmap.go walks the shims and takes the readings).

// renderMap renders the map as markdown: smaps by area (measured shim),
// then fds, threads, goroutines and Go runtime statistics.
func renderMap(m, in []mapStep, extra int) string {
	var sb strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	w("## Memory map of one grouped leanshim (issue 16)\n\n")
	w("`make bench` phase `map`. Columns: the shim with one idle container (absolute); what the second adds; what "+
		"each further one adds (per container, from the second to the %d-th); what one running exec adds; what is "+
		"left once it is deleted (both against the %d-container shim); what each of %d later containers adds (from "+
		"the %d-th on, once the shim has collected). KiB from /proc/PID/smaps, after `sync`.\n\n",
		extra+1, extra+1, extra, extra+2)
	head := func(first string) {
		w("| %s | one container | the second adds | each further adds | + one exec running | left after exec Delete | "+
			"each later one adds |\n|---|--:|--:|--:|--:|--:|--:|\n", first)
	}
	col := func(get func(mapStep) float64) mapCols { return colOf(m, extra, get) }
	w("How to read it (issue 16). The binary's text and read-only data are file pages: private here only because " +
		"this map's shim is the one process mapping its binary; on a node every leanshim shares them, so a shim's " +
		"PSS is its anonymous memory plus the binary's resident pages divided by the number of shims. Start-up " +
		"maps most of the binary (package initialisation runs code in most of its 64 KiB windows, and the kernel " +
		"maps 64 KiB around each page it faults in); the shim drops those pages after a container's Start and " +
		"Delete and after each release, and has the kernel map them back one page per fault instead of 64 KiB (a " +
		"userfaultfd registration, which turns fault-around off; cmd/shim/text_linux.go), so the two binary rows " +
		"hold the pages it has run since, and move between steps with what it ran last: the per-container figures " +
		"of the summary count anonymous memory only. The Go heap of a one-container shim is about 70 KiB of " +
		"package initialisation (type registrations of the generated APIs; `GODEBUG=inittrace=1`; 220 KiB before " +
		"github.com/golang/protobuf was pinned to v1.3.5, go.mod) plus what start-up, Create and Start allocated: " +
		"such a shim never collects (GOGC 40 until the first cycle), because the first collection leaves 0.4-1 MiB " +
		"of collector state behind for good (the runtime's off-heap row: mark bits, work buffers, span metadata; " +
		"one collection forced at start-up left 400 KiB), more than the garbage it frees. A shim that grows past " +
		"that first goal (a few containers, execs, or containerd 2.4's CRI, which reads every container's and " +
		"pod's stats once a second) pays it once, then runs at GOGC 25 and hands free pages back after each " +
		"container's Create, Start and Delete (cmd/shim/tuning_linux.go). The containers from the second to the " +
		"last above include that one-time state; the later ones, added once the shim has collected, show what a " +
		"container keeps: the goroutines below (an init watcher, stdout and stderr copiers, a stdin copier, and " +
		"the two goroutines of the ttrpc connection containerd 1.6 dials per task), their stacks, its structs and " +
		"fds. The shim is built with Go's previous collector (GOEXPERIMENT=nogreenteagc, Makefile): Go 1.26's " +
		"default one cost an idle shim about 100 KiB more.\n\n")
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
	if len(in) == 6 && in[0].gos != nil {
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
// against the shim with every container), and what each later container
// adds.
type mapCols struct{ one, second, further, exec, left, later float64 }

func colOf(s []mapStep, extra int, get func(mapStep) float64) mapCols {
	return mapCols{
		one:     get(s[0]),
		second:  get(s[1]) - get(s[0]),
		further: (get(s[2]) - get(s[1])) / float64(extra-1),
		exec:    get(s[3]) - get(s[2]),
		left:    get(s[4]) - get(s[2]),
		later:   (get(s[5]) - get(s[4])) / float64(extra),
	}
}

// row writes one map row; frac decimals for the per-container column.
func (c mapCols) row(w func(string, ...any), name string) {
	w("| %s | %.0f | %.0f | %.1f | %.0f | %.0f | %.1f |\n", name, c.one, c.second, c.further, c.exec, c.left, c.later)
}
