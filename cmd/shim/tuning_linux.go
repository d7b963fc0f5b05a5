package main

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"weak"

	"github.com/containerd/ttrpc"
)

// gcPercent is the shim's GOGC once the collector has run. The default,
// 100, lets the heap grow to the runtime's 4 MiB minimum goal before the
// first collection: a shim's live heap is a few hundred KiB, so under exec
// churn RSS climbed by about 1.2 MiB over the first thousand execs and
// stayed there (bench/RESULTS.md, memory drift). At 25 the minimum goal is
// 1 MiB: the heap settles within the first hundred execs, for a collection
// about every 20 execs (well under a millisecond each at this heap size).
const gcPercent = 25

// firstGCPercent is the shim's GOGC until the collector first runs: a
// minimum goal of 1.6 MiB, which the runtime triggers at 1.1-1.5 MiB. A shim with one idle container has allocated about
// 920 KiB of heap spans by then (bench/RESULTS.md, memory map), and the
// first collection at gcPercent triggers between 0.7 and 0.95 MiB: idle
// shims landed either side of it, by a few KiB of difference in what they
// had done, and the ones that collected kept about 550 KiB more for good
// (the collector's own metadata), 1.75 against 1.21 MiB USS (issue 16). At
// 40 no idle shim collects; a busy one (a few containers, or execs) does,
// early, and settler.intercept then switches to gcPercent.
const firstGCPercent = 40

// init sets firstGCPercent unless the environment sets GOGC, which an
// operator may use to override it (and then it stays). It applies to every
// action, not only the daemon: the short-lived ones (start, delete, -info)
// never reach 1 MiB of heap, so it costs them nothing.
//
// It also turns the heap profiler off. Something in the binary refers to
// runtime.MemProfile, so the runtime samples an allocation every 512 KiB
// and keeps each sampled call stack for good, in buckets and a 1.4 MiB
// hash table whose pages become resident as stacks land in them: memory
// that grows with the variety of what a long-lived shim has done, and that
// nothing in a shim ever reads.
func init() {
	runtime.MemProfileRate = 0
	if _, ok := os.LookupEnv("GOGC"); !ok {
		debug.SetGCPercent(firstGCPercent)
	}
}

// settler hands free heap pages back to the kernel (debug.FreeOSMemory: a
// collection, then every free page released), once no other call is in
// flight, at two moments:
//
//   - after a container's Create, Start or Delete (and a pod's
//     CreateSandbox, StartSandbox, StopSandbox). Those calls allocate more
//     than they keep (the spec, runc's output, mount tables); without this
//     each container left 100-200 KiB of garbage or free heap resident
//     (bench/RESULTS.md, memory map);
//   - after the first quiet call (afterCollection) that follows a
//     collection of the collector's own. The runtime keeps the pages a
//     collection frees for reuse and returns them slowly: a shim under
//     containerd 2.4's CRI, which reads every container's and pod's stats
//     once a second, kept about 1.1 MiB of free heap resident between
//     collections, on top of its live memory.
//
// Only in a shim the collector has already run in: the first collection
// costs a Go process 0.5-1 MiB for good (the collector's own metadata and
// the runtime state it touches; measured with the map), as much as five to
// ten containers' garbage (~110 KiB each, Create and Start), so a shim with
// one or a few containers, whose heap stays under the first goal
// (firstGCPercent), must not be made to pay it. A shim that grows past the
// goal has paid it, and from then on keeps its live memory, not its
// garbage. An exec's Exec and Start never release: their latency is on
// every `kubectl exec`.
//
// After a release, and after a container's Start or Delete (endsSequence)
// also in a shim that has never collected, it drops the binary's read-only
// pages (textPages): what start-up and the container's calls ran stops
// being mapped, and what the shim runs next maps back in, page by page.
//
// It runs in the call's own goroutine after the handler, before the reply
// is written: no goroutine, no timer, and a burst of calls settles once,
// after its last.
type settler struct {
	inflight atomic.Int32                                      // calls being served, long waits (waitsLong) left out
	sentinel atomic.Pointer[weak.Pointer[struct{ _, _ *int }]] // see collectedSince
	seen     atomic.Bool                                       // the collector has run: releases may happen
	fixedGC  bool                                              // GOGC is the operator's: leave it
	release  func()                                            // debug.FreeOSMemory; tests count calls
	dropText func()                                            // textPages.drop; tests count calls
}

// execIDer is a task API request that names an exec (Start, Delete).
type execIDer interface{ GetExecId() string }

// intercept wraps one unary call; see settler. Calls that never settle a
// container pass through without an allocation: on a one-container shim
// every byte of garbage stays resident until the first collection.
func (s *settler) intercept(ctx context.Context, u ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, m ttrpc.Method) (any, error) {
	s.observe()
	if waitsLong(info.FullMethod) {
		return m(ctx, u)
	}
	s.inflight.Add(1)
	var resp any
	var err error
	container := false
	if settleMethod(info.FullMethod) {
		resp, err = m(ctx, func(v any) error {
			uerr := u(v)
			container = uerr == nil && settles(info.FullMethod, v)
			return uerr
		})
	} else {
		resp, err = m(ctx, u)
	}
	if s.inflight.Add(-1) == 0 {
		released := s.seen.Load() && (container || (afterCollection(info.FullMethod) && s.collectedSince()))
		if released {
			s.release()
			s.rearm() // after the release's own collection, which would clear it
		}
		if (container && endsSequence(info.FullMethod)) || released {
			s.dropText()
		}
	}
	return resp, err
}

// waitsLong reports whether method is a call that stays in flight for a
// process's or a pod's whole life: CRI keeps a Wait open on every task and a
// WaitSandbox on every pod, so counting them would keep a CRI shim from ever
// settling.
func waitsLong(method string) bool {
	switch method[strings.LastIndexByte(method, '/')+1:] {
	case "Wait", "WaitSandbox":
		return true
	}
	return false
}

// afterCollection reports whether a call of method may release what a
// collection freed: the calls clients make while nothing urgent waits on
// the reply (stats and status polls, a Delete once the process is gone),
// not an exec's Exec or Start, nor a Kill.
func afterCollection(method string) bool {
	switch method[strings.LastIndexByte(method, '/')+1:] {
	case "Stats", "SandboxMetrics", "State", "Pids", "Connect", "Delete", "SandboxStatus", "PingSandbox":
		return true
	}
	return false
}

// endsSequence reports whether a container call of method is one after
// which the shim may stay quiet: an init's Start or Delete, a pod's
// StopSandbox. A Create, CreateSandbox or StartSandbox is always followed
// by more calls within milliseconds, which would map back what a drop there
// unmapped; on this machine a drop costs 0.5-1 ms before the reply, and
// the next call 0.3 ms more in faults.
func endsSequence(method string) bool {
	switch method[strings.LastIndexByte(method, '/')+1:] {
	case "Start", "Delete", "StopSandbox":
		return true
	}
	return false
}

// settleMethod reports whether method is one settles may say yes to.
func settleMethod(method string) bool {
	switch method[strings.LastIndexByte(method, '/')+1:] {
	case "Create", "Start", "Delete", "CreateSandbox", "StartSandbox", "StopSandbox":
		return true
	}
	return false
}

// settles reports whether a call of method with request req leaves a
// container's worth of garbage: Create, Start or Delete of an init, and a
// pod's CreateSandbox, StartSandbox and StopSandbox.
func settles(method string, req any) bool {
	switch method[strings.LastIndexByte(method, '/')+1:] {
	case "Create", "CreateSandbox", "StartSandbox", "StopSandbox":
		return true
	case "Start", "Delete":
		// The legacy v1 shim API names an exec by ID alone: not knowing
		// whether it is an init, it does not settle (an exec's latency).
		e, ok := req.(execIDer)
		return ok && e.GetExecId() == ""
	}
	return false
}

// collectedSince reports whether the collector has run since the settler
// was made or last released: the sentinel, reachable only through a weak
// pointer, is gone after a cycle. Neither runtime.ReadMemStats nor
// debug.ReadGCStats: measured with the bench's idle phase, calling either
// once left every one-container shim about 550 KiB larger for good (1.22
// to 1.8 MiB USS).
func (s *settler) collectedSince() bool {
	return s.sentinel.Load().Value() == nil
}

// rearm makes a new sentinel, for collectedSince to see the next cycle.
func (s *settler) rearm() {
	// Pointers, so the tiny allocator, which may batch a weak pointer's
	// target with live objects, never serves it.
	w := weak.Make(&struct{ _, _ *int }{})
	s.sentinel.Store(&w)
}

// observe notes the collector's first run, and then switches GOGC from
// firstGCPercent to gcPercent (see firstGCPercent). Every call checks: an
// atomic load, then a weak pointer's Value until the first cycle.
func (s *settler) observe() {
	if s.seen.Load() || !s.collectedSince() {
		return
	}
	if s.seen.CompareAndSwap(false, true) && !s.fixedGC {
		debug.SetGCPercent(gcPercent)
	}
}

// newSettler returns a settler whose sentinel has not been collected yet.
// A kernel that cannot turn fault-around off for the binary
// (textPages.faultSingly) is noted in log, at debug level: drops still work.
func newSettler(log *slog.Logger) *settler {
	_, fixed := os.LookupEnv("GOGC")
	text := findTextPages()
	if err := text.faultSingly(); err != nil {
		log.Debug("binary pages fault in 64 KiB windows", "error", err)
	}
	s := &settler{fixedGC: fixed, release: debug.FreeOSMemory, dropText: text.drop}
	s.rearm()
	return s
}
