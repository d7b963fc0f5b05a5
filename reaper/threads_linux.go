package reaper

import (
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leanshim/leanshim/procfs"
)

// idleThreads is how many OS threads an idle daemon needs (GOMAXPROCS=1):
// sysmon; the thread that waits in epoll for the network poller; the one
// os/signal's receiver blocks in (a futex wait for the next signal); the
// thread os/signal keeps locked so that signals stay deliverable
// (runtime.ensureSigM); and the template thread its LockOSThread starts.
// Run's signal.Notify brings the last three. Every other thread is one the
// runtime started because all of these were busy (a system call that
// outlasted sysmon's tick, a SIGCHLD arriving while another thread polled),
// and the runtime keeps such a thread idle for good.
const idleThreads = 5

// shedDelay is how long a shed waits before it ends a thread, so that the
// activity that called it has settled: the thread that then runs it is the
// one that woke from the poller for the timer, and the thread that did the
// work is idle and takes over.
const shedDelay = time.Millisecond

// shedThread ends one surplus OS thread once the activity that called it (a
// runtime command, a SIGCHLD) has settled. The Go runtime ends a thread only
// when a goroutine locked to it exits (runtime.LockOSThread), so the shed is
// a goroutine that waits shedDelay, locks its thread and returns; the P then
// passes to an idle thread.
//
// It ends nothing while the process has r.idleThreads threads or fewer. It
// never ends the main thread (the runtime would park it, not end it) nor a
// thread that started a child that has not been reaped: the child's
// Pdeathsig is tied to the thread that forked it (prctl(2)
// PR_SET_PDEATHSIG), so the thread's end would kill it (Start records those
// threads in r.forks; a child with Pdeathsig must be started by Start). Only
// RunCmd and the reap loop call it, after activity: it never wakes an idle
// shim.
func (r *Reaper) shedThread() {
	if r.idleThreads <= 0 || liveThreads() <= r.idleThreads {
		return
	}
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.sheds.Add(1)
	r.mu.Unlock()
	// Joined by Run before it returns: a shed still pending then would
	// check this Reaper's forks while the next Reaper (a test's) forks.
	go func() {
		defer r.sheds.Done()
		time.Sleep(shedDelay)
		if liveThreads() <= r.idleThreads {
			return
		}
		runtime.LockOSThread()
		if tid := unix.Gettid(); tid == unix.Getpid() || r.forks.forked(tid) {
			runtime.UnlockOSThread()
			return
		}
		// Returning while still locked ends this thread.
	}()
}

// forkThreads records which thread started each child that Start started and
// the reaper has not reaped yet. A Reaper's own is enough although what it
// guards is process-wide (shedThread may end any thread of the process, and
// a child's Pdeathsig fires when the thread that forked it ends): a process
// has one Reaper, as two would reap each other's children (wait4(-1)).
type forkThreads struct {
	mu    sync.Mutex  // guards byPid and byTid; taken after a Reaper's mu
	byPid map[int]int // child pid -> id of the thread that forked it
	byTid map[int]int // thread id -> how many children in byPid it forked
}

// record notes that thread tid forked pid.
func (f *forkThreads) record(pid, tid int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.byPid[pid] = tid
	f.byTid[tid]++
}

// forget drops pid, which has been reaped.
func (f *forkThreads) forget(pid int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	tid, ok := f.byPid[pid]
	if !ok {
		return
	}
	delete(f.byPid, pid)
	if f.byTid[tid]--; f.byTid[tid] <= 0 {
		delete(f.byTid, tid)
	}
}

// forked reports whether thread tid forked a child that has not been
// reaped.
func (f *forkThreads) forked(tid int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byTid[tid] > 0
}

// liveThreads returns how many threads the process has (num_threads in
// /proc/self/stat, proc(5)), or 0 if that cannot be read. It allocates
// nothing: runtime/metrics would build its whole table on first use.
func liveThreads() int {
	fd, err := unix.Open("/proc/self/stat", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	var buf [1024]byte // the line is < 400 bytes; comm is at most 64
	n, err := unix.Read(fd, buf[:])
	_ = unix.Close(fd) // read-only
	if err != nil || n <= 0 {
		return 0
	}
	threads, _ := procfs.StatUint(buf[:n], 20) // num_threads; 0 if malformed
	return int(threads)
}
