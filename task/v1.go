package task

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leanshim/leanshim/proto/runcopts"
	"github.com/leanshim/leanshim/proto/runctypes"
	"github.com/leanshim/leanshim/proto/shimv1"
	"github.com/leanshim/leanshim/proto/taskapi"
)

// v1FlushTimeout bounds how long Delete waits for the container's TaskExit
// to reach containerd.
const v1FlushTimeout = 10 * time.Second

// V1Config configures a V1.
type V1Config struct {
	// RuntimeRoot is the OCI runtime's state root (-runtime-root); the
	// namespace is appended. Empty means the core's default.
	RuntimeRoot string
	// SystemdCgroup is -systemd-cgroup.
	SystemdCgroup bool
	// CriuPath is -criu-path (or -criu): the criu binary runc runs.
	CriuPath string
	// Workdir is -workdir, the task's work dir under containerd's root:
	// CRIU's work path for checkpoints that name none.
	Workdir string
	// Flush blocks until every event published so far has reached
	// containerd (Publisher.Flush).
	Flush func(ctx context.Context) error
	Log   *slog.Logger
}

// V1 serves containerd 1.6's v1 shim API (containerd.runtime.linux.shim.v1.Shim,
// PROTOCOL.md §4) for the one container of a shim that the
// io.containerd.runtime.v1.linux runtime launched. It holds no process state:
// every rpc is translated into a call of the task API on core (the Service),
// which does the work. The only mapping it keeps is the container id, learnt
// from Create: the v1 API names the init by the container id (or, in Kill,
// by no id) and an exec by its exec id alone.
type V1 struct {
	core taskapi.TaskService
	cfg  V1Config

	mu sync.Mutex // guards id
	id string     // the container's id; "" until Create
}

var _ shimv1.ShimService = (*V1)(nil)

// NewV1 returns a V1 in front of core.
func NewV1(core taskapi.TaskService, cfg V1Config) *V1 {
	return &V1{core: core, cfg: cfg}
}

// V1Events returns what a v1 shim publishes of e's events: only TaskExit.
// containerd 1.6's v1 runtime publishes TaskCreate, TaskStart,
// TaskExecStarted, TaskPaused, TaskResumed, TaskCheckpointed and TaskDelete
// itself once the rpc returned, and no TaskExecAdded (PROTOCOL.md §4.4), so
// forwarding those would duplicate them.
func V1Events(e Events) Events { return v1Events{e} }

type v1Events struct{ next Events }

func (f v1Events) Publish(topic string, ev proto.Message) {
	if topic == "/tasks/exit" {
		f.next.Publish(topic, ev)
	}
}

// container returns the container id, or FailedPrecondition before Create.
func (v *V1) container() (string, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.id == "" {
		return "", toStatus(fmt.Errorf("container must be created: %w", errPrecondition))
	}
	return v.id, nil
}

// process maps a v1 process id to the task API's (container id, exec id):
// the container id (or no id) is the init, anything else an exec.
func (v *V1) process(id string) (cid, execID string, err error) {
	cid, err = v.container()
	if err != nil || id == cid {
		return cid, "", err
	}
	return cid, id, nil
}

// Create creates the container. A shim serves one; a second Create fails.
func (v *V1) Create(ctx context.Context, r *shimv1.CreateTaskRequest) (_ *shimv1.CreateTaskResponse, retErr error) {
	opts, err := v.options(r.Runtime, r.Options)
	if err != nil {
		return nil, toStatus(err)
	}
	v.mu.Lock()
	if v.id != "" {
		id := v.id
		v.mu.Unlock()
		return nil, toStatus(fmt.Errorf("shim already serves container %q: %w", id, errAlreadyExists))
	}
	v.id = r.Id
	v.mu.Unlock()
	defer func() {
		if retErr != nil {
			v.mu.Lock()
			v.id = ""
			v.mu.Unlock()
		}
	}()
	resp, err := v.core.Create(ctx, &taskapi.CreateTaskRequest{
		Id: r.Id, Bundle: r.Bundle, Rootfs: r.Rootfs, Terminal: r.Terminal,
		Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr,
		Checkpoint: r.Checkpoint, ParentCheckpoint: r.ParentCheckpoint, Options: opts,
	})
	if err != nil {
		return nil, err
	}
	return &shimv1.CreateTaskResponse{Pid: resp.Pid}, nil
}

// options turns the v1 runtime's settings into the core's runtime options:
// the binary from Create.runtime, the root and cgroup driver from the flags,
// and the task options Any (containerd.linux.runc.CreateOptions; a
// RuncOptions is accepted too and overrides binary, root and cgroup driver).
func (v *V1) options(runtime string, a *gogotypes.Any) (*gogotypes.Any, error) {
	o := &runcopts.Options{BinaryName: runtime, Root: v.cfg.RuntimeRoot, SystemdCgroup: v.cfg.SystemdCgroup, CriuPath: v.cfg.CriuPath}
	if a != nil && (a.TypeUrl != "" || len(a.Value) > 0) {
		switch strings.TrimPrefix(a.TypeUrl, "type.googleapis.com/") {
		case proto.MessageName(&runctypes.CreateOptions{}):
			var c runctypes.CreateOptions
			if err := proto.Unmarshal(a.Value, &c); err != nil {
				return nil, fmt.Errorf("task options %s: %w: %w", a.TypeUrl, err, errInvalid)
			}
			// shim_cgroup was applied by containerd, which started the shim.
			o.NoPivotRoot, o.NoNewKeyring, o.IoUid, o.IoGid = c.NoPivotRoot, c.NoNewKeyring, c.IoUid, c.IoGid
			o.CriuWorkPath, o.CriuImagePath = c.CriuWorkPath, c.CriuImagePath
		case proto.MessageName(&runctypes.RuncOptions{}):
			var c runctypes.RuncOptions
			if err := proto.Unmarshal(a.Value, &c); err != nil {
				return nil, fmt.Errorf("task options %s: %w: %w", a.TypeUrl, err, errInvalid)
			}
			o.BinaryName = cmp.Or(c.Runtime, o.BinaryName)
			o.Root = cmp.Or(c.RuntimeRoot, o.Root)
			o.CriuPath = cmp.Or(c.CriuPath, o.CriuPath)
			o.SystemdCgroup = o.SystemdCgroup || c.SystemdCgroup
		default:
			return nil, fmt.Errorf("unknown task options type %q: %w", a.TypeUrl, errInvalid)
		}
	}
	return marshalAny(o)
}

// Start starts the init or an exec.
func (v *V1) Start(ctx context.Context, r *shimv1.StartRequest) (*shimv1.StartResponse, error) {
	cid, execID, err := v.process(r.Id)
	if err != nil {
		return nil, err
	}
	resp, err := v.core.Start(ctx, &taskapi.StartRequest{Id: cid, ExecId: execID})
	if err != nil {
		return nil, err
	}
	return &shimv1.StartResponse{Id: r.Id, Pid: resp.Pid}, nil
}

// Delete deletes the container. containerd kills the shim as soon as Delete
// returns (PROTOCOL.md §4.5), so Delete first waits until the container's
// TaskExit has left the shim: containerd's TaskDelete must come after it.
func (v *V1) Delete(ctx context.Context, _ *gogotypes.Empty) (*shimv1.DeleteResponse, error) {
	cid, err := v.container()
	if err != nil {
		return nil, err
	}
	resp, err := v.core.Delete(ctx, &taskapi.DeleteRequest{Id: cid})
	if err != nil {
		return nil, err
	}
	if v.cfg.Flush != nil {
		fctx, cancel := context.WithTimeout(ctx, v1FlushTimeout)
		defer cancel()
		if err := v.cfg.Flush(fctx); err != nil && v.cfg.Log != nil {
			v.cfg.Log.Warn("events not delivered before delete returned", "id", cid, "error", err)
		}
	}
	return &shimv1.DeleteResponse{Pid: resp.Pid, ExitStatus: resp.ExitStatus, ExitedAt: resp.ExitedAt}, nil
}

// DeleteProcess deletes an exec; the init is deleted only by Delete.
func (v *V1) DeleteProcess(ctx context.Context, r *shimv1.DeleteProcessRequest) (*shimv1.DeleteResponse, error) {
	cid, execID, err := v.process(r.Id)
	if err != nil {
		return nil, err
	}
	if execID == "" {
		return nil, toStatus(fmt.Errorf("cannot delete init process %q with DeleteProcess: %w", r.Id, errInvalid))
	}
	resp, err := v.core.Delete(ctx, &taskapi.DeleteRequest{Id: cid, ExecId: execID})
	if err != nil {
		return nil, err
	}
	return &shimv1.DeleteResponse{Pid: resp.Pid, ExitStatus: resp.ExitStatus, ExitedAt: resp.ExitedAt}, nil
}

// State reports the init's or an exec's state.
func (v *V1) State(ctx context.Context, r *shimv1.StateRequest) (*shimv1.StateResponse, error) {
	cid, execID, err := v.process(r.Id)
	if err != nil {
		return nil, err
	}
	s, err := v.core.State(ctx, &taskapi.StateRequest{Id: cid, ExecId: execID})
	if err != nil {
		return nil, err
	}
	return &shimv1.StateResponse{
		Id: r.Id, Bundle: s.Bundle, Pid: s.Pid, Status: s.Status,
		Stdin: s.Stdin, Stdout: s.Stdout, Stderr: s.Stderr, Terminal: s.Terminal,
		ExitStatus: s.ExitStatus, ExitedAt: s.ExitedAt,
	}, nil
}

// ListPids lists the container's processes; an exec's info is a
// containerd.linux.runc.ProcessDetails, the v1 runtime's type.
func (v *V1) ListPids(ctx context.Context, _ *shimv1.ListPidsRequest) (*shimv1.ListPidsResponse, error) {
	cid, err := v.container()
	if err != nil {
		return nil, err
	}
	resp, err := v.core.Pids(ctx, &taskapi.PidsRequest{Id: cid})
	if err != nil {
		return nil, err
	}
	for _, p := range resp.Processes {
		if p.Info == nil {
			continue
		}
		var d runcopts.ProcessDetails
		if err := proto.Unmarshal(p.Info.Value, &d); err != nil {
			return nil, toStatus(fmt.Errorf("process %d details: %w", p.Pid, err))
		}
		if p.Info, err = marshalAny(&runctypes.ProcessDetails{ExecId: d.ExecId}); err != nil {
			return nil, toStatus(err)
		}
	}
	return &shimv1.ListPidsResponse{Processes: resp.Processes}, nil
}

// Pause freezes the container.
func (v *V1) Pause(ctx context.Context, _ *gogotypes.Empty) (*gogotypes.Empty, error) {
	cid, err := v.container()
	if err != nil {
		return nil, err
	}
	return v.core.Pause(ctx, &taskapi.PauseRequest{Id: cid})
}

// Resume thaws the container.
func (v *V1) Resume(ctx context.Context, _ *gogotypes.Empty) (*gogotypes.Empty, error) {
	cid, err := v.container()
	if err != nil {
		return nil, err
	}
	return v.core.Resume(ctx, &taskapi.ResumeRequest{Id: cid})
}

// Checkpoint checkpoints the container; see checkpointOptions.
func (v *V1) Checkpoint(ctx context.Context, r *shimv1.CheckpointTaskRequest) (*gogotypes.Empty, error) {
	cid, err := v.container()
	if err != nil {
		return nil, err
	}
	opts, err := v.checkpointOptions(r.Options)
	if err != nil {
		return nil, toStatus(err)
	}
	return v.core.Checkpoint(ctx, &taskapi.CheckpointTaskRequest{Id: cid, Path: r.Path, Options: opts})
}

// Kill signals the init (the container id, or no id) or an exec.
func (v *V1) Kill(ctx context.Context, r *shimv1.KillRequest) (*gogotypes.Empty, error) {
	cid, execID, err := v.process(r.Id)
	if err != nil {
		return nil, err
	}
	return v.core.Kill(ctx, &taskapi.KillRequest{Id: cid, ExecId: execID, Signal: r.Signal, All: r.All})
}

// Exec adds an exec. Its id must not be the container's, which names the init.
func (v *V1) Exec(ctx context.Context, r *shimv1.ExecProcessRequest) (*gogotypes.Empty, error) {
	cid, execID, err := v.process(r.Id)
	if err != nil {
		return nil, err
	}
	if execID == "" {
		return nil, toStatus(fmt.Errorf("exec id %q is the container's: %w", r.Id, errAlreadyExists))
	}
	return v.core.Exec(ctx, &taskapi.ExecProcessRequest{
		Id: cid, ExecId: execID, Terminal: r.Terminal,
		Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Spec: r.Spec,
	})
}

// ResizePty resizes the init's or an exec's terminal.
func (v *V1) ResizePty(ctx context.Context, r *shimv1.ResizePtyRequest) (*gogotypes.Empty, error) {
	cid, execID, err := v.process(r.Id)
	if err != nil {
		return nil, err
	}
	return v.core.ResizePty(ctx, &taskapi.ResizePtyRequest{Id: cid, ExecId: execID, Width: r.Width, Height: r.Height})
}

// CloseIO closes the shim's hold on the init's or an exec's stdin.
func (v *V1) CloseIO(ctx context.Context, r *shimv1.CloseIORequest) (*gogotypes.Empty, error) {
	cid, execID, err := v.process(r.Id)
	if err != nil {
		return nil, err
	}
	return v.core.CloseIO(ctx, &taskapi.CloseIORequest{Id: cid, ExecId: execID, Stdin: r.Stdin})
}

// ShimInfo reports the shim's pid; containerd signals it after Delete.
func (v *V1) ShimInfo(ctx context.Context, _ *gogotypes.Empty) (*shimv1.ShimInfoResponse, error) {
	resp, err := v.core.Connect(ctx, &taskapi.ConnectRequest{})
	if err != nil {
		return nil, err
	}
	return &shimv1.ShimInfoResponse{ShimPid: resp.ShimPid}, nil
}

// Update changes the container's resources.
func (v *V1) Update(ctx context.Context, r *shimv1.UpdateTaskRequest) (*gogotypes.Empty, error) {
	cid, err := v.container()
	if err != nil {
		return nil, err
	}
	return v.core.Update(ctx, &taskapi.UpdateTaskRequest{Id: cid, Resources: r.Resources})
}

// Wait blocks until the init or an exec has exited.
func (v *V1) Wait(ctx context.Context, r *shimv1.WaitRequest) (*shimv1.WaitResponse, error) {
	cid, execID, err := v.process(r.Id)
	if err != nil {
		return nil, err
	}
	resp, err := v.core.Wait(ctx, &taskapi.WaitRequest{Id: cid, ExecId: execID})
	if err != nil {
		return nil, err
	}
	return &shimv1.WaitResponse{ExitStatus: resp.ExitStatus, ExitedAt: resp.ExitedAt}, nil
}

// Terminate is what containerd-shim does on SIGTERM: kill every process of
// the container, wait for the init, and delete the container. Without a
// container it does nothing. Unlike Delete it does not wait for the events:
// containerd may be down, and the shim's exit flushes them as far as it can.
func (v *V1) Terminate(ctx context.Context) error {
	cid, err := v.container()
	if err != nil {
		return nil
	}
	if _, err := v.core.Kill(ctx, &taskapi.KillRequest{Id: cid, Signal: 9, All: true}); err != nil && status.Code(err) != codes.NotFound {
		return fmt.Errorf("kill container %s: %w", cid, err)
	}
	if _, err := v.core.Wait(ctx, &taskapi.WaitRequest{Id: cid}); err != nil {
		return fmt.Errorf("wait for container %s: %w", cid, err)
	}
	if _, err := v.core.Delete(ctx, &taskapi.DeleteRequest{Id: cid}); err != nil {
		return fmt.Errorf("delete container %s: %w", cid, err)
	}
	return nil
}
