package task

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/leanshim/leanshim/cgroup"
	"github.com/leanshim/leanshim/process"
	"github.com/leanshim/leanshim/proto/events"
	"github.com/leanshim/leanshim/proto/taskapi"
)

// container is one task: its init, its execs and the ordering of its
// events. The contract, enforced here and nowhere else:
//   - a process's start event (TaskStart, TaskExecStarted) is published before
//     its TaskExit, even when it exits before Start returns;
//   - every exec's TaskExit is published before the init's TaskExit;
//   - TaskCreate comes before anything else of the container: an init that
//     dies during Create has its exit held until TaskCreate is queued, and
//     the OOM watch starts only after it;
//   - TaskDelete comes after the init's TaskExit (Delete needs a stopped init).
//
// The init counts as exited for State and Wait only once its TaskExit is
// queued (initDone): while execs still run, it is reported running, as
// containerd's runc shim does, so a client that acts on the init's exit
// never sees an exec outlive it.
//
// Events are queued with Publisher.Publish, which never blocks, while c.mu is
// held, so the queue order is the decision order.
type container struct {
	id        string
	uid       int // io_uid/io_gid: owner of every process's stdio pipes
	gid       int
	init      *process.Init
	sharedPid bool                       // the init's exit does not end the other processes
	req       *taskapi.CreateTaskRequest // the stdio and bundle, for State
	pub       Events
	onDone    func(func())   // runs background work owned by the Service
	cg        *cgroup.Cgroup // the container's cgroup, or nil; set under mu at Create
	oom       OOMWatcher     // nil: no OOM events; set under mu at Create
	log       *slog.Logger   // the Service's, naming the container; nil in tests

	mu          sync.Mutex // guards the fields below
	execs       map[string]*execEntry
	initGate    gate
	liveExecs   int           // execs started (or starting) whose exit is not published
	initExited  bool          // the init's exit is known
	pendingInit *process.Exit // init exit held back until liveExecs is 0
	initDone    chan struct{} // closed once the init's TaskExit is queued
	killing     bool          // killLeftovers runs: the init's exit waits for it
	killRest    func()        // kills the container's processes; nil: killAll (tests replace it)
	deleted     bool          // Delete has succeeded: nothing may watch its cgroup any more
}

// execEntry is an exec with the request that made it.
type execEntry struct {
	p    *process.Exec
	req  *taskapi.ExecProcessRequest
	gate gate
}

// gate holds back a process's exit while its Start is running, so that the
// start event goes first.
type gate struct {
	starting int // Starts in progress (a second one is refused, but runs)
	held     *process.Exit
}

// beginStart marks a Start in progress; the exit, if it comes, is held.
func (g *gate) beginStart() { g.starting++ }

// exitArrived returns true if the exit may be reported now; otherwise it is
// held until endStart.
func (g *gate) exitArrived(e process.Exit) bool {
	if g.starting > 0 {
		g.held = &e
		return false
	}
	return true
}

// endStart ends a Start and, once no Start is left in progress, returns a
// held exit to report now.
func (g *gate) endStart() *process.Exit {
	g.starting--
	if g.starting > 0 {
		return nil
	}
	e := g.held
	g.held = nil
	return e
}

// createInit runs create (the runtime's create; it returns the init) with
// the init's exit held back, so TaskCreate is queued first.
func (c *container) createInit(create func() (*process.Init, error), created func(*process.Init)) (*process.Init, error) {
	var p *process.Init
	err := c.gatedInit(func() (err error) {
		p, err = create()
		return err
	}, func() {
		c.init = p
		created(p) // queues TaskCreate
	}, false)
	return p, err
}

// startInit runs start (the runtime's start; it returns the init's pid) with
// the init's exit held back, so TaskStart is queued first.
func (c *container) startInit(start func() (int, error)) (int, error) {
	var pid int
	err := c.gatedInit(func() (err error) {
		pid, err = start()
		return err
	}, func() {
		c.pub.Publish("/tasks/start", &events.TaskStart{ContainerId: c.id, Pid: uint32(pid)})
	}, true)
	return pid, err
}

// gatedInit runs call, a runtime call on the init, without c.mu and with
// the init's exit held back; if it succeeds, queued queues (under c.mu) the
// event that must precede that exit, and a held exit is reported after it.
// If call fails, a held exit is reported only with exitsOnError: a failed
// create has made no init to report (its TaskExit would come without
// TaskCreate), a failed start has.
func (c *container) gatedInit(call func() error, queued func(), exitsOnError bool) error {
	c.mu.Lock()
	c.initGate.beginStart()
	c.mu.Unlock()
	err := call() // the runtime runs with no lock held
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		queued()
	}
	if e := c.initGate.endStart(); e != nil && (err == nil || exitsOnError) {
		c.initExitLocked(*e)
	}
	return err
}

// runExecStart runs start (the exec's runtime call; it returns the pid) with
// the exec's exit held back, so TaskExecStarted is queued first. The caller
// has counted the exec in liveExecs.
func (c *container) runExecStart(x *execEntry, start func() (int, error)) (int, error) {
	c.mu.Lock()
	x.gate.beginStart()
	c.mu.Unlock()
	pid, err := start() // the runtime runs with no lock held
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		c.pub.Publish("/tasks/exec-started", &events.TaskExecStarted{ContainerId: c.id, ExecId: x.req.ExecId, Pid: uint32(pid)})
	}
	held := x.gate.endStart()
	if err != nil {
		c.execGoneLocked() // this Start ran nothing: no exit will come of it
	}
	if held != nil {
		c.execExitLocked(x, *held) // the exit of an earlier, successful Start
	}
	return pid, err
}

// onInitExit is the init's OnExit hook (called from its exit watcher).
func (c *container) onInitExit(e process.Exit) {
	c.mu.Lock()
	oom := c.oom
	c.mu.Unlock()
	if oom != nil {
		// Outside c.mu: Remove may publish a last TaskOOM, which then
		// precedes the TaskExit queued below.
		oom.Remove(c.id)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.initExited = true
	if !c.initGate.exitArrived(e) {
		return
	}
	c.initExitLocked(e)
}

// initExitLocked reports the init's exit, or holds it until the execs'
// exits are out. In a shared pid namespace the container's other processes
// (execs, and whatever the init left behind) would outlive the init, so they
// are killed first (as the runc shim does), and the exit waits for that.
func (c *container) initExitLocked(e process.Exit) {
	if c.sharedPid && !c.killing {
		c.killing = true
		c.pendingInit = &e
		c.onDone(c.killLeftovers)
		return
	}
	if c.liveExecs > 0 || c.killing {
		c.pendingInit = &e
		return
	}
	c.publishInitExitLocked(e)
}

// killLeftovers kills what is left of a container whose init has exited in
// a shared pid namespace, then releases the init's exit unless execs still
// have theirs to report. It runs in the background, outside any lock.
func (c *container) killLeftovers() {
	if c.killRest != nil {
		c.killRest()
	} else {
		c.killAll()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.killing = false
	if c.liveExecs == 0 && c.pendingInit != nil {
		c.publishInitExitLocked(*c.pendingInit)
	}
}

// publishInitExitLocked queues the init's TaskExit, once: Delete may queue
// it before the exit hook has run, which then finds it done.
func (c *container) publishInitExitLocked(e process.Exit) {
	if c.initReportedLocked() {
		return
	}
	close(c.initDone)
	c.pendingInit = nil
	c.pub.Publish("/tasks/exit", &events.TaskExit{
		ContainerId: c.id, Id: c.id, Pid: uint32(e.Pid), ExitStatus: uint32(e.Status), ExitedAt: timestamp(e.At),
	})
}

// onExecExit is an exec's OnExit hook.
func (c *container) onExecExit(x *execEntry, e process.Exit) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !x.gate.exitArrived(e) {
		return
	}
	c.execExitLocked(x, e)
}

func (c *container) execExitLocked(x *execEntry, e process.Exit) {
	c.pub.Publish("/tasks/exit", &events.TaskExit{
		ContainerId: c.id, Id: x.req.ExecId, Pid: uint32(e.Pid), ExitStatus: uint32(e.Status), ExitedAt: timestamp(e.At),
	})
	c.execGoneLocked()
}

// execGoneLocked counts one exec out; the last one releases a held init exit.
func (c *container) execGoneLocked() {
	c.liveExecs--
	if c.liveExecs == 0 && c.pendingInit != nil && !c.killing {
		c.publishInitExitLocked(*c.pendingInit)
	}
}

// initReportedLocked reports whether the init's TaskExit is queued.
func (c *container) initReportedLocked() bool {
	select {
	case <-c.initDone:
		return true
	default:
		return false
	}
}

// waitInit blocks until the init's exit is reported (its TaskExit queued)
// or ctx ends.
func (c *container) waitInit(ctx context.Context) (process.Exit, error) {
	select {
	case <-c.initDone:
	case <-ctx.Done():
		return process.Exit{}, ctx.Err()
	}
	return c.init.Wait(ctx) // returns at once: the exit is recorded
}

// initStatus is the init's status as State reports it: an init whose exit is
// not reported yet (execs still run) is still running.
func (c *container) initStatus() (process.State, int, process.Exit) {
	st, pid, e := c.init.Status()
	c.mu.Lock()
	reported := c.initReportedLocked()
	c.mu.Unlock()
	if st == process.Stopped && !reported {
		return process.Running, pid, process.Exit{}
	}
	return st, pid, e
}

// deletedLocked queues what a container's Delete reports: the init's
// TaskExit if it is not out yet (the exit hook may not have run, or may
// hold it for a Start in flight), then TaskDelete.
func (c *container) deletedLocked(e process.Exit) {
	if e.Pid > 0 {
		c.initExited = true
		c.publishInitExitLocked(e)
	}
	c.pub.Publish("/tasks/delete", &events.TaskDelete{
		ContainerId: c.id, Pid: uint32(e.Pid), ExitStatus: uint32(e.Status), ExitedAt: timestamp(e.At),
	})
}

// killAll ends every process of a container whose init has exited in a
// shared pid namespace. It runs outside any lock (it calls the runtime).
func (c *container) killAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = c.init.Kill(ctx, 9, true) // best effort: they may be gone already
}
