package integration

// Answers while the runtime hangs: a fake runtime, real runc except that
// `kill` and `ps` never return. The shim must keep answering what it knows
// from memory, bound what calls the runtime by the request's deadline, kill
// the hung runtime, and still shut down.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leanshim/leanshim/proto/runcopts"
	"github.com/leanshim/leanshim/proto/taskapi"
)

// hangingRuntime is runc, except that kill and ps exec a sleep of %[1]s
// seconds (a number unique to the test, to find leftovers by).
const hangingRuntime = `#!/bin/sh
# runc, except: kill and ps hang.
g=""
while [ $# -gt 0 ]; do
  case "$1" in
  --root|--log|--log-format|--criu) g="$g $1 $2"; shift 2 ;;
  --systemd-cgroup|--debug) g="$g $1"; shift ;;
  *) break ;;
  esac
done
case "$1" in
kill|ps) exec sleep %[1]s ;;
esac
exec runc $g "$@"
`

// promptly is how fast an answer from memory must come.
const promptly = time.Second

func TestAnswersWhileRuntimeHangs(t *testing.T) {
	f := newFakeContainerd(t)
	dir := t.TempDir()
	hang := strconv.Itoa(900000 + os.Getpid()%90000)
	rt := filepath.Join(dir, "hanging-runc")
	if err := os.WriteFile(rt, []byte(fmt.Sprintf(hangingRuntime, hang)), 0o755); err != nil {
		t.Fatal(err)
	}
	opts := optionsAny(t, &runcopts.Options{BinaryName: rt})
	ctx := ctxT(t)

	id := "apihang"
	b := f.bundle(t, id, "/bin/sleep", "1000")
	s := f.startShim(t, id, b)
	cr, err := s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Start(ctx, &taskapi.StartRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(int(cr.Pid), syscall.SIGKILL) }) // if the test failed before killing it

	// Kill hangs in the runtime: the request's deadline bounds it.
	kctx, cancel := context.WithTimeout(ctx, time.Second)
	start := time.Now()
	_, err = s.task.Kill(kctx, &taskapi.KillRequest{Id: id, Signal: 9})
	cancel()
	took := time.Since(start)
	t.Logf("Kill with a 1s deadline returned after %v: %v", took, err)
	if took > 5*time.Second {
		t.Fatalf("Kill with a 1s deadline took %v", took)
	}
	wantDeadline(t, "Kill", err)
	// The shim, not only the client, gave up: the hung runtime is killed.
	if !poll(5*time.Second, func() bool { return len(hungRuntimes(rt, hang)) == 0 }) {
		t.Fatalf("hung runtime left 5s after Kill's deadline: %v", hungRuntimes(rt, hang))
	}

	// While Pids hangs, what the shim knows from memory still answers.
	pidsDone := make(chan error, 1)
	pctx, pcancel := context.WithTimeout(ctx, 4*time.Second)
	defer pcancel()
	pidsStart := time.Now()
	go func() { // joined through pidsDone below
		_, err := s.task.Pids(pctx, &taskapi.PidsRequest{Id: id})
		pidsDone <- err
	}()
	if !poll(5*time.Second, func() bool { return len(hungRuntimes(rt, hang)) > 0 }) {
		t.Fatal("Pids did not run the (hanging) runtime's ps")
	}
	timed(t, "Connect", func() error {
		r, err := s.task.Connect(ctx, &taskapi.ConnectRequest{Id: id})
		if err == nil && (int(r.ShimPid) != s.pid || r.TaskPid != cr.Pid) {
			err = fmt.Errorf("got %+v, want shim %d task %d", r, s.pid, cr.Pid)
		}
		return err
	})
	timed(t, "State", func() error {
		st, err := s.task.State(ctx, &taskapi.StateRequest{Id: id})
		if err == nil && (st.Status.String() != "RUNNING" || st.Pid != cr.Pid) {
			err = fmt.Errorf("got %+v, want RUNNING pid %d", st, cr.Pid)
		}
		return err
	})
	timed(t, "Wait with a 300ms deadline", func() error {
		wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, err := s.task.Wait(wctx, &taskapi.WaitRequest{Id: id})
		if !isDeadline(err) {
			return fmt.Errorf("want DeadlineExceeded on a running task; got %v", err)
		}
		return nil
	})
	select {
	case err := <-pidsDone:
		t.Logf("Pids with a 4s deadline returned after %v: %v", time.Since(pidsStart), err)
		wantDeadline(t, "Pids", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Pids with a 4s deadline still hangs after 10s")
	}
	if !poll(5*time.Second, func() bool { return len(hungRuntimes(rt, hang)) == 0 }) {
		t.Fatalf("hung runtime left 5s after Pids' deadline: %v", hungRuntimes(rt, hang))
	}

	// The runtime cannot kill, so the test does; the shim reaps and reports
	// it, deletes through runc, and shuts down.
	if err := syscall.Kill(int(cr.Pid), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if w, err := s.task.Wait(ctx, &taskapi.WaitRequest{Id: id}); err != nil || w.ExitStatus != 137 {
		t.Fatalf("wait: %+v %v", w, err)
	}
	if _, err := s.task.Delete(ctx, &taskapi.DeleteRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Shutdown(ctx, &taskapi.ShutdownRequest{Id: id}); err != nil && !strings.Contains(err.Error(), "closed") {
		t.Fatal(err)
	}
	if !poll(10*time.Second, func() bool { return !shimAlive(s.pid) }) {
		t.Fatal("shim still running 10s after Shutdown")
	}
	if left := hungRuntimes(rt, hang); len(left) > 0 {
		t.Fatalf("runtime processes left after shutdown: %v", left)
	}
}

// wantDeadline fails unless err says the request's deadline passed.
func wantDeadline(t *testing.T, call string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded with a hanging runtime", call)
	}
	if !isDeadline(err) {
		t.Fatalf("%s: want a DeadlineExceeded-class error; got %s: %v", call, status.Code(err), err)
	}
}

// isDeadline reports whether err is the server's DeadlineExceeded status or
// the client's own context.DeadlineExceeded (ttrpc returns whichever ends
// the call first).
func isDeadline(err error) bool {
	return status.Code(err) == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded)
}

// timed runs call and fails t unless it succeeds within promptly.
func timed(t *testing.T, what string, call func() error) {
	t.Helper()
	start := time.Now()
	err := call()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("%s while the runtime hangs: %v", what, err)
	}
	if took > promptly {
		t.Fatalf("%s while the runtime hangs took %v, want < %v", what, took, promptly)
	}
	t.Logf("%s answered in %v", what, took)
}

// hungRuntimes lists live processes of the fake runtime: its script, or the
// sleep it became.
func hungRuntimes(script, hang string) []string {
	entries, _ := os.ReadDir("/proc")
	var found []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		argv := readArgv(pid)
		if len(argv) >= 2 && (filepath.Base(argv[0]) == "sleep" && argv[1] == hang || slices.Contains(argv, script)) {
			found = append(found, fmt.Sprintf("%d: %s", pid, strings.Join(argv, " ")))
		}
	}
	return found
}
