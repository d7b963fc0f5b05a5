package process

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leanshim/leanshim/oci"
	"github.com/leanshim/leanshim/reaper"
	"github.com/leanshim/leanshim/stdio"
)

// ExecConfig describes an extra process to run in a container.
type ExecConfig struct {
	ID   string
	Spec []byte // the OCI Process, as JSON
	IO   IOConfig
	// OnExit is called once, from the exit watcher, after the state is
	// Stopped and before Done is closed, so the owner has counted the exit
	// by the time a Wait returns. It must not block.
	OnExit func(Exit)
}

// Exec is an extra process in a container. It is Created by NewExec and
// runs only when Start is called.
type Exec struct {
	id     string
	init   *Init
	cfg    ExecConfig
	io     *stdio.Pipes // set once Start has succeeded
	onExit func(Exit)

	mu    sync.Mutex // guards state, pid, pidfd, exit, io
	state State      // changed only through move (state.go)
	pid   int
	pidfd int // a pidfd of pid while it runs, or -1 (none, or closed by watch)
	exit  Exit

	done chan struct{} // closed once the exit is recorded
}

// NewExec registers an exec of the container. Nothing runs until Start.
func (p *Init) NewExec(cfg ExecConfig) *Exec {
	return &Exec{id: cfg.ID, init: p, cfg: cfg, onExit: cfg.OnExit, state: Created, pidfd: -1, done: make(chan struct{})}
}

// ID returns the exec id.
func (e *Exec) ID() string { return e.id }

// Done is closed when the exec has exited.
func (e *Exec) Done() <-chan struct{} { return e.done }

// Status returns the state, pid and (once Stopped) exit.
func (e *Exec) Status() (State, int, Exit) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state, e.pid, e.exit
}

// Start runs the exec through the runtime and returns its pid. It claims
// Starting first, so a second Start or a Delete meanwhile is refused, and
// opens the streams without the lock (a binary:// logger may take seconds).
// If Start fails nothing runs: the exec is Stopped with status 255 and Wait
// returns at once.
func (e *Exec) Start(ctx context.Context) (_ int, retErr error) {
	e.mu.Lock()
	if err := move(&e.state, Starting); err != nil {
		e.mu.Unlock()
		return 0, fmt.Errorf("cannot start exec %s: %w", e.id, err)
	}
	e.mu.Unlock()
	defer func() {
		if retErr != nil {
			e.startFailed()
		}
	}()
	if err := e.init.CanExec(); err != nil {
		return 0, fmt.Errorf("start exec %s: %w", e.id, err)
	}
	io, err := e.cfg.IO.open(e.init.factory, e.init.id, e.init.ns, e.id)
	if err != nil {
		return 0, stdioError(err)
	}
	defer func() {
		if retErr != nil {
			_ = io.Close()
		}
	}()
	pid, tr, err := e.run(ctx, io)
	if err != nil {
		return 0, err
	}
	defer tr.Close()
	fd, exitc := claimWithPidfd(tr, pid)
	e.mu.Lock()
	e.pid, e.pidfd, e.io = pid, fd, io
	_ = move(&e.state, Running) // Starting is ours: nothing else moves it
	e.mu.Unlock()
	go e.watch(exitc) // ends when the exec is reaped
	return pid, nil
}

// claimWithPidfd claims pid's exit from tr and returns a pidfd that names
// the process for as long as it is not reaped, or -1. The pidfd is opened
// before the claim: if the claim finds the exit already reaped, the pid may
// name another process by now, and the pidfd is dropped; otherwise the
// process was still unreaped after the pidfd was opened, so it is ours
// (pidfd_open(2)). A kernel without pidfds (before 5.3) gives -1.
func claimWithPidfd(tr *reaper.Tracker, pid int) (int, <-chan reaper.Exit) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		fd = -1
	}
	exitc := tr.Claim(pid)
	if len(exitc) > 0 && fd >= 0 { // reaped already: Claim delivered the exit at once
		_ = unix.Close(fd)
		fd = -1
	}
	return fd, exitc
}

// run runs the runtime's exec with io and returns the pid and the tracker
// that will report its exit; the caller closes the tracker.
func (e *Exec) run(ctx context.Context, io *stdio.Pipes) (_ int, _ *reaper.Tracker, retErr error) {
	bundle := e.init.bundle
	spec := filepath.Join(bundle, "."+e.id+".process.json")
	if err := os.WriteFile(spec, e.cfg.Spec, 0o600); err != nil {
		io.CloseChild()
		return 0, nil, fmt.Errorf("write exec spec: %w", err)
	}
	defer os.Remove(spec)

	tr := e.init.factory.reaper.Track()
	defer func() {
		if retErr != nil {
			tr.Close()
		}
	}()
	pidFile := filepath.Join(bundle, e.id+".pid")
	defer os.Remove(pidFile) // read once; the bundle keeps no per-exec files
	err := e.init.rt.Exec(ctx, e.init.id, oci.ExecOpts{
		ProcessFile: spec, PidFile: pidFile,
		ConsoleSocket: io.ConsoleSocket(),
		Stdio:         ociStdio(io.Child()),
	})
	io.CloseChild()
	if err != nil {
		return 0, nil, runtimeError("exec", err)
	}
	if err := receiveConsole(ctx, io); err != nil {
		killUnclaimed(ctx, tr, pidFile)
		return 0, nil, err
	}
	pid, err := readPidFile(pidFile)
	if err != nil {
		return 0, nil, err
	}
	return pid, tr, nil
}

// notRun is the exit of an exec that never ran: containerd's "unknown"
// status, 255, at the moment it was given up.
func notRun() Exit { return Exit{Status: 255, At: time.Now()} }

// startFailed ends an exec whose Start failed: nothing runs, so it is
// Stopped, with containerd's "unknown" exit status, and its Wait returns.
func (e *Exec) startFailed() {
	e.mu.Lock()
	e.exit = notRun()
	_ = move(&e.state, Stopped) // Starting is ours: nothing else moves it
	e.mu.Unlock()
	close(e.done)
}

func (e *Exec) watch(exitc <-chan Exit) {
	x := <-exitc
	e.mu.Lock()
	e.exit = x
	_ = move(&e.state, Stopped) // Running: Delete refuses a running exec
	if e.pidfd >= 0 {
		_ = unix.Close(e.pidfd) // no signal is sent to a Stopped exec
		e.pidfd = -1
	}
	io := e.io
	e.mu.Unlock()
	io.ProcessExited() // its output ends once its pipes or pty are drained
	// The owner hears of the exit before Wait returns: a client that
	// deletes the container right after waiting for the exec must not find
	// the exec still counted as running.
	if e.onExit != nil {
		e.onExit(e.exit)
	}
	close(e.done)
}

// Kill signals the exec directly (kill(2)); the runtime is not involved.
func (e *Exec) Kill(sig int) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	// Holding mu: the watcher cannot close the pidfd meanwhile. The pidfd
	// names this process even if the reaper has reaped it and its pid was
	// reused (then the signal fails with ESRCH); without one (an old
	// kernel) the pid is signalled, which leaves that window open.
	switch e.state {
	case Created, Starting:
		return fmt.Errorf("exec %s not started: %w", e.id, ErrInvalidState)
	case Stopped, Deleting, Deleted:
		return fmt.Errorf("kill exec %s: %w", e.id, ErrFinished)
	}
	if err := e.signalLocked(unix.Signal(sig)); err != nil {
		if err == unix.ESRCH {
			return fmt.Errorf("kill exec %s: %w", e.id, ErrFinished)
		}
		if err == unix.EINVAL {
			return fmt.Errorf("kill exec %s: signal %d: %w", e.id, sig, ErrInvalidArgument)
		}
		return fmt.Errorf("kill exec %s: %w", e.id, err)
	}
	return nil
}

func (e *Exec) signalLocked(sig unix.Signal) error {
	if e.pidfd >= 0 {
		return unix.PidfdSendSignal(e.pidfd, sig, nil, 0)
	}
	return unix.Kill(e.pid, sig)
}

// Wait blocks until the exec has exited or ctx ends.
func (e *Exec) Wait(ctx context.Context) (Exit, error) {
	select {
	case <-e.done:
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.exit, nil
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
}

// Delete forgets a Created or Stopped exec after its output has drained. It
// claims Deleting first: a second Delete meanwhile is refused.
func (e *Exec) Delete(ctx context.Context) (Exit, error) {
	e.mu.Lock()
	s := e.state
	if err := move(&e.state, Deleting); err != nil {
		e.mu.Unlock()
		return Exit{}, fmt.Errorf("cannot delete a %s exec: %w", s, ErrInvalidState)
	}
	io, x := e.io, e.exit
	e.mu.Unlock()
	if io != nil {
		drainCtx, cancel := context.WithTimeout(ctx, ioDrainTimeout)
		_ = io.Wait(drainCtx)
		cancel()
		_ = io.Close()
	}
	e.mu.Lock()
	_ = move(&e.state, Deleted)
	if s == Created {
		// Never started, so never to exit: a Wait in flight returns, with
		// the status of an exec that did not run.
		e.exit = notRun()
		close(e.done)
	}
	e.mu.Unlock()
	return x, nil
}

// CloseStdin gives up the shim's hold on the exec's stdin.
func (e *Exec) CloseStdin() error {
	e.mu.Lock()
	io := e.io
	e.mu.Unlock()
	if io == nil {
		return nil
	}
	return io.CloseStdin()
}
