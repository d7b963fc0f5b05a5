package integration

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/proto/taskapi"
)

// TestExecTerminalFollowsRequest sends execs whose spec's "terminal"
// disagrees with the request's Terminal, as containerd's own
// TestContainerExecLargeOutputWithTTY does (a spec copied from a container
// without a tty, run with a tty). containerd's runc shim sets the spec's
// terminal from the request, so the exec must get a tty exactly when the
// request asks for one, and runc must not refuse the console socket.
func TestExecTerminalFollowsRequest(t *testing.T) {
	f := newFakeContainerd(t)
	id := "exectty"
	s := f.runSleeper(t, id, "60")
	ctx := ctxT(t)
	for _, tc := range []struct {
		name, execID  string
		request, spec bool
		wantOutPrefix string
	}{
		{"tty requested, spec says none", "tty", true, false, "/dev/pts/"},
		{"no tty requested, spec says tty", "notty", false, true, "not a tty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			execID := tc.execID
			fifo := filepath.Join(t.TempDir(), "stdout")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			// Read-write, so the open does not wait for the shim and the
			// read below ends by the deadline, not by EOF.
			r, err := os.OpenFile(fifo, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			spec := `{"args":["/bin/sh","-c","tty; echo done"],"cwd":"/","env":["PATH=/bin"],"user":{"uid":0,"gid":0},"terminal":` +
				map[bool]string{true: "true", false: "false"}[tc.spec] + `}`
			_, err = s.task.Exec(ctx, &taskapi.ExecProcessRequest{
				Id: id, ExecId: execID, Terminal: tc.request, Stdout: fifo,
				Spec: &gogotypes.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: []byte(spec)},
			})
			if err != nil {
				t.Fatalf("exec: %v", err)
			}
			if _, err := s.task.Start(ctx, &taskapi.StartRequest{Id: id, ExecId: execID}); err != nil {
				t.Fatalf("start exec (request terminal %v, spec terminal %v): %v", tc.request, tc.spec, err)
			}
			w, err := s.task.Wait(ctx, &taskapi.WaitRequest{Id: id, ExecId: execID})
			if err != nil || w.ExitStatus != 0 {
				t.Fatalf("wait exec: %+v %v", w, err)
			}
			out := readUntil(t, r, "done", 10*time.Second)
			if !strings.HasPrefix(out, tc.wantOutPrefix) {
				t.Errorf("exec's output %q, want it to start with %q", out, tc.wantOutPrefix)
			}
			if _, err := s.task.Delete(ctx, &taskapi.DeleteRequest{Id: id, ExecId: execID}); err != nil {
				t.Errorf("delete exec: %v", err)
			}
		})
	}
}

// readUntil reads r until what it read contains want or timeout passes.
func readUntil(t *testing.T, r *os.File, want string, timeout time.Duration) string {
	t.Helper()
	if err := r.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 4096)
	for !strings.Contains(string(got), want) {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil && err != io.EOF {
			t.Errorf("read %q so far: %v", got, err)
			break
		}
	}
	return string(got)
}
