package reaper

import (
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDisposableAvoidsForkThreads marks the first threads a try lands on as
// fork threads: fn must run on another thread, that thread must end, and
// every refused thread must stay alive.
func TestDisposableAvoidsForkThreads(t *testing.T) {
	var mu sync.Mutex // guards refused
	refused := map[int]bool{}
	forked := func(tid int) bool {
		mu.Lock()
		defer mu.Unlock()
		if len(refused) < 3 || refused[tid] {
			refused[tid] = true
			return true
		}
		return false
	}
	done := make(chan struct{})
	var ran int
	go func() { // joined by <-done
		runtime.LockOSThread()
		disposable(func() { ran = unix.Gettid() }, done, forked)
	}()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if ran == 0 || refused[ran] || ran == unix.Getpid() {
		t.Fatalf("fn ran on thread %d; refused %v, main %d", ran, refused, unix.Getpid())
	}
	if len(refused) != 3 {
		t.Errorf("refused %d threads, want 3: %v", len(refused), refused)
	}
	for tid := range refused {
		if !threadAlive(tid) {
			t.Errorf("refused thread %d ended", tid)
		}
	}
	// The runtime ends the thread after the goroutine has returned.
	deadline := time.Now().Add(5 * time.Second)
	for threadAlive(ran) {
		if time.Now().After(deadline) {
			t.Fatalf("thread %d that ran fn is still alive", ran)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestOnDisposableThreadKeepsChildren ends threads with OnDisposableThread
// as fast as it can while children with Pdeathsig run: none may be killed
// by the end of the thread that forked it.
func TestOnDisposableThreadKeepsChildren(t *testing.T) {
	r := newRunning(t)
	stop := make(chan struct{})
	var enders sync.WaitGroup
	enders.Add(1)
	go func() { // owned by this test: stopped by stop, joined below
		defer enders.Done()
		for {
			select {
			case <-stop:
				return
			default:
				r.OnDisposableThread(func() { _ = unix.Unshare(unix.CLONE_FS) })
			}
		}
	}()
	runPdeathsigChildren(t, r)
	close(stop)
	enders.Wait()
}

func threadAlive(tid int) bool {
	_, err := os.Stat("/proc/self/task/" + strconv.Itoa(tid))
	return err == nil
}
