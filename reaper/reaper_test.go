package reaper

import (
	"context"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leanshim/leanshim/leakcheck"
	"golang.org/x/sys/unix"
)

// TestMain runs the fake runtime when asked to; otherwise it fails the
// package if its tests leave goroutines (reap loops, sheds, waiters) or fds
// (pidfds, pipes of started commands) behind.
func TestMain(m *testing.M) {
	if pidFile := os.Getenv("REAPER_FAKE_RUNTIME"); pidFile != "" {
		fakeRuntime(pidFile)
		return
	}
	// os/signal starts its receiving goroutine at the first Notify and
	// keeps it for the process's life: start it before the count.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGCHLD)
	signal.Stop(sigs)
	leakcheck.Main(m, nil)
}

// fakeRuntime starts a child that exits 3 at once, writes its pid to
// pidFile and exits without reaping it, as runc create does with the init.
func fakeRuntime(pidFile string) {
	p, err := os.StartProcess("/bin/sh", []string{"sh", "-c", "exit 3"}, &os.ProcAttr{})
	if err != nil {
		os.Exit(10)
	}
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(p.Pid)), 0o600); err != nil {
		os.Exit(11)
	}
	os.Exit(0)
}

// newRunning returns a subreaper Reaper whose loop runs until the test ends.
func newRunning(t *testing.T) *Reaper {
	t.Helper()
	return newRunningWith(t, Config{Subreaper: true})
}

// newRunningWith is newRunning with cfg.
func newRunningWith(t *testing.T, cfg Config) *Reaper {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { // owned by this test: stopped by cancel, joined below
		defer close(done)
		_ = r.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func recvExit(t *testing.T, ch <-chan Exit) Exit {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(60 * time.Second): // generous: CI machines can be loaded
		t.Fatal("no exit delivered within 60s")
		return Exit{}
	}
}

func TestExitStatus(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"zero", []string{"/bin/sh", "-c", "exit 0"}, 0},
		{"code", []string{"/bin/sh", "-c", "exit 7"}, 7},
		{"sigterm", []string{"/bin/sh", "-c", "kill -TERM $$"}, 143},
		{"sigkill", []string{"/bin/sh", "-c", "kill -KILL $$"}, 137},
	}
	r := newRunning(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pid, e := startAndReap(t, r, exec.Command(tc.args[0], tc.args[1:]...))
			if e.Status != tc.want || e.Pid != pid {
				t.Fatalf("got pid %d status %d, want pid %d status %d", e.Pid, e.Status, pid, tc.want)
			}
			if e.At.IsZero() {
				t.Fatal("exit time not set")
			}
		})
	}
}

// TestTrackerEarlyExit is the early-exit race: a "runtime" starts a grandchild
// that exits at once, and the shim learns the grandchild's pid only from a pid
// file after the runtime has exited. The exit must be found every time.
func TestTrackerEarlyExit(t *testing.T) {
	r := newRunning(t)
	dir := t.TempDir()
	for i := range 50 {
		pidFile := filepath.Join(dir, strconv.Itoa(i))
		tr := r.Track()
		// The test binary plays runc: it starts the "container" (exit 3 at
		// once), records its pid and exits without waiting for it, so the
		// container is re-parented to us. (A shell would do, but a shell
		// may reap its own background job first.)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "REAPER_FAKE_RUNTIME="+pidFile)
		ch, err := r.Start(cmd)
		if err != nil {
			t.Fatal(err)
		}
		if e := recvExit(t, ch); e.Status != 0 {
			t.Fatalf("runtime exited %d", e.Status)
		}
		Release(cmd)
		if i%2 == 0 {
			// Make sure the container was reaped before it is claimed.
			waitReaped(t, r, tr, pidFile)
		}
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		e := recvExit(t, tr.Claim(pid))
		tr.Close()
		if e.Pid != pid || e.Status != 3 {
			t.Fatalf("iteration %d: got %+v, want pid %d status 3", i, e, pid)
		}
	}
}

func waitReaped(t *testing.T, r *Reaper, tr *Tracker, pidFile string) {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		_, ok := tr.exits[pid]
		r.mu.Unlock()
		if ok {
			return
		}
		r.poke()
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("pid %d never reaped", pid)
}

// TestConcurrentStarts checks that many children exiting at once each get
// their own status (SIGCHLD coalesces; the loop must reap them all).
func TestConcurrentStarts(t *testing.T) {
	r := newRunning(t)
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for i := range 64 {
		wg.Go(func() {
			cmd := exec.Command("/bin/sh", "-c", "exit "+strconv.Itoa(i))
			ch, err := r.Start(cmd)
			if err != nil {
				errs <- err.Error()
				return
			}
			e := recvExit(t, ch)
			Release(cmd)
			if e.Status != i {
				errs <- "child " + strconv.Itoa(i) + " got status " + strconv.Itoa(e.Status)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestClosedTrackerDrops checks that exits of pids nobody claimed do not pile
// up once the tracker is closed, and that a claim after the process ended
// still works while the tracker is open.
func TestClosedTrackerDrops(t *testing.T) {
	r := newRunning(t)
	tr := r.Track()
	cmd := exec.Command("/bin/sh", "-c", "/bin/true & exit 0")
	ch, err := r.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	recvExit(t, ch)
	Release(cmd)
	tr.Close()
	r.mu.Lock()
	n := len(r.trackers)
	r.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d trackers left open", n)
	}
	// The grandchild (true) was re-parented to us and must not stay a zombie.
	deadline := time.Now().Add(10 * time.Second)
	for zombies(t) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("zombie children left behind")
		}
		r.poke()
		time.Sleep(time.Millisecond)
	}
}

// zombies counts this process's children in state Z.
func zombies(t *testing.T) int {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	me := strconv.Itoa(os.Getpid())
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the process went away
		}
		// pid (comm) state ppid ...
		rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
		f := strings.Fields(rest)
		if len(f) > 1 && f[0] == "Z" && f[1] == me {
			n++
		}
	}
	return n
}

// Forking is called before each fork Start makes, and the function it
// returns once the child has exec'd, with its pid; a nil Forking, or a nil
// function from it, is fine (every other test; a trace that is off).
func TestForkingHook(t *testing.T) {
	var mu sync.Mutex
	var forks []time.Time
	var pids []int
	r := newRunningWith(t, Config{Subreaper: true, Forking: func() func(int) {
		mu.Lock()
		defer mu.Unlock()
		forks = append(forks, time.Now())
		if len(forks) == 2 {
			return nil
		}
		return func(pid int) {
			mu.Lock()
			defer mu.Unlock()
			pids = append(pids, pid)
		}
	}})
	var started []int
	for range 2 {
		before := time.Now()
		cmd := exec.Command("/bin/true")
		ch, err := r.Start(cmd)
		if err != nil {
			t.Fatal(err)
		}
		started = append(started, cmd.Process.Pid)
		recvExit(t, ch)
		Release(cmd)
		mu.Lock()
		if forks[len(forks)-1].Before(before) {
			t.Errorf("Forking called at %v, before Start at %v", forks[len(forks)-1], before)
		}
		mu.Unlock()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(forks) != 2 || len(pids) != 1 || pids[0] != started[0] {
		t.Fatalf("Forking called %d times, its functions with %v; want 2 and [%d]", len(forks), pids, started[0])
	}
}

// Reaped sees each reaped child once, with the exit's own time, after the
// exit has been delivered.
func TestReapedHook(t *testing.T) {
	type call struct {
		pid int
		at  time.Time
	}
	calls := make(chan call, 4)
	r := newRunningWith(t, Config{Subreaper: true, Reaped: func(pid int, at time.Time) { calls <- call{pid, at} }})
	pid, e := startAndReap(t, r, exec.Command("/bin/true"))
	select {
	case c := <-calls:
		if c.pid != pid || !c.at.Equal(e.At) {
			t.Fatalf("Reaped(%d, %v), want (%d, %v)", c.pid, c.at, pid, e.At)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Reaped not called")
	}
	select {
	case c := <-calls:
		t.Fatalf("Reaped called again: %+v", c)
	default:
	}
}

// startAndReap starts cmd with r and returns its pid and exit once reaped.
func startAndReap(t *testing.T, r *Reaper, cmd *exec.Cmd) (int, Exit) {
	t.Helper()
	ch, err := r.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	e := recvExit(t, ch)
	Release(cmd)
	return pid, e
}
