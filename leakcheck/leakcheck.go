// Package leakcheck fails a test binary whose tests leave goroutines or file
// descriptors behind: every goroutine and fd of stdio and the reaper has an
// owner that must end it. Only tests import it (their TestMain); it imports
// no project package.
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
)

// Main runs m and exits with its code; if the tests passed but goroutines
// or fds stay above what the process had before m.Run for 5 s (a goroutine
// may still be returning), it prints them and exits 1. keepFD, if not nil,
// tells fds the package keeps for the process's life once first used (by
// their /proc/self/fd link target): they are not counted, nor is Go's
// poller (its epoll fd and wake-up eventfd). Main does not return.
func Main(m *testing.M, keepFD func(target string) bool) {
	c := counter{keep: keepFD}
	goroutines, fds := runtime.NumGoroutine(), c.fds()
	code := m.Run()
	if code == 0 {
		if err := c.wait(goroutines, fds); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

type counter struct {
	keep func(target string) bool
}

// wait waits up to 5 s for goroutines and fds to come back to the counts
// given.
func (c counter) wait(goroutines, fds int) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		g, f := runtime.NumGoroutine(), c.fds()
		if g <= goroutines && f <= fds {
			return nil
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			return fmt.Errorf("leaked: %d goroutines (started with %d), %d fds (started with %d): %v\n%s",
				g, goroutines, f, fds, targets(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fds counts the open fds less the kept ones.
func (c counter) fds() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	n := 0
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		switch {
		case err != nil: // ReadDir's own, closed since
		case target == "anon_inode:[eventpoll]", target == "anon_inode:[eventfd]":
		case c.keep != nil && c.keep(target):
		default:
			n++
		}
	}
	return n
}

// targets lists every open fd as fd=target, for the failure message.
func targets() []string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var ts []string
	for _, e := range ents {
		t, _ := os.Readlink("/proc/self/fd/" + e.Name())
		ts = append(ts, e.Name()+"="+t)
	}
	return ts
}
