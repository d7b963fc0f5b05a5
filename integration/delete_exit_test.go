package integration

import (
	"bytes"
	"os/exec"
	"syscall"
	"testing"

	"github.com/gogo/protobuf/proto"

	"github.com/leanshim/leanshim/proto/taskapi"
)

// TestDeleteActionReportsRecordedExit kills a shim whose container had
// already exited, and runs the delete action as containerd 2.4 does after a
// crash: it must report the container's real exit (recorded in the bundle
// when the init exited), not 137, as containerd 2.x's runc shim does
// (PROTOCOL.md §1.11).
func TestDeleteActionReportsRecordedExit(t *testing.T) {
	f := newFakeContainerd(t)
	id := "apiexit"
	b := f.bundle(t, id, "/bin/sh", "-c", "exit 3")
	s := f.startShim(t, id, b)
	ctx := ctxT(t)
	cr, err := s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: b})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Start(ctx, &taskapi.StartRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	w, err := s.task.Wait(ctx, &taskapi.WaitRequest{Id: id})
	if err != nil || w.ExitStatus != 3 {
		t.Fatalf("wait: %+v %v", w, err)
	}
	_ = syscall.Kill(s.pid, syscall.SIGKILL)

	cmd := exec.Command(suite.shimPath, "-namespace", f.ns, "-id", id, "-address", f.grpcAddr, "-publish-binary", "/nonexistent", "-bundle", b, "-debug", "delete")
	cmd.Dir = b
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("delete: %v: %s", err, stderr.String())
	}
	var resp taskapi.DeleteResponse
	if err := proto.Unmarshal(stdout.Bytes(), &resp); err != nil {
		t.Fatalf("stdout is not a DeleteResponse: %v (%q)", err, stdout.Bytes())
	}
	if resp.ExitStatus != 3 || resp.Pid != cr.Pid || resp.ExitedAt == nil ||
		resp.ExitedAt.Seconds != w.ExitedAt.Seconds || resp.ExitedAt.Nanos != w.ExitedAt.Nanos {
		t.Fatalf("delete reported %+v; want the recorded exit: pid %d, status 3, at %v", &resp, cr.Pid, w.ExitedAt)
	}
}
