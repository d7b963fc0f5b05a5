package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The shim's own share of an exec's latency (issue 16), from leanshim's
// trace (cmd/shim/trace_linux.go), which SIGUSR2 turns on and off: for each
// exec, from its Start request reaching the shim to the runtime (runc exec)
// forked, and from the exec's reap (and its runtime's) to its TaskExit
// handed to containerd.
// Only leanshim has the trace; the execs are the sequential ones, so an
// exec's start request and the next fork pair up without ambiguity.

// traceRun is a trace in progress: the shim and where its lines begin.
type traceRun struct {
	pid    int
	offset int64
}

// startTrace turns on the trace of the leanshim serving container id.
func (b *bench) startTrace(ctx context.Context, id string) (traceRun, error) {
	pid, err := b.shimOfID(ctx, b.shims[0], id)
	if err != nil {
		return traceRun{}, err
	}
	st, err := os.Stat(b.d.logPath)
	if err != nil {
		return traceRun{}, err
	}
	if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
		return traceRun{}, err
	}
	return traceRun{pid: pid, offset: st.Size()}, nil
}

// stopTrace turns the trace off, reads it and adds its rows: want execs.
func (b *bench) stopTrace(tr traceRun, want int) error {
	if err := syscall.Kill(tr.pid, syscall.SIGUSR2); err != nil {
		return err
	}
	time.Sleep(200 * time.Millisecond) // containerd copies the shim's log FIFO
	data, err := os.ReadFile(b.d.logPath)
	if err != nil {
		return err
	}
	if int64(len(data)) < tr.offset {
		return fmt.Errorf("containerd log shrank")
	}
	t := parseTrace(string(data[tr.offset:]))
	b.res.note(fmt.Sprintf("shim's share of exec latency: %d of %d execs paired request→fork, %d TaskExits timed, "+
		"%d of them from the latest of the exec's reap, its runc exec's reap and containerd's answer to the event "+
		"before (an exit held until TaskExecStarted is queued waits for runc exec, and an event waits for "+
		"containerd to answer the one before it: not for the shim)", len(t.toFork), want, len(t.toSend), len(t.own)))
	if len(t.toFork) == 0 || len(t.toSend) == 0 || len(t.own) == 0 {
		return fmt.Errorf("trace: %d request→fork pairs, %d TaskExits, %d paired with their runtime in the log",
			len(t.toFork), len(t.toSend), len(t.own))
	}
	nan := math.NaN()
	b.res.add("shim: exec Start request → runc forked", "ms", 3, median(t.toFork), nan, maxValue(1))
	b.res.add("shim: exec Start request → runc forked, p99", "ms", 3, percentile(t.toFork, 99), nan, maxValue(1))
	b.res.add("shim: exec reaped → TaskExit sent", "ms", 3, median(t.toSend), nan)
	b.res.add("shim: exec reaped → TaskExit sent, p99", "ms", 3, percentile(t.toSend, 99), nan)
	b.res.add("shim: exit ready (exec and runc exec reaped, event before answered) → TaskExit sent", "ms", 3, median(t.own), nan, maxValue(1))
	b.res.add("shim: exit ready → TaskExit sent, p99", "ms", 3, percentile(t.own, 99), nan, maxValue(1))
	return nil
}

// execTrace is what parseTrace finds, in ms per exec.
type execTrace struct {
	toFork []float64 // exec Start request → runtime forked
	toSend []float64 // exec reaped → TaskExit sent
	// own is the shim's share of toSend: from the latest of the exec's
	// reap, its runtime's (runc exec) reap and containerd's answer to the
	// event sent before, to TaskExit sent. An exec that exits before runc
	// exec has returned (/bin/true often does) has its TaskExit held until
	// Start has queued TaskExecStarted, and events go out one at a time,
	// each once containerd has answered the one before (containerd's
	// order): those waits are the runtime's and containerd's, not the
	// shim's.
	own []float64
}

// parseTrace pairs each exec start request with the next fork (the
// runtime's), and times each TaskExit from its reap and from its runtime's.
func parseTrace(log string) execTrace {
	var tr execTrace
	lines := strings.Split(log, "\n")
	reapedAt := map[int64]int64{} // pid → ns
	for _, line := range lines {
		if strings.Contains(line, `msg="trace reaped"`) {
			reapedAt[traceInt(line, "pid")] = traceInt(line, "ns")
		}
	}
	runtimeOf := map[string]int64{} // exec id → its runtime's pid
	var pending int64 = -1
	pendingExec := ""
	var answered int64 = -1 // containerd's answer to the last event sent
	for _, line := range lines {
		switch {
		case strings.Contains(line, `msg="trace sent"`):
			answered = traceInt(line, "ns")
		case strings.Contains(line, `msg="trace exec start request"`):
			pending, pendingExec = traceInt(line, "ns"), traceStr(line, "exec")
		case strings.Contains(line, `msg="trace forked"`):
			if ns := traceInt(line, "ns"); pending > 0 && ns >= pending {
				tr.toFork = append(tr.toFork, float64(ns-pending)/1e6)
				runtimeOf[pendingExec] = traceInt(line, "pid")
			}
			pending = -1
		case strings.Contains(line, `msg="trace exit send"`):
			d, sent := traceInt(line, "reaped_to_send_ns"), traceInt(line, "ns")
			if d < 0 {
				continue
			}
			tr.toSend = append(tr.toSend, float64(d)/1e6)
			rt, ok := runtimeOf[traceStr(line, "exec")]
			if !ok || sent < 0 {
				continue
			}
			from := sent - d
			if r, ok := reapedAt[rt]; ok && r > from {
				from = r
			}
			from = max(from, answered)
			tr.own = append(tr.own, float64(max(sent-from, 0))/1e6)
		}
	}
	return tr
}

// traceInt returns the integer value of key=... in a log line, or -1.
func traceInt(line, key string) int64 {
	if n, err := strconv.ParseInt(traceStr(line, key), 10, 64); err == nil {
		return n
	}
	return -1
}

// traceStr returns the value of key=... in a log line, or "".
func traceStr(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}
