package cgroup

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// OOMWatcher reports the out-of-memory events of many containers' cgroups to
// one callback. Each watched cgroup owns one non-blocking fd (v1: an eventfd,
// v2: an inotify instance), all in one epoll instance; Run waits on that
// epoll fd through Go's poller, so a shim has one watcher goroutine and no
// thread blocked in epoll_wait, however many containers it serves.
//
// onOOM (given to NewOOMWatcher) is called with the container id once per
// notification batch: from Run's goroutine, or from the goroutine calling
// Remove (its last check). It must not block and must not call the
// watcher's methods; queueing an event is what it is for. All of a
// container's calls have returned when Remove returns, so the caller can
// publish TaskOOM before TaskExit by calling Remove first.
type OOMWatcher struct {
	onOOM func(id string)
	epfd  int      // the epoll instance, owned by ep
	ep    *os.File // epfd, non-blocking: registered with Go's poller

	mu      sync.Mutex // guards watches, byFD, closed
	watches map[string]*watch
	byFD    map[int32]*watch
	closed  bool
}

// watch is one watched cgroup.
type watch struct {
	id   string
	v    Version
	dir  string         // the memory cgroup directory
	fd   int            // eventfd (V1) or inotify instance (V2); closed by Remove or Close
	busy sync.WaitGroup // a check of this watch on Run's goroutine; Remove and Close wait for it
	// seen is the oom_kill count already reported (V2). Only the one check in
	// progress touches it: Run's (between busy.Add and Done) or Remove's
	// (after busy.Wait).
	seen uint64
}

// NewOOMWatcher returns a watcher that calls onOOM. The caller runs Run and
// calls Close when done.
func NewOOMWatcher(onOOM func(id string)) (*OOMWatcher, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	// An epoll fd is itself pollable (epoll(7): "the epoll file descriptor
	// itself can be ... added to another epoll set"), so with O_NONBLOCK
	// os.NewFile registers it with Go's poller and Run parks a goroutine, not
	// a thread, while it waits.
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("epoll fd non-blocking: %w", err)
	}
	ep := os.NewFile(uintptr(epfd), "oom-epoll")
	if err := ep.SetReadDeadline(time.Time{}); err != nil { // fails if not pollable
		_ = ep.Close()
		return nil, fmt.Errorf("epoll fd not pollable: %w", err)
	}
	return &OOMWatcher{onOOM: onOOM, epfd: epfd, ep: ep, watches: make(map[string]*watch), byFD: make(map[int32]*watch)}, nil
}

// Add starts watching cg's memory controller for container id. OOMs that
// happened before Add are not reported. Adding an id twice is an error.
func (w *OOMWatcher) Add(id string, cg *Cgroup) (retErr error) {
	x := &watch{id: id, v: cg.version, dir: cg.memoryDir(), fd: -1}
	if x.dir == "" {
		return fmt.Errorf("watch oom of %s: %w", id, ErrNoMemory)
	}
	var err error
	switch x.v {
	case V1:
		x.fd, err = registerV1(x.dir)
	case V2:
		x.fd, x.seen, err = registerV2(x.dir)
	default:
		err = ErrNoCgroups
	}
	if err != nil {
		return fmt.Errorf("watch oom of %s in %s: %w", id, x.dir, err)
	}
	defer func() {
		if retErr != nil {
			_ = unix.Close(x.fd)
		}
	}()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	if _, dup := w.watches[id]; dup {
		return fmt.Errorf("watch oom of %s: already watched", id)
	}
	// Registered under mu, with the maps, so Run never sees an fd it cannot
	// look up (a level-triggered fd it skipped would spin).
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(x.fd)}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, x.fd, &ev); err != nil {
		return fmt.Errorf("watch oom of %s: epoll_ctl: %w", id, err)
	}
	w.watches[id] = x
	w.byFD[int32(x.fd)] = x
	return nil
}

// Remove stops watching id and makes a last check: an OOM that happened
// since the last report (for instance the kill that ended the container) is
// reported through onOOM, on the caller's goroutine, before Remove returns;
// so is any report Run was making for id. Removing an unknown id does
// nothing.
func (w *OOMWatcher) Remove(id string) {
	w.mu.Lock()
	x := w.watches[id]
	if x != nil {
		delete(w.watches, id)
		delete(w.byFD, int32(x.fd))
		_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, x.fd, nil) // closing x.fd below would drop it too
	}
	w.mu.Unlock()
	if x == nil {
		return
	}
	x.busy.Wait() // Run's check of x, callback included, is over; none will start
	if x.check() {
		w.onOOM(id)
	}
	_ = unix.Close(x.fd)
}

// Run reports OOMs until ctx ends (it returns ctx's error) or Close is
// called (it returns nil). The caller owns the goroutine and runs Run once.
func (w *OOMWatcher) Run(ctx context.Context) error {
	if w.isClosed() {
		return nil
	}
	rc, err := w.ep.SyscallConn()
	if err != nil {
		return err
	}
	// Wake the parked Read when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = w.ep.SetReadDeadline(time.Now()) })
	defer stop()
	events := make([]unix.EpollEvent, 32)
	for {
		var n int
		var werr error
		err := rc.Read(func(fd uintptr) bool {
			n, werr = epollNow(int(fd), events)
			return n > 0 || werr != nil // false: park until the epoll fd is readable
		})
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case w.isClosed():
			return nil
		case err != nil:
			return fmt.Errorf("oom watcher: %w", err)
		case werr != nil:
			return fmt.Errorf("oom watcher: epoll_wait: %w", werr)
		}
		for _, ev := range events[:n] {
			w.dispatch(ev.Fd)
		}
	}
}

// epollNow returns the ready events without waiting.
func epollNow(epfd int, events []unix.EpollEvent) (int, error) {
	for {
		n, err := unix.EpollWait(epfd, events, 0)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// dispatch checks the watch of a ready fd and reports an OOM.
func (w *OOMWatcher) dispatch(fd int32) {
	w.mu.Lock()
	x := w.byFD[fd]
	if x != nil {
		x.busy.Add(1) // before Remove's Wait: Remove deletes x under mu first
	}
	w.mu.Unlock()
	if x == nil {
		return // removed since epoll_wait
	}
	defer x.busy.Done()
	if x.check() {
		w.onOOM(x.id)
	}
}

func (w *OOMWatcher) isClosed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed
}

// Close stops Run and releases every fd without reporting anything more.
// Add fails afterwards; Remove does nothing.
func (w *OOMWatcher) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	left := w.watches
	w.watches, w.byFD = nil, nil
	w.mu.Unlock()
	for _, x := range left {
		x.busy.Wait()
		_ = unix.Close(x.fd)
	}
	return w.ep.Close() // wakes a parked Run
}

// check consumes x's pending notification and reports whether it is an OOM.
func (x *watch) check() bool {
	if x.v == V1 {
		return checkV1(x.fd, x.dir)
	}
	var seen bool
	x.seen, seen = checkV2(x.fd, x.dir, x.seen)
	return seen
}
