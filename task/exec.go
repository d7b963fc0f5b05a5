package task

import (
	"context"
	"fmt"

	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/process"
	"github.com/leanshim/leanshim/proto/events"
	"github.com/leanshim/leanshim/proto/runcopts"
	"github.com/leanshim/leanshim/proto/taskapi"
)

// Exec registers an exec (it runs on Start) and publishes TaskExecAdded.
func (s *Service) Exec(ctx context.Context, r *taskapi.ExecProcessRequest) (*gogotypes.Empty, error) {
	c, err := s.get(r.Id)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := validID("exec id", r.ExecId); err != nil {
		return nil, toStatus(err)
	}
	if err := noNUL("path", r.Stdin, r.Stdout, r.Stderr); err != nil {
		return nil, toStatus(err)
	}
	if r.Spec == nil {
		return nil, toStatus(fmt.Errorf("exec %q: no spec: %w", r.ExecId, errInvalid))
	}
	spec, err := execSpec(r.Spec.Value, r.Terminal)
	if err != nil {
		return nil, toStatus(fmt.Errorf("exec %q: %w", r.ExecId, err))
	}
	// Before c.mu, which must not wait for the init's lock. A pause that
	// comes after the check is caught by the exec's Start.
	if err := c.init.CanExec(); err != nil { // no TaskExecAdded for an exec that cannot start
		return nil, toStatus(fmt.Errorf("exec %q in container %q: %w", r.ExecId, c.id, err))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.execs[r.ExecId]; ok {
		return nil, toStatus(fmt.Errorf("exec %q: %w", r.ExecId, errAlreadyExists))
	}
	if c.initExited {
		return nil, toStatus(fmt.Errorf("container %q has exited: %w", c.id, errPrecondition))
	}
	x := &execEntry{req: r}
	x.p = c.init.NewExec(process.ExecConfig{
		ID: r.ExecId, Spec: spec,
		IO: process.IOConfig{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal,
			UID: c.uid, GID: c.gid, Log: c.log},
		OnExit: func(e process.Exit) { c.onExecExit(x, e) },
	})
	c.execs[r.ExecId] = x
	c.pub.Publish("/tasks/exec-added", &events.TaskExecAdded{ContainerId: c.id, ExecId: r.ExecId})
	return empty, nil
}

// exec returns a registered exec or NotFound.
func (c *container) exec(id string) (*execEntry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	x, ok := c.execs[id]
	if !ok {
		return nil, fmt.Errorf("exec %q of container %q: %w", id, c.id, errNotFound)
	}
	return x, nil
}

// startExec starts an exec. New execs are refused once the init has exited,
// so none can publish an exit after the init's.
func (c *container) startExec(ctx context.Context, id string) (int, error) {
	c.mu.Lock()
	x, ok := c.execs[id]
	switch {
	case !ok:
		c.mu.Unlock()
		return 0, fmt.Errorf("exec %q of container %q: %w", id, c.id, errNotFound)
	case c.initExited:
		c.mu.Unlock()
		// Refused by the exec itself too (CanExec: the init has stopped),
		// which ends it, so a Wait for it returns.
		_, _ = x.p.Start(ctx)
		return 0, fmt.Errorf("container %q has exited: %w", c.id, errPrecondition)
	}
	c.liveExecs++ // counted before it can exit, so the init's exit waits for it
	c.mu.Unlock()
	return c.runExecStart(x, func() (int, error) { return x.p.Start(ctx) })
}

func (c *container) deleteExec(ctx context.Context, id string) (*taskapi.DeleteResponse, error) {
	x, err := c.exec(id)
	if err != nil {
		return nil, toStatus(err)
	}
	e, err := x.p.Delete(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	c.mu.Lock()
	delete(c.execs, id)
	c.mu.Unlock()
	return &taskapi.DeleteResponse{Pid: uint32(e.Pid), ExitStatus: uint32(e.Status), ExitedAt: timestamp(e.At)}, nil
}

// deleteExecs forgets the execs a client never deleted, once the container
// is deleted: their streams (copiers, FIFO fds) would otherwise live as long
// as the shim, which in a pod shim is the pod's life. They have all exited:
// Delete refuses a container with running execs.
func (c *container) deleteExecs(ctx context.Context) {
	c.mu.Lock()
	execs := make([]*execEntry, 0, len(c.execs))
	for id, x := range c.execs {
		execs = append(execs, x)
		delete(c.execs, id)
	}
	c.mu.Unlock()
	for _, x := range execs {
		_, _ = x.p.Delete(ctx) // best effort: one being deleted already is closed by that Delete
	}
}

// execPids maps the pids of started execs to their ids.
// It takes each exec's lock after c.mu is released: c.mu is what the exit
// hooks need, and must not wait for a process's lock.
func (c *container) execPids() map[int]string {
	c.mu.Lock()
	execs := make(map[string]*process.Exec, len(c.execs))
	for id, x := range c.execs {
		execs[id] = x.p
	}
	c.mu.Unlock()
	m := make(map[int]string, len(execs))
	for id, p := range execs {
		if _, pid, _ := p.Status(); pid > 0 {
			m[pid] = id
		}
	}
	return m
}

// ResizePty resizes a process's terminal (the init's when exec_id is
// empty); a process without one ignores it.
func (s *Service) ResizePty(ctx context.Context, r *taskapi.ResizePtyRequest) (*gogotypes.Empty, error) {
	c, err := s.get(r.Id)
	if err != nil {
		return nil, toStatus(err)
	}
	if r.ExecId == "" {
		err = c.init.Resize(r.Width, r.Height)
	} else {
		var x *execEntry
		if x, err = c.exec(r.ExecId); err == nil {
			err = x.p.Resize(r.Width, r.Height)
		}
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return empty, nil
}

func processDetails(execID string) (*gogotypes.Any, error) {
	return marshalAny(&runcopts.ProcessDetails{ExecId: execID})
}
