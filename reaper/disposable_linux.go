package reaper

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// OnDisposableThread runs fn on an OS thread locked to it that ends when fn
// returns, so fn may change what belongs to the thread and cannot be put
// back: its working directory after unshare(CLONE_FS), say. It returns once
// fn has.
//
// The thread is never the main thread (the runtime would park it for good
// instead of ending it) nor one that forked a child r.Start started and r
// has not reaped: ending that would fire the child's Pdeathsig (prctl(2)
// PR_SET_PDEATHSIG is tied to the forking thread), killing, for instance, a
// runtime command another request is running. A goroutine that finds itself
// on such a thread starts the next try, holds the thread until that try has
// locked another one, then unlocks it and returns, leaving it alive.
func (r *Reaper) OnDisposableThread(fn func()) {
	r.activity.Add(1) // a thread ends, the runtime may start one: no floor from this
	defer r.activity.Add(1)
	done := make(chan struct{})
	// Joined by the receive below: exactly one try closes done.
	go func() {
		runtime.LockOSThread()
		disposable(fn, done, r.forks.forked)
	}()
	<-done
}

// disposable is one try of OnDisposableThread, on a goroutine locked (once)
// to its thread; forked tells fork threads.
func disposable(fn func(), done chan<- struct{}, forked func(tid int) bool) {
	if tid := unix.Gettid(); tid == unix.Getpid() || forked(tid) {
		locked := make(chan struct{})
		// The next try. This goroutine holds its thread until the try has
		// locked one, so the try's cannot be this one.
		go func() {
			runtime.LockOSThread()
			close(locked)
			disposable(fn, done, forked)
		}()
		<-locked
		runtime.UnlockOSThread() // back to the runtime, alive
		return
	}
	fn()
	close(done)
	// Returning while locked ends the thread (runtime.LockOSThread).
}
