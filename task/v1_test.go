package task

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leanshim/leanshim/proto/events"
	"github.com/leanshim/leanshim/proto/runcopts"
	"github.com/leanshim/leanshim/proto/runctypes"
	"github.com/leanshim/leanshim/proto/shimv1"
	"github.com/leanshim/leanshim/proto/taskapi"
	"github.com/leanshim/leanshim/proto/tasktypes"
)

// fakeCore records the task API calls a V1 makes and answers each with a
// response naming the call, so a test sees which (id, exec id) it got.
type fakeCore struct {
	taskapi.TaskService // nil: a method the adapter should not call panics

	mu    sync.Mutex
	calls []string
	err   error // returned by Create when set
}

func (f *fakeCore) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeCore) last() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return ""
	}
	return f.calls[len(f.calls)-1]
}

func (f *fakeCore) Create(_ context.Context, r *taskapi.CreateTaskRequest) (*taskapi.CreateTaskResponse, error) {
	var o runcopts.Options
	if r.Options.TypeUrl != "containerd.runc.v1.Options" || proto.Unmarshal(r.Options.Value, &o) != nil {
		return nil, fmt.Errorf("options %v", r.Options)
	}
	f.record("Create %s %s options{%v}", r.Id, r.Bundle, &o)
	return &taskapi.CreateTaskResponse{Pid: 10}, f.err
}

func (f *fakeCore) Start(_ context.Context, r *taskapi.StartRequest) (*taskapi.StartResponse, error) {
	f.record("Start %s/%s", r.Id, r.ExecId)
	return &taskapi.StartResponse{Pid: 11}, nil
}

func (f *fakeCore) State(_ context.Context, r *taskapi.StateRequest) (*taskapi.StateResponse, error) {
	f.record("State %s/%s", r.Id, r.ExecId)
	return &taskapi.StateResponse{Id: r.Id, ExecId: r.ExecId, Bundle: "/b", Pid: 12, Status: tasktypes.Status_RUNNING}, nil
}

func (f *fakeCore) Kill(_ context.Context, r *taskapi.KillRequest) (*gogotypes.Empty, error) {
	f.record("Kill %s/%s %d %v", r.Id, r.ExecId, r.Signal, r.All)
	return empty, nil
}

func (f *fakeCore) Wait(_ context.Context, r *taskapi.WaitRequest) (*taskapi.WaitResponse, error) {
	f.record("Wait %s/%s", r.Id, r.ExecId)
	return &taskapi.WaitResponse{ExitStatus: 7}, nil
}

func (f *fakeCore) Delete(_ context.Context, r *taskapi.DeleteRequest) (*taskapi.DeleteResponse, error) {
	f.record("Delete %s/%s", r.Id, r.ExecId)
	return &taskapi.DeleteResponse{Pid: 13, ExitStatus: 3}, nil
}

func (f *fakeCore) Exec(_ context.Context, r *taskapi.ExecProcessRequest) (*gogotypes.Empty, error) {
	f.record("Exec %s/%s %s", r.Id, r.ExecId, r.Stdout)
	return empty, nil
}

func (f *fakeCore) CloseIO(_ context.Context, r *taskapi.CloseIORequest) (*gogotypes.Empty, error) {
	f.record("CloseIO %s/%s %v", r.Id, r.ExecId, r.Stdin)
	return empty, nil
}

func (f *fakeCore) ResizePty(_ context.Context, r *taskapi.ResizePtyRequest) (*gogotypes.Empty, error) {
	f.record("ResizePty %s/%s %dx%d", r.Id, r.ExecId, r.Width, r.Height)
	return empty, nil
}

func (f *fakeCore) Pause(_ context.Context, r *taskapi.PauseRequest) (*gogotypes.Empty, error) {
	f.record("Pause %s", r.Id)
	return empty, nil
}

func (f *fakeCore) Resume(_ context.Context, r *taskapi.ResumeRequest) (*gogotypes.Empty, error) {
	f.record("Resume %s", r.Id)
	return empty, nil
}

func (f *fakeCore) Update(_ context.Context, r *taskapi.UpdateTaskRequest) (*gogotypes.Empty, error) {
	f.record("Update %s", r.Id)
	return empty, nil
}

func (f *fakeCore) Pids(_ context.Context, r *taskapi.PidsRequest) (*taskapi.PidsResponse, error) {
	f.record("Pids %s", r.Id)
	d, _ := marshalAny(&runcopts.ProcessDetails{ExecId: "e1"})
	return &taskapi.PidsResponse{Processes: []*tasktypes.ProcessInfo{{Pid: 20}, {Pid: 21, Info: d}}}, nil
}

func (f *fakeCore) Connect(_ context.Context, r *taskapi.ConnectRequest) (*taskapi.ConnectResponse, error) {
	f.record("Connect")
	return &taskapi.ConnectResponse{ShimPid: 99}, nil
}

func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("err = %v, want code %s", err, code)
	}
}

func createdV1(t *testing.T, core *fakeCore, flush func(context.Context) error) *V1 {
	t.Helper()
	v := NewV1(core, V1Config{RuntimeRoot: "/run/r", SystemdCgroup: true, Flush: flush})
	ctx := t.Context()
	if _, err := v.Kill(ctx, &shimv1.KillRequest{Id: "c1", Signal: 9}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Kill before Create: %v, want FailedPrecondition (container must be created)", err)
	}
	if _, err := v.Create(ctx, &shimv1.CreateTaskRequest{Id: "c1", Bundle: "/b", Runtime: "crun"}); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestV1IDMapping checks how each rpc names its process in the task API: the
// container id (or, for Kill, no id) is the init; anything else an exec.
func TestV1IDMapping(t *testing.T) {
	core := &fakeCore{}
	v := createdV1(t, core, nil)
	ctx := t.Context()
	if got, want := core.last(), "Create c1 /b options{binary_name:\"crun\" root:\"/run/r\" systemd_cgroup:true }"; got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	tests := []struct {
		call func() error
		want string
	}{
		{func() error { _, err := v.Start(ctx, &shimv1.StartRequest{Id: "c1"}); return err }, "Start c1/"},
		{func() error { _, err := v.Start(ctx, &shimv1.StartRequest{Id: "e1"}); return err }, "Start c1/e1"},
		{func() error { _, err := v.State(ctx, &shimv1.StateRequest{Id: "c1"}); return err }, "State c1/"},
		{func() error { _, err := v.State(ctx, &shimv1.StateRequest{Id: "e1"}); return err }, "State c1/e1"},
		{func() error { _, err := v.Kill(ctx, &shimv1.KillRequest{Id: "c1", Signal: 15, All: true}); return err }, "Kill c1/ 15 true"},
		{func() error { _, err := v.Kill(ctx, &shimv1.KillRequest{Signal: 9}); return err }, "Kill c1/ 9 false"},
		{func() error { _, err := v.Kill(ctx, &shimv1.KillRequest{Id: "e1", Signal: 2}); return err }, "Kill c1/e1 2 false"},
		{func() error { _, err := v.Wait(ctx, &shimv1.WaitRequest{Id: "c1"}); return err }, "Wait c1/"},
		{func() error { _, err := v.Wait(ctx, &shimv1.WaitRequest{Id: "e1"}); return err }, "Wait c1/e1"},
		{func() error { _, err := v.Exec(ctx, &shimv1.ExecProcessRequest{Id: "e1", Stdout: "/f"}); return err }, "Exec c1/e1 /f"},
		{func() error { _, err := v.CloseIO(ctx, &shimv1.CloseIORequest{Id: "e1", Stdin: true}); return err }, "CloseIO c1/e1 true"},
		{func() error { _, err := v.CloseIO(ctx, &shimv1.CloseIORequest{Id: "c1", Stdin: true}); return err }, "CloseIO c1/ true"},
		{func() error {
			_, err := v.ResizePty(ctx, &shimv1.ResizePtyRequest{Id: "e1", Width: 80, Height: 24})
			return err
		}, "ResizePty c1/e1 80x24"},
		{func() error { _, err := v.DeleteProcess(ctx, &shimv1.DeleteProcessRequest{Id: "e1"}); return err }, "Delete c1/e1"},
		{func() error { _, err := v.Pause(ctx, empty); return err }, "Pause c1"},
		{func() error { _, err := v.Resume(ctx, empty); return err }, "Resume c1"},
		{func() error { _, err := v.Update(ctx, &shimv1.UpdateTaskRequest{}); return err }, "Update c1"},
		{func() error { _, err := v.ListPids(ctx, &shimv1.ListPidsRequest{Id: "c1"}); return err }, "Pids c1"},
		{func() error { _, err := v.ShimInfo(ctx, empty); return err }, "Connect"},
		{func() error { _, err := v.Delete(ctx, empty); return err }, "Delete c1/"},
	}
	for _, tc := range tests {
		if err := tc.call(); err != nil {
			t.Fatalf("%s: %v", tc.want, err)
		}
		if got := core.last(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

func TestV1Responses(t *testing.T) {
	core := &fakeCore{}
	v := createdV1(t, core, nil)
	ctx := t.Context()

	st, err := v.State(ctx, &shimv1.StateRequest{Id: "e1"})
	if err != nil || st.Id != "e1" || st.Bundle != "/b" || st.Pid != 12 || st.Status != tasktypes.Status_RUNNING {
		t.Errorf("State = %+v, %v", st, err)
	}
	sr, err := v.Start(ctx, &shimv1.StartRequest{Id: "e1"})
	if err != nil || sr.Id != "e1" || sr.Pid != 11 {
		t.Errorf("Start = %+v, %v", sr, err)
	}
	info, err := v.ShimInfo(ctx, empty)
	if err != nil || info.ShimPid != 99 {
		t.Errorf("ShimInfo = %+v, %v", info, err)
	}
	pids, err := v.ListPids(ctx, &shimv1.ListPidsRequest{Id: "c1"})
	if err != nil || len(pids.Processes) != 2 || pids.Processes[0].Info != nil {
		t.Fatalf("ListPids = %+v, %v", pids, err)
	}
	// The v1 runtime's own ProcessDetails type, same field.
	d := pids.Processes[1].Info
	var pd runctypes.ProcessDetails
	if d.TypeUrl != "containerd.linux.runc.ProcessDetails" || proto.Unmarshal(d.Value, &pd) != nil || pd.ExecId != "e1" {
		t.Errorf("exec info = %v", d)
	}
	del, err := v.Delete(ctx, empty)
	if err != nil || del.Pid != 13 || del.ExitStatus != 3 {
		t.Errorf("Delete = %+v, %v", del, err)
	}
}

func TestV1Refusals(t *testing.T) {
	core := &fakeCore{}
	v := createdV1(t, core, nil)
	ctx := t.Context()
	n := len(core.calls)
	_, err := v.DeleteProcess(ctx, &shimv1.DeleteProcessRequest{Id: "c1"})
	wantCode(t, err, codes.InvalidArgument)
	_, err = v.Exec(ctx, &shimv1.ExecProcessRequest{Id: "c1"})
	wantCode(t, err, codes.AlreadyExists)
	_, err = v.Create(ctx, &shimv1.CreateTaskRequest{Id: "c2", Bundle: "/b2"})
	wantCode(t, err, codes.AlreadyExists)
	if len(core.calls) != n {
		t.Errorf("refused calls reached the core: %v", core.calls[n:])
	}

	// A failed Create leaves the shim without a container.
	core2 := &fakeCore{err: status.Error(codes.Unknown, "OCI runtime create failed")}
	v2 := NewV1(core2, V1Config{})
	_, err = v2.Create(ctx, &shimv1.CreateTaskRequest{Id: "c1", Bundle: "/b"})
	wantCode(t, err, codes.Unknown)
	_, err = v2.State(ctx, &shimv1.StateRequest{Id: "c1"})
	wantCode(t, err, codes.FailedPrecondition)
}

// TestV1Options checks the translation of the v1 runtime's task options into
// the core's runc options.
func TestV1Options(t *testing.T) {
	anyOf := func(m proto.Message) *gogotypes.Any { a, _ := marshalAny(m); return a }
	tests := []struct {
		name string
		opts *gogotypes.Any
		want string // runcopts.Options text, or an error substring
	}{
		{"none", nil, `binary_name:"runc" root:"/run/r" systemd_cgroup:true `},
		{"create options", anyOf(&runctypes.CreateOptions{NoPivotRoot: true, NoNewKeyring: true, IoUid: 1000, IoGid: 1001, ShimCgroup: "/x"}),
			`no_pivot_root:true no_new_keyring:true io_uid:1000 io_gid:1001 binary_name:"runc" root:"/run/r" systemd_cgroup:true `},
		{"runc options override", anyOf(&runctypes.RuncOptions{Runtime: "crun", RuntimeRoot: "/run/crun"}),
			`binary_name:"crun" root:"/run/crun" systemd_cgroup:true `},
		{"runc options criu path", anyOf(&runctypes.RuncOptions{CriuPath: "/opt/criu"}),
			`binary_name:"runc" root:"/run/r" criu_path:"/opt/criu" systemd_cgroup:true `},
		{"foreign type", &gogotypes.Any{TypeUrl: "containerd.runc.v1.Options"}, "unknown task options type"},
	}
	v := NewV1(&fakeCore{}, V1Config{RuntimeRoot: "/run/r", SystemdCgroup: true})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := v.options("runc", tc.opts)
			if err != nil {
				if !strings.Contains(err.Error(), tc.want) || !errors.Is(err, errInvalid) {
					t.Fatalf("err = %v, want %q", err, tc.want)
				}
				return
			}
			var o runcopts.Options
			if err := proto.Unmarshal(a.Value, &o); err != nil {
				t.Fatal(err)
			}
			if got := o.String(); got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestV1DeleteFlushesEvents checks the order containerd 1.6 relies on: Delete
// returns only once the events published before it (the TaskExit) are out.
func TestV1DeleteFlushesEvents(t *testing.T) {
	core := &fakeCore{}
	var flushed []string
	v := createdV1(t, core, func(context.Context) error {
		flushed = append(flushed, core.last())
		return nil
	})
	if _, err := v.Delete(t.Context(), empty); err != nil {
		t.Fatal(err)
	}
	if len(flushed) != 1 || flushed[0] != "Delete c1/" {
		t.Fatalf("flushes after %v, want one after the core's Delete", flushed)
	}
}

func TestV1EventsOnlyExit(t *testing.T) {
	var got []string
	e := V1Events(eventsFunc(func(topic string, _ proto.Message) { got = append(got, topic) }))
	for _, topic := range []string{"/tasks/create", "/tasks/start", "/tasks/exec-added", "/tasks/exec-started", "/tasks/exit", "/tasks/paused", "/tasks/delete"} {
		e.Publish(topic, &events.TaskExit{})
	}
	if len(got) != 1 || got[0] != "/tasks/exit" {
		t.Fatalf("published %v, want only /tasks/exit", got)
	}
}

type eventsFunc func(string, proto.Message)

func (f eventsFunc) Publish(topic string, ev proto.Message) { f(topic, ev) }

// TestV1Terminate checks containerd-shim's SIGTERM sequence: kill all, wait
// for the init, delete; no flush (containerd may be down); nothing to do
// without a container.
func TestV1Terminate(t *testing.T) {
	if err := NewV1(&fakeCore{}, V1Config{}).Terminate(t.Context()); err != nil {
		t.Fatalf("Terminate without a container = %v", err)
	}
	core := &fakeCore{}
	flushes := 0
	v := createdV1(t, core, func(context.Context) error { flushes++; return nil })
	n := len(core.calls)
	if err := v.Terminate(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := []string{"Kill c1/ 9 true", "Wait c1/", "Delete c1/"}
	if got := core.calls[n:]; strings.Join(got, ", ") != strings.Join(want, ", ") || flushes != 0 {
		t.Fatalf("calls %v, flushes %d; want %v and none", got, flushes, want)
	}
}
