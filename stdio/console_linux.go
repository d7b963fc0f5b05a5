package stdio

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

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
	out sink     // where the terminal's output goes (stdout FIFO or a logger's pipe), or nil; closed by copyOut or close

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
	switch {
	case isBinaryURI(cfg.Stdout):
		// A logging program reads the terminal's output (nerdctl run -t,
		// containerd's cio.TerminalBinaryIO): its stdout pipe is the sink,
		// and its stderr, which a terminal never feeds, is closed at once.
		l, out, errw, err := startLogger(cfg, defaultLoggerTimeouts())
		if err != nil {
			return err
		}
		if errw != nil {
			_ = errw.Close() // the logger reads EOF there
		}
		p.logger = l
		if out != nil {
			c.out = pipeSink{out}
		}
	case cfg.Stdout != "":
		o, err := openOutputFIFO(cfg.Stdout, "stdout", cfg)
		if err != nil {
			return err
		}
		c.out = o
	}
	p.con, p.stdinHold = c, hold
	p.pending = 1 // copyOut; closeConsole stands in for it if it never runs
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
