package integration

// Black-box tests of the shim's task API without containerd: the test plays
// containerd (it runs the shim's start and delete actions, talks ttrpc to the
// shim, and serves the events service the shim forwards to), the pattern of
// gVisor's fake containerd. This reaches what ctr cannot send: runtime
// options, malformed requests, exact event envelopes.

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"
	"google.golang.org/grpc/codes"

	"github.com/leanshim/leanshim/proto/events"
	"github.com/leanshim/leanshim/proto/runcopts"
	"github.com/leanshim/leanshim/proto/taskapi"
)

// TestAPILifecycleEvents drives Create/Start/Wait/Delete/Shutdown directly and
// checks the events the shim forwarded and that the shim exits afterwards.
func TestAPILifecycleEvents(t *testing.T) {
	f := newFakeContainerd(t)
	id := "apilife"
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
	if err != nil || w.ExitStatus != 3 || w.ExitedAt == nil {
		t.Fatalf("wait: %+v %v", w, err)
	}
	st, err := s.task.State(ctx, &taskapi.StateRequest{Id: id})
	if err != nil || st.Status.String() != "STOPPED" || st.ExitStatus != 3 || st.Pid != cr.Pid || st.Bundle != b {
		t.Fatalf("state: %+v %v", st, err)
	}
	_, err = s.task.Kill(ctx, &taskapi.KillRequest{Id: id, Signal: 9})
	wantCode(t, err, codes.NotFound, "already finished")
	// As containerd's runc shim: figures from the cgroup until Delete.
	if sr, err := s.task.Stats(ctx, &taskapi.StatsRequest{Id: id}); err != nil || !strings.HasPrefix(sr.Stats.GetTypeUrl(), "io.containerd.cgroups.") {
		t.Fatalf("stats of an exited task: %+v %v", sr, err)
	}
	_, err = s.task.Exec(ctx, &taskapi.ExecProcessRequest{Id: id, ExecId: "late", Spec: &gogotypes.Any{Value: []byte(`{"args":["true"]}`)}})
	wantCode(t, err, codes.FailedPrecondition, "exited")
	d, err := s.task.Delete(ctx, &taskapi.DeleteRequest{Id: id})
	if err != nil || d.ExitStatus != 3 || d.Pid != cr.Pid {
		t.Fatalf("delete: %+v %v", d, err)
	}
	_, err = s.task.State(ctx, &taskapi.StateRequest{Id: id})
	wantCode(t, err, codes.NotFound, id)
	if _, err := s.task.Shutdown(ctx, &taskapi.ShutdownRequest{Id: id}); err != nil && !strings.Contains(err.Error(), "closed") {
		t.Fatal(err)
	}
	if !poll(10*time.Second, func() bool { return !shimAlive(s.pid) }) {
		t.Fatal("shim still running after Shutdown")
	}
	want := []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}
	if got := f.topics(t, id); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("events %q, want %q", got, want)
	}
	f.mu.Lock()
	for _, env := range f.events {
		if env.Topic == "/tasks/exit" {
			var e events.TaskExit
			if err := proto.Unmarshal(env.Event.Value, &e); err != nil || e.ExitStatus != 3 || e.Id != id || e.Pid != cr.Pid {
				t.Errorf("TaskExit %+v %v", e, err)
			}
		}
	}
	f.mu.Unlock()
	if _, err := os.Stat(strings.TrimPrefix(mustRead(t, filepath.Join(b, "address")), "unix://")); !os.IsNotExist(err) {
		t.Fatalf("socket left after shutdown: %v", err)
	}
}

func mustRead(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAPIBadInput sends what a broken or hostile client could, to one shim,
// and checks each gets a clear error of the right class while a healthy
// container on the same shim keeps working.
func TestAPIBadInput(t *testing.T) {
	f := newFakeContainerd(t)
	good := "apigood"
	b := f.bundle(t, good, "/bin/sleep", "1000")
	s := f.startShim(t, good, b)
	ctx := ctxT(t)
	if _, err := s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: good, Bundle: b}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Start(ctx, &taskapi.StartRequest{Id: good}); err != nil {
		t.Fatal(err)
	}
	other := f.bundle(t, "apibad", "/bin/true")
	cases := []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"missing runtime binary", func() error {
			_, err := s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: "apibad", Bundle: other,
				Options: optionsAny(t, &runcopts.Options{BinaryName: "/nonexistent/runc"})})
			return err
		}, codes.Unknown, "/nonexistent/runc"},
		{"runtime that fails", func() error {
			_, err := s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: "apibad", Bundle: other,
				Options: optionsAny(t, &runcopts.Options{BinaryName: "/bin/false"})})
			return err
		}, codes.Unknown, "OCI runtime create failed"},
		{"unknown options type", func() error {
			_, err := s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: "apibad", Bundle: other,
				Options: &gogotypes.Any{TypeUrl: "example.com/Nope", Value: []byte{1}}})
			return err
		}, codes.InvalidArgument, "unknown runtime options type"},
		{"id with a slash", func() error {
			_, err := s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: "../x", Bundle: other})
			return err
		}, codes.InvalidArgument, "container id"},
		{"duplicate id", func() error {
			_, err := s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: good, Bundle: b})
			return err
		}, codes.AlreadyExists, good},
		{"missing bundle", func() error {
			_, err := s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: "apibad", Bundle: filepath.Join(f.dir, "nope")})
			return err
		}, codes.InvalidArgument, "config.json"},
		{"exec spec not JSON", func() error {
			_, err := s.task.Exec(ctx, &taskapi.ExecProcessRequest{Id: good, ExecId: "e1", Spec: &gogotypes.Any{Value: []byte("{nope")}})
			return err
		}, codes.InvalidArgument, "JSON"},
		{"exec id with dots", func() error {
			_, err := s.task.Exec(ctx, &taskapi.ExecProcessRequest{Id: good, ExecId: "..", Spec: &gogotypes.Any{Value: []byte("{}")}})
			return err
		}, codes.InvalidArgument, "exec id"},
		{"unknown container", func() error {
			_, err := s.task.Kill(ctx, &taskapi.KillRequest{Id: "ghost", Signal: 9})
			return err
		}, codes.NotFound, "ghost"},
		{"unknown exec", func() error {
			_, err := s.task.State(ctx, &taskapi.StateRequest{Id: good, ExecId: "ghost"})
			return err
		}, codes.NotFound, "ghost"},
		{"delete a running container", func() error {
			_, err := s.task.Delete(ctx, &taskapi.DeleteRequest{Id: good})
			return err
		}, codes.FailedPrecondition, "running"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantCode(t, tc.call(), tc.code, tc.msg) })
	}
	// The healthy container is untouched and the shim answers.
	st, err := s.task.State(ctx, &taskapi.StateRequest{Id: good})
	if err != nil || st.Status.String() != "RUNNING" {
		t.Fatalf("healthy container: %+v %v", st, err)
	}
	if _, err := s.task.Kill(ctx, &taskapi.KillRequest{Id: good, Signal: 9}); err != nil {
		t.Fatal(err)
	}
	if w, err := s.task.Wait(ctx, &taskapi.WaitRequest{Id: good}); err != nil || w.ExitStatus != 137 {
		t.Fatalf("wait: %+v %v", w, err)
	}
	if _, err := s.task.Delete(ctx, &taskapi.DeleteRequest{Id: good}); err != nil {
		t.Fatal(err)
	}
	if got := f.topics(t, "apibad"); len(got) != 0 {
		t.Fatalf("failed creates published %q", got)
	}
}

// TestDeleteAction runs the delete action on a bundle whose shim was killed:
// it must kill the container, print only a DeleteResponse, and be idempotent.
func TestDeleteAction(t *testing.T) {
	f := newFakeContainerd(t)
	id := "apidel"
	b := f.bundle(t, id, "/bin/sleep", "1000")
	s := f.startShim(t, id, b)
	ctx := ctxT(t)
	cr, err := s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: b})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Start(ctx, &taskapi.StartRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	addr := mustRead(t, filepath.Join(b, "address"))
	_ = syscall.Kill(s.pid, syscall.SIGKILL)
	for i := range 2 { // the second run finds nothing left to do
		cmd := exec.Command(suite.shimPath, "-namespace", f.ns, "-id", id, "-address", f.grpcAddr, "-bundle", b, "delete")
		cmd.Dir = b
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatalf("delete %d: %v: %s", i, err, stderr.String())
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("delete took %v (containerd kills it after 5s)", d)
		}
		var resp taskapi.DeleteResponse
		if err := proto.Unmarshal(stdout.Bytes(), &resp); err != nil {
			t.Fatalf("stdout is not a DeleteResponse: %v (%q)", err, stdout.Bytes())
		}
		if resp.ExitStatus != 137 || resp.Pid != cr.Pid || resp.ExitedAt == nil {
			t.Fatalf("delete %d: %+v", i, resp)
		}
	}
	if !poll(10*time.Second, func() bool { return syscall.Kill(int(cr.Pid), 0) != nil }) {
		t.Fatal("container process survived the delete action")
	}
	if _, err := os.Stat(strings.TrimPrefix(addr, "unix://")); !os.IsNotExist(err) {
		t.Fatalf("dead shim's socket left: %v", err)
	}
	if _, err := os.Stat(filepath.Join("/run/containerd/runc", f.ns, id)); !os.IsNotExist(err) {
		t.Fatalf("runc state left: %v", err)
	}
}
