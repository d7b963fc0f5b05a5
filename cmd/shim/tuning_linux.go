package main

import (
	"os"
	"runtime/debug"
)

// gcPercent is the shim's GOGC. The default, 100, lets the heap grow to the
// runtime's 4 MiB minimum goal before the first collection: a shim's live
// heap is a few hundred KiB, so under exec churn RSS climbed by about 1.2 MiB
// over the first thousand execs and stayed there (bench/RESULTS.md, memory
// drift). At 25 the minimum goal is 1 MiB: the heap settles within the first
// hundred execs, for a collection about every 20 execs (well under a
// millisecond each at this heap size). An idle shim stays below 1 MiB and
// never collects, so its memory is unchanged.
const gcPercent = 25

// init sets gcPercent unless the environment sets GOGC, which an operator
// may use to override it. It applies to every action, not only the daemon:
// the short-lived ones (start, delete, -info) never reach 1 MiB of heap, so
// it costs them nothing.
func init() {
	if _, ok := os.LookupEnv("GOGC"); !ok {
		debug.SetGCPercent(gcPercent)
	}
}
