package task

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leanshim/leanshim/proto/taskapi"
)

// TestExecRefusedWhilePaused: Exec in a paused container, or in one restored
// from a checkpoint but not started, is FailedPrecondition and publishes no
// TaskExecAdded.
func TestExecRefusedWhilePaused(t *testing.T) {
	s := newFakeService(t)
	s.create(t, "c")
	if _, err := s.Start(t.Context(), &taskapi.StartRequest{Id: "c"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pause(t.Context(), &taskapi.PauseRequest{Id: "c"}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Exec(t.Context(), &taskapi.ExecProcessRequest{Id: "c", ExecId: "x", Spec: testExecSpec})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Exec in a paused container: want FailedPrecondition; got %v", err)
	}

	if _, err := s.Create(t.Context(), &taskapi.CreateTaskRequest{Id: "r", Bundle: s.bundle(t, "r"), Checkpoint: s.dir}); err != nil {
		t.Fatal(err)
	}
	_, err = s.Exec(t.Context(), &taskapi.ExecProcessRequest{Id: "r", ExecId: "x", Spec: testExecSpec})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Exec in a restored container not started: want FailedPrecondition; got %v", err)
	}
	for _, ev := range s.rec.of("x") {
		t.Errorf("event %q for a refused exec", ev)
	}
}

// TestWaitAfterFailedExecStart: once an exec's Start has failed (the fake
// runtime refuses terminals), Wait for it returns at once with status 255,
// and Delete forgets it.
func TestWaitAfterFailedExecStart(t *testing.T) {
	s := newFakeService(t)
	s.create(t, "c")
	if _, err := s.Start(t.Context(), &taskapi.StartRequest{Id: "c"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Exec(t.Context(), &taskapi.ExecProcessRequest{Id: "c", ExecId: "x", Terminal: true, Spec: testExecSpec}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(t.Context(), &taskapi.StartRequest{Id: "c", ExecId: "x"}); err == nil {
		t.Fatal("exec Start with a terminal: want the fake runtime's refusal")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	w, err := s.Wait(ctx, &taskapi.WaitRequest{Id: "c", ExecId: "x"})
	if err != nil || w.ExitStatus != 255 {
		t.Fatalf("Wait after the failed Start: want status 255; got %v, %v", w, err)
	}
	if _, err := s.Delete(t.Context(), &taskapi.DeleteRequest{Id: "c", ExecId: "x"}); err != nil {
		t.Fatalf("Delete of the exec: %v", err)
	}
}

// fdsTo counts this process's fds open on path.
func fdsTo(t *testing.T, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && l == path {
			n++
		}
	}
	return n
}

// TestDeleteClosesExitedExecs: deleting a container releases the streams
// of its exited execs that nobody deleted (the shim's hold on the stdin
// FIFO here).
func TestDeleteClosesExitedExecs(t *testing.T) {
	s := newFakeService(t)
	in := filepath.Join(s.dir, "x-stdin")
	if err := unix.Mkfifo(in, 0o600); err != nil {
		t.Fatal(err)
	}
	// containerd's end of the stdin FIFO.
	writer, err := os.OpenFile(in, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	s.create(t, "c")
	if _, err := s.Start(t.Context(), &taskapi.StartRequest{Id: "c"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Exec(t.Context(), &taskapi.ExecProcessRequest{Id: "c", ExecId: "x", Stdin: in, Spec: testExecSpec}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(t.Context(), &taskapi.StartRequest{Id: "c", ExecId: "x"}); err != nil {
		t.Fatal(err)
	}
	if n := fdsTo(t, in); n < 2 {
		t.Fatalf("fds on the exec's stdin FIFO while it runs: %d, want the test's and the shim's", n)
	}
	if _, err := s.Kill(t.Context(), &taskapi.KillRequest{Id: "c", Signal: 9, All: true}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := s.Wait(ctx, &taskapi.WaitRequest{Id: "c"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(t.Context(), &taskapi.DeleteRequest{Id: "c"}); err != nil {
		t.Fatal(err)
	}
	if n := fdsTo(t, in); n != 1 {
		t.Errorf("fds on the exec's stdin FIFO after the container's Delete: %d, want only the test's", n)
	}
}

// TestWaitForExecRefusedAfterInitExit: an exec added before the init died
// and started after is refused, and a Wait for it returns at once; so does
// a Wait for an exec deleted without ever being started.
func TestWaitForExecRefusedAfterInitExit(t *testing.T) {
	s := newFakeService(t)
	s.create(t, "c")
	if _, err := s.Start(t.Context(), &taskapi.StartRequest{Id: "c"}); err != nil {
		t.Fatal(err)
	}
	for _, x := range []string{"late", "never"} {
		if _, err := s.Exec(t.Context(), &taskapi.ExecProcessRequest{Id: "c", ExecId: x, Spec: testExecSpec}); err != nil {
			t.Fatal(err)
		}
	}
	waitNever := make(chan error, 1)
	go func() { // joined below
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, err := s.Wait(ctx, &taskapi.WaitRequest{Id: "c", ExecId: "never"})
		waitNever <- err
	}()
	if _, err := s.Kill(t.Context(), &taskapi.KillRequest{Id: "c", Signal: 9}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := s.Wait(ctx, &taskapi.WaitRequest{Id: "c"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(t.Context(), &taskapi.StartRequest{Id: "c", ExecId: "late"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Start of an exec after the init's exit: want FailedPrecondition; got %v", err)
	}
	short, cancelShort := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancelShort()
	if w, err := s.Wait(short, &taskapi.WaitRequest{Id: "c", ExecId: "late"}); err != nil || w.ExitStatus != 255 {
		t.Errorf("Wait for the refused exec: want status 255 at once; got %v, %v", w, err)
	}
	if _, err := s.Delete(t.Context(), &taskapi.DeleteRequest{Id: "c"}); err != nil {
		t.Fatal(err)
	}
	if err := <-waitNever; err != nil {
		t.Errorf("Wait for an exec deleted with its container, never started: %v", err)
	}
}
