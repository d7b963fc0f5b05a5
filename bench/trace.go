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
// handed to containerd; each both as it was and less the time the shim
// waited for a CPU while other processes held both.
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
	const less = ", less waits for a CPU"
	b.res.add("shim: exec Start request → runc forked", "ms", 3, median(t.toFork), nan, maxValue(1))
	b.res.add("shim: exec Start request → runc forked, p99", "ms", 3, percentile(t.toFork, 99), nan, maxValue(1))
	b.res.add("shim: exec Start request → runc forked"+less, "ms", 3, median(t.toForkCPU), nan, maxValue(1))
	b.res.add("shim: exec Start request → runc forked"+less+", p99", "ms", 3, percentile(t.toForkCPU, 99), nan, maxValue(1))
	b.res.add("shim: exec reaped → TaskExit sent", "ms", 3, median(t.toSend), nan)
	b.res.add("shim: exec reaped → TaskExit sent, p99", "ms", 3, percentile(t.toSend, 99), nan)
	b.res.add("shim: exit ready (exec and runc exec reaped, event before answered) → TaskExit sent", "ms", 3, median(t.own), nan, maxValue(1))
	b.res.add("shim: exit ready → TaskExit sent, p99", "ms", 3, percentile(t.own, 99), nan, maxValue(1))
	b.res.add("shim: exit ready → TaskExit sent"+less, "ms", 3, median(t.ownCPU), nan, maxValue(1))
	b.res.add("shim: exit ready → TaskExit sent"+less+", p99", "ms", 3, percentile(t.ownCPU, 99), nan, maxValue(1))
	return nil
}

// execTrace is what parseTrace finds, in ms per exec. The *CPU lists are
// the same spans less the time the shim's threads spent runnable but
// waiting for a CPU ("wait_ns" in the trace), when the machine's other
// processes (containerd, ctr, runc) held both CPUs; a span whose wait
// cannot be read is kept whole.
type execTrace struct {
	toFork    []float64 // exec Start request → runtime forked
	toForkCPU []float64
	toSend    []float64 // exec reaped → TaskExit sent
	// own is the shim's share of toSend: from the latest of the exec's
	// reap, its runtime's (runc exec) reap and containerd's answer to the
	// event sent before, to TaskExit sent. An exec that exits before runc
	// exec has returned (/bin/true often does) has its TaskExit held until
	// Start has queued TaskExecStarted, and events go out one at a time,
	// each once containerd has answered the one before (containerd's
	// order): those waits are the runtime's and containerd's, not the
	// shim's.
	own    []float64
	ownCPU []float64
}

// traceMoment is one line's time and the shim's run-queue wait so far
// (-1: not in the line).
type traceMoment struct{ ns, wait int64 }

// span returns the ms from a to b, and the same less the run-queue wait
// between them (nothing taken off if either wait is missing or the sum
// fell, as it does when a thread ends).
func span(a, b traceMoment) (wall, cpu float64) {
	d := b.ns - a.ns
	wall = float64(d) / 1e6
	if a.wait >= 0 && b.wait >= a.wait {
		d -= min(b.wait-a.wait, d)
	}
	return wall, float64(max(d, 0)) / 1e6
}

// parseTrace pairs each exec start request with the next fork (the
// runtime's), and times each TaskExit from its reap and from its runtime's.
func parseTrace(log string) execTrace {
	var tr execTrace
	lines := strings.Split(log, "\n")
	moment := func(line string) traceMoment {
		return traceMoment{traceInt(line, "ns"), traceInt(line, "wait_ns")}
	}
	reapedAt := map[int64]traceMoment{} // pid → its reap
	for _, line := range lines {
		if strings.Contains(line, `msg="trace reaped"`) {
			reapedAt[traceInt(line, "pid")] = moment(line)
		}
	}
	runtimeOf := map[string]int64{} // exec id → its runtime's pid
	pending := traceMoment{ns: -1}
	pendingExec := ""
	answered := traceMoment{ns: -1} // containerd's answer to the last event sent
	for _, line := range lines {
		switch {
		case strings.Contains(line, `msg="trace sent"`):
			answered = moment(line)
		case strings.Contains(line, `msg="trace exec start request"`):
			pending, pendingExec = moment(line), traceStr(line, "exec")
		case strings.Contains(line, `msg="trace forked"`):
			if m := moment(line); pending.ns > 0 && m.ns >= pending.ns {
				wall, cpu := span(pending, m)
				tr.toFork, tr.toForkCPU = append(tr.toFork, wall), append(tr.toForkCPU, cpu)
				runtimeOf[pendingExec] = traceInt(line, "pid")
			}
			pending.ns = -1
		case strings.Contains(line, `msg="trace exit send"`):
			d, sent := traceInt(line, "reaped_to_send_ns"), moment(line)
			if d < 0 {
				continue
			}
			tr.toSend = append(tr.toSend, float64(d)/1e6)
			rt, ok := runtimeOf[traceStr(line, "exec")]
			if !ok || sent.ns < 0 {
				continue
			}
			// The exec's own reap: its line if the trace has it, else the
			// event's time with no wait known.
			from := traceMoment{sent.ns - d, -1}
			if r, ok := reapedAt[traceInt(line, "pid")]; ok && r.ns == from.ns {
				from = r
			}
			if r, ok := reapedAt[rt]; ok && r.ns > from.ns {
				from = r
			}
			if answered.ns > from.ns {
				from = answered
			}
			if sent.ns < from.ns {
				from = sent
			}
			_, cpu := span(from, sent)
			tr.own = append(tr.own, float64(sent.ns-from.ns)/1e6)
			tr.ownCPU = append(tr.ownCPU, cpu)
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
