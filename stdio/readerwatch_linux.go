package stdio

import (
	"errors"
	"os"
	"strconv"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// readerWatch is the process's one inotify instance, watching IN_OPEN on
// every output FIFO that waits for a reader (see fifo_linux.go). One
// instance serves them all because the kernel counts instances per user
// (fs.inotify.max_user_instances, 128 by default, shared with every other
// program run as root); watches are cheap (max_user_watches). Its fd and its
// one goroutine exist only while some FIFO waits: the goroutine starts with
// the first watch and ends when the last is removed (remove closes the fd).
//
// It is package state, like devNull: the inotify instance is a resource of
// the process, not of one Pipes.
type readerWatch struct {
	mu   sync.Mutex          // guards f, outs
	f    *os.File            // the inotify fd (non-blocking, on Go's poller), or nil
	outs map[int32][]*output // by watch descriptor: FIFOs that wait for a reader
}

var readers readerWatch

// add watches o's FIFO (by o.fd, so a renamed or removed path does not
// matter) and returns the watch descriptor. o.mu is held by the caller;
// the lock order is o.mu, then w.mu.
func (w *readerWatch) add(o *output) (int32, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
		if err != nil {
			return 0, err
		}
		w.f = os.NewFile(uintptr(fd), "inotify")
		w.outs = make(map[int32][]*output)
		go w.run(w.f) // ends when remove closes the fd with the last watch
	}
	ifd, err := fdOf(w.f)
	if err != nil {
		return 0, err
	}
	wd, err := unix.InotifyAddWatch(ifd, "/proc/self/fd/"+strconv.Itoa(o.fd), unix.IN_OPEN)
	if err != nil {
		w.closeIfIdleLocked()
		return 0, err
	}
	w.outs[int32(wd)] = append(w.outs[int32(wd)], o)
	return int32(wd), nil
}

// remove stops watching for o. o.mu is held by the caller.
func (w *readerWatch) remove(o *output, wd int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	list := w.outs[wd]
	for i, x := range list {
		if x == o {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) > 0 {
		w.outs[wd] = list
		return
	}
	delete(w.outs, wd)
	if ifd, err := fdOf(w.f); err == nil {
		_, _ = unix.InotifyRmWatch(ifd, uint32(wd)) // gone already if the FIFO was
	}
	w.closeIfIdleLocked()
}

func (w *readerWatch) closeIfIdleLocked() {
	if len(w.outs) == 0 && w.f != nil {
		_ = w.f.Close() // read-only; wakes run with os.ErrClosed
		w.f, w.outs = nil, nil
	}
}

// run reads the events of f and tells each FIFO's output that it was
// opened. wake is called without w.mu: it takes o.mu, which add and remove
// are called under.
func (w *readerWatch) run(f *os.File) {
	var buf [4096]byte
	for {
		n, err := f.Read(buf[:])
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				w.failAll(f)
			}
			return
		}
		for _, o := range w.opened(f, buf[:n]) {
			o.wake()
		}
	}
}

// opened returns the outputs whose FIFOs the events in b name.
func (w *readerWatch) opened(f *os.File, b []byte) []*output {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f != f {
		return nil // closed and maybe replaced meanwhile
	}
	var outs []*output
	for off := 0; off+unix.SizeofInotifyEvent <= len(b); {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&b[off]))
		outs = append(outs, w.outs[ev.Wd]...)
		off += unix.SizeofInotifyEvent + int(ev.Len)
	}
	return outs
}

// failAll closes a failed inotify fd and tells every output that waited on
// it that no news of readers will come; the next add starts afresh.
func (w *readerWatch) failAll(f *os.File) {
	w.mu.Lock()
	var outs []*output
	if w.f == f {
		for _, list := range w.outs {
			outs = append(outs, list...)
		}
		_ = w.f.Close() // read-only
		w.f, w.outs = nil, nil
	}
	w.mu.Unlock()
	for _, o := range outs {
		o.unwatched()
	}
}
