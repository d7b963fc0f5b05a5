package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/leanshim/leanshim/oci"
	"github.com/leanshim/leanshim/reaper"
	"github.com/leanshim/leanshim/stdio"
)

// ioDrainTimeout bounds how long Delete waits for a process's output to reach
// its FIFOs after the process exited (containerd 2.x waits 10 s too).
const ioDrainTimeout = 10 * time.Second

// InitConfig describes a container's init process.
type InitConfig struct {
	ID, Bundle   string
	Rootfs       []Mount
	IO           IOConfig
	NoPivot      bool
	NoNewKeyring bool
	Runtime      RuntimeConfig
	// Checkpoint, if set, makes this a restore: Start restores the
	// container from the checkpoint image at this path.
	Checkpoint       string
	ParentCheckpoint string
	CriuWorkPath     string
	// OnExit is called once, from the exit watcher, after the state is
	// Stopped and Done is closed. It must not block.
	OnExit func(Exit)
}

// Init is a container's init process.
type Init struct {
	id, bundle string
	rt         Runtime
	io         *stdio.Pipes
	mounted    bool
	sharedPid  bool // the container does not own its pid namespace
	factory    *Factory
	onExit     func(Exit)

	restore *oci.RestoreOpts // set until Start when created from a checkpoint

	mu    sync.Mutex // guards state, pid, exit, restore
	state State
	pid   int
	exit  Exit

	done chan struct{} // closed once the exit is recorded
}

// NewInit mounts the rootfs, opens the streams and runs the runtime's create.
// The returned Init is Created; its exit watcher is running.
func (f *Factory) NewInit(ctx context.Context, cfg InitConfig) (_ *Init, retErr error) {
	p := &Init{
		id: cfg.ID, bundle: cfg.Bundle, factory: f, onExit: cfg.OnExit,
		rt:   f.newRuntime(cfg.Runtime),
		done: make(chan struct{}),
	}
	shared, err := sharesPidNamespace(cfg.Bundle)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, ErrInvalidArgument)
	}
	p.sharedPid = shared
	if err := SaveRuntimeConfig(cfg.Bundle, cfg.Runtime); err != nil {
		return nil, err
	}
	rootfs := filepath.Join(cfg.Bundle, "rootfs")
	if len(cfg.Rootfs) > 0 {
		if err := f.mountRootfs(ctx, rootfs, cfg.Rootfs); err != nil {
			return nil, err
		}
		p.mounted = true
		defer func() {
			if retErr != nil {
				_ = unmountRootfs(rootfs)
			}
		}()
	}
	iocfg := cfg.IO
	iocfg.Start, iocfg.ID = f.starter(), cfg.ID
	io, err := stdio.Open(iocfg)
	if err != nil {
		return nil, stdioError(err)
	}
	p.io = io
	defer func() {
		if retErr != nil {
			_ = io.Close()
		}
	}()

	p.state = Created
	if cfg.Checkpoint != "" {
		// Restored at Start, as containerd's shim does: nothing runs yet.
		p.restore = &oci.RestoreOpts{
			Bundle: cfg.Bundle, NoPivot: cfg.NoPivot,
			ImagePath: cfg.Checkpoint, ParentPath: cfg.ParentCheckpoint, WorkPath: cfg.CriuWorkPath,
		}
		return p, nil
	}
	err = p.launch(ctx, "create", func(stdio oci.Stdio, consoleSocket, pidFile string) error {
		return p.rt.Create(ctx, cfg.ID, oci.CreateOpts{
			Bundle: cfg.Bundle, PidFile: pidFile,
			NoPivot: cfg.NoPivot, NoNewKeyring: cfg.NoNewKeyring,
			ConsoleSocket: consoleSocket, Stdio: stdio,
		})
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// launch runs the runtime command that makes the init process (create, or
// restore), receives its terminal, reads its pid and claims its exit. The
// reaper tracker is open across the command, so an init that exits at once
// is still reported. On failure the runtime's container is force-deleted.
func (p *Init) launch(ctx context.Context, op string, run func(stdio oci.Stdio, consoleSocket, pidFile string) error) error {
	tr := p.factory.reaper.Track()
	defer tr.Close()
	pidFile := filepath.Join(p.bundle, "init.pid")
	err := run(ociStdio(p.io.Child()), p.io.ConsoleSocket(), pidFile)
	p.io.CloseChild()
	if err != nil {
		// runc may leave a half-created container behind.
		_ = p.rt.Delete(context.WithoutCancel(ctx), p.id, true)
		return runtimeError(op, err)
	}
	if err := receiveConsole(ctx, p.io); err != nil {
		_ = p.rt.Delete(context.WithoutCancel(ctx), p.id, true)
		return err
	}
	pid, err := readPidFile(pidFile)
	if err != nil {
		_ = p.rt.Delete(context.WithoutCancel(ctx), p.id, true)
		return err
	}
	p.mu.Lock()
	p.pid = pid
	p.mu.Unlock()
	go p.watch(tr.Claim(pid)) // ends when the init is reaped; Delete waits for it via done
	return nil
}

func (p *Init) watch(exitc <-chan reaper.Exit) {
	e := <-exitc
	p.mu.Lock()
	p.exit = Exit{Pid: e.Pid, Status: e.Status, At: e.At}
	if p.state != Stopped && p.state != Deleted {
		p.state = Stopped
	}
	p.mu.Unlock()
	p.io.ProcessExited() // a terminal's output ends once the pty is drained
	// Recorded before anyone learns of the exit: the delete action reports
	// it if this shim dies before containerd deletes the task.
	_ = saveExit(p.bundle, p.exit) // best effort: delete falls back to 137
	close(p.done)
	if p.onExit != nil {
		p.onExit(p.exit)
	}
}

// ID returns the container id.
func (p *Init) ID() string { return p.id }

// Status returns the state, pid and (once Stopped) exit.
func (p *Init) Status() (State, int, Exit) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state, p.pid, p.exit
}

// Pid returns the init's pid.
func (p *Init) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid
}

// SharesPidNamespace reports whether the container runs in a pid namespace
// it does not own, so its other processes outlive the init.
func (p *Init) SharesPidNamespace() bool { return p.sharedPid }

// Done is closed when the init has exited.
func (p *Init) Done() <-chan struct{} { return p.done }

// Start starts a Created init, or restores it from its checkpoint.
func (p *Init) Start(ctx context.Context) error {
	p.mu.Lock()
	if p.state != Created {
		s := p.state
		p.mu.Unlock()
		return fmt.Errorf("cannot start a %s process: %w", s, ErrInvalidState)
	}
	restore := p.restore
	p.restore = nil
	p.mu.Unlock()
	var err error
	if restore != nil {
		err = p.launch(ctx, "restore", func(stdio oci.Stdio, consoleSocket, pidFile string) error {
			o := *restore
			o.Stdio, o.ConsoleSocket, o.PidFile = stdio, consoleSocket, pidFile
			return p.rt.Restore(ctx, p.id, o)
		})
	} else if err = p.rt.Start(ctx, p.id); err != nil {
		err = runtimeError("start", err)
	}
	if err != nil {
		return err
	}
	p.mu.Lock()
	if p.state == Created { // the watcher may have stopped it already
		p.state = Running
	}
	p.mu.Unlock()
	return nil
}

// Kill signals the init, or every process of the container with all.
func (p *Init) Kill(ctx context.Context, sig int, all bool) error {
	p.mu.Lock()
	s := p.state
	p.mu.Unlock()
	if (s == Stopped && !all) || s == Deleted {
		return fmt.Errorf("kill: %w", ErrFinished)
	}
	if err := p.rt.Kill(ctx, p.id, sig, all); err != nil {
		return runtimeError("kill", err)
	}
	return nil
}

// Wait blocks until the init has exited or ctx ends.
func (p *Init) Wait(ctx context.Context) (Exit, error) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.exit, nil
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
}

// Delete removes a Created or Stopped container: it lets the output drain,
// runs the runtime's delete, closes the streams and unmounts the rootfs.
func (p *Init) Delete(ctx context.Context) (Exit, error) {
	p.mu.Lock()
	s := p.state
	p.mu.Unlock()
	p.mu.Lock()
	launched := p.pid > 0
	p.mu.Unlock()
	switch {
	case s == Created && !launched:
		// A restore that never started: there is no runtime container.
	case s == Created:
		// Never started: the runtime kills the waiting init.
		if err := p.rt.Delete(ctx, p.id, true); err != nil && !errors.Is(err, oci.ErrNotExist) {
			return Exit{}, runtimeError("delete", err)
		}
		if _, err := p.Wait(ctx); err != nil {
			return Exit{}, fmt.Errorf("wait for init after delete: %w", err)
		}
	case s == Stopped:
		if err := p.rt.Delete(ctx, p.id, false); err != nil && !errors.Is(err, oci.ErrNotExist) {
			return Exit{}, runtimeError("delete", err)
		}
	default:
		return Exit{}, fmt.Errorf("cannot delete a %s process: %w", s, ErrInvalidState)
	}
	drainCtx, cancel := context.WithTimeout(ctx, ioDrainTimeout)
	_ = p.io.Wait(drainCtx) // on timeout, what is still unread is dropped below
	cancel()
	_ = p.io.Close()
	var err error
	if p.mounted {
		err = unmountRootfs(filepath.Join(p.bundle, "rootfs"))
	}
	p.mu.Lock()
	p.state = Deleted
	e := p.exit
	p.mu.Unlock()
	return e, err
}

// Pids lists the container's processes.
func (p *Init) Pids(ctx context.Context) ([]int, error) {
	pids, err := p.rt.Ps(ctx, p.id)
	if err != nil {
		return nil, runtimeError("ps", err)
	}
	return pids, nil
}

// CloseStdin gives up the shim's hold on the init's stdin.
func (p *Init) CloseStdin() error { return p.io.CloseStdin() }

// Pause freezes a Running container.
func (p *Init) Pause(ctx context.Context) error {
	return p.transition(ctx, Running, Paused, "pause", p.rt.Pause)
}

// Resume thaws a Paused container.
func (p *Init) Resume(ctx context.Context) error {
	return p.transition(ctx, Paused, Running, "resume", p.rt.Resume)
}

func (p *Init) transition(ctx context.Context, from, to State, op string, call func(context.Context, string) error) error {
	p.mu.Lock()
	if p.state != from {
		s := p.state
		p.mu.Unlock()
		return fmt.Errorf("cannot %s a %s process: %w", op, s, ErrInvalidState)
	}
	p.mu.Unlock()
	if err := call(ctx, p.id); err != nil {
		return runtimeError(op, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == from {
		return move(&p.state, to)
	}
	return nil
}

// Update changes the container's resources (LinuxResources JSON).
func (p *Init) Update(ctx context.Context, resources []byte) error {
	if err := p.rt.Update(ctx, p.id, resources); err != nil {
		return runtimeError("update", err)
	}
	return nil
}

// stdioError classifies a failure to open the streams a request named: a
// missing FIFO or directory is ErrNotFound, a malformed URI
// ErrInvalidArgument; anything else keeps its own cause.
func stdioError(err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("open stdio: %w: %w", err, ErrNotFound)
	case errors.Is(err, stdio.ErrInvalidURI):
		return fmt.Errorf("open stdio: %w: %w", err, ErrInvalidArgument)
	}
	return fmt.Errorf("open stdio: %w", err)
}
