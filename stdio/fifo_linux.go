package stdio

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// This file opens the FIFOs containerd names and keeps their rendezvous
// rules. fifo(7) is a rendezvous, not a pipe: a non-blocking open for
// writing fails while there is no reader, and a reader's blocking open
// waits until a writer exists. containerd's clients (ctr, the CRI plugin,
// nerdctl) open their read ends in the background, so under load the
// reader may come after the process has written everything and exited.
//
//   - stdin: the shim opens the read end non-blocking (it succeeds with no
//     writer) and holds a write end of its own, so that a client that
//     detaches does not end the process's input; CloseStdin drops it.
//   - Output: how the shim tells "no reader yet" from "the reader left",
//     and when it may close its write end:
//
//   - Startup is not an outage. Until a reader has been seen, the shim
//     holds a read end of its own (hold): the process's output goes into
//     the FIFO and waits there for the client, who reads it first. When the
//     FIFO is full the copier waits, and so, once its own pipe is full too,
//     does the process: at most ReaderGrace. Then the hold goes and the
//     daemon-down policy of output applies; what the FIFO holds is kept
//     for a reader.
//   - The write end is closed only when a reader holds the FIFO open, or
//     by Close (Delete: nobody will read). Closing it earlier would leave a
//     late reader blocked in open(2) for ever, and the FIFO's data with no
//     open file to live in.
//
// A writer's poll does not wake when a reader opens (fifo_open wakes the
// readers' queue only), so a reader's arrival is learnt from inotify
// (IN_OPEN on the FIFO; an O_PATH open, as containerd's fifo package makes
// first, reports nothing). The inotify fd exists only while the shim waits
// for a reader, and it waits in Go's poller: no OS thread, no timer.

// DefaultReaderGrace is how long a process's output is held for the first
// reader of its FIFO (see Config.ReaderGrace).
const DefaultReaderGrace = 30 * time.Second

// openOutputFIFO opens an output FIFO write-only and non-blocking (a full
// FIFO parks the copier in Go's poller, not on an OS thread). If a reader
// has it open already, that is the reader seen. If not, opening for writing
// fails (fifo(7)): the shim then opens its own read end first (the hold),
// which makes the write-only open succeed, and waits for the client's.
func openOutputFIFO(uri, name string, cfg Config, watchers *sync.WaitGroup) (_ *output, retErr error) {
	path, err := fifoPath(uri)
	if err != nil {
		return nil, err
	}
	o := &output{name: name, log: cfg.Log, exec: cfg.ExecID, watchers: watchers}
	o.f, err = os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK, 0)
	o.seen = err == nil
	var hold *os.File
	if errors.Is(err, unix.ENXIO) {
		if hold, err = os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0); err == nil {
			o.f, err = os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK, 0)
		}
	}
	if err != nil {
		if hold != nil {
			_ = hold.Close() // read-only
		}
		return nil, fmt.Errorf("open %s fifo: %w", name, err)
	}
	defer func() {
		if retErr != nil {
			o.close()
		}
	}()
	rc, err := o.f.SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) { o.fd = int(fd) })
	}
	if err != nil {
		return nil, fmt.Errorf("open %s fifo: %w", name, err)
	}
	if hold != nil {
		o.awaitReader(hold, cfg.readerGrace())
	}
	return o, nil
}

// awaitReader keeps hold (the shim's read end) until a client's reader
// opens the FIFO, or for grace at most.
func (o *output) awaitReader(hold *os.File, grace time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.hold = hold
	if err := o.watchLocked(); err != nil {
		// No inotify: hold for the grace all the same, then let go.
		if o.log != nil {
			o.log.Warn("cannot watch output fifo for its reader", append(o.attrs(), "error", err)...)
		}
		o.graceOver = true
		time.AfterFunc(grace, func() {
			o.mu.Lock()
			o.dropHoldLocked()
			o.mu.Unlock()
		})
		return
	}
	_ = o.watch.SetReadDeadline(time.Now().Add(grace))
}

// openStdinFIFO opens the stdin FIFO for reading and, as the pipe path does,
// for writing too: the shim's hold, dropped by CloseStdin (fifo(7)).
func openStdinFIFO(uri string) (src, hold *os.File, err error) {
	path, err := fifoPath(uri)
	if err != nil {
		return nil, nil, err
	}
	if src, err = os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0); err != nil {
		return nil, nil, fmt.Errorf("open stdin fifo: %w", err)
	}
	if hold, err = os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK, 0); err != nil {
		_ = src.Close() // read-only, nothing to flush
		return nil, nil, fmt.Errorf("open stdin fifo for writing: %w", err)
	}
	return src, hold, nil
}

// fifoPath accepts a plain path or a fifo:// URI.
func fifoPath(s string) (string, error) {
	if !strings.Contains(s, "://") {
		return s, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("stdio uri %q: %w: %w", s, err, ErrInvalidURI)
	}
	if u.Scheme != "fifo" {
		return "", fmt.Errorf("stdio uri %q: scheme %q: %w", s, u.Scheme, errors.ErrUnsupported)
	}
	return u.Path, nil
}

// readerGone reports whether no process holds the FIFO open for reading: a
// pipe's write end polls POLLERR then (pipe_poll).
func readerGone(fd int) bool { return pollOut(fd)&unix.POLLERR != 0 }

// holdLocked opens the shim's own read end, so writes to o.f land in the
// FIFO while no client reads. The open is non-blocking and always succeeds
// while o.f is open; the IN_OPEN it causes is read away at once, so the
// watcher is not woken by the shim itself.
func (o *output) holdLocked() error {
	h, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(o.fd), os.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	o.hold = h
	o.skipOwnEventsLocked()
	return nil
}

// dropHoldLocked closes the shim's read end: from now on the reader count
// the kernel keeps is the clients' alone.
func (o *output) dropHoldLocked() {
	if o.hold != nil {
		_ = o.hold.Close() // read-only, never read
		o.hold = nil
	}
}

// watchLocked makes the inotify watch for readers' opens, if there is none,
// and starts the watcher. After it returns, any reader that opens the FIFO
// wakes the watcher; one that came before is seen by the caller's check.
func (o *output) watchLocked() error {
	if o.watch == nil {
		fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
		if err != nil {
			return err
		}
		// By fd, not by path: the client may have renamed or removed it.
		if _, err := unix.InotifyAddWatch(fd, "/proc/self/fd/"+strconv.Itoa(o.fd), unix.IN_OPEN); err != nil {
			_ = unix.Close(fd)
			return err
		}
		o.watch = os.NewFile(uintptr(fd), "inotify") // non-blocking: on Go's poller
	}
	if !o.watching {
		o.watching = true
		o.watchers.Add(1)
		go o.watchReaders(o.watch) // ends when its work is done or close closes watch; Pipes.Close waits
	}
	return nil
}

// skipOwnEventsLocked reads away the events queued so far (the shim's own
// opens queue theirs synchronously, before open returns).
func (o *output) skipOwnEventsLocked() {
	if o.watch == nil {
		return
	}
	rc, err := o.watch.SyscallConn()
	if err != nil {
		return
	}
	var buf [256]byte
	_ = rc.Control(func(fd uintptr) {
		for {
			if n, err := unix.Read(int(fd), buf[:]); n <= 0 || err != nil {
				return
			}
		}
	})
}

// watchReaders waits in the poller for opens of the FIFO (and for the end
// of ReaderGrace while the shim holds it), and acts on each through wake.
func (o *output) watchReaders(w *os.File) {
	defer o.watchers.Done()
	var buf [256]byte
	for {
		_, err := w.Read(buf[:])
		if o.wake(err) {
			return
		}
	}
}

// wake handles one wake-up of the watcher: err is nil for an open of the
// FIFO, os.ErrDeadlineExceeded when ReaderGrace ended, anything else when
// the watch failed or was closed. It reports whether the watcher is done.
func (o *output) wake(err error) (done bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.closed:
		return true
	case errors.Is(err, os.ErrDeadlineExceeded):
		o.graceOver = true
		_ = o.watch.SetReadDeadline(time.Time{}) // from now on: wait for a reader, without end
	case err != nil:
		// No more news of readers: treat startup as over; Close ends it all.
		o.graceOver = true
		o.dropHoldLocked()
		o.stopWatchLocked()
		return true
	}
	if o.hold != nil {
		o.dropHoldLocked()
		if readerGone(o.fd) && !o.graceOver {
			// The open was not a reader, or one that has left already:
			// hold again (a write that met EPIPE meanwhile retries: reheld).
			if o.holdLocked() != nil {
				o.graceOver = true
			}
			return false
		}
	}
	if !readerGone(o.fd) {
		o.seen = true
		if o.ended {
			o.closeWriteLocked() // the reader gets what the FIFO holds, then EOF
			o.stopWatchLocked()
			return true
		}
	}
	if !o.ended {
		// A reader is there, or the grace is over: the copier's own policy
		// takes it from here, and finish watches again if it must.
		o.stopWatchLocked()
		return true
	}
	return false
}

// stopWatchLocked closes the inotify fd; the watcher, which calls it, then
// returns.
func (o *output) stopWatchLocked() {
	if o.watch != nil {
		_ = o.watch.Close() // read-only
		o.watch = nil
	}
	o.watching = false
}

// reheld reports whether a write that failed with EPIPE should be tried
// again because no reader has been seen yet: the shim holds the FIFO again
// (or already does), so the write lands in it instead of being discarded.
func (o *output) reheld() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false
	}
	if o.hold != nil {
		return true
	}
	if o.seen || o.graceOver {
		return false
	}
	return o.holdLocked() == nil
}

// finish ends the stream: every byte the process wrote is in the FIFO or
// was discarded. It closes the write end now if a reader holds the FIFO
// open; otherwise the watcher closes it when one comes, and Close if none
// does. It never blocks.
func (o *output) finish() {
	o.end()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ended = true
	if o.closed || o.wclosed || o.hold != nil {
		return // a watcher runs while the shim holds the FIFO
	}
	if !readerGone(o.fd) {
		o.closeWriteLocked()
		return
	}
	if err := o.watchLocked(); err != nil {
		return // no way to learn of a reader: Close closes the write end
	}
	if !readerGone(o.fd) { // came before the watch
		o.closeWriteLocked()
	}
}

// closeWriteLocked closes the write end: a reader reads what the FIFO
// holds, then EOF.
func (o *output) closeWriteLocked() {
	if !o.wclosed {
		_ = o.f.Close() // a FIFO: nothing to flush
		o.wclosed = true
	}
}

// close closes every file of o and stops its watcher (Pipes.Close waits for
// it). Output still in the FIFO is left to a reader that has it open.
func (o *output) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	o.dropHoldLocked()
	o.closeWriteLocked()
	if o.watch != nil {
		_ = o.watch.Close() // wakes the watcher with os.ErrClosed
		o.watch = nil
	}
}
