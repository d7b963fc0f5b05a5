package stdio

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
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
// first, reports nothing), through the process's one inotify instance
// (readerWatch), which exists only while some FIFO waits and waits in Go's
// poller: no OS thread. The grace is a timer only while the shim holds a
// FIFO.

// DefaultReaderGrace is how long a process's output is held for the first
// reader of its FIFO (see Config.ReaderGrace).
const DefaultReaderGrace = 30 * time.Second

// openOutputFIFO opens an output FIFO write-only and non-blocking (a full
// FIFO parks the copier in Go's poller, not on an OS thread). If a reader
// has it open already, that is the reader seen. If not, opening for writing
// fails (fifo(7)): the shim then opens its own read end first (the hold),
// which makes the write-only open succeed, and waits for the client's.
func openOutputFIFO(uri, name string, cfg Config) (_ *output, retErr error) {
	path, err := fifoPath(uri)
	if err != nil {
		return nil, err
	}
	o := &output{name: name, log: cfg.Log, exec: cfg.ExecID, hold: -1}
	o.f, err = os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK, 0)
	o.seen = err == nil
	hold := -1
	if errors.Is(err, unix.ENXIO) {
		if hold, err = openHold(path); err == nil {
			o.f, err = os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK, 0)
		}
	}
	if err != nil {
		if hold >= 0 {
			_ = unix.Close(hold) // read-only
		}
		return nil, fmt.Errorf("open %s fifo: %w", name, err)
	}
	defer func() {
		if retErr != nil {
			o.close()
		}
	}()
	if o.fd, err = fdOf(o.f); err != nil {
		return nil, fmt.Errorf("open %s fifo: %w", name, err)
	}
	if hold >= 0 {
		o.awaitReader(hold, cfg.readerGrace())
	}
	return o, nil
}

// openHold opens a read end of the FIFO at path for the shim to hold. It is
// never read, so it is a bare fd: not on Go's poller, no *os.File.
func openHold(path string) (int, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// awaitReader keeps hold (the shim's read end) until a client's reader
// opens the FIFO, for grace at most.
func (o *output) awaitReader(hold int, grace time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.hold = hold
	if err := o.watchLocked(); err != nil && o.log != nil {
		// No news of readers: hold for the grace all the same.
		o.log.Warn("cannot watch output fifo for its reader", append(o.attrs(), "error", err)...)
	}
	o.grace = time.AfterFunc(grace, o.graceEnded)
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
// while o.f is open. Its IN_OPEN is counted, for wake to pass over.
func (o *output) holdLocked() error {
	h, err := openHold("/proc/self/fd/" + strconv.Itoa(o.fd))
	if err != nil {
		return err
	}
	o.hold = h
	if o.watching {
		o.ownOpens++
	}
	return nil
}

// dropHoldLocked closes the shim's read end: from now on the reader count
// the kernel keeps is the clients' alone, and every IN_OPEN is a client's.
func (o *output) dropHoldLocked() {
	if o.hold >= 0 {
		_ = unix.Close(o.hold) // read-only, never read
		o.hold = -1
	}
	o.ownOpens = 0
}

// stopGraceLocked stops the grace timer.
func (o *output) stopGraceLocked() {
	if o.grace != nil {
		o.grace.Stop()
		o.grace = nil
	}
}

// watchLocked registers o for news of readers' opens. After it returns, any
// reader that opens the FIFO wakes o; the caller checks for one that came
// before.
func (o *output) watchLocked() error {
	if o.watching {
		return nil
	}
	wd, err := readers.add(o)
	if err != nil {
		return err
	}
	o.wd, o.watching = wd, true
	return nil
}

// stopWatchLocked ends the watch.
func (o *output) stopWatchLocked() {
	if o.watching {
		readers.remove(o, o.wd)
		o.watching = false
	}
}

// wake handles an open of the FIFO (readerWatch calls it).
func (o *output) wake() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed || !o.watching {
		return
	}
	if o.hold >= 0 {
		if o.ownOpens > 0 {
			// The shim's own re-hold. (inotify merges an identical event
			// still unread, so a client's open may hide in it: then the
			// reader is seen when the grace or the stream ends instead.)
			o.ownOpens--
			return
		}
		o.dropHoldLocked()
		if readerGone(o.fd) {
			// Not a reader, or one gone already: hold again (a write
			// that met EPIPE meanwhile retries: reheld).
			if o.holdLocked() != nil {
				o.graceOver = true
			}
			return
		}
	}
	if readerGone(o.fd) {
		return // not a reader: wait on
	}
	o.readerSeenLocked()
}

// readerSeenLocked: a client holds the FIFO open. The hold and the watch
// end; an ended stream closes its write end, and the reader gets what the
// FIFO holds, then EOF.
func (o *output) readerSeenLocked() {
	o.seen = true
	o.stopGraceLocked()
	o.dropHoldLocked()
	o.stopWatchLocked()
	if o.ended {
		o.closeWriteLocked()
	}
}

// graceEnded lets go of the hold when no reader came within ReaderGrace:
// the copier's daemon-down policy takes over, and what the FIFO holds is
// kept for a reader.
func (o *output) graceEnded() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed || o.grace == nil {
		return
	}
	o.grace = nil
	o.graceOver = true
	o.dropHoldLocked()
	if !readerGone(o.fd) {
		o.readerSeenLocked() // one came whose open went unnoticed
		return
	}
	if !o.ended {
		o.stopWatchLocked() // the copier sees a returning reader by itself
	}
}

// unwatched: the inotify instance failed. Startup is over; Close closes the
// write end if no reader is seen otherwise.
func (o *output) unwatched() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.watching = false
	o.graceOver = true
	o.stopGraceLocked()
	o.dropHoldLocked()
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
	if o.hold >= 0 {
		return true
	}
	if o.seen || o.graceOver {
		return false
	}
	return o.holdLocked() == nil
}

// finish ends the stream: every byte the process wrote is in the FIFO or
// was discarded. Nothing more will be written, so the hold goes (the write
// end alone keeps what the FIFO holds). The write end is closed now if a
// reader holds the FIFO open; otherwise when one opens it, or by Close if
// none does. It never blocks.
func (o *output) finish() {
	o.end()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ended = true
	if o.closed || o.wclosed {
		return
	}
	o.stopGraceLocked()
	o.dropHoldLocked()
	if !readerGone(o.fd) {
		o.readerSeenLocked()
		return
	}
	if o.watchLocked() != nil {
		return // no way to learn of a reader: Close closes the write end
	}
	if !readerGone(o.fd) { // came before the watch
		o.readerSeenLocked()
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

// close closes every file of o and ends its watch. Output still in the FIFO
// is left to a reader that has it open.
func (o *output) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	o.stopGraceLocked()
	o.dropHoldLocked()
	o.stopWatchLocked()
	o.closeWriteLocked()
}
