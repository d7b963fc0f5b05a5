package process

import (
	"context"
	"fmt"
	"math"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leanshim/leanshim/reaper"
	"github.com/leanshim/leanshim/stdio"
)

// consoleTimeout bounds the wait for the pty master once the runtime's
// create or exec has returned. The runtime sends it before it exits, so it is
// already queued on the socket; one that exited without sending never will.
const consoleTimeout = 10 * time.Second

// receiveConsole takes the terminal of a process whose runtime command has
// just returned successfully. Without a terminal it does nothing.
func receiveConsole(ctx context.Context, io *stdio.Pipes) error {
	ctx, cancel := context.WithTimeout(ctx, consoleTimeout)
	defer cancel()
	if err := io.ReceiveConsole(ctx); err != nil {
		return fmt.Errorf("receive the terminal from the runtime: %w", err)
	}
	return nil
}

// killUnclaimed kills an exec the runtime started but the shim gave up on
// (its terminal never arrived) and waits until it is reaped, so it does not
// run on unseen. tr must still be open: an exit reaped before Claim is kept
// there, and the signal goes through a pidfd opened before the claim, so it
// reaches this process or none (see claimWithPidfd).
func killUnclaimed(ctx context.Context, tr *reaper.Tracker, pidFile string) {
	pid, err := readPidFile(pidFile)
	if err != nil {
		return // nothing to kill that we can name
	}
	fd, exitc := claimWithPidfd(tr, pid)
	select {
	case <-exitc:
		return // already gone
	default:
	}
	if fd >= 0 {
		_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		_ = unix.Close(fd)
	} else {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), consoleTimeout)
	defer cancel()
	select {
	case <-exitc:
	case <-ctx.Done():
	}
}

// Resize sets the size of the init's terminal; without one it does nothing.
func (p *Init) Resize(width, height uint32) error {
	return resize(p.io, width, height)
}

// Resize sets the size of the exec's terminal; without one, or before Start,
// it does nothing.
func (e *Exec) Resize(width, height uint32) error {
	e.mu.Lock()
	io := e.io
	e.mu.Unlock()
	return resize(io, width, height)
}

func resize(io *stdio.Pipes, width, height uint32) error {
	if width > math.MaxUint16 || height > math.MaxUint16 {
		return fmt.Errorf("terminal size %dx%d: %w", width, height, ErrInvalidArgument)
	}
	if io == nil {
		return nil
	}
	return io.Resize(uint16(width), uint16(height))
}
