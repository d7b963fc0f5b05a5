package main

import (
	"context"
	"os"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"weak"

	"github.com/containerd/ttrpc"
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

// settler hands the heap pages a container's Create, Start or Delete left
// free back to the kernel (debug.FreeOSMemory: a collection, then every
// free page released), once no other call is in flight. Those calls
// allocate more than they keep (the spec, runc's output, mount tables);
// without this each container left 100-200 KiB of garbage or free heap
// resident (bench/RESULTS.md, memory map).
//
// Only in a shim the collector has already run in: the first collection
// costs a Go process about 700 KiB for good (the collector's own metadata:
// mark-bit arenas, work buffers, runtime state it touches; measured with
// the map), more than one container's garbage, so a shim with one
// container, whose start-up allocations stay under the first heap goal
// (gcPercent), must not be the one to pay it. A grouped shim pays it once,
// when its heap first reaches the goal, and settles from then on. Exec calls
// never settle: their latency is on every `kubectl exec`, and gcPercent
// bounds what they leave.
//
// It runs in the call's own goroutine after the handler, before the reply
// is written: no goroutine, no timer, and a burst of calls settles once,
// after its last.
type settler struct {
	inflight atomic.Int32
	sentinel weak.Pointer[struct{ _, _ *int }] // see collected
}

// execIDer is a task API request that names an exec (Start, Delete).
type execIDer interface{ GetExecId() string }

// intercept wraps one unary call; see settler.
func (s *settler) intercept(ctx context.Context, u ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, m ttrpc.Method) (any, error) {
	s.inflight.Add(1)
	settle := false
	resp, err := m(ctx, func(v any) error {
		uerr := u(v)
		settle = uerr == nil && settles(info.FullMethod, v)
		return uerr
	})
	if s.inflight.Add(-1) == 0 && settle && s.collected() {
		debug.FreeOSMemory()
	}
	return resp, err
}

// settles reports whether a call of method with request req leaves a
// container's worth of garbage: Create, and Start or Delete of an init.
func settles(method string, req any) bool {
	i := strings.LastIndexByte(method, '/')
	switch method[i+1:] {
	case "Create":
		return true
	case "Start", "Delete":
		e, ok := req.(execIDer)
		return !ok || e.GetExecId() == ""
	}
	return false
}

// collected reports whether the collector has run since the settler was
// made: the sentinel, reachable only through a weak pointer, is gone after
// the first cycle. Neither runtime.ReadMemStats nor debug.ReadGCStats:
// measured with the bench's idle phase, calling either once left every
// one-container shim about 550 KiB larger for good (1.22 to 1.8 MiB USS).
func (s *settler) collected() bool {
	return s.sentinel.Value() == nil
}

// newSettler returns a settler whose sentinel has not been collected yet.
func newSettler() *settler {
	// Pointers, so the tiny allocator, which may batch a weak pointer's
	// target with live objects, never serves it.
	return &settler{sentinel: weak.Make(&struct{ _, _ *int }{})}
}
