package stdio

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
)

// TestMain fails the package if its tests leave goroutines (copiers,
// reader watchers, logger waiters) or file descriptors behind: every one
// of them has an owner that must end it.
func TestMain(m *testing.M) {
	goroutines, fds := runtime.NumGoroutine(), countFDs()
	code := m.Run()
	if code == 0 {
		if err := checkNoLeaks(goroutines, fds); err != nil {
			fmt.Fprintf(os.Stderr, "stdio: FAIL: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// checkNoLeaks waits up to 5 s for goroutines and fds to return to what
// the package started with (a goroutine may still be returning).
func checkNoLeaks(goroutines, fds int) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		g, f := runtime.NumGoroutine(), countFDs()
		if g <= goroutines && f <= fds {
			return nil
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			return fmt.Errorf("leaked: %d goroutines (started with %d), %d fds (started with %d): %v\n%s",
				g, goroutines, f, fds, fdTargets(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// countFDs counts the open fds, less those the process keeps for its life
// once first used: Go's poller (epoll and its wake-up eventfd) and the
// shim's /dev/null for discarding (devNull).
func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	n := 0
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		switch {
		case err != nil: // ReadDir's own, closed since
		case target == "anon_inode:[eventpoll]", target == "anon_inode:[eventfd]", target == "/dev/null":
		default:
			n++
		}
	}
	return n
}

func fdTargets() []string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var ts []string
	for _, e := range ents {
		t, _ := os.Readlink("/proc/self/fd/" + e.Name())
		ts = append(ts, e.Name()+"="+t)
	}
	return ts
}
