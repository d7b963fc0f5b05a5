package reaper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Exit is one reaped process.
type Exit struct {
	Pid    int
	Status int       // exit code, or 128+signal (ExitStatus)
	At     time.Time // when the shim reaped it
}

// Reaper reaps every child of the shim. Create it with New and run its loop
// with Run; all other methods are safe for concurrent use.
type Reaper struct {
	log     *slog.Logger
	forking func() func(int)     // Config.Forking; nil: none
	reaped  func(int, time.Time) // Config.Reaped; nil: none

	mu       sync.Mutex            // guards waiters, trackers and stopped; taken before forks.mu
	waiters  map[int]chan Exit     // pid -> channel (buffer 1) of a claimed or started process
	trackers map[*Tracker]struct{} // open trackers: receive exits of pids nobody waits for yet
	wake     chan struct{}         // SIGCHLD, or a test poke; buffer 1
	forks    forkThreads           // which thread forked each child Start started
	stopped  bool                  // Run has returned or is returning
	sheds    sync.WaitGroup        // shedThread goroutines in flight; Run waits for them

	idleThreads atomic.Int32  // shedThread leaves this many OS threads; 0 until learnt (threads_linux.go)
	activity    atomic.Uint64 // counts Starts and shedThread calls (each follows activity); read by watchShed
	learn       struct {
		sync.Mutex      // guards the fields below
		seen, least int // watchShed's observations of the floor so far, and the least
		watches     int // watchShed calls so far
	}
}

// Config configures New.
type Config struct {
	// Subreaper makes the calling process a child subreaper (prctl(2)). The
	// serving daemon sets it; short-lived actions (start, delete) do not.
	Subreaper bool
	// Log receives exits nobody claimed. nil discards them.
	Log *slog.Logger
	// Forking, if set, is called by Start just before it forks a child,
	// with no lock held; the function it returns, if not nil, is called
	// with the child's pid once the child has exec'd. Neither may block.
	// The daemon's exec-latency trace uses it: what it reads of the clock
	// (and of the scheduler) then is the end of the shim's own share.
	Forking func() (started func(pid int))
	// Reaped, if set, is called for each child reaped, with its pid and
	// the time it was reaped, after its exit has been delivered, with no
	// lock held. It must not block. The daemon's exec-latency trace uses
	// it to see when the runtime binary itself has exited.
	Reaped func(pid int, at time.Time)
}

// New returns a Reaper. With cfg.Subreaper it marks the process as child
// subreaper; that is process-wide and is never undone.
func New(cfg Config) (*Reaper, error) {
	if cfg.Subreaper {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return nil, fmt.Errorf("set child subreaper: %w", err)
		}
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reaper{
		log:      log,
		forking:  cfg.Forking,
		reaped:   cfg.Reaped,
		waiters:  make(map[int]chan Exit),
		trackers: make(map[*Tracker]struct{}),
		wake:     make(chan struct{}, 1),
		forks:    forkThreads{byPid: make(map[int]int), byTid: make(map[int]int)},
	}, nil
}

// Run reaps children until ctx is done. It subscribes to SIGCHLD itself and
// must be called once; the caller owns the goroutine and waits for Run to
// return. Signals coalesce, so every wake-up reaps until no child is left
// waiting (wait4 returns 0 or ECHILD). After each wake-up it sheds a thread
// that handling the signal may have added (shedThread); before it returns it
// waits for the sheds in flight, and no shed starts afterwards.
func (r *Reaper) Run(ctx context.Context) error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGCHLD)
	defer signal.Stop(sigs)
	// A child may have exited before Notify was in place.
	r.reap()
	for {
		select {
		case <-ctx.Done():
			r.reap()
			r.mu.Lock()
			r.stopped = true // no shed starts after this
			r.mu.Unlock()
			r.sheds.Wait()
			return nil
		case <-sigs:
		case <-r.wake:
		}
		r.reap()
		r.shedThread()
	}
}

// reap collects every exited child and delivers each exit.
func (r *Reaper) reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD: no children; 0: none exited yet
		}
		e := Exit{Pid: pid, Status: ExitStatus(ws), At: time.Now()}
		r.deliver(e)
		if r.reaped != nil {
			r.reaped(e.Pid, e.At)
		}
	}
}

// deliver hands e to its waiter, or to every open tracker, or logs it.
func (r *Reaper) deliver(e Exit) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forks.forget(e.Pid)
	if ch, ok := r.waiters[e.Pid]; ok {
		delete(r.waiters, e.Pid)
		ch <- e // buffer 1, one exit per registration: never blocks
		return
	}
	if len(r.trackers) == 0 {
		r.log.Debug("reaped unclaimed process", "pid", e.Pid, "status", e.Status)
		return
	}
	for t := range r.trackers {
		t.exits[e.Pid] = e
	}
}

// Start starts cmd and returns a channel that receives its exit exactly once.
// A Tracker is open across cmd.Start, so an instant exit cannot be missed,
// and no lock is held while the child forks and execs (other starts and
// exit delivery go on meanwhile). The caller must not call cmd.Wait (this
// package is the only wait4 caller); it receives from the channel instead and
// then calls Release. cmd must not use a context (exec.CommandContext starts a
// goroutine that only Wait stops) and its Stdin/Stdout/Stderr must be nil or
// *os.File for the same reason.
//
// Start forks on a thread it keeps alive until the child is reaped, so
// cmd.SysProcAttr.Pdeathsig, which is tied to the forking thread rather
// than to the process (prctl(2) PR_SET_PDEATHSIG), means "if the shim dies".
func (r *Reaper) Start(cmd *exec.Cmd) (<-chan Exit, error) {
	r.activity.Add(1)
	t := r.Track()
	defer t.Close()
	// Locked, so that the thread recorded below is the one that forked.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var started func(int)
	if r.forking != nil {
		started = r.forking()
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	r.mu.Lock()
	if _, reaped := t.exits[pid]; !reaped { // a reaped child has nothing to lose
		r.forks.record(pid, unix.Gettid())
	}
	r.mu.Unlock()
	if started != nil {
		started(pid)
	}
	return t.Claim(pid), nil
}

// Release frees what os/exec holds for a started command (its pidfd) once its
// exit has been received. It never waits.
func Release(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = cmd.Process.Release() // only closes the handle; the process is already reaped
	}
}

// poke makes the reap loop look for exits now, as SIGCHLD does. Tests use it.
func (r *Reaper) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// ExitStatus converts a wait status to the shell convention containerd uses:
// the exit code, or 128+signal when a signal ended the process.
func ExitStatus(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}
