package process

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leanshim/leanshim/oci"
	"github.com/leanshim/leanshim/reaper"
	"github.com/leanshim/leanshim/stdio"
)

// gateRuntime is a Runtime whose Kill and Delete block until the test
// releases them. It records whether a Delete ever ran while a Kill was in
// flight (the race that fails runc delete on cgroup v1).
type gateRuntime struct {
	silentRuntime
	release chan struct{} // closed by the test: blocked calls return
	entered chan string   // "kill" or "delete" as each call starts

	mu      sync.Mutex // guards the fields below
	killing int
	deletes int
	overlap bool
}

func newGateRuntime() *gateRuntime {
	return &gateRuntime{release: make(chan struct{}), entered: make(chan string, 16)}
}

func (r *gateRuntime) Kill(context.Context, string, int, bool) error {
	r.mu.Lock()
	r.killing++
	r.mu.Unlock()
	r.entered <- "kill"
	<-r.release
	r.mu.Lock()
	r.killing--
	r.mu.Unlock()
	return nil
}

func (r *gateRuntime) Delete(context.Context, string, bool) error {
	r.mu.Lock()
	r.deletes++
	r.overlap = r.overlap || r.killing > 0
	r.mu.Unlock()
	r.entered <- "delete"
	<-r.release
	return nil
}

// stoppedInit returns an Init whose process has exited, on rt, with no
// streams.
func stoppedInit(t *testing.T, rt Runtime) *Init {
	t.Helper()
	io, err := stdio.Open(stdio.Config{})
	if err != nil {
		t.Fatal(err)
	}
	p := &Init{id: "c", bundle: t.TempDir(), rt: rt, io: io, done: make(chan struct{}),
		state: Stopped, pid: 42, exited: true, exit: Exit{Pid: 42, Status: 3, At: time.Now()}}
	close(p.done)
	return p
}

func waitState(t *testing.T, st func() State, want State) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for st() != want {
		if time.Now().After(deadline) {
			t.Fatalf("state %s, want %s", st(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestConcurrentDelete: while one Delete runs the runtime's delete, a second
// Delete and a Kill are refused at once; the runtime's delete runs once.
func TestConcurrentDelete(t *testing.T) {
	rt := newGateRuntime()
	p := stoppedInit(t, rt)
	first := make(chan error, 1)
	go func() { _, err := p.Delete(t.Context()); first <- err }() // joined below
	if got := <-rt.entered; got != "delete" {
		t.Fatalf("runtime call %q, want delete", got)
	}
	if _, err := p.Delete(t.Context()); !errors.Is(err, ErrInvalidState) {
		t.Errorf("second Delete while the first runs: want ErrInvalidState; got %v", err)
	}
	if err := p.Kill(t.Context(), 9, true); !errors.Is(err, ErrFinished) {
		t.Errorf("Kill while Delete runs: want ErrFinished; got %v", err)
	}
	close(rt.release)
	if err := <-first; err != nil {
		t.Fatalf("first Delete: %v", err)
	}
	e, err := p.Delete(t.Context())
	if !errors.Is(err, ErrInvalidState) {
		t.Errorf("Delete after Delete: want ErrInvalidState; got %v (exit %+v)", err, e)
	}
	if st, _, _ := p.Status(); st != Deleted || rt.deletes != 1 {
		t.Errorf("state %s after %d runtime deletes; want deleted after 1", st, rt.deletes)
	}
}

// TestDeleteWaitsForKill: a Delete that starts while "kill --all" runs
// claims the container at once but runs the runtime's delete only after the
// kill has returned.
func TestDeleteWaitsForKill(t *testing.T) {
	rt := newGateRuntime()
	p := stoppedInit(t, rt)
	killed := make(chan error, 1)
	go func() { killed <- p.Kill(t.Context(), 9, true) }() // joined below
	if got := <-rt.entered; got != "kill" {
		t.Fatalf("runtime call %q, want kill", got)
	}
	deleted := make(chan error, 1)
	go func() { _, err := p.Delete(t.Context()); deleted <- err }() // joined below
	waitState(t, func() State { st, _, _ := p.Status(); return st }, Deleting)
	close(rt.release)
	if err := <-killed; err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if err := <-deleted; err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if rt.overlap {
		t.Error("the runtime's delete ran while its kill was in flight")
	}
}

// TestDeleteGivesUpWaitingForKill: a Delete whose context ends while a Kill
// is in flight fails and leaves the container Stopped, deletable again.
func TestDeleteGivesUpWaitingForKill(t *testing.T) {
	rt := newGateRuntime()
	p := stoppedInit(t, rt)
	killed := make(chan error, 1)
	go func() { killed <- p.Kill(t.Context(), 9, true) }() // joined below
	<-rt.entered
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := p.Delete(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Delete: want the context's error; got %v", err)
	}
	if st, _, _ := p.Status(); st != Stopped {
		t.Errorf("state after a failed Delete: %s, want stopped", st)
	}
	close(rt.release)
	if err := <-killed; err != nil {
		t.Fatal(err)
	}
	if _, err := p.Delete(t.Context()); err != nil {
		t.Fatalf("Delete after the kill: %v", err)
	}
}

// resumeRuntime records Resume calls.
type resumeRuntime struct {
	silentRuntime
	mu      sync.Mutex // guards resumed
	resumed int
}

func (r *resumeRuntime) Resume(context.Context, string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resumed++
	return nil
}

// TestPausedInitDiesIsThawed: when the init of a paused container dies, the
// container is resumed (the runtime would refuse to delete it frozen) before
// anyone learns of the exit, and Delete then works.
func TestPausedInitDiesIsThawed(t *testing.T) {
	rt := &resumeRuntime{}
	p := stoppedInit(t, rt)
	p.state, p.exited, p.done = Paused, false, make(chan struct{})
	exits := make(chan reaper.Exit, 1)
	exits <- reaper.Exit{Pid: 42, Status: 137, At: time.Now()}
	heard := make(chan State, 1)
	p.onExit = func(Exit) { st, _, _ := p.Status(); heard <- st }
	go p.watch(exits) // ends after one exit
	if st := <-heard; st != Stopped {
		t.Errorf("state when the exit is heard: %s, want stopped", st)
	}
	rt.mu.Lock()
	resumed := rt.resumed
	rt.mu.Unlock()
	if resumed != 1 {
		t.Errorf("runtime resumes: %d, want 1", resumed)
	}
	if _, err := p.Delete(t.Context()); err != nil {
		t.Fatalf("Delete: %v", err)
	}
}

// TestNoExecInPausedOrRestoringInit: an exec is refused in a paused
// container and in one restored from a checkpoint but not started.
func TestNoExecInPausedOrRestoringInit(t *testing.T) {
	p := stoppedInit(t, &silentRuntime{})
	for _, tc := range []struct {
		name    string
		set     func()
		wantErr error
	}{
		{"running", func() { p.state = Running }, nil},
		{"paused", func() { p.state = Paused }, ErrInvalidState},
		{"restored, not started", func() { p.state, p.restore = Created, &oci.RestoreOpts{} }, ErrInvalidState},
	} {
		tc.set()
		if err := p.CanExec(); !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: CanExec: want %v; got %v", tc.name, tc.wantErr, err)
		}
	}
	// Start refuses too, and the refused exec ends: Wait returns.
	p.state, p.restore = Paused, nil
	e := p.NewExec(ExecConfig{ID: "e"})
	if _, err := e.Start(t.Context()); !errors.Is(err, ErrInvalidState) {
		t.Errorf("Start in a paused container: want ErrInvalidState; got %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if x, err := e.Wait(ctx); err != nil || x.Status != 255 {
		t.Errorf("Wait after a failed Start: want status 255 at once; got %+v, %v", x, err)
	}
}

// TestExecStartHoldsNoLockAcrossStdio: while an exec's Start waits for its
// binary:// logger to be ready (up to seconds), Status answers at once and
// shows the Starting claim (issue 13, item 6).
func TestExecStartHoldsNoLockAcrossStdio(t *testing.T) {
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	if err := unix.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	logger := filepath.Join(dir, "logger")
	// Says it is ready (fd 5) only once the test opens gate, then reads
	// the streams (fds 3 and 4) to their end.
	script := "#!/bin/sh\ntouch " + dir + "/started\ncat " + gate + " >/dev/null\nprintf x >&5\ncat <&3 >/dev/null\ncat <&4 >/dev/null\n"
	if err := os.WriteFile(logger, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	r := runReaper(t)
	rt := &silentRuntime{}
	init := &Init{id: "c", bundle: terminalBundle(t), rt: rt, factory: &Factory{reaper: r},
		done: make(chan struct{}), state: Running}
	e := init.NewExec(ExecConfig{ID: "e", Spec: []byte(`{}`), IO: IOConfig{Stdout: "binary://" + logger}})
	started := make(chan error, 1)
	go func() { _, err := e.Start(t.Context()); started <- err }() // joined below
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "started")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the logger never started")
		}
		time.Sleep(time.Millisecond)
	}
	status := make(chan State, 1)
	go func() { st, _, _ := e.Status(); status <- st }() // joined below
	answered := true
	select {
	case st := <-status:
		if st != Starting {
			t.Errorf("state while Start waits for the logger: %s, want starting", st)
		}
	case <-time.After(time.Second):
		t.Error("Status blocked while Start waits for the logger")
		answered = false
	}
	g, err := os.OpenFile(gate, os.O_WRONLY, 0) // the logger's cat gets EOF: it says it is ready
	if err != nil {
		t.Fatal(err)
	}
	_ = g.Close()
	if err := <-started; err != nil {
		t.Fatalf("Start: %v", err)
	}
	if !answered {
		<-status
	}
	_ = rt.started.Kill() // the exec (a sleep); its exit goes to the reaper
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := e.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Delete(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestExecKillNeverHitsAReusedPid: Exec.Kill signals through the pidfd it
// took when the pid was known, so once the exec is reaped a process that got
// its pid is safe (issue 13, item 9). Pid reuse is simulated: the exec's
// recorded pid is set to another live process of the test.
func TestExecKillNeverHitsAReusedPid(t *testing.T) {
	r := runReaper(t)
	tr := r.Track()
	defer tr.Close()
	first := exec.Command("/bin/sleep", "60")
	if err := first.Start(); err != nil { // the reaper waits for it
		t.Fatal(err)
	}
	fd, exitc := claimWithPidfd(tr, first.Process.Pid)
	if fd < 0 {
		t.Skip("no pidfd_open(2) on this kernel")
	}
	_ = first.Process.Kill()
	<-exitc // reaped: its pid is free for the kernel to reuse
	other := exec.Command("/bin/sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	otherExit := tr.Claim(other.Process.Pid)

	e := (&Init{}).NewExec(ExecConfig{ID: "e"})
	e.state, e.pid, e.pidfd = Running, other.Process.Pid, fd // the watcher has not run yet
	if err := e.Kill(9); !errors.Is(err, ErrFinished) {
		t.Errorf("Kill of a reaped exec: want ErrFinished; got %v", err)
	}
	// A SIGKILL from Kill would be pending before this SIGTERM, and the
	// process would die of it (137) rather than of the SIGTERM (143).
	_ = other.Process.Signal(syscall.SIGTERM)
	if x := <-otherExit; x.Status != 128+int(syscall.SIGTERM) {
		t.Errorf("the process that got the pid ended with %d, want 143: Kill signalled it", x.Status)
	}
	_ = unix.Close(fd)
}

// exitDuringPause is a runtime whose Pause succeeds only after the init has
// exited and the watcher has stopped it.
type exitDuringPause struct {
	resumeRuntime
	exit func()
}

func (r *exitDuringPause) Pause(context.Context, string) error { r.exit(); return nil }

// TestPauseRacingExitThaws: a pause that froze the cgroup just after the
// init died leaves the container Stopped and thawed, so it can be deleted.
func TestPauseRacingExitThaws(t *testing.T) {
	rt := &exitDuringPause{}
	p := stoppedInit(t, rt)
	p.rt = rt
	p.state, p.exited = Running, false
	rt.exit = func() {
		p.mu.Lock()
		p.exited = true
		_ = move(&p.state, Stopped) // what the watcher does
		p.mu.Unlock()
	}
	if err := p.Pause(t.Context()); err != nil {
		t.Fatal(err)
	}
	rt.mu.Lock()
	resumed := rt.resumed
	rt.mu.Unlock()
	if st, _, _ := p.Status(); st != Stopped || resumed != 1 {
		t.Errorf("after a pause that raced the exit: %s and %d resumes, want stopped and 1", st, resumed)
	}
}
