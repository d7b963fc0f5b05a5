package cgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// oomLog records onOOM calls.
type oomLog struct {
	mu  sync.Mutex
	ids []string
	ch  chan string // each call, buffered so onOOM never blocks
}

func newOOMLog() *oomLog { return &oomLog{ch: make(chan string, 256)} }

func (l *oomLog) onOOM(id string) {
	l.mu.Lock()
	l.ids = append(l.ids, id)
	l.mu.Unlock()
	select {
	case l.ch <- id:
	default:
	}
}

func (l *oomLog) calls() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.ids...)
}

// next waits for the next report.
func (l *oomLog) next(t *testing.T) string {
	t.Helper()
	select {
	case id := <-l.ch:
		return id
	case <-time.After(20 * time.Second):
		t.Fatal("no OOM reported")
		return ""
	}
}

// newWatcher returns a watcher; with run, its Run goroutine is started and
// joined at cleanup.
func newWatcher(t *testing.T, run bool) (*OOMWatcher, *oomLog) {
	t.Helper()
	log := newOOMLog()
	w, err := NewOOMWatcher(log.onOOM)
	if err != nil {
		t.Fatal(err)
	}
	if !run {
		t.Cleanup(func() { _ = w.Close() })
		return w, log
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }() // stopped and joined below
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
		_ = w.Close()
	})
	return w, log
}

// writeEvents rewrites a fixture memory.events with oom_kill n.
func writeEvents(t *testing.T, dir string, n int) {
	t.Helper()
	s := fmt.Sprintf("low 0\nhigh 0\nmax %d\noom %d\noom_kill %d\noom_group_kill 0\n", 3*n, n, n)
	if err := os.WriteFile(filepath.Join(dir, "memory.events"), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestOOMV2Fixture(t *testing.T) {
	w, log := newWatcher(t, true)
	// Many containers on one watcher: each report names the right one.
	const n = 20
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = t.TempDir()
		writeEvents(t, dirs[i], 1) // OOMs before Add are not reported
		if err := w.Add(fmt.Sprint("c", i), &Cgroup{version: V2, dir: dirs[i]}); err != nil {
			t.Fatal(err)
		}
	}
	for i := n - 1; i >= 0; i-- {
		writeEvents(t, dirs[i], 2)
		if got, want := log.next(t), fmt.Sprint("c", i); got != want {
			t.Fatalf("report for %s, want %s", got, want)
		}
	}
	// A change that is not a kill (memory.events also counts max, high...)
	// reports nothing; the next kill reports once.
	if err := os.WriteFile(filepath.Join(dirs[0], "memory.events"), []byte("max 99\noom_kill 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeEvents(t, dirs[0], 3)
	if got := log.next(t); got != "c0" {
		t.Fatalf("report for %s", got)
	}
	for i := range dirs {
		w.Remove(fmt.Sprint("c", i))
	}
	if calls := log.calls(); len(calls) != n+1 {
		t.Fatalf("%d reports: %v", len(calls), calls)
	}
}

// TestOOMV2RemoveReportsLastKill: a kill that Run has not seen yet (here Run
// is not even running) is reported by Remove itself, before it returns.
func TestOOMV2RemoveReportsLastKill(t *testing.T) {
	w, log := newWatcher(t, false)
	dir := t.TempDir()
	writeEvents(t, dir, 0)
	if err := w.Add("c1", &Cgroup{version: V2, dir: dir}); err != nil {
		t.Fatal(err)
	}
	writeEvents(t, dir, 1)
	w.Remove("c1")
	if calls := log.calls(); len(calls) != 1 || calls[0] != "c1" {
		t.Fatalf("reports %v, want [c1]", calls)
	}
	w.Remove("c1") // unknown now: nothing
	if err := w.Add("c2", &Cgroup{version: V2, dir: filepath.Join(dir, "gone")}); err == nil {
		t.Fatal("Add of a missing cgroup succeeded")
	}
}

func TestOOMWatcherLifecycle(t *testing.T) {
	w, _ := newWatcher(t, false)
	dir := t.TempDir()
	writeEvents(t, dir, 0)
	if err := w.Add("c1", &Cgroup{version: V1}); !errors.Is(err, ErrNoMemory) {
		t.Fatalf("no memory controller: %v", err)
	}
	if err := w.Add("c1", &Cgroup{version: V2, dir: dir}); err != nil {
		t.Fatal(err)
	}
	if err := w.Add("c1", &Cgroup{version: V2, dir: dir}); err == nil {
		t.Fatal("duplicate id accepted")
	}

	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }() // ended by Close below
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	if err := w.Add("c2", &Cgroup{version: V2, dir: dir}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Close: %v", err)
	}
	w.Remove("c1") // released by Close: nothing
}

// oomV1Cgroup makes a 16 MiB memory cgroup (swap included) on this machine.
func oomV1Cgroup(t *testing.T, name string) *Cgroup {
	t.Helper()
	return makeV1(t, realV1(t), name, []string{"memory"}, [][2]string{
		{"memory.limit_in_bytes", "16777216"}, {"memory.memsw.limit_in_bytes", "16777216"},
	})
}

// allocate runs a shell in cg that doubles a string until the kernel's OOM
// killer ends it, and waits for it.
func allocate(t *testing.T, cg *Cgroup) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", `echo $$ > "$1/cgroup.procs" && x=a && while :; do x=$x$x; done`, "sh", cg.dirs["memory"])
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatal("allocator was not OOM-killed within 60s")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("allocator ended with %v, want SIGKILL", err)
	}
	if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("allocator ended with %v, want SIGKILL", err)
	}
}

func TestOOMV1Real(t *testing.T) {
	cg := oomV1Cgroup(t, "oom")
	w, log := newWatcher(t, true)
	if err := w.Add("c1", cg); err != nil {
		t.Fatal(err)
	}
	allocate(t, cg)
	if got := log.next(t); got != "c1" {
		t.Fatalf("report for %q", got)
	}
	w.Remove("c1")
	for _, id := range log.calls() {
		if id != "c1" {
			t.Fatalf("reports %v", log.calls())
		}
	}
}

// TestOOMV1RemoveReportsLastKill is the exit path: the container was
// OOM-killed and has exited; Remove reports the kill before it returns, so
// the task layer can publish TaskOOM and then TaskExit.
func TestOOMV1RemoveReportsLastKill(t *testing.T) {
	cg := oomV1Cgroup(t, "oomlast")
	w, log := newWatcher(t, false) // no Run: only Remove can report
	if err := w.Add("c1", cg); err != nil {
		t.Fatal(err)
	}
	allocate(t, cg)
	w.Remove("c1")
	if calls := log.calls(); len(calls) != 1 || calls[0] != "c1" {
		t.Fatalf("reports %v, want [c1]", calls)
	}
}

// TestOOMV1CgroupRemovalIsNotOOM: rmdir of a watched v1 memory cgroup also
// signals the eventfd; that is not an OOM.
func TestOOMV1CgroupRemovalIsNotOOM(t *testing.T) {
	cg := oomV1Cgroup(t, "rmdir")
	w, log := newWatcher(t, false)
	if err := w.Add("c1", cg); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(cg.dirs["memory"]); err != nil {
		t.Fatal(err)
	}
	// The kernel signals from a work item after the rmdir: wait for it.
	w.mu.Lock()
	fd := w.watches["c1"].fd
	w.mu.Unlock()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, 10_000); err != nil || n != 1 {
		t.Fatalf("eventfd not signalled by rmdir: %d, %v", n, err)
	}
	w.Remove("c1")
	if calls := log.calls(); len(calls) != 0 {
		t.Fatalf("reports %v, want none", calls)
	}
}

// TestOOMWatcherNoFDLeak: every fd Add opens is closed by Remove or Close,
// including on Add's error paths.
func TestOOMWatcherNoFDLeak(t *testing.T) {
	before := openFDs(t)
	log := newOOMLog()
	w, err := NewOOMWatcher(log.onOOM)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		dir := t.TempDir()
		writeEvents(t, dir, 0)
		if err := w.Add(fmt.Sprint("c", i), &Cgroup{version: V2, dir: dir}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Add("c0", &Cgroup{version: V2, dir: t.TempDir()}); err == nil {
		t.Fatal("duplicate id accepted")
	}
	if err := w.Add("v1", &Cgroup{version: V1, dirs: map[string]string{"memory": t.TempDir()}}); err == nil {
		t.Fatal("v1 Add without memory.oom_control succeeded")
	}
	w.Remove("c1")
	w.Remove("c3")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if after := openFDs(t); after != before {
		t.Fatalf("%d fds open before, %d after", before, after)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}
