package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	"github.com/leanshim/leanshim/proto/events"
	"github.com/leanshim/leanshim/proto/eventsapi"
	"github.com/leanshim/leanshim/task"
)

// tracer logs, while on, the moments that make up the shim's own share of
// an exec's latency (issue 16): an exec's Start request arriving, the
// runtime forked for it, every reap, and a TaskExit handed to containerd
// with how long after the reap. SIGUSR2 turns it on and off (bench's exec phase does, for
// its sequential execs only). Off, it costs an atomic load at each of those
// points: no goroutine, no timer, no allocation.
//
// Times are wall-clock nanoseconds in the lines themselves ("ns"): the log
// handler's own time has milliseconds only. Each line also gives "wait_ns":
// how long the shim's threads have, in all, been runnable but waiting for a
// CPU (schedFiles). Between two lines, its growth is time the machine's other
// processes (containerd, the client, runc) held both CPUs, not time the shim
// spent: the bench reports the shim's share with and without it. At a
// span's start it is read after the clock, at its end before, so that a
// wait while reading it is never taken off.
type tracer struct {
	on    atomic.Bool
	log   *slog.Logger
	sched schedFiles // the wait_ns readings, open while on
}

// toggle turns tracing on or off and says so in the log.
func (t *tracer) toggle() {
	on := !t.on.Load()
	t.on.Store(on)
	if on {
		t.sched.opens()
	} else {
		t.sched.close()
	}
	t.log.Info("trace", "on", on)
}

// request notes a call that arrived at ns, if it starts an exec.
func (t *tracer) request(method string, req any, ns int64) {
	if !t.on.Load() || !strings.HasSuffix(method, "/Start") {
		return
	}
	if e, ok := req.(execIDer); ok && e.GetExecId() != "" {
		t.log.Info("trace exec start request", "exec", e.GetExecId(), "ns", ns, "wait_ns", t.sched.runDelay())
	}
}

// forking is the reaper's Forking hook: "ns" is when the fork began,
// "exec_ns" how long until the runtime binary was running (os/exec returns
// once the child has exec'd).
func (t *tracer) forking() func(pid int) {
	if !t.on.Load() {
		return nil
	}
	wait := t.sched.runDelay()
	at := time.Now()
	return func(pid int) {
		t.log.Info("trace forked", "pid", pid, "ns", at.UnixNano(), "wait_ns", wait, "exec_ns", time.Since(at).Nanoseconds())
	}
}

// reaped is the reaper's Reaped hook: with the forked lines, it tells when
// the runtime binary of an exec's Start exited. A process that exits before
// then has its TaskExit held until Start has queued TaskExecStarted
// (containerd's order), so the shim's own share of an exit runs from the
// later of the two reaps.
func (t *tracer) reaped(pid int, at time.Time) {
	if t.on.Load() {
		t.log.Info("trace reaped", "pid", pid, "ns", at.UnixNano(), "wait_ns", t.sched.runDelay())
	}
}

// schedFiles reads how long the process's threads have waited on a run
// queue, summed over the threads alive now (/proc/PID/task/TID/schedstat,
// its second field). It keeps the task directory and each thread's file
// open between readings and rereads them in place: opening them anew each
// time cost a reading about 0.1 ms, inside the spans it measures. A thread
// that ends takes its share with it, so across a thread's end the sum can
// fall: the bench then takes nothing off. Only the tracer reads it: it
// opens the task directory when turned on and closes everything when turned
// off, and a reading after that (a call that saw the tracer still on) opens
// nothing.
type schedFiles struct {
	mu  sync.Mutex     // guards the fields below
	dir *os.File       // /proc/self/task, between opens and close; else nil
	fds map[string]int // thread ID → its schedstat, open
}

// opens opens the task directory, for runDelay to read.
func (f *schedFiles) opens() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dir != nil {
		return
	}
	if dir, err := os.Open("/proc/self/task"); err == nil {
		f.dir, f.fds = dir, map[string]int{}
	}
}

// runDelay returns the sum in nanoseconds, or -1 if it cannot be read.
func (f *schedFiles) runDelay() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dir == nil {
		return -1
	}
	if _, err := f.dir.Seek(0, io.SeekStart); err != nil {
		return -1
	}
	tids, err := f.dir.Readdirnames(-1)
	if err != nil {
		return -1
	}
	var sum int64
	var buf [64]byte
	for _, tid := range tids {
		fd, ok := f.fds[tid]
		if !ok {
			if fd, err = unix.Open("/proc/self/task/"+tid+"/schedstat", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
				continue // it ended meanwhile
			}
			f.fds[tid] = fd
		}
		n, err := unix.Pread(fd, buf[:], 0)
		if err != nil || n <= 0 {
			continue // ended since the listing; closed with the rest
		}
		// "time on a CPU, time waiting for one, timeslices", in ns.
		if fs := strings.Fields(string(buf[:n])); len(fs) == 3 {
			if v, err := strconv.ParseInt(fs[1], 10, 64); err == nil {
				sum += v
			}
		}
	}
	if len(f.fds) > len(tids) { // threads have ended: close theirs
		live := make(map[string]bool, len(tids))
		for _, tid := range tids {
			live[tid] = true
		}
		for tid, fd := range f.fds {
			if !live[tid] {
				_ = unix.Close(fd)
				delete(f.fds, tid)
			}
		}
	}
	return sum
}

// close closes the directory and every file runDelay has opened.
func (f *schedFiles) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fd := range f.fds {
		_ = unix.Close(fd)
	}
	if f.dir != nil {
		_ = f.dir.Close()
	}
	f.dir, f.fds = nil, nil
}

// intercept is a ttrpc interceptor that notes exec starts, then calls next.
func (t *tracer) intercept(next ttrpc.UnaryServerInterceptor) ttrpc.UnaryServerInterceptor {
	return func(ctx context.Context, u ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, m ttrpc.Method) (any, error) {
		if !t.on.Load() {
			return next(ctx, u, info, m)
		}
		ns := time.Now().UnixNano()
		return next(ctx, func(v any) error {
			err := u(v)
			if err == nil {
				t.request(info.FullMethod, v, ns)
			}
			return err
		}, info, m)
	}
}

// traceSender notes, while the tracer is on, each TaskExit as it is handed
// to containerd, with the time since the shim reaped the process, and when
// containerd has answered each event.
type traceSender struct {
	task.Sender
	t *tracer
}

func (s traceSender) Send(ctx context.Context, env *eventsapi.Envelope) error {
	if s.t.on.Load() && env.Topic == "/tasks/exit" && env.Event != nil {
		var e events.TaskExit
		if err := e.Unmarshal(env.Event.Value); err == nil && e.ExitedAt != nil {
			at := time.Unix(e.ExitedAt.Seconds, int64(e.ExitedAt.Nanos))
			wait := s.t.sched.runDelay()
			now := time.Now()
			s.t.log.Info("trace exit send", "exec", e.Id, "pid", e.Pid, "ns", now.UnixNano(), "wait_ns", wait,
				"reaped_to_send_ns", now.Sub(at).Nanoseconds())
		}
	}
	err := s.Sender.Send(ctx, env)
	if s.t.on.Load() {
		// Events go out one at a time, each once containerd has answered
		// the one before (their order is containerd's): a TaskExit queued
		// behind a TaskExecStarted waits for containerd, not for the shim.
		ns := time.Now().UnixNano()
		s.t.log.Info("trace sent", "topic", env.Topic, "ns", ns, "wait_ns", s.t.sched.runDelay())
	}
	return err
}
