package reaper

import (
	"context"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestLiveThreads(t *testing.T) {
	if n := liveThreads(); n < 1 {
		t.Fatalf("liveThreads() = %d", n)
	}
}

// TestShedKeepsForkingThread sheds threads as hard as it can while children
// with Pdeathsig run: none may be killed by the end of the thread that forked
// it.
func TestShedKeepsForkingThread(t *testing.T) {
	r := newRunning(t)
	r.idleThreads.Store(1) // shed whenever it can
	stop := make(chan struct{})
	var shedders sync.WaitGroup
	shedders.Add(1)
	go func() { // owned by this test: stopped by stop, joined below
		defer shedders.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(shedDelay / 2):
				r.shedThread()
			}
		}
	}()
	runPdeathsigChildren(t, r)
	close(stop)
	shedders.Wait()
}

// TestShedEndsSurplusThreads leaves idle threads behind (leaveSurplus), then
// checks that shedding ends some of them.
func TestShedEndsSurplusThreads(t *testing.T) {
	r := newRunning(t)
	before, surplus := leaveSurplus(t)
	r.idleThreads.Store(int32(before))
	deadline := time.Now().Add(10 * time.Second)
	for liveThreads() >= surplus {
		if time.Now().After(deadline) {
			t.Fatalf("still %d threads, %d before the blocking calls", liveThreads(), before)
		}
		r.shedThread()
		runtime.Gosched()
		time.Sleep(5 * shedDelay)
	}
}

// TestShedLearnsFloor starts from a Reaper that does not know how many
// threads the process needs, leaves a surplus, and sheds, one shed and its
// watch at a time as after real activity, until the floor is learnt: a shed
// ended a thread and the runtime started another. The floor is below the
// surplus, and shedding takes the process down to it.
func TestShedLearnsFloor(t *testing.T) {
	r := newRunning(t)
	if n := r.idleThreads.Load(); n != 0 {
		t.Fatalf("floor %d known before any shed", n)
	}
	_, surplus := leaveSurplus(t)
	deadline := time.Now().Add(10 * time.Second)
	for r.idleThreads.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no floor learnt: %d threads, %d with the surplus", liveThreads(), surplus)
		}
		r.shedThread()
		time.Sleep(shedDelay + 3*shedSettle) // the shed, then its watch
	}
	floor := int(r.idleThreads.Load())
	if floor >= surplus {
		t.Fatalf("floor %d learnt, not below the %d threads of the surplus", floor, surplus)
	}
	t.Logf("floor %d threads, surplus %d", floor, surplus)
}

// leaveSurplus leaves idle threads behind for certain and returns the
// thread count before and after: goroutines that each lock an OS thread,
// all at once, need a thread each (more of them than the process has
// threads); once they unlock and end, those threads stay with the runtime,
// idle.
func leaveSurplus(t *testing.T) (before, surplus int) {
	t.Helper()
	before = liveThreads()
	n := before + 4
	var locked, wg sync.WaitGroup
	release := make(chan struct{})
	locked.Add(n)
	for range n {
		wg.Add(1)
		go func() { // owned by this helper: joined below
			defer wg.Done()
			runtime.LockOSThread()
			locked.Done()
			<-release // every one holds its own thread meanwhile
			runtime.UnlockOSThread()
		}()
	}
	locked.Wait()
	close(release)
	wg.Wait()
	surplus = liveThreads()
	if surplus < n {
		t.Fatalf("%d goroutines locked to their threads at once left %d threads, %d before: no surplus to shed", n, surplus, before)
	}
	return before, surplus
}

// runPdeathsigChildren runs 8 children at once through r, each with
// Pdeathsig (killed if the thread that forked it ends), and fails t unless
// every one exits 0: none was killed by a thread ending under it.
func runPdeathsigChildren(t *testing.T, r *Reaper) {
	t.Helper()
	var wg sync.WaitGroup
	statuses := make([]int, 8)
	errs := make([]error, len(statuses))
	for i := range statuses {
		wg.Add(1)
		go func() { // owned by this helper: joined below
			defer wg.Done()
			cmd := exec.Command("/bin/sh", "-c", "sleep 0.5")
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			var e Exit
			_, e, errs[i] = r.RunCmd(context.Background(), cmd, nil, true)
			statuses[i] = e.Status
		}()
	}
	wg.Wait()
	for i, st := range statuses {
		if errs[i] != nil || st != 0 {
			t.Errorf("child %d: status %d, err %v (137: killed by Pdeathsig)", i, st, errs[i])
		}
	}
}
