package reaper

import (
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leanshim/leanshim/procfs"
)

// How many OS threads an idle shim needs is the Go runtime's business (today
// sysmon, a thread for the network poller, os/signal's receiver, the thread
// it keeps locked so that signals stay deliverable, and the template thread
// that locking starts), so the reaper does not assume it: it learns it. The
// runtime never ends an idle thread, so the thread count at any moment only
// says how many threads were once busy at once (6 to 8 when Run starts); the
// need shows only when a thread ends: if the runtime needed it, it starts a
// replacement (handoffp's startm finds no idle thread). So until the need is
// known each shed watches the thread it ended (watchShed): once that thread
// has gone, a count back where the shed found it, with no activity of the
// reaper's meanwhile (a start, a wake-up) that could have started a thread
// instead, says the runtime replaced it. The floor is the least count of
// floorSamples such observations: activity the reaper cannot see (a
// request's blocking system call) can only make one read high.

const (
	// shedSettle is how long watchShed gives the runtime to start a
	// replacement once the ended thread has gone.
	shedSettle = 5 * time.Millisecond
	// shedGone bounds watchShed's wait for the ended thread to go.
	shedGone = 100 * time.Millisecond
	// floorSamples is how many observations fix the floor.
	floorSamples = 2
	// maxWatches bounds the watches of a Reaper's life, and so the sheds
	// they start themselves (see watchShed).
	maxWatches = 16
)

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
// It ends nothing while the process has r.idleThreads threads or fewer (once
// that floor is known; before, it ends any surplus and learns the floor, see
// above). It never ends the main thread (the runtime would park it, not end
// it) nor a thread that started a child that has not been reaped: the
// child's Pdeathsig is tied to the thread that forked it (prctl(2)
// PR_SET_PDEATHSIG), so the thread's end would kill it (Start records those
// threads in r.forks; a child with Pdeathsig must be started by Start). Only
// RunCmd and the reap loop call it, after activity: it never wakes an idle
// shim.
func (r *Reaper) shedThread() {
	r.activity.Add(1)
	if liveThreads() <= r.floor() {
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
		from := liveThreads()
		if from <= r.floor() {
			return
		}
		runtime.LockOSThread()
		tid := unix.Gettid()
		if tid == unix.Getpid() || r.forks.forked(tid) {
			runtime.UnlockOSThread()
			return
		}
		if r.idleThreads.Load() == 0 {
			r.sheds.Add(1)
			go r.watchShed(from, tid, r.activity.Load()) // joined by Run, through sheds
		}
		// Returning while still locked ends this thread.
	}()
}

// floor is the thread count below which shedThread ends nothing: the
// learnt (or set) floor, or 1 while it is unknown.
func (r *Reaper) floor() int {
	return max(int(r.idleThreads.Load()), 1)
}

// watchShed watches one shed that ended thread tid when the process had
// from threads and the reaper's activity count was seq: if the runtime
// replaced the thread, it needed it, and from is one observation of the
// floor.
func (r *Reaper) watchShed(from, tid int, seq uint64) {
	defer r.sheds.Done()
	if r.replaced(from, tid, seq) {
		r.learn.Lock()
		if r.learn.seen == 0 || from < r.learn.least {
			r.learn.least = from
		}
		if r.learn.seen++; r.learn.seen == floorSamples && r.idleThreads.CompareAndSwap(0, int32(r.learn.least)) {
			r.log.Debug("idle OS threads learnt", "threads", r.learn.least)
		}
		r.learn.Unlock()
	}
	// Only activity calls a shed, and ending a thread the runtime needs can
	// leave it one more than before (it may start a second while the ended
	// one exits), so a watch sheds again while the process is above the
	// floor: until the floor is learnt and reached, a bounded number of
	// times in all (maxWatches).
	r.learn.Lock()
	r.learn.watches++
	again := r.learn.watches < maxWatches
	r.learn.Unlock()
	if again && liveThreads() > r.floor() {
		r.shedThread()
	}
}

// replaced reports whether the runtime replaced thread tid, which a shed
// ended when the process had from threads and the reaper's activity count
// was seq: tid has gone, the runtime has had shedSettle to start another,
// the process has from threads again and the reaper did nothing meanwhile.
func (r *Reaper) replaced(from, tid int, seq uint64) bool {
	// Until the ended thread has gone the count still includes it.
	deadline := time.Now().Add(shedGone)
	for unix.Tgkill(unix.Getpid(), tid, 0) == nil {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(shedSettle)
	return liveThreads() >= from && r.activity.Load() == seq
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
