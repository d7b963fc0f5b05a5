package proto_test

import (
	"context"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/proto"
	"github.com/gogo/protobuf/protoc-gen-gogo/descriptor"

	"github.com/leanshim/leanshim/proto/runctypes"
	"github.com/leanshim/leanshim/proto/shimv1"
	"github.com/leanshim/leanshim/proto/taskapi"
	"github.com/leanshim/leanshim/proto/taskapiv3"
)

// wantV1Fields lists the messages of containerd 1.6's v1 runtime in the
// notation of wantFields, checked against containerd v1.6.20
// runtime/v1/shim/v1/shim.proto and runtime/linux/runctypes/runc.proto
// (PROTOCOL.md §4.1, §4.3).
const wantV1Fields = `
containerd.runtime.linux.shim.v1.CreateTaskRequest   1 id string | 2 bundle string | 3 runtime string | 4 rootfs repeated containerd.types.Mount | 5 terminal bool | 6 stdin string | 7 stdout string | 8 stderr string | 9 checkpoint string | 10 parent_checkpoint string | 11 options Any
containerd.runtime.linux.shim.v1.CreateTaskResponse  1 pid uint32
containerd.runtime.linux.shim.v1.DeleteResponse      1 pid uint32 | 2 exit_status uint32 | 3 exited_at Timestamp
containerd.runtime.linux.shim.v1.DeleteProcessRequest 1 id string
containerd.runtime.linux.shim.v1.ExecProcessRequest  1 id string | 2 terminal bool | 3 stdin string | 4 stdout string | 5 stderr string | 6 spec Any
containerd.runtime.linux.shim.v1.ExecProcessResponse
containerd.runtime.linux.shim.v1.ResizePtyRequest    1 id string | 2 width uint32 | 3 height uint32
containerd.runtime.linux.shim.v1.StateRequest        1 id string
containerd.runtime.linux.shim.v1.StateResponse       1 id string | 2 bundle string | 3 pid uint32 | 4 status containerd.v1.types.Status | 5 stdin string | 6 stdout string | 7 stderr string | 8 terminal bool | 9 exit_status uint32 | 10 exited_at Timestamp
containerd.runtime.linux.shim.v1.KillRequest         1 id string | 2 signal uint32 | 3 all bool
containerd.runtime.linux.shim.v1.CloseIORequest      1 id string | 2 stdin bool
containerd.runtime.linux.shim.v1.ListPidsRequest     1 id string
containerd.runtime.linux.shim.v1.ListPidsResponse    1 processes repeated containerd.v1.types.ProcessInfo
containerd.runtime.linux.shim.v1.CheckpointTaskRequest 1 path string | 2 options Any
containerd.runtime.linux.shim.v1.ShimInfoResponse    1 shim_pid uint32
containerd.runtime.linux.shim.v1.UpdateTaskRequest   1 resources Any
containerd.runtime.linux.shim.v1.StartRequest        1 id string
containerd.runtime.linux.shim.v1.StartResponse       1 id string | 2 pid uint32
containerd.runtime.linux.shim.v1.WaitRequest         1 id string
containerd.runtime.linux.shim.v1.WaitResponse        1 exit_status uint32 | 2 exited_at Timestamp
containerd.linux.runc.RuncOptions       1 runtime string | 2 runtime_root string | 3 criu_path string | 4 systemd_cgroup bool
containerd.linux.runc.CreateOptions     1 no_pivot_root bool | 2 open_tcp bool | 3 external_unix_sockets bool | 4 terminal bool | 5 file_locks bool | 6 empty_namespaces repeated string | 7 cgroups_mode string | 8 no_new_keyring bool | 9 shim_cgroup string | 10 io_uid uint32 | 11 io_gid uint32 | 12 criu_work_path string | 13 criu_image_path string
containerd.linux.runc.CheckpointOptions 1 exit bool | 2 open_tcp bool | 3 external_unix_sockets bool | 4 terminal bool | 5 file_locks bool | 6 empty_namespaces repeated string | 7 cgroups_mode string | 8 work_path string | 9 image_path string
containerd.linux.runc.ProcessDetails    1 exec_id string
`

var v1Messages = []descriptorMessage{
	&shimv1.CreateTaskRequest{}, &shimv1.CreateTaskResponse{}, &shimv1.DeleteResponse{},
	&shimv1.DeleteProcessRequest{}, &shimv1.ExecProcessRequest{}, &shimv1.ExecProcessResponse{},
	&shimv1.ResizePtyRequest{}, &shimv1.StateRequest{}, &shimv1.StateResponse{}, &shimv1.KillRequest{},
	&shimv1.CloseIORequest{}, &shimv1.ListPidsRequest{}, &shimv1.ListPidsResponse{},
	&shimv1.CheckpointTaskRequest{}, &shimv1.ShimInfoResponse{}, &shimv1.UpdateTaskRequest{},
	&shimv1.StartRequest{}, &shimv1.StartResponse{}, &shimv1.WaitRequest{}, &shimv1.WaitResponse{},
	&runctypes.RuncOptions{}, &runctypes.CreateOptions{}, &runctypes.CheckpointOptions{}, &runctypes.ProcessDetails{},
}

func TestV1FieldNumbers(t *testing.T) {
	want := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(wantV1Fields), "\n") {
		name, fields, _ := strings.Cut(line, " ")
		want[name] = normalizeFields(fields)
	}
	if len(want) != len(v1Messages) {
		t.Fatalf("wantV1Fields has %d messages, v1Messages %d", len(want), len(v1Messages))
	}
	for _, m := range v1Messages {
		fd, md := descriptor.ForMessage(m)
		name := fd.GetPackage() + "." + md.GetName()
		if got := proto.MessageType(name); got != reflect.TypeOf(m) {
			t.Errorf("%s resolves to %v in the registry, want %T", name, got, m)
		}
		if w, ok := want[name]; !ok {
			t.Errorf("%s: not in wantV1Fields", name)
		} else if got := describeFields(md); got != w {
			t.Errorf("%s fields\n got: %s\nwant: %s", name, got, w)
		}
	}
}

// TestCompatServices checks the names and methods of containerd.task.v3.Task
// (the v2 methods on the v2 messages; only the service name differs) and of
// the v1 shim service.
func TestCompatServices(t *testing.T) {
	tests := []struct{ file, service, methods string }{{
		file:    "proto/taskapiv3/shim_service.proto",
		service: "containerd.task.v3.Task",
		methods: methodsOf(t, "proto/taskapi/shim_service.proto"),
	}, {
		file:    "proto/shimv1/shim_service.proto",
		service: "containerd.runtime.linux.shim.v1.Shim",
		methods: `State(StateRequest) StateResponse | Create(CreateTaskRequest) CreateTaskResponse |
			Start(StartRequest) StartResponse | Delete(Empty) DeleteResponse |
			DeleteProcess(DeleteProcessRequest) DeleteResponse | ListPids(ListPidsRequest) ListPidsResponse |
			Pause(Empty) Empty | Resume(Empty) Empty | Checkpoint(CheckpointTaskRequest) Empty |
			Kill(KillRequest) Empty | Exec(ExecProcessRequest) Empty | ResizePty(ResizePtyRequest) Empty |
			CloseIO(CloseIORequest) Empty | ShimInfo(Empty) ShimInfoResponse | Update(UpdateTaskRequest) Empty |
			Wait(WaitRequest) WaitResponse`,
	}}
	for _, tc := range tests {
		t.Run(tc.service, func(t *testing.T) {
			fd := fileDescriptor(t, tc.file)
			if len(fd.Service) != 1 || fd.GetPackage()+"."+fd.Service[0].GetName() != tc.service {
				t.Fatalf("%s declares %v, want service %s", tc.file, fd.Service, tc.service)
			}
			if got := methodsOf(t, tc.file); got != normalizeFields(tc.methods) {
				t.Fatalf("methods\n got: %s\nwant: %s", got, normalizeFields(tc.methods))
			}
		})
	}
	// v3 takes the v2 messages themselves.
	for _, m := range fileDescriptor(t, "proto/taskapiv3/shim_service.proto").Service[0].Method {
		if !strings.HasPrefix(m.GetInputType(), ".containerd.task.v2.") {
			t.Errorf("v3 %s takes %s, want a containerd.task.v2 message", m.GetName(), m.GetInputType())
		}
	}
}

func methodsOf(t *testing.T, file string) string {
	t.Helper()
	var got []string
	for _, m := range fileDescriptor(t, file).Service[0].Method {
		got = append(got, m.GetName()+"("+shortName(m.GetInputType())+") "+shortName(m.GetOutputType()))
	}
	return strings.Join(got, " | ")
}

// TestTaskV3SameImplementation registers one implementation under both task
// service names, as the shim does, and calls it by either name.
func TestTaskV3SameImplementation(t *testing.T) {
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	var impl taskapi.TaskService = fakeTask{}
	taskapi.RegisterTaskService(srv, impl)
	taskapiv3.RegisterTaskService(srv, impl) // the same method set
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), l) }() // stopped and joined by the cleanup
	conn, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client := ttrpc.NewClient(conn)
	t.Cleanup(func() {
		_ = client.Close()
		_ = srv.Close()
		<-done
	})
	for _, svc := range []string{"containerd.task.v2.Task", "containerd.task.v3.Task"} {
		var resp taskapi.ConnectResponse
		if err := client.Call(t.Context(), svc, "Connect", &taskapi.ConnectRequest{Id: svc}, &resp); err != nil || resp.Version != svc {
			t.Errorf("%s/Connect = %v, %v", svc, &resp, err)
		}
	}
	resp, err := taskapiv3.NewTaskClient(client).Connect(t.Context(), &taskapi.ConnectRequest{Id: "v3"})
	if err != nil || resp.Version != "v3" {
		t.Errorf("v3 client Connect = %v, %v", resp, err)
	}
}
