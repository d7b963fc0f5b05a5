package stdio

import (
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// copyIn copies the stdin FIFO to the master. At EOF on the FIFO (the client
// closed it after CloseStdin) it types the terminal's EOF and stops.
func (c *console) copyIn() {
	defer c.copiers.Done()
	buf := getBuf()
	defer putBuf(buf)
	for {
		n, err := c.in.Read(*buf)
		if n > 0 {
			if _, werr := c.master.Write((*buf)[:n]); werr != nil {
				break // EIO: no process holds the terminal any more; or close
			}
		}
		if errors.Is(err, io.EOF) {
			c.sendEOF()
		}
		if err != nil {
			break
		}
	}
	_ = c.in.Close() // read-only
}

// sendEOF types VEOF (^D unless the process changed it), as a user ends
// input at a terminal: a canonical-mode reader gets EOF, a line editor
// (readline, busybox) takes it as end of input. The input side of a pty
// cannot be closed alone: closing the master would hang up the terminal.
// TCGETS on a master reads the slave's termios (tty_mode_ioctl).
func (c *console) sendEOF() {
	rc, err := c.master.SyscallConn()
	if err != nil {
		return
	}
	var t *unix.Termios
	if rc.Control(func(fd uintptr) { t, err = unix.IoctlGetTermios(int(fd), unix.TCGETS) }) != nil || err != nil {
		return
	}
	if eof := t.Cc[unix.VEOF]; eof != 0 { // 0 is _POSIX_VDISABLE
		_, _ = c.master.Write([]byte{eof})
	}
}

// copyOut copies the master to the stdout FIFO until the process has exited
// and the pty holds nothing more, then closes the FIFO: the client reads EOF.
// While the FIFO has no reader the output is discarded (see output).
// EIO from the master (no process holds the slave) does not end it: another
// process may open the slave again (the container's /dev/console), as
// containerd's EpollConsole also assumes. The exit does. If the FIFO fails
// otherwise it keeps reading, so the process never blocks on a dead client.
func (c *console) copyOut(p *Pipes) {
	defer p.copierDone()
	defer c.copiers.Done()
	buf := getBuf()
	defer putBuf(buf)
	var werr error
	write := func(b []byte) {
		if werr == nil && c.out != nil {
			werr = c.out.Write(b)
		}
	}
	if err := c.copyMaster(*buf, write); errors.Is(err, os.ErrDeadlineExceeded) {
		c.drain(*buf, write)
	}
	if c.out != nil {
		c.out.finish() // the client (or logger) reads EOF once it has the FIFO open
	}
}

// copyMaster reads the master until ProcessExited's deadline
// (os.ErrDeadlineExceeded), close, or an unexpected error.
func (c *console) copyMaster(buf []byte, write func([]byte)) error {
	rc, err := c.master.SyscallConn()
	if err != nil {
		return err
	}
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, rerr = readRetry(int(fd), buf)
			return rerr != unix.EAGAIN && rerr != unix.EIO // else wait in the poller
		})
		if n > 0 {
			write(buf[:n])
		}
		if err != nil {
			return err
		}
		if rerr != nil {
			return rerr
		}
	}
}

// drain copies what the pty still holds without waiting for more. Before a
// read of the master reports EAGAIN or EIO the kernel pushes the pty's
// pending buffers to it (n_tty_read, tty_buffer_flush_work), so everything
// the exited process wrote is read.
func (c *console) drain(buf []byte, write func([]byte)) {
	rc, err := c.master.SyscallConn()
	if err != nil {
		return
	}
	for {
		var n int
		if rc.Control(func(fd uintptr) { n, _ = readRetry(int(fd), buf) }) != nil || n <= 0 {
			return
		}
		write(buf[:n])
	}
}

func readRetry(fd int, buf []byte) (int, error) {
	for {
		n, err := unix.Read(fd, buf)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// sink is where a terminal's output goes: an output FIFO (*output, with its
// reader policy) or a logging program's stdout pipe (pipeSink).
type sink interface {
	// Write writes b, blocking while the sink is full; an error ends the
	// writing, not the reading of the terminal.
	Write(b []byte) error
	// finish ends the output: the reader gets EOF.
	finish()
	// close closes the sink's files.
	close()
}

// pipeSink is a binary:// logger's stdout pipe. The logger reads it until
// EOF; if it dies, writes fail with EPIPE and the copier drains the terminal.
type pipeSink struct{ f *os.File }

func (s pipeSink) Write(b []byte) error {
	_, err := s.f.Write(b)
	return err
}

func (s pipeSink) finish() { _ = s.f.Close() } // the logger reads EOF
func (s pipeSink) close()  { _ = s.f.Close() } // either may close first
