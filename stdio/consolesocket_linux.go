package stdio

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// consoleSocketName is the console socket's name inside its private dir.
const consoleSocketName = "pty.sock"

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

// removeSocket closes l, which unlinks the socket, and removes its dir.
func (c *console) removeSocket(l *net.UnixListener) {
	_ = l.Close()
	_ = os.RemoveAll(c.dir)
}
