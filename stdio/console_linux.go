package stdio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// consoleSocketName is the console socket's name inside its private dir.
const consoleSocketName = "pty.sock"

// console is the shim side of a process's terminal. The runtime makes the pty
// inside the container and sends its master over a unix socket (runc's
// --console-socket); the shim then copies stdin FIFO → master and master →
// stdout FIFO. stderr is unused: a terminal has one output.
//
// There is no epoll loop of our own (containerd's console.Epoller): the
// master is put in non-blocking mode and handed to the Go runtime's poller,
// which already waits on every FIFO and socket of the shim. A console costs
// its two copier goroutines, parked there while idle, and no OS thread.
type console struct {
	dir string   // private 0700 dir holding the socket; removed once used or closed
	in  *os.File // read end of the stdin FIFO, or nil; closed by copyIn or close
	out *output  // stdout FIFO, or nil; closed by copyOut or close

	mu      sync.Mutex        // guards the fields below
	l       *net.UnixListener // the console socket until a master is received
	master  *os.File          // the pty master, once received; closed by close
	started bool              // the copiers were started
	exited  bool              // the process has exited: drain, then end the output
	closed  bool

	copiers sync.WaitGroup // copyIn and copyOut; close waits for them
}

// openConsole makes the console socket and opens the FIFOs. The copiers
// start in ReceiveConsole, once the runtime has sent the pty master.
func (p *Pipes) openConsole(cfg Config) (retErr error) {
	c := &console{}
	defer func() {
		if retErr != nil {
			c.closeFiles()
		}
	}()
	if err := c.listen(); err != nil {
		return fmt.Errorf("console socket: %w", err)
	}
	var hold *os.File
	if cfg.Stdin != "" {
		var err error
		if c.in, hold, err = openStdinFIFO(cfg.Stdin); err != nil {
			return err
		}
	}
	if cfg.Stdout != "" {
		var err error
		if c.out, err = openOutputFIFO(cfg.Stdout, "stdout", cfg, &p.watchers); err != nil {
			return err
		}
	}
	p.con, p.stdinHold = c, hold
	p.pending = 1 // copyOut; closeConsole stands in for it if it never runs
	return nil
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

// listen makes a 0700 dir in the temp dir and listens on pty.sock in it. The
// runtime connects from the host's mount namespace, as root.
func (c *console) listen() error {
	base := os.TempDir()
	// sun_path holds 108 bytes; "/leanshim-pty<digits>/pty.sock" takes
	// at most 32 of them.
	if len(base) > 64 {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "leanshim-pty") // mode 0700
	if err != nil {
		return err
	}
	c.dir = dir
	path := filepath.Join(dir, consoleSocketName)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return err
	}
	c.l = l // Close unlinks the socket file (net.ListenUnix's default)
	return nil
}

// ConsoleSocket returns the path to pass as the runtime's --console-socket,
// or "" when the process has no terminal.
func (p *Pipes) ConsoleSocket() string {
	if p.con == nil {
		return ""
	}
	return filepath.Join(p.con.dir, consoleSocketName)
}

// ReceiveConsole takes the pty master the runtime sent to ConsoleSocket and
// starts copying; call it once, after the runtime's create or exec returned
// successfully. It accepts one connection and receives exactly one fd, then
// removes the socket. It blocks until the runtime has connected and sent, or
// ctx ends: a runtime that returned without connecting never will. Without a
// terminal it does nothing.
func (p *Pipes) ReceiveConsole(ctx context.Context) error {
	c := p.con
	if c == nil {
		return nil
	}
	master, err := c.receive(ctx)
	if err != nil {
		return fmt.Errorf("console socket: %w", err)
	}
	return c.start(p, master)
}

func (c *console) receive(ctx context.Context) (*os.File, error) {
	c.mu.Lock()
	l := c.l
	c.l = nil
	c.mu.Unlock()
	if l == nil {
		return nil, fmt.Errorf("receive: %w", os.ErrClosed)
	}
	defer c.removeSocket(l)
	// A deadline in the past wakes Accept or Recvmsg parked in the poller.
	stop := context.AfterFunc(ctx, func() { _ = l.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	conn, err := l.AcceptUnix()
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err() // what set the deadline
		}
		return nil, fmt.Errorf("accept: %w", err)
	}
	defer conn.Close() // the master received is a copy
	stopConn := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stopConn()
	master, err := recvMaster(conn)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("recvmsg: %w", ctx.Err())
	}
	return master, err
}

// recvMaster reads one message carrying exactly one fd (SCM_RIGHTS; the
// payload, the pty's name, is ignored) and returns it as a pollable *os.File.
func recvMaster(conn *net.UnixConn) (*os.File, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*4)) // room to notice a second fd
	var oobn, flags int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			_, oobn, flags, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
			if rerr != unix.EINTR {
				return rerr != unix.EAGAIN
			}
		}
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return nil, fmt.Errorf("recvmsg: %w", err)
	}
	fds := parseRights(oob[:oobn])
	if len(fds) != 1 || flags&unix.MSG_CTRUNC != 0 {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
		return nil, fmt.Errorf("want exactly one fd from the runtime, got %d (flags %#x)", len(fds), flags)
	}
	return masterFile(fds[0])
}

func parseRights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i := range msgs {
		if rights, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			fds = append(fds, rights...)
		}
	}
	return fds
}

// masterFile checks that fd is a terminal and makes it a pollable *os.File.
func masterFile(fd int) (*os.File, error) {
	if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("received fd is not a terminal: %w", err)
	}
	// O_NONBLOCK first: os.NewFile registers a non-blocking fd with the
	// poller, so no read or write on the master ever holds an OS thread.
	// The flag is shared with the runtime's copy, which it has closed.
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("pty master: %w", err)
	}
	f := os.NewFile(uintptr(fd), "pty master")
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		_ = f.Close() // no data written through it yet
		return nil, fmt.Errorf("pty master not pollable: %w", err)
	}
	return f, nil
}

// start records the master and starts the copiers, each owned by c: they end
// at EOF or exit (see copyIn, copyOut) or when close closes their files, and
// close waits for them.
func (c *console) start(p *Pipes, master *os.File) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.started {
		_ = master.Close() // never used
		return fmt.Errorf("console: %w", os.ErrClosed)
	}
	c.master, c.started = master, true
	if c.exited {
		_ = master.SetReadDeadline(time.Unix(1, 0))
	}
	if c.in != nil {
		c.copiers.Add(1)
		go c.copyIn()
	}
	c.copiers.Add(1)
	go c.copyOut(p)
	return nil
}

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
		c.out.finish() // the client reads EOF once it has the FIFO open
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

// Resize sets the terminal's window size (TIOCSWINSZ on the master; the
// kernel sends SIGWINCH to the terminal's foreground process group). Without
// a terminal, or before ReceiveConsole, it does nothing.
func (p *Pipes) Resize(width, height uint16) error {
	c := p.con
	if c == nil {
		return nil
	}
	c.mu.Lock()
	m, closed := c.master, c.closed
	c.mu.Unlock()
	switch {
	case closed:
		return fmt.Errorf("resize console: %w", os.ErrClosed)
	case m == nil:
		return nil
	}
	rc, err := m.SyscallConn()
	if err != nil {
		return fmt.Errorf("resize console: %w", err)
	}
	ws := &unix.Winsize{Col: width, Row: height}
	var ierr error
	if err := rc.Control(func(fd uintptr) { ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, ws) }); err != nil {
		ierr = err // closed meanwhile
	}
	if err := ierr; err != nil {
		return fmt.Errorf("resize console to %dx%d: %w", width, height, err)
	}
	return nil
}

// ProcessExited tells p that its process has exited. Its output then ends
// as soon as the process's pipes (or the pty) hold nothing more, even if
// another process (a child it left behind) still holds them open: whatever
// the process wrote is delivered, and its client is not kept waiting for
// EOF. It does nothing for a nil p, and never blocks.
func (p *Pipes) ProcessExited() {
	if p == nil {
		return
	}
	for _, r := range p.srcs {
		// Wakes the copier from the poller into drainExited.
		_ = r.SetReadDeadline(time.Unix(1, 0))
	}
	if p.con == nil {
		return
	}
	c := p.con
	c.mu.Lock()
	defer c.mu.Unlock()
	c.exited = true
	if c.master != nil {
		// Wakes copyOut from the poller into its drain.
		_ = c.master.SetReadDeadline(time.Unix(1, 0))
	}
}

// closeConsole closes the socket, the master and the FIFOs, and waits for the
// copiers. Close calls it.
func (p *Pipes) closeConsole() {
	c := p.con
	if c == nil {
		return
	}
	c.mu.Lock()
	first, started := !c.closed, c.started
	c.closed = true
	c.mu.Unlock()
	if !first {
		c.copiers.Wait()
		return
	}
	c.closeFiles()
	if !started {
		p.copierDone() // copyOut never ran: Wait must not wait for it
	}
	c.copiers.Wait()
}

// closeFiles closes whatever c holds; the copiers then end.
func (c *console) closeFiles() {
	c.mu.Lock()
	l, m := c.l, c.master
	c.l = nil
	c.mu.Unlock()
	if l != nil {
		_ = l.Close() // unlinks the socket
	}
	if c.dir != "" {
		_ = os.RemoveAll(c.dir) // gone already once a master was received
	}
	if c.out != nil {
		c.out.close()
	}
	for _, f := range []*os.File{c.in, m} {
		if f != nil {
			_ = f.Close() // a copier may have closed it already
		}
	}
}

// removeSocket closes l, which unlinks the socket, and removes its dir.
func (c *console) removeSocket(l *net.UnixListener) {
	_ = l.Close()
	_ = os.RemoveAll(c.dir)
}
