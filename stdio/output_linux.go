package stdio

import (
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// output is the shim's write end of one output FIFO (stdout or stderr, or a
// terminal's output) and its policy from the process's first byte to its
// Delete.
//
// Before a reader has been seen, "no reader" means "not yet": the shim
// holds the FIFO itself and keeps the output in it for the client (see
// reader_linux.go, which also says when the write end may be closed).
//
// Once a reader has been seen, "no reader" means it left (containerd is
// down or restarting, or the ctr that started the container has exited).
// While a reader holds the FIFO open nothing is dropped: a reader that is
// slow slows the process, as a pipe does. While none does, writing fails
// with EPIPE; the shim then keeps reading the process's pipe and throws the
// data away, counting the bytes, so the process never blocks and never sees
// EPIPE. The FIFO itself keeps what it held when its last reader left (at
// most its pipe buffer, 64 KiB by default), and the next reader reads that
// first. The shim buffers nothing of its own: the policy costs no memory.
// A stretch of discarding is logged when it begins, and with its byte count
// when a reader is back or the stream ends.
//
// The shim holds no read end once a reader has been seen, on purpose: it
// would hide the reader's absence (the FIFO would just fill up, and the
// process would block until a reader came back).
type output struct {
	f    *os.File // O_WRONLY|O_NONBLOCK; closed by finish (once a reader has it) or close
	fd   int
	name string // "stdout" or "stderr", for the log
	log  *slog.Logger
	exec string // the exec's id, or "" for the init

	dropping bool  // owned by the copier
	stretch  int64 // bytes discarded in this stretch; owned by the copier
	total    atomic.Int64

	mu        sync.Mutex  // guards the fields below
	hold      int         // the shim's own read end (-1: none) until a reader is seen, the grace ends or the stream ends
	ownOpens  int         // IN_OPEN events of the shim's own re-holds, not yet seen by wake
	grace     *time.Timer // ends the hold after ReaderGrace; nil once stopped
	watching  bool        // registered with readers (the inotify watch), as wd
	wd        int32
	seen      bool // a reader has held the FIFO open: "no reader" now means it left
	graceOver bool // ReaderGrace passed without a reader: hold no more
	ended     bool // the stream ended: close f as soon as a reader holds the FIFO
	wclosed   bool // f is closed
	closed    bool // close was called
}

// Write writes b for a copier that reads into a buffer (a terminal's
// output, or the copying fallback). It blocks while a reader is there and
// the FIFO is full; without a reader it discards b. It returns an error only
// when the FIFO cannot be written for another reason (then the copier just
// drains).
func (o *output) Write(b []byte) error {
	if o.dropping {
		if readerGone(o.fd) {
			o.discarded(len(b))
			return nil
		}
		o.resume()
	}
	for {
		n, err := o.f.Write(b)
		if !errors.Is(err, unix.EPIPE) {
			return err
		}
		b = b[n:]
		if o.reheld() {
			continue // no reader seen yet: the FIFO keeps it
		}
		o.startDropping()
		o.discarded(len(b))
		return nil
	}
}

// copyFrom moves src (the process's pipe) to the FIFO until src reaches EOF
// or is closed, or the process's exit ends the wait for more
// (os.ErrDeadlineExceeded: see Pipes.ProcessExited and drainExited). It
// splices (no user-space buffer) and copies through a buffer where the
// kernel refuses splice. While the FIFO has no reader it discards, so the
// process never blocks on a reader that is gone.
func (o *output) copyFrom(src *os.File) error {
	for {
		_, handled, err := spliceCopy(o.f, src)
		switch {
		case !handled:
			return bufferedCopy(o, src)
		case errors.Is(err, unix.EPIPE):
			if o.reheld() {
				continue // no reader seen yet: the FIFO keeps it
			}
			o.startDropping()
			resumed, err := o.discard(src)
			if resumed {
				continue
			}
			return err
		case err != nil && !errors.Is(err, os.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded):
			return bufferedCopy(o, src) // an unexpected splice error: keep the process's pipe flowing
		}
		return err
	}
}

// discard reads src and throws the data away while the FIFO has no reader.
// It returns true once a reader is back (src's unread data then goes to the
// FIFO), false at EOF of src, when src is closed, or when the process's
// exit ends the wait (the error says which).
func (o *output) discard(src *os.File) (bool, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return false, err
	}
	var resume, end bool
	rerr := rc.Read(func(sfd uintptr) bool {
		for {
			if !readerGone(o.fd) {
				resume = true
				return true
			}
			n, err := discardAvailable(int(sfd))
			switch {
			case errors.Is(err, unix.EAGAIN):
				return false // empty: wait in the poller
			case err != nil || n == 0:
				end = true // EOF: every writer of src is gone
				return true
			}
			o.discarded(n)
		}
	})
	if resume && rerr == nil && !end {
		o.resume()
		return true, nil
	}
	return false, rerr
}

// drainExited moves what src holds once the process has exited, without
// waiting for EOF: a child the process left behind may hold src open for
// ever, and whatever the process itself wrote is in src already (a write
// has returned before its writer can exit). It waits only for room in the
// FIFO, as a reader drains it.
func (o *output) drainExited(src *os.File) {
	sfd, err := fdOf(src)
	if err != nil {
		return
	}
	dstRC, err := o.f.SyscallConn()
	if err != nil {
		return
	}
	for {
		if o.dropping && readerGone(o.fd) {
			n, err := discardAvailable(sfd)
			if n <= 0 || err != nil {
				return // empty, or EOF
			}
			o.discarded(n)
			continue
		}
		o.resume()
		n, err := splice(sfd, o.fd)
		switch {
		case errors.Is(err, errDstFull):
			// Until the reader makes room, or leaves (POLLERR).
			if dstRC.Write(func(uintptr) bool { return writable(o.fd) || readerGone(o.fd) }) != nil {
				return
			}
		case errors.Is(err, unix.EPIPE):
			if !o.reheld() {
				o.startDropping()
			}
		case errors.Is(err, unix.EINVAL):
			o.drainBuffered(sfd)
			return
		case err != nil || n == 0:
			return // EAGAIN: src is empty, all of it moved; 0: EOF
		}
	}
}

// drainBuffered is drainExited's copy through a buffer, where the kernel
// refuses splice.
func (o *output) drainBuffered(sfd int) {
	buf := getBuf()
	defer putBuf(buf)
	for {
		n, err := readRetry(sfd, *buf)
		if n <= 0 || err != nil {
			return
		}
		if o.Write((*buf)[:n]) != nil {
			return
		}
	}
}

// discardAvailable throws away what src holds without blocking: spliced to
// /dev/null (no copy), or read into a buffer where that is refused.
func discardAvailable(sfd int) (int, error) {
	if null, err := devNull(); err == nil {
		for {
			n, err := unix.Splice(sfd, nil, null, nil, maxSplice, unix.SPLICE_F_NONBLOCK)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if !errors.Is(err, unix.EINVAL) {
				return int(n), err
			}
			break
		}
	}
	buf := getBuf()
	defer putBuf(buf)
	return readRetry(sfd, *buf)
}

// devNull is /dev/null opened once for the life of the shim, for discarding.
var devNull = sync.OnceValues(func() (int, error) {
	return unix.Open("/dev/null", unix.O_WRONLY|unix.O_CLOEXEC, 0)
})

func (o *output) startDropping() {
	if o.dropping {
		return
	}
	o.dropping, o.stretch = true, 0
	if o.log != nil {
		o.log.Warn("output fifo has no reader: discarding output until one opens it", o.attrs()...)
	}
}

func (o *output) resume() {
	if !o.dropping {
		return
	}
	o.dropping = false
	if o.log != nil {
		o.log.Info("output fifo has a reader again", append(o.attrs(), "discarded_bytes", o.stretch)...)
	}
}

// end logs a stretch of discarding that lasted until the stream's end.
func (o *output) end() {
	if o.dropping && o.log != nil {
		o.log.Info("output ended while its fifo had no reader", append(o.attrs(), "discarded_bytes", o.stretch)...)
	}
	o.dropping = false
}

func (o *output) discarded(n int) {
	if n <= 0 {
		return
	}
	o.stretch += int64(n)
	o.total.Add(int64(n))
}

// attrs name the stream in a log line.
func (o *output) attrs() []any {
	if o.exec != "" {
		return []any{"exec", o.exec, "stream", o.name}
	}
	return []any{"stream", o.name}
}
