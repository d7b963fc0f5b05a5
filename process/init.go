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
	"github.com/leanshim/leanshim/stdio"
)

// ioDrainTimeout bounds how long Delete waits for a process's output to reach
// its FIFOs after the process exited (containerd 2.x waits 10 s too).
const ioDrainTimeout = 10 * time.Second

// thawTimeout bounds the runtime's resume of a paused container whose init
// has died.
const thawTimeout = 30 * time.Second

// InitConfig describes a container's init process.
type InitConfig struct {
	ID, Bundle   string
	Namespace    string // containerd's, for a binary:// logger (and its execs')
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
	ns         string // containerd namespace
	rt         Runtime
	io         *stdio.Pipes
	mounted    bool
	sharedPid  bool // the container does not own its pid namespace
	factory    *Factory
	onExit     func(Exit)

	restore *oci.RestoreOpts // set until Start when created from a checkpoint

	mu     sync.Mutex // guards the fields below
	state  State      // changed only through move (state.go)
	pid    int
	exit   Exit
	exited bool // exit is recorded
	// ops counts runtime calls on the container in flight (Kill, Pause,
	// Resume, Update, Checkpoint); opsIdle is closed when it drops to 0
	// (nil while 0). Delete claims Deleting, which refuses new ones, and
	// waits for these before it runs the runtime's delete: on cgroup v1 a
	// "kill --all" freezes the cgroup, and a delete meanwhile fails.
	ops     int
	opsIdle chan struct{}

	done chan struct{} // closed once the exit is recorded
}

// NewInit mounts the rootfs, opens the streams and runs the runtime's create.
// The returned Init is Created; its exit watcher is running.
func (f *Factory) NewInit(ctx context.Context, cfg InitConfig) (_ *Init, retErr error) {
	p := &Init{
		id: cfg.ID, bundle: cfg.Bundle, ns: cfg.Namespace, factory: f, onExit: cfg.OnExit,
		rt:   f.newRuntime(cfg.Runtime.oci()),
		done: make(chan struct{}), state: Created,
	}
	shared, err := sharesPidNamespace(cfg.Bundle)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, ErrInvalidArgument)
	}
	p.sharedPid = shared
	if err := saveRuntimeConfig(cfg.Bundle, cfg.Runtime); err != nil {
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
	io, err := cfg.IO.open(f, cfg.ID, cfg.Namespace, "")
	if err != nil {
		return nil, stdioError(err)
	}
	p.io = io
	defer func() {
		if retErr != nil {
			_ = io.Close()
		}
	}()

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
	pidFile := filepath.Join(p.bundle, initPidFile)
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

func (p *Init) watch(exitc <-chan Exit) {
	e := <-exitc
	p.mu.Lock()
	p.exit = e
	p.exited = true
	paused := p.state == Paused
	if p.state.live() {
		_ = move(&p.state, Stopped) // live states may always stop
	}
	if paused {
		p.beginOpLocked() // a Delete waits for the thaw
	}
	p.mu.Unlock()
	if paused {
		p.thaw()
	}
	p.io.ProcessExited() // its output ends once its pipes or pty are drained
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

// Start starts a Created init, or restores it from its checkpoint. It
// claims Starting first, so a second Start or a Delete meanwhile is refused.
func (p *Init) Start(ctx context.Context) error {
	p.mu.Lock()
	if err := move(&p.state, Starting); err != nil {
		p.mu.Unlock()
		return fmt.Errorf("start %s: %w", p.id, err)
	}
	restore := p.restore
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
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != Starting {
		return err // the watcher has stopped it already
	}
	if err != nil {
		_ = move(&p.state, Created)
		return err
	}
	p.restore = nil
	return move(&p.state, Running)
}

// CanExec returns ErrInvalidState if the container cannot take an exec now:
// its init has exited, it is paused, or it was restored from a checkpoint
// but not started (containerd's runc shim refuses all three). Anything else
// is for the runtime's exec to judge.
func (p *Init) CanExec() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.state == Stopped || p.state == Deleting || p.state == Deleted:
		return fmt.Errorf("cannot exec in a container that has exited: %w", ErrInvalidState)
	case p.state == Paused:
		return fmt.Errorf("cannot exec in a paused container: %w", ErrInvalidState)
	case p.restore != nil:
		return fmt.Errorf("cannot exec in a container restored from a checkpoint but not started: %w", ErrInvalidState)
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
// runs the runtime's delete, closes the streams and unmounts the rootfs. It
// claims Deleting first: a second Delete meanwhile fails with
// ErrInvalidState, and so does any Delete after this one succeeded.
func (p *Init) Delete(ctx context.Context) (Exit, error) {
	p.mu.Lock()
	from := p.state
	if from == Deleting {
		p.mu.Unlock()
		return Exit{}, fmt.Errorf("delete %s: another delete is in progress: %w", p.id, ErrInvalidState)
	}
	if err := move(&p.state, Deleting); err != nil {
		p.mu.Unlock()
		return Exit{}, fmt.Errorf("cannot delete a %s process: %w", from, ErrInvalidState)
	}
	launched := p.pid > 0
	idle := p.opsIdle
	p.mu.Unlock()
	if err := p.deleteRuntime(ctx, from, launched, idle); err != nil {
		p.mu.Lock()
		back := Created
		if p.exited {
			back = Stopped
		}
		_ = move(&p.state, back) // Deleting may always go back
		p.mu.Unlock()
		return Exit{}, err
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
	_ = move(&p.state, Deleted)
	e := p.exit
	p.mu.Unlock()
	return e, err
}

// deleteRuntime waits for the runtime calls in flight (idle, or nil if
// none), then removes the runtime's container of an init that was in state
// from.
func (p *Init) deleteRuntime(ctx context.Context, from State, launched bool, idle <-chan struct{}) error {
	if idle != nil {
		select {
		case <-idle:
		case <-ctx.Done():
			return fmt.Errorf("delete %s: wait for a runtime call in flight: %w", p.id, ctx.Err())
		}
	}
	switch {
	case from == Created && !launched:
		// A restore that never started: there is no runtime container.
	case from == Created:
		// Never started: the runtime kills the waiting init.
		if err := p.rt.Delete(ctx, p.id, true); err != nil && !errors.Is(err, oci.ErrNotExist) {
			return runtimeError("delete", err)
		}
		if _, err := p.Wait(ctx); err != nil {
			return fmt.Errorf("wait for init after delete: %w", err)
		}
	default: // Stopped
		if err := p.rt.Delete(ctx, p.id, false); err != nil && !errors.Is(err, oci.ErrNotExist) {
			return runtimeError("delete", err)
		}
	}
	return nil
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
