package stdio

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// output is the shim's write end of one output FIFO (stdout or stderr) and
// its policy for when nobody reads it.
//
// While a reader holds the FIFO open (containerd, ctr, the CRI plugin),
// nothing is dropped: a reader that is slow slows the process, as a pipe
// does. While no reader holds it (containerd is down or restarting, or the
// ctr that started the container has exited), writing to it fails with
// EPIPE; the shim then keeps reading the process's pipe and throws the data
// away, counting the bytes, so the process never blocks and never sees
// EPIPE. The FIFO itself keeps what it held when its last reader left (at
// most its pipe buffer, 64 KiB by default), and the next reader reads that
// first. The shim buffers nothing of its own: the policy costs no memory.
// A stretch of discarding is logged when it begins, and with its byte count
// when a reader is back or the stream ends.
//
// The shim holds the FIFO write-only on purpose: a read end of its own would
// hide the reader's absence (the FIFO would just fill up, and the process
// would block until a reader came back).
type output struct {
	f    *os.File // O_WRONLY|O_NONBLOCK; closed by the copier at EOF, or by Pipes.Close
	fd   int
	name string // "stdout" or "stderr", for the log
	log  *slog.Logger
	exec string // the exec's id, or "" for the init

	dropping bool  // owned by the copier
	stretch  int64 // bytes discarded in this stretch; owned by the copier
	total    atomic.Int64
}

// openOutputFIFO opens an output FIFO write-only and non-blocking (a full
// FIFO parks the copier in Go's poller, not on an OS thread). If nobody has
// it open for reading yet, opening for writing fails (fifo(7)); the shim
// then opens it read-write for a moment to obtain a write-only descriptor
// with no reader behind it, and discards output until a reader comes.
func openOutputFIFO(uri, name string, cfg Config) (*output, error) {
	path, err := fifoPath(uri)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ENXIO) {
		f, err = openWriteOnlyWithoutReader(path)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s fifo: %w", name, err)
	}
	o := &output{f: f, name: name, log: cfg.Log, exec: cfg.ExecID}
	rc, err := f.SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) { o.fd = int(fd) })
	}
	if err != nil {
		_ = f.Close() // nothing written yet
		return nil, fmt.Errorf("open %s fifo: %w", name, err)
	}
	return o, nil
}

// openWriteOnlyWithoutReader opens path read-write, which never blocks and
// makes the shim a reader for a moment, reopens that open file write-only
// through /proc/self/fd, and closes the read-write one.
func openWriteOnlyWithoutReader(path string) (*os.File, error) {
	rw, err := os.OpenFile(path, os.O_RDWR|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rw.Close() }() // the temporary reader; nothing buffered of ours
	return os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(rw.Fd())), os.O_WRONLY|unix.O_NONBLOCK, 0)
}

// readerGone reports whether no process holds the FIFO open for reading: a
// pipe's write end polls POLLERR then (pipe_poll).
func readerGone(fd int) bool { return pollOut(fd)&unix.POLLERR != 0 }

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
	n, err := o.f.Write(b)
	if errors.Is(err, unix.EPIPE) {
		o.startDropping()
		o.discarded(len(b) - n)
		return nil
	}
	return err
}

// discard reads src and throws the data away while the FIFO has no reader.
// It returns true once a reader is back (src's unread data then goes to the
// FIFO), false at EOF of src or when src is closed.
func (o *output) discard(src *os.File) bool {
	rc, err := src.SyscallConn()
	if err != nil {
		return false
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
		return true
	}
	return false
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
