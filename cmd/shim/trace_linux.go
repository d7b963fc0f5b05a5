package main

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containerd/ttrpc"

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
// handler's own time has milliseconds only.
type tracer struct {
	on  atomic.Bool
	log *slog.Logger
}

// toggle turns tracing on or off and says so in the log.
func (t *tracer) toggle() {
	on := !t.on.Load()
	t.on.Store(on)
	t.log.Info("trace", "on", on)
}

// request notes a call that arrived at ns, if it starts an exec.
func (t *tracer) request(method string, req any, ns int64) {
	if !t.on.Load() || !strings.HasSuffix(method, "/Start") {
		return
	}
	if e, ok := req.(execIDer); ok && e.GetExecId() != "" {
		t.log.Info("trace exec start request", "exec", e.GetExecId(), "ns", ns)
	}
}

// forked is the reaper's Started hook: "ns" is when the fork began,
// "exec_ns" how long until the runtime binary was running (os/exec returns
// once the child has exec'd).
func (t *tracer) forked(pid int, at time.Time) {
	if t.on.Load() {
		t.log.Info("trace forked", "pid", pid, "ns", at.UnixNano(), "exec_ns", time.Since(at).Nanoseconds())
	}
}

// reaped is the reaper's Reaped hook: with the forked lines, it tells when
// the runtime binary of an exec's Start exited. A process that exits before
// then has its TaskExit held until Start has queued TaskExecStarted
// (containerd's order), so the shim's own share of an exit runs from the
// later of the two reaps.
func (t *tracer) reaped(pid int, at time.Time) {
	if t.on.Load() {
		t.log.Info("trace reaped", "pid", pid, "ns", at.UnixNano())
	}
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
			now := time.Now()
			s.t.log.Info("trace exit send", "exec", e.Id, "ns", now.UnixNano(), "reaped_to_send_ns", now.Sub(at).Nanoseconds())
		}
	}
	err := s.Sender.Send(ctx, env)
	if s.t.on.Load() {
		// Events go out one at a time, each once containerd has answered
		// the one before (their order is containerd's): a TaskExit queued
		// behind a TaskExecStarted waits for containerd, not for the shim.
		s.t.log.Info("trace sent", "topic", env.Topic, "ns", time.Now().UnixNano())
	}
	return err
}
