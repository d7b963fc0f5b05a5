package stdio

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// maxSplice is how much one splice(2) call may move: the whole of a default
// pipe buffer and more, so a busy stream costs few system calls.
const maxSplice = 1 << 20

// errDstFull: splice would block because dst is full, not because src is
// empty.
var errDstFull = errors.New("destination full")

// spliceCopy moves everything from src to dst until src reaches EOF, with
// splice(2): the data never enters the shim's memory and no buffer is held
// while the stream is idle. Both files must be pollable (a pipe or a FIFO
// opened non-blocking); waiting happens in Go's poller, never on an OS
// thread. handled is false when the kernel refuses splice for this pair
// before any byte moved (the caller then copies through a buffer).
func spliceCopy(dst, src *os.File) (written int64, handled bool, err error) {
	srcRC, err := src.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	dstRC, err := dst.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	var sfd, dfd int
	if err := dstRC.Control(func(fd uintptr) { dfd = int(fd) }); err != nil {
		return 0, false, nil
	}
	if err := srcRC.Control(func(fd uintptr) { sfd = int(fd) }); err != nil {
		return 0, false, nil
	}
	for {
		var n int
		var serr error
		// Wait until src is readable, then splice.
		rerr := srcRC.Read(func(sfd uintptr) bool {
			n, serr = splice(int(sfd), dfd)
			return !errors.Is(serr, unix.EAGAIN) // EAGAIN: src empty, wait
		})
		if rerr != nil {
			return written, true, rerr // src closed under us (Close)
		}
		if errors.Is(serr, errDstFull) {
			// Wait until dst is writable, then splice.
			werr := dstRC.Write(func(uintptr) bool {
				n, serr = splice(sfd, dfd)
				return !errors.Is(serr, errDstFull)
			})
			if werr != nil {
				return written, true, werr
			}
			if errors.Is(serr, unix.EAGAIN) {
				continue // src drained meanwhile: back to waiting on src
			}
		}
		switch {
		case serr != nil && written == 0 && (errors.Is(serr, unix.EINVAL) || errors.Is(serr, unix.ENOSYS)):
			return 0, false, nil
		case serr != nil:
			return written, true, serr
		case n == 0:
			return written, true, nil // EOF: every writer of src is gone
		}
		written += int64(n)
	}
}

// splice moves what is available from sfd to dfd without blocking. On EAGAIN
// it tells the causes apart. errDstFull: dst polls not writable (at EOF of
// src with a full dst the kernel says EAGAIN too, and only dst draining can
// lead to the 0 that means EOF). Plain EAGAIN: src is empty. dst is checked
// first: EPOLLOUT on a FIFO comes only when a full one drains, so waiting
// for it on a dst that is not full would wait forever. If both sides look
// ready the EAGAIN was stale (the process wrote meanwhile): try again.
func splice(sfd, dfd int) (int, error) {
	for stale := 0; ; {
		n, err := unix.Splice(sfd, nil, dfd, nil, maxSplice, unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			if !writable(dfd) {
				return 0, errDstFull
			}
			avail, ierr := unix.IoctlGetInt(sfd, unix.TIOCINQ) // FIONREAD
			if ierr == nil && avail > 0 && stale < 16 {
				stale++
				continue
			}
			return 0, unix.EAGAIN
		}
		return int(n), err
	}
}

// writable polls fd for POLLOUT without waiting.
func writable(fd int) bool { return pollOut(fd)&unix.POLLOUT != 0 }

// pollOut polls fd for POLLOUT without waiting and returns the events it
// reports (0 if poll fails).
func pollOut(fd int) int16 {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	for {
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n == 0 {
			return 0
		}
		return fds[0].Revents
	}
}

// fdOf returns f's descriptor without making it blocking (unlike f.Fd).
func fdOf(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(u uintptr) { fd = int(u) }); err != nil {
		return -1, err
	}
	return fd, nil
}
