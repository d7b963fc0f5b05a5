package main

import (
	"context"
	"sync"
	"testing"
	"time"

	gogotypes "github.com/gogo/protobuf/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leanshim/leanshim/proto/taskapi"
)

// fakeCore plays task.Service behind the guard: a registry of ids where a
// Create counts from its start (the core's nil reservation), and a
// Shutdown that ends the "shim" only when nothing is registered. It
// records what must never happen: a Create reaching the core after the
// core has shut down (a half-created container in an exiting shim).
type fakeCore struct {
	taskapi.TaskService // nil: the guard calls only Create, Delete and Shutdown

	mu        sync.Mutex // guards the fields below
	ids       map[string]bool
	creating  int
	shutdowns int      // Shutdowns that ended the shim
	createErr error    // what Create returns
	entered   chan int // if set, Create sends its number here once inside
	release   chan struct{}
	lateCalls []string // Creates that reached the core after it shut down
}

func newFakeCore() *fakeCore { return &fakeCore{ids: make(map[string]bool)} }

func (c *fakeCore) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ids) + c.creating
}

func (c *fakeCore) Create(ctx context.Context, r *taskapi.CreateTaskRequest) (*taskapi.CreateTaskResponse, error) {
	c.mu.Lock()
	if c.shutdowns > 0 {
		c.lateCalls = append(c.lateCalls, r.Id)
	}
	c.creating++
	err, entered, release := c.createErr, c.entered, c.release
	c.mu.Unlock()
	if entered != nil {
		entered <- 1
	}
	if release != nil {
		<-release
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.creating--
	if err != nil {
		return nil, err
	}
	c.ids[r.Id] = true
	return &taskapi.CreateTaskResponse{Pid: 1}, nil
}

func (c *fakeCore) Delete(ctx context.Context, r *taskapi.DeleteRequest) (*taskapi.DeleteResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ids[r.Id] {
		return nil, status.Error(codes.NotFound, r.Id)
	}
	delete(c.ids, r.Id)
	return &taskapi.DeleteResponse{}, nil
}

func (c *fakeCore) Shutdown(ctx context.Context, r *taskapi.ShutdownRequest) (*gogotypes.Empty, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.ids)+c.creating == 0 {
		c.shutdowns++
	}
	return &gogotypes.Empty{}, nil
}

func (c *fakeCore) shutDown() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.shutdowns
}

// fakeClock hands out timers that fire only when the test says so.
type fakeClock struct {
	mu     sync.Mutex // guards timers and each timer's state
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	d       time.Duration
	f       func()
	stopped bool
	fired   bool
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) stopper {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, d: d, f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped && !t.fired
	t.stopped = true
	return was
}

// pending lists the timers neither stopped nor fired.
func (c *fakeClock) pending() []*fakeTimer {
	c.mu.Lock()
	defer c.mu.Unlock()
	var p []*fakeTimer
	for _, t := range c.timers {
		if !t.stopped && !t.fired {
			p = append(p, t)
		}
	}
	return p
}

// fire runs t's function as the runtime would once its time has come; a
// timer stopped too late (its function already started) fires as well.
func (t *fakeTimer) fire() {
	t.c.mu.Lock()
	t.fired = true
	t.c.mu.Unlock()
	t.f()
}

// only returns the one pending timer, failing unless there is exactly one.
func (c *fakeClock) only(t *testing.T) *fakeTimer {
	t.Helper()
	p := c.pending()
	if len(p) != 1 {
		t.Fatalf("%d timers pending, want 1", len(p))
	}
	return p[0]
}

func (c *fakeClock) none(t *testing.T, when string) {
	t.Helper()
	if p := c.pending(); len(p) != 0 {
		t.Fatalf("%s: %d timers pending, want none", when, len(p))
	}
}
