package task

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/cgroup"
	"github.com/leanshim/leanshim/pod"
	"github.com/leanshim/leanshim/process"
	"github.com/leanshim/leanshim/proto/taskapi"
	"github.com/leanshim/leanshim/proto/tasktypes"
)

// Config wires a Service.
type Config struct {
	Namespace string
	Processes *process.Factory
	Publisher Events // a *Publisher, or a filter in front of one (V1Events)
	Log       *slog.Logger
	// Cgroups finds containers' cgroups for Stats and OOM; nil disables
	// both (no cgroup hierarchy on the machine).
	Cgroups *cgroup.Hierarchy
	// OOM watches containers' memory cgroups; nil disables OOM events.
	OOM OOMWatcher
	// Pods makes the pods of the sandbox API (sandbox.go); nil: the shim
	// serves no sandbox API and CreateSandbox fails.
	Pods *pod.Factory
	// Shutdown is called (once, without blocking) when the Shutdown rpc
	// finds no task left: the shim should stop serving and exit.
	Shutdown func()
}

// OOMWatcher reports a container's OOM kills (as TaskOOM) from Add to
// Remove. Remove makes a last check and reports a pending OOM before it
// returns, so an OOM always precedes the TaskExit queued after Remove.
// *cgroup.OOMWatcher implements it.
type OOMWatcher interface {
	Add(id string, cg *cgroup.Cgroup) error
	Remove(id string)
}

// Service implements taskapi.TaskService for every container of one shim.
type Service struct {
	cfg Config

	mu         sync.Mutex            // guards containers and pods
	containers map[string]*container // nil value: a Create in progress
	pods       map[string]*pod.Pod   // sandboxes (sandbox.go); nil value: a CreateSandbox in progress

	bg       sync.WaitGroup // background work (killAll); WaitBackground joins it
	shutOnce sync.Once
}

var _ taskapi.TaskService = (*Service)(nil)

// New returns a Service.
func New(cfg Config) *Service {
	return &Service{cfg: cfg, containers: make(map[string]*container), pods: make(map[string]*pod.Pod)}
}

// WaitBackground blocks until the Service's background work has finished.
func (s *Service) WaitBackground() { s.bg.Wait() }

func (s *Service) goBackground(fn func()) {
	s.bg.Go(fn) // owned by s; joined by WaitBackground
}

// get returns the container of id, or a NotFound error.
func (s *Service) get(id string) (*container, error) {
	s.mu.Lock()
	c := s.containers[id]
	s.mu.Unlock()
	if c == nil {
		return nil, fmt.Errorf("container %q: %w", id, errNotFound)
	}
	return c, nil
}

// Count returns how many containers and sandboxes the shim serves: while
// it holds either it must not exit.
func (s *Service) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.containers) + len(s.pods)
}

// State reports a process's status.
func (s *Service) State(ctx context.Context, r *taskapi.StateRequest) (*taskapi.StateResponse, error) {
	c, err := s.get(r.Id)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &taskapi.StateResponse{Id: r.Id, Bundle: c.req.Bundle}
	var st process.State
	var pid int
	var e process.Exit
	if r.ExecId == "" {
		st, pid, e = c.initStatus()
		resp.Stdin, resp.Stdout, resp.Stderr, resp.Terminal = c.req.Stdin, c.req.Stdout, c.req.Stderr, c.req.Terminal
	} else {
		x, err := c.exec(r.ExecId)
		if err != nil {
			return nil, toStatus(err)
		}
		st, pid, e = x.p.Status()
		resp.ExecId = r.ExecId
		resp.Stdin, resp.Stdout, resp.Stderr, resp.Terminal = x.req.Stdin, x.req.Stdout, x.req.Stderr, x.req.Terminal
	}
	resp.Pid = uint32(pid)
	resp.Status = wireStatus(st)
	if st == process.Stopped || st == process.Deleting || st == process.Deleted {
		resp.ExitStatus = uint32(e.Status)
		resp.ExitedAt = timestamp(e.At)
	}
	return resp, nil
}

// Pids lists the container's processes; execs carry their exec id.
func (s *Service) Pids(ctx context.Context, r *taskapi.PidsRequest) (*taskapi.PidsResponse, error) {
	c, err := s.get(r.Id)
	if err != nil {
		return nil, toStatus(err)
	}
	pids, err := c.init.Pids(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	execByPid := c.execPids()
	resp := &taskapi.PidsResponse{}
	for _, pid := range pids {
		info := &tasktypes.ProcessInfo{Pid: uint32(pid)}
		if execID, ok := execByPid[pid]; ok {
			if info.Info, err = processDetails(execID); err != nil {
				return nil, toStatus(err)
			}
		}
		resp.Processes = append(resp.Processes, info)
	}
	return resp, nil
}

// Kill signals the init (all: every process) or an exec.
func (s *Service) Kill(ctx context.Context, r *taskapi.KillRequest) (*gogotypes.Empty, error) {
	if r.Signal > maxSignal {
		return nil, toStatus(fmt.Errorf("signal %d: %w", r.Signal, errInvalid))
	}
	c, err := s.get(r.Id)
	if err != nil {
		return nil, toStatus(err)
	}
	if r.ExecId != "" {
		x, err := c.exec(r.ExecId)
		if err != nil {
			return nil, toStatus(err)
		}
		return empty, toStatus(x.p.Kill(int(r.Signal)))
	}
	return empty, toStatus(c.init.Kill(ctx, int(r.Signal), r.All))
}

// Wait blocks until the process exits and returns its exit.
func (s *Service) Wait(ctx context.Context, r *taskapi.WaitRequest) (*taskapi.WaitResponse, error) {
	c, err := s.get(r.Id)
	if err != nil {
		return nil, toStatus(err)
	}
	var e process.Exit
	if r.ExecId == "" {
		e, err = c.waitInit(ctx)
	} else {
		var x *execEntry
		if x, err = c.exec(r.ExecId); err == nil {
			e, err = x.p.Wait(ctx)
		}
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &taskapi.WaitResponse{ExitStatus: uint32(e.Status), ExitedAt: timestamp(e.At)}, nil
}

// Connect reports the shim's pid and the init's pid (0 for an unknown id).
func (s *Service) Connect(ctx context.Context, r *taskapi.ConnectRequest) (*taskapi.ConnectResponse, error) {
	resp := &taskapi.ConnectResponse{ShimPid: uint32(os.Getpid())}
	if c, err := s.get(r.Id); err == nil {
		resp.TaskPid = uint32(c.init.Pid())
	} else if p, err := s.pod(r.Id); err == nil {
		// containerd 2.x reconnects to a sandbox's shim with Connect on
		// the sandbox id: its task is the holder.
		_, pid, _, _ := p.Status()
		resp.TaskPid = uint32(pid)
	}
	return resp, nil
}

// Shutdown ends the shim once no task is left; with tasks left it is a no-op
// (another container of the group still needs the shim).
func (s *Service) Shutdown(ctx context.Context, r *taskapi.ShutdownRequest) (*gogotypes.Empty, error) {
	if s.Count() > 0 {
		return empty, nil
	}
	s.shutOnce.Do(func() {
		if s.cfg.Shutdown != nil {
			s.cfg.Shutdown()
		}
	})
	return empty, nil
}

// ErrExiting is for a request the shim refuses because it has decided to
// exit (cmd/shim's guard: the Shutdown rpc or the self-cleanup timer found
// it empty). On the wire it is FailedPrecondition.
var ErrExiting = fmt.Errorf("shim is exiting: %w", errPrecondition)

// Status converts err to the ttrpc status containerd expects, for the
// adapters in front of a Service (toStatus, the one mapping of errors).
func Status(err error) error { return toStatus(err) }

// CloseIO closes the shim's hold on a process's stdin.
func (s *Service) CloseIO(ctx context.Context, r *taskapi.CloseIORequest) (*gogotypes.Empty, error) {
	c, err := s.get(r.Id)
	if err != nil {
		return nil, toStatus(err)
	}
	if !r.Stdin {
		return empty, nil
	}
	if r.ExecId == "" {
		return empty, toStatus(c.init.CloseStdin())
	}
	x, err := c.exec(r.ExecId)
	if err != nil {
		return nil, toStatus(err)
	}
	return empty, toStatus(x.p.CloseStdin())
}

var empty = &gogotypes.Empty{}

func wireStatus(s process.State) tasktypes.Status {
	switch s {
	case process.Created, process.Starting:
		return tasktypes.Status_CREATED
	case process.Running:
		return tasktypes.Status_RUNNING
	case process.Paused:
		return tasktypes.Status_PAUSED
	case process.Stopped, process.Deleting, process.Deleted:
		return tasktypes.Status_STOPPED
	}
	return tasktypes.Status_UNKNOWN
}

func timestamp(t time.Time) *gogotypes.Timestamp {
	if t.IsZero() {
		return nil
	}
	ts, err := gogotypes.TimestampProto(t)
	if err != nil {
		return nil
	}
	return ts
}
