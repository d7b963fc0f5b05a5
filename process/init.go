package process

import (
	"context"
	"errors"
	"fmt"
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

	mu    sync.Mutex // guards state, pid, exit
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
		if err := mountRootfs(rootfs, cfg.Rootfs); err != nil {
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
		return nil, fmt.Errorf("open stdio: %w", err)
	}
	p.io = io
	defer func() {
		if retErr != nil {
			_ = io.Close()
		}
	}()

	tr := f.reaper.Track()
	defer tr.Close()
	pidFile := filepath.Join(cfg.Bundle, "init.pid")
	err = p.rt.Create(ctx, cfg.ID, oci.CreateOpts{
		Bundle: cfg.Bundle, PidFile: pidFile,
		NoPivot: cfg.NoPivot, NoNewKeyring: cfg.NoNewKeyring,
		ConsoleSocket: io.ConsoleSocket(),
		Stdio:         ociStdio(io.Child()),
	})
	io.CloseChild()
	if err != nil {
		// runc may leave a half-created container behind.
		_ = p.rt.Delete(context.WithoutCancel(ctx), cfg.ID, true)
		return nil, runtimeError("create", err)
	}
	if err := receiveConsole(ctx, io); err != nil {
		_ = p.rt.Delete(context.WithoutCancel(ctx), cfg.ID, true)
		return nil, err
	}
	pid, err := readPidFile(pidFile)
	if err != nil {
		_ = p.rt.Delete(context.WithoutCancel(ctx), cfg.ID, true)
		return nil, err
	}
	p.pid, p.state = pid, Created
	exitc := tr.Claim(pid)
	go p.watch(exitc) // ends when the init is reaped; Delete waits for it via done
	return p, nil
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

// Bundle returns the bundle path.
func (p *Init) Bundle() string { return p.bundle }

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

// Start starts a Created init.
func (p *Init) Start(ctx context.Context) error {
	p.mu.Lock()
	if p.state != Created {
		s := p.state
		p.mu.Unlock()
		return fmt.Errorf("cannot start a %s process: %w", s, ErrInvalidState)
	}
	p.mu.Unlock()
	if err := p.rt.Start(ctx, p.id); err != nil {
		return runtimeError("start", err)
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
	switch s {
	case Created:
		// Never started: the runtime kills the waiting init.
		if err := p.rt.Delete(ctx, p.id, true); err != nil && !errors.Is(err, oci.ErrNotExist) {
			return Exit{}, runtimeError("delete", err)
		}
		if _, err := p.Wait(ctx); err != nil {
			return Exit{}, fmt.Errorf("wait for init after delete: %w", err)
		}
	case Stopped:
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
