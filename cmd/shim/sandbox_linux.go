package main

import (
	"context"
	"fmt"

	"github.com/leanshim/leanshim/proto/sandboxapi"
	"github.com/leanshim/leanshim/proto/taskapi"
	"github.com/leanshim/leanshim/task"
)

// sandboxGuard puts the orphan guard in front of the sandbox API as it is
// in front of the task API: CreateSandbox counts as a Create (it stops the
// self-cleanup timer, and is refused once the shim has decided to exit), and
// after ShutdownSandbox the guard's Shutdown ends the shim if nothing is
// left, which also covers a Create that passed the guard but has not
// reached the core yet.
type sandboxGuard struct {
	sandboxapi.SandboxService // the core (*task.Service)
	g                         *orphanGuard
}

func (s sandboxGuard) CreateSandbox(ctx context.Context, r *sandboxapi.CreateSandboxRequest) (*sandboxapi.CreateSandboxResponse, error) {
	if err := s.g.begin(); err != nil {
		return nil, task.Status(fmt.Errorf("create sandbox %q: %w", r.SandboxId, err))
	}
	defer s.g.end()
	return s.SandboxService.CreateSandbox(ctx, r)
}

func (s sandboxGuard) ShutdownSandbox(ctx context.Context, r *sandboxapi.ShutdownSandboxRequest) (*sandboxapi.ShutdownSandboxResponse, error) {
	resp, err := s.SandboxService.ShutdownSandbox(ctx, r)
	if err != nil {
		return nil, err
	}
	if _, err := s.g.Shutdown(ctx, &taskapi.ShutdownRequest{}); err != nil {
		return nil, err
	}
	return resp, nil
}
