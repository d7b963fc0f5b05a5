package task

import (
	"context"
	"fmt"
	"strings"

	"github.com/gogo/protobuf/proto"

	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/process"
	"github.com/leanshim/leanshim/proto/events"
	"github.com/leanshim/leanshim/proto/runcopts"
	"github.com/leanshim/leanshim/proto/taskapi"
)

// Create creates the container (runtime create) and publishes TaskCreate.
func (s *Service) Create(ctx context.Context, r *taskapi.CreateTaskRequest) (_ *taskapi.CreateTaskResponse, retErr error) {
	if err := validID("container id", r.Id); err != nil {
		return nil, toStatus(err)
	}
	if r.Bundle == "" {
		return nil, toStatus(fmt.Errorf("bundle path is empty: %w", errInvalid))
	}
	if err := noNUL("path", r.Bundle, r.Stdin, r.Stdout, r.Stderr, r.Checkpoint, r.ParentCheckpoint); err != nil {
		return nil, toStatus(err)
	}
	for _, m := range r.Rootfs {
		if err := noNUL("rootfs mount", append([]string{m.Type, m.Source, m.Target}, m.Options...)...); err != nil {
			return nil, toStatus(err)
		}
	}
	opts, err := decodeOptions(r.Options)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := noNUL("runtime option", opts.BinaryName, opts.Root, opts.CriuPath, opts.CriuImagePath, opts.CriuWorkPath, opts.ShimCgroup); err != nil {
		return nil, toStatus(err)
	}
	// Reserve the id: a nil entry makes a concurrent Create of the same id
	// fail, and every other rpc treat it as not found yet.
	s.mu.Lock()
	if _, ok := s.containers[r.Id]; ok {
		s.mu.Unlock()
		return nil, toStatus(fmt.Errorf("container %q: %w", r.Id, errAlreadyExists))
	}
	s.containers[r.Id] = nil
	s.mu.Unlock()
	defer func() {
		if retErr != nil {
			s.mu.Lock()
			delete(s.containers, r.Id)
			s.mu.Unlock()
		}
	}()

	if err := s.patchPodSpec(r.Bundle); err != nil {
		return nil, toStatus(fmt.Errorf("container %q: pod files: %w", r.Id, err))
	}
	c := &container{id: r.Id, uid: int(opts.IoUid), gid: int(opts.IoGid), req: r, pub: s.cfg.Publisher,
		onDone: s.goBackground, execs: make(map[string]*execEntry), initDone: make(chan struct{})}
	if s.cfg.Log != nil {
		c.log = s.cfg.Log.With("id", r.Id)
	}
	mounts := make([]process.Mount, 0, len(r.Rootfs))
	for _, m := range r.Rootfs {
		mounts = append(mounts, process.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
	}
	init, err := c.createInit(func() (*process.Init, error) {
		return s.cfg.Processes.NewInit(ctx, process.InitConfig{
			ID: r.Id, Bundle: r.Bundle, Namespace: s.cfg.Namespace, Rootfs: mounts,
			IO: process.IOConfig{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal,
				UID: int(opts.IoUid), GID: int(opts.IoGid), Log: c.log},
			NoPivot:          opts.NoPivotRoot,
			NoNewKeyring:     opts.NoNewKeyring,
			Runtime:          s.runtimeConfig(r.Bundle, opts),
			Checkpoint:       r.Checkpoint,
			ParentCheckpoint: r.ParentCheckpoint,
			CriuWorkPath:     opts.CriuWorkPath,
			OnExit:           c.onInitExit,
		})
	}, func(init *process.Init) {
		c.sharedPid = init.SharesPidNamespace()
		s.cfg.Publisher.Publish("/tasks/create", &events.TaskCreate{
			ContainerId: r.Id, Bundle: r.Bundle, Rootfs: r.Rootfs, Checkpoint: r.Checkpoint, Pid: uint32(init.Pid()),
			Io: &events.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		})
	})
	if err != nil {
		return nil, toStatus(err)
	}
	pid := init.Pid()
	s.mu.Lock()
	s.containers[r.Id] = c
	s.mu.Unlock()
	// After TaskCreate, so no TaskOOM can precede it; without c.mu, as it
	// reads the cgroup files.
	s.watchCgroup(c, pid)
	return &taskapi.CreateTaskResponse{Pid: uint32(pid)}, nil
}

// Start starts the init (no exec id) or an exec, and publishes TaskStart or
// TaskExecStarted before that process's TaskExit.
func (s *Service) Start(ctx context.Context, r *taskapi.StartRequest) (*taskapi.StartResponse, error) {
	c, err := s.get(r.Id)
	if err != nil {
		return nil, toStatus(err)
	}
	if r.ExecId != "" {
		pid, err := c.startExec(ctx, r.ExecId)
		if err != nil {
			return nil, toStatus(err)
		}
		return &taskapi.StartResponse{Pid: uint32(pid)}, nil
	}
	pid, err := c.startInit(func() (int, error) {
		err := c.init.Start(ctx)
		return c.init.Pid(), err
	})
	if err != nil {
		return nil, toStatus(err)
	}
	c.mu.Lock()
	watched := c.cg != nil
	c.mu.Unlock()
	if !watched {
		s.watchCgroup(c, pid) // a restored container's pid exists only now
	}
	return &taskapi.StartResponse{Pid: uint32(pid)}, nil
}

// Delete deletes the init (the container) or an exec.
func (s *Service) Delete(ctx context.Context, r *taskapi.DeleteRequest) (*taskapi.DeleteResponse, error) {
	c, err := s.get(r.Id)
	if err != nil {
		return nil, toStatus(err)
	}
	if r.ExecId != "" {
		return c.deleteExec(ctx, r.ExecId)
	}
	c.mu.Lock()
	live := c.liveExecs
	c.mu.Unlock()
	if live > 0 {
		st, _, _ := c.init.Status()
		if st != process.Created {
			return nil, toStatus(fmt.Errorf("container %q has %d running execs: %w", r.Id, live, errPrecondition))
		}
	}
	e, err := c.init.Delete(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	c.deleteExecs(ctx)
	c.mu.Lock()
	c.deleted = true // a watchCgroup that Adds after this Removes itself
	c.mu.Unlock()
	if s.cfg.OOM != nil {
		s.cfg.OOM.Remove(c.id) // idempotent; covers an exit that raced Add
	}
	s.mu.Lock()
	delete(s.containers, r.Id)
	s.mu.Unlock()
	c.mu.Lock()
	c.deletedLocked(e) // TaskDelete never precedes the init's TaskExit
	c.mu.Unlock()
	return &taskapi.DeleteResponse{Pid: uint32(e.Pid), ExitStatus: uint32(e.Status), ExitedAt: timestamp(e.At)}, nil
}

// Pause freezes the container.
func (s *Service) Pause(ctx context.Context, r *taskapi.PauseRequest) (*gogotypes.Empty, error) {
	return s.freeze(ctx, r.Id, (*process.Init).Pause, "/tasks/paused", &events.TaskPaused{ContainerId: r.Id})
}

// Resume thaws the container.
func (s *Service) Resume(ctx context.Context, r *taskapi.ResumeRequest) (*gogotypes.Empty, error) {
	return s.freeze(ctx, r.Id, (*process.Init).Resume, "/tasks/resumed", &events.TaskResumed{ContainerId: r.Id})
}

// freeze runs Pause or Resume on the container's init and publishes ev.
func (s *Service) freeze(ctx context.Context, id string, op func(*process.Init, context.Context) error, topic string, ev proto.Message) (*gogotypes.Empty, error) {
	c, err := s.get(id)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := op(c.init, ctx); err != nil {
		return nil, toStatus(err)
	}
	// Under c.mu, as every event of the container: if the init exited
	// meanwhile (the exit wins, and the process layer undid the freeze),
	// its TaskExit may be out already, and nothing paused or resumed.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.initExited {
		return nil, toStatus(fmt.Errorf("container %q has exited: %w", id, errPrecondition))
	}
	s.cfg.Publisher.Publish(topic, ev)
	return empty, nil
}

// Update changes the container's resources (LinuxResources JSON in the Any).
func (s *Service) Update(ctx context.Context, r *taskapi.UpdateTaskRequest) (*gogotypes.Empty, error) {
	c, err := s.get(r.Id)
	if err != nil {
		return nil, toStatus(err)
	}
	if r.Resources == nil || len(r.Resources.Value) == 0 {
		return nil, toStatus(fmt.Errorf("update without resources: %w", errInvalid))
	}
	return empty, toStatus(c.init.Update(ctx, r.Resources.Value))
}

// Checkpoint dumps the container with CRIU through the runtime. Like
// containerd's runc shim it publishes no event (containerd does).
func (s *Service) Checkpoint(ctx context.Context, r *taskapi.CheckpointTaskRequest) (*gogotypes.Empty, error) {
	if err := noNUL("checkpoint path", r.Path); err != nil {
		return nil, toStatus(err)
	}
	c, err := s.get(r.Id)
	if err != nil {
		return nil, toStatus(err)
	}
	var o runcopts.CheckpointOptions
	if r.Options != nil && len(r.Options.Value) > 0 {
		name := strings.TrimPrefix(r.Options.TypeUrl, "type.googleapis.com/")
		if name != proto.MessageName(&o) {
			return nil, toStatus(fmt.Errorf("unknown checkpoint options type %q: %w", r.Options.TypeUrl, errInvalid))
		}
		if err := proto.Unmarshal(r.Options.Value, &o); err != nil {
			return nil, toStatus(fmt.Errorf("checkpoint options: %w: %w", err, errInvalid))
		}
	}
	path := r.Path
	if o.ImagePath != "" {
		path = o.ImagePath
	}
	if path == "" {
		return nil, toStatus(fmt.Errorf("checkpoint without an image path: %w", errInvalid))
	}
	if err := noNUL("checkpoint option", append([]string{o.ImagePath, o.WorkPath, o.ParentPath, o.CgroupsMode}, o.EmptyNamespaces...)...); err != nil {
		return nil, toStatus(err)
	}
	err = c.init.Checkpoint(ctx, process.CheckpointConfig{
		Path: path, WorkPath: o.WorkPath, ParentPath: o.ParentPath, Exit: o.Exit,
		OpenTCP: o.OpenTcp, ExternalUnixSockets: o.ExternalUnixSockets, Terminal: o.Terminal,
		FileLocks: o.FileLocks, EmptyNamespaces: o.EmptyNamespaces,
	})
	return empty, toStatus(err)
}

// Stats reads the container's cgroup: io.containerd.cgroups.v1.Metrics or
// .v2.Metrics, as containerd's own shim answers. It answers after the init
// has exited too, as that shim does: the cgroup lives until the runtime's
// delete, and a metrics scrape between exit and delete wants figures, not an
// error each time. Once the cgroup is gone it is NotFound.
func (s *Service) Stats(ctx context.Context, r *taskapi.StatsRequest) (*taskapi.StatsResponse, error) {
	c, err := s.get(r.Id)
	if err != nil {
		return nil, toStatus(err)
	}
	c.mu.Lock()
	cg := c.cg // a restore's Start sets it
	c.mu.Unlock()
	if cg == nil {
		return nil, toStatus(fmt.Errorf("container %q: no cgroup: %w", r.Id, errNotFound))
	}
	m, err := cg.Stats()
	if err != nil {
		return nil, toStatus(fmt.Errorf("stats of %q: %w", r.Id, err))
	}
	a, err := marshalAny(m)
	if err != nil {
		return nil, toStatus(err)
	}
	return &taskapi.StatsResponse{Stats: a}, nil
}

// watchCgroup finds the container's cgroup from its init pid and starts
// watching it for OOM kills (so an OOM during start counts). It runs without
// c.mu: it reads cgroup files, and the OOM watcher's callback takes c.mu.
// A container without a cgroup still runs; it just has no stats or OOMs.
func (s *Service) watchCgroup(c *container, pid int) {
	if s.cfg.Cgroups == nil || pid <= 0 {
		return
	}
	cg, err := s.cfg.Cgroups.ForPid(pid)
	if err != nil {
		s.cfg.Log.Warn("container cgroup not found", "id", c.id, "error", err)
		return
	}
	var oom OOMWatcher
	if s.cfg.OOM != nil {
		if err := s.cfg.OOM.Add(c.id, cg); err != nil {
			s.cfg.Log.Warn("oom watch", "id", c.id, "error", err)
		} else {
			oom = s.cfg.OOM
		}
	}
	c.mu.Lock()
	c.cg, c.oom = cg, oom
	deleted := c.deleted
	c.mu.Unlock()
	if deleted && oom != nil {
		// Deleted while this ran: its Delete may have removed the watch
		// before Add made it.
		oom.Remove(c.id)
	}
}

// ReportOOM queues TaskOOM for container id under the container's lock, so
// it takes its place in the container's event order: after TaskCreate, and
// before the TaskExit that the exit hook queues once OOMWatcher.Remove has
// returned. The OOM watcher's callback calls it; an unknown id (deleted
// meanwhile) is dropped.
func (s *Service) ReportOOM(id string) {
	c, err := s.get(id)
	if err != nil {
		s.cfg.Log.Warn("oom of an unknown container dropped", "id", id)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pub.Publish("/tasks/oom", &events.TaskOOM{ContainerId: id})
}
