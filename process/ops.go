package process

import (
	"context"
	"errors"
	"fmt"

	"github.com/leanshim/leanshim/oci"
)

// Runtime calls on a live container other than create, start and delete:
// each runs without the process lock, counted in flight (Init.ops) so that
// Delete waits for it, and is refused once Delete has claimed the container.

// Kill signals the init, or every process of the container with all. A
// Kill is refused once Delete has claimed the container, and a Delete waits
// for a Kill in flight, so the two never run the runtime at once.
func (p *Init) Kill(ctx context.Context, sig int, all bool) error {
	return p.runtimeOp("kill", func(s State) error {
		if s == Stopped && !all {
			return fmt.Errorf("kill: %w", ErrFinished)
		}
		return nil
	}, func() error { return p.rt.Kill(ctx, p.id, sig, all) })
}

// runtimeOp runs call, a runtime command on the container, if check passes
// for the current state and no Delete has claimed the container. The call
// counts as in flight (ops) until it returns; it runs without p.mu.
func (p *Init) runtimeOp(op string, check func(State) error, call func() error) error {
	p.mu.Lock()
	s := p.state
	if s == Deleting || s == Deleted {
		p.mu.Unlock()
		return fmt.Errorf("%s: container is %s: %w", op, s, ErrFinished)
	}
	if err := check(s); err != nil {
		p.mu.Unlock()
		return err
	}
	p.beginOpLocked()
	p.mu.Unlock()
	defer p.endOp()
	err := call()
	var cerr *oci.CheckpointError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &cerr):
		return err // containerd's wording already: "<message> path= <bundle>/criu-dump.log"
	}
	return runtimeError(op, err)
}

// beginOpLocked counts a runtime call in flight; endOp ends it.
func (p *Init) beginOpLocked() {
	p.ops++
	if p.ops == 1 {
		p.opsIdle = make(chan struct{})
	}
}

// thaw resumes the frozen cgroup of a container whose init died while it
// was paused, as containerd's runc shim does: the runtime refuses to delete a
// paused container, and its other processes cannot die while frozen. It runs
// on the exit watcher, counted as a runtime call in flight.
func (p *Init) thaw() {
	defer p.endOp()
	p.resumeFrozen()
}

// resumeFrozen runs the runtime's resume on a container whose init has died
// while it was frozen. The caller counts it as a call in flight.
func (p *Init) resumeFrozen() {
	ctx, cancel := context.WithTimeout(context.Background(), thawTimeout)
	defer cancel()
	_ = p.rt.Resume(ctx, p.id) // best effort: Delete reports what is left
}

func (p *Init) endOp() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ops--
	if p.ops == 0 {
		close(p.opsIdle)
		p.opsIdle = nil
	}
}

// Pause freezes a Running container.
func (p *Init) Pause(ctx context.Context) error {
	return p.freeze(ctx, Running, Paused, "pause", p.rt.Pause)
}

// Resume thaws a Paused container.
func (p *Init) Resume(ctx context.Context) error {
	return p.freeze(ctx, Paused, Running, "resume", p.rt.Resume)
}

func (p *Init) freeze(ctx context.Context, from, to State, op string, call func(context.Context, string) error) error {
	return p.runtimeOp(op, func(s State) error {
		if s != from {
			return fmt.Errorf("cannot %s a %s process: %w", op, s, ErrInvalidState)
		}
		return nil
	}, func() error {
		if err := call(ctx, p.id); err != nil {
			return err
		}
		// Still counted as in flight: a Delete waits for what follows, so
		// it never meets a cgroup frozen after the init died.
		p.mu.Lock()
		if p.state == from {
			defer p.mu.Unlock()
			return move(&p.state, to)
		}
		// It exited meanwhile: the exit wins. A pause that froze the cgroup
		// after the watcher stopped the init is undone, as the watcher would
		// have done had it seen Paused.
		frozen := to == Paused && p.state == Stopped
		p.mu.Unlock()
		if frozen {
			p.resumeFrozen()
		}
		return nil
	})
}

// Update changes the container's resources (LinuxResources JSON).
func (p *Init) Update(ctx context.Context, resources []byte) error {
	return p.runtimeOp("update", func(State) error { return nil },
		func() error { return p.rt.Update(ctx, p.id, resources) })
}
