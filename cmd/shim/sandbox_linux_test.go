package main

import (
	"context"
	"testing"
	"time"

	"github.com/leanshim/leanshim/proto/sandboxapi"
)

// fakeSandboxes is the sandbox API of fakeCore: a sandbox is an id in the
// core's registry, so it holds the shim as a container does.
type fakeSandboxes struct {
	sandboxapi.SandboxService // nil: the guard wraps only Create and Shutdown
	core                      *fakeCore
}

func (f fakeSandboxes) CreateSandbox(ctx context.Context, r *sandboxapi.CreateSandboxRequest) (*sandboxapi.CreateSandboxResponse, error) {
	f.core.mu.Lock()
	defer f.core.mu.Unlock()
	if f.core.shutdowns > 0 {
		f.core.lateCalls = append(f.core.lateCalls, r.SandboxId)
	}
	f.core.ids[r.SandboxId] = true
	return &sandboxapi.CreateSandboxResponse{}, nil
}

func (f fakeSandboxes) ShutdownSandbox(ctx context.Context, r *sandboxapi.ShutdownSandboxRequest) (*sandboxapi.ShutdownSandboxResponse, error) {
	f.core.mu.Lock()
	defer f.core.mu.Unlock()
	delete(f.core.ids, r.SandboxId)
	return &sandboxapi.ShutdownSandboxResponse{}, nil
}

// A sandbox created right after start stops the self-cleanup timer; its
// ShutdownSandbox ends the shim; a CreateSandbox after that is refused.
func TestSandboxGuard(t *testing.T) {
	gt := newGuardTest(time.Minute)
	sg := sandboxGuard{SandboxService: fakeSandboxes{core: gt.core}, g: gt.g}
	ctx := context.Background()
	gt.g.arm() // as the daemon does at start
	if _, err := sg.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{SandboxId: "pod"}); err != nil {
		t.Fatal(err)
	}
	gt.clock.none(t, "with a sandbox")
	if _, err := gt.g.Shutdown(ctx, nil); err != nil || gt.core.shutDown() != 0 {
		t.Fatalf("the task API's Shutdown ended a shim that holds a sandbox (%v)", err)
	}
	if _, err := sg.ShutdownSandbox(ctx, &sandboxapi.ShutdownSandboxRequest{SandboxId: "pod"}); err != nil {
		t.Fatal(err)
	}
	if n := gt.core.shutDown(); n != 1 {
		t.Fatalf("core shut down %d times after the last ShutdownSandbox, want 1", n)
	}
	_, err := sg.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{SandboxId: "late"})
	wantRefused(t, err)
	if len(gt.core.lateCalls) != 0 {
		t.Fatalf("a refused CreateSandbox reached the core: %v", gt.core.lateCalls)
	}
}

// A timer that fires while something the guard did not see arrive holds the
// shim is spent, not left pending: once the shim is empty again the next
// arm starts a new one.
func TestOrphanGuardTimerSpentWhileHeld(t *testing.T) {
	gt := newGuardTest(time.Minute)
	gt.g.arm()
	tm := gt.clock.only(t)
	gt.core.mu.Lock()
	gt.core.ids["held"] = true // e.g. a sandbox reaching the core directly
	gt.core.mu.Unlock()
	tm.fire()
	if gt.core.shutDown() != 0 {
		t.Fatal("the timer ended a held shim")
	}
	gt.core.mu.Lock()
	delete(gt.core.ids, "held")
	gt.core.mu.Unlock()
	gt.g.arm()
	gt.clock.only(t).fire()
	if n := gt.core.shutDown(); n != 1 {
		t.Fatalf("core shut down %d times, want 1: the guard never armed again", n)
	}
}
