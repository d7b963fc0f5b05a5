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
// forked, and from the exec's reap to its TaskExit handed to containerd.
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
	toFork, toSend := parseTrace(string(data[tr.offset:]))
	b.res.note(fmt.Sprintf("shim's share of exec latency: %d of %d execs paired request→fork, %d TaskExits timed",
		len(toFork), want, len(toSend)))
	if len(toFork) == 0 || len(toSend) == 0 {
		return fmt.Errorf("trace: %d request→fork pairs, %d TaskExits in the log", len(toFork), len(toSend))
	}
	nan := math.NaN()
	b.res.add("shim: exec Start request → runc forked", "ms", 3, median(toFork), nan, maxValue(1))
	b.res.add("shim: exec Start request → runc forked, p99", "ms", 3, percentile(toFork, 99), nan, maxValue(1))
	b.res.add("shim: exec reaped → TaskExit sent", "ms", 3, median(toSend), nan, maxValue(1))
	b.res.add("shim: exec reaped → TaskExit sent, p99", "ms", 3, percentile(toSend, 99), nan, maxValue(1))
	return nil
}

// parseTrace pairs each exec start request with the next fork, and
// collects each TaskExit's reap-to-send time, in ms.
func parseTrace(log string) (toFork, toSend []float64) {
	var pending int64 = -1
	for _, line := range strings.Split(log, "\n") {
		switch {
		case strings.Contains(line, `msg="trace exec start request"`):
			pending = traceInt(line, "ns")
		case strings.Contains(line, `msg="trace forked"`):
			if ns := traceInt(line, "ns"); pending > 0 && ns >= pending {
				toFork = append(toFork, float64(ns-pending)/1e6)
			}
			pending = -1
		case strings.Contains(line, `msg="trace exit send"`):
			if d := traceInt(line, "reaped_to_send_ns"); d >= 0 {
				toSend = append(toSend, float64(d)/1e6)
			}
		}
	}
	return toFork, toSend
}

// traceInt returns the integer value of key=... in a log line, or -1.
func traceInt(line, key string) int64 {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				return n
			}
		}
	}
	return -1
}
