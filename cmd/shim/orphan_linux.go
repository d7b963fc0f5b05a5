package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/proto/taskapi"
	"github.com/leanshim/leanshim/task"
)

// defaultOrphanGrace is how long a shim that holds no container waits for
// containerd before it exits by itself (issue 6). containerd calls Create
// right after start, and Shutdown right after the last Delete, so a shim
// that stays empty this long has been forgotten: containerd died between
// the two calls and lost the shim, or will find it empty when it comes
// back. 60 s is far above the few milliseconds containerd takes between
// those calls and above its own restart time, and short enough that
// forgotten shims do not pile up.
const defaultOrphanGrace = 60 * time.Second

// orphanGraceEnv overrides defaultOrphanGrace with a Go duration ("2s"),
// read once when the daemon starts. It is a testing knob, there so tests
// need not wait a minute; an empty, invalid or non-positive value means
// the default.
const orphanGraceEnv = "LEANSHIM_ORPHAN_GRACE"

// parseOrphanGrace returns the grace that the value of orphanGraceEnv asks
// for, or the default and an error that says why it was not taken.
func parseOrphanGrace(v string) (time.Duration, error) {
	if v == "" {
		return defaultOrphanGrace, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return defaultOrphanGrace, fmt.Errorf("%s: %w", orphanGraceEnv, err)
	}
	if d <= 0 {
		return defaultOrphanGrace, fmt.Errorf("%s=%s: must be positive", orphanGraceEnv, v)
	}
	return d, nil
}

// stopper is the part of a *time.Timer the guard uses.
type stopper interface{ Stop() bool }

// orphanConfig configures an orphanGuard.
type orphanConfig struct {
	Grace time.Duration
	// Count is how many containers the core holds, Creates it has begun
	// included (task.Service.Count).
	Count func() int
	Log   *slog.Logger
	// AfterFunc starts the grace timer; nil means time.AfterFunc.
	AfterFunc func(time.Duration, func()) stopper
}

// orphanGuard stands in front of the task core for every API and ends a
// shim that containerd forgot: while the core holds no container, one timer
// runs; if it expires with the core still empty, the guard shuts the shim
// down through the core's Shutdown, exactly as containerd's Shutdown rpc
// would. A Create stops the timer; the last Delete (or a failed Create)
// starts it again. While containers exist there is no timer and no
// goroutine.
//
// Once the guard has decided to exit (the timer expired, or a Shutdown found
// the shim empty) every Create is refused with task.ErrExiting before it
// reaches the core. A Create already past the guard keeps the shim alive:
// Create wins, or gets that clean error, and a half-created container in an
// exiting shim cannot happen.
type orphanGuard struct {
	taskapi.TaskService // the core; Create, Delete and Shutdown are wrapped

	cfg orphanConfig

	// Lock order: mu, then the core's lock (cfg.Count takes it).
	mu       sync.Mutex // guards the fields below
	creating int        // Creates past the guard that have not returned
	timer    stopper    // running while the shim is empty; else nil
	gen      uint64     // counts timers started; an expiring older timer is stale
	exiting  bool       // no more Creates and no more timers
}

// newOrphanGuard returns a guard in front of core, without a timer: arm
// starts the first one.
func newOrphanGuard(core taskapi.TaskService, cfg orphanConfig) *orphanGuard {
	if cfg.AfterFunc == nil {
		cfg.AfterFunc = func(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }
	}
	return &orphanGuard{TaskService: core, cfg: cfg}
}

// arm starts the grace timer if the shim holds no container and none is
// being created, and none runs yet.
func (g *orphanGuard) arm() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armLocked()
}

func (g *orphanGuard) armLocked() {
	if g.exiting || g.timer != nil || g.creating > 0 || g.cfg.Count() > 0 {
		return
	}
	g.gen++
	gen := g.gen
	// The callback runs on a goroutine the runtime starts when the timer
	// expires; nobody waits for it: it never blocks (it takes mu and at
	// most closes the daemon's shutdown channel once), and after close it
	// does nothing.
	g.timer = g.cfg.AfterFunc(g.cfg.Grace, func() { g.expire(gen) })
}

func (g *orphanGuard) disarmLocked() {
	if g.timer != nil {
		g.timer.Stop()
		g.timer = nil
	}
}

// expire is timer gen's callback: if that timer is still the current one
// (no Create stopped it since) and the shim is still empty, the shim exits.
func (g *orphanGuard) expire(gen uint64) {
	g.mu.Lock()
	if gen != g.gen || g.timer == nil {
		g.mu.Unlock() // stale: stopped after it had fired, or replaced
		return
	}
	g.timer = nil // spent: the next arm starts another
	if g.exiting || g.creating > 0 || g.cfg.Count() > 0 {
		// Something came that the guard did not see start (a sandbox):
		// the shim is held, and the timer starts again once it is empty.
		g.mu.Unlock()
		return
	}
	g.exiting = true
	g.mu.Unlock()
	g.cfg.Log.Warn(fmt.Sprintf("no task for %ss and no shutdown from containerd: exiting",
		strconv.FormatFloat(g.cfg.Grace.Seconds(), 'f', -1, 64)))
	// The core finds no task and ends the shim (task.Config.Shutdown).
	_, _ = g.TaskService.Shutdown(context.Background(), &taskapi.ShutdownRequest{})
}

// close stops the timer and refuses every later Create; the daemon calls
// it first thing when it stops, whatever the reason.
func (g *orphanGuard) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.exiting = true
	g.disarmLocked()
}

// Create stops the timer and lets the Create through, unless the shim is
// exiting. The timer starts again if the Create failed and nothing else is
// left.
func (g *orphanGuard) Create(ctx context.Context, r *taskapi.CreateTaskRequest) (*taskapi.CreateTaskResponse, error) {
	if err := g.begin(); err != nil {
		return nil, task.Status(fmt.Errorf("create %q: %w", r.Id, err))
	}
	defer g.end()
	return g.TaskService.Create(ctx, r)
}

// begin lets a Create (or CreateSandbox) through and stops the timer,
// unless the shim is exiting (task.ErrExiting); end is its other half.
func (g *orphanGuard) begin() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.exiting {
		return task.ErrExiting
	}
	g.creating++
	g.disarmLocked()
	return nil
}

// end closes a begin: the timer starts again if nothing is left.
func (g *orphanGuard) end() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.creating--
	g.armLocked()
}

// Delete deletes, then starts the timer if that was the last container.
func (g *orphanGuard) Delete(ctx context.Context, r *taskapi.DeleteRequest) (*taskapi.DeleteResponse, error) {
	resp, err := g.TaskService.Delete(ctx, r)
	g.arm()
	return resp, err
}

// Shutdown ends the shim if it is empty, as the core's does, and also
// while no Create is past the guard: between the guard and the core's
// registry a Create is not yet counted. From then on Creates are refused.
func (g *orphanGuard) Shutdown(ctx context.Context, r *taskapi.ShutdownRequest) (*gogotypes.Empty, error) {
	g.mu.Lock()
	empty := g.exiting || g.creating == 0 && g.cfg.Count() == 0
	if empty {
		g.exiting = true
		g.disarmLocked()
	}
	g.mu.Unlock()
	if !empty {
		return &gogotypes.Empty{}, nil // a container is left or on its way
	}
	return g.TaskService.Shutdown(ctx, r)
}
