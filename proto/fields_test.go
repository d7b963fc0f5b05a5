package proto_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/gogo/protobuf/proto"
	"github.com/gogo/protobuf/protoc-gen-gogo/descriptor"

	"github.com/leanshim/leanshim/proto/bootstrap"
	"github.com/leanshim/leanshim/proto/events"
	"github.com/leanshim/leanshim/proto/eventsapi"
	"github.com/leanshim/leanshim/proto/introspection"
	"github.com/leanshim/leanshim/proto/runcopts"
	"github.com/leanshim/leanshim/proto/runtimeoptions"
	"github.com/leanshim/leanshim/proto/taskapi"
	"github.com/leanshim/leanshim/proto/tasktypes"
	"github.com/leanshim/leanshim/proto/types"
)

// wantFields lists, in the notation of PROTOCOL.md §2.3, every field of the
// messages containerd's runtime and shim exchange. It was checked against
// containerd v1.6.20 runtime/v2/task/shim.proto, api/types/*.proto,
// api/events/task.proto, api/services/ttrpc/events/v1/events.proto and
// runtime/v2/runc/options/oci.proto, and against api v1.12.0 (which adds the
// fields marked there). Any is google.protobuf.Any, Timestamp is
// google.protobuf.Timestamp.
const wantFields = `
containerd.task.v2.CreateTaskRequest   1 id string | 2 bundle string | 3 rootfs repeated containerd.types.Mount | 4 terminal bool | 5 stdin string | 6 stdout string | 7 stderr string | 8 checkpoint string | 9 parent_checkpoint string | 10 options Any
containerd.task.v2.CreateTaskResponse  1 pid uint32
containerd.task.v2.DeleteRequest       1 id string | 2 exec_id string
containerd.task.v2.DeleteResponse      1 pid uint32 | 2 exit_status uint32 | 3 exited_at Timestamp
containerd.task.v2.ExecProcessRequest  1 id string | 2 exec_id string | 3 terminal bool | 4 stdin string | 5 stdout string | 6 stderr string | 7 spec Any
containerd.task.v2.ExecProcessResponse
containerd.task.v2.ResizePtyRequest    1 id string | 2 exec_id string | 3 width uint32 | 4 height uint32
containerd.task.v2.StateRequest        1 id string | 2 exec_id string
containerd.task.v2.StateResponse       1 id string | 2 bundle string | 3 pid uint32 | 4 status containerd.v1.types.Status | 5 stdin string | 6 stdout string | 7 stderr string | 8 terminal bool | 9 exit_status uint32 | 10 exited_at Timestamp | 11 exec_id string
containerd.task.v2.KillRequest         1 id string | 2 exec_id string | 3 signal uint32 | 4 all bool
containerd.task.v2.CloseIORequest      1 id string | 2 exec_id string | 3 stdin bool
containerd.task.v2.PidsRequest         1 id string
containerd.task.v2.PidsResponse        1 processes repeated containerd.v1.types.ProcessInfo
containerd.task.v2.CheckpointTaskRequest 1 id string | 2 path string | 3 options Any
containerd.task.v2.UpdateTaskRequest   1 id string | 2 resources Any | 3 annotations map<string,string>
containerd.task.v2.StartRequest        1 id string | 2 exec_id string
containerd.task.v2.StartResponse       1 pid uint32
containerd.task.v2.WaitRequest         1 id string | 2 exec_id string
containerd.task.v2.WaitResponse        1 exit_status uint32 | 2 exited_at Timestamp
containerd.task.v2.StatsRequest        1 id string
containerd.task.v2.StatsResponse       1 stats Any
containerd.task.v2.ConnectRequest      1 id string
containerd.task.v2.ConnectResponse     1 shim_pid uint32 | 2 task_pid uint32 | 3 version string
containerd.task.v2.ShutdownRequest     1 id string | 2 now bool
containerd.task.v2.PauseRequest        1 id string
containerd.task.v2.ResumeRequest       1 id string
containerd.types.Mount                 1 type string | 2 source string | 3 target string | 4 options repeated string
containerd.v1.types.ProcessInfo        1 pid uint32 | 2 info Any
containerd.events.TaskCreate           1 container_id string | 2 bundle string | 3 rootfs repeated containerd.types.Mount | 4 io containerd.events.TaskIO | 5 checkpoint string | 6 pid uint32
containerd.events.TaskStart            1 container_id string | 2 pid uint32
containerd.events.TaskDelete           1 container_id string | 2 pid uint32 | 3 exit_status uint32 | 4 exited_at Timestamp | 5 id string
containerd.events.TaskIO               1 stdin string | 2 stdout string | 3 stderr string | 4 terminal bool
containerd.events.TaskExit             1 container_id string | 2 id string | 3 pid uint32 | 4 exit_status uint32 | 5 exited_at Timestamp
containerd.events.TaskOOM              1 container_id string
containerd.events.TaskExecAdded        1 container_id string | 2 exec_id string
containerd.events.TaskExecStarted      1 container_id string | 2 exec_id string | 3 pid uint32
containerd.events.TaskPaused           1 container_id string
containerd.events.TaskResumed          1 container_id string
containerd.events.TaskCheckpointed     1 container_id string | 2 checkpoint string
containerd.services.events.ttrpc.v1.ForwardRequest 1 envelope containerd.services.events.ttrpc.v1.Envelope
containerd.services.events.ttrpc.v1.Envelope       1 timestamp Timestamp | 2 namespace string | 3 topic string | 4 event Any
containerd.runc.v1.Options             1 no_pivot_root bool | 2 no_new_keyring bool | 3 shim_cgroup string | 4 io_uid uint32 | 5 io_gid uint32 | 6 binary_name string | 7 root string | 8 criu_path string | 9 systemd_cgroup bool | 10 criu_image_path string | 11 criu_work_path string | 12 task_api_address string | 13 task_api_version uint32
containerd.runc.v1.CheckpointOptions   1 exit bool | 2 open_tcp bool | 3 external_unix_sockets bool | 4 terminal bool | 5 file_locks bool | 6 empty_namespaces repeated string | 7 cgroups_mode string | 8 image_path string | 9 work_path string | 10 parent_path string
containerd.runc.v1.ProcessDetails      1 exec_id string
containerd.runtime.bootstrap.v1.BootstrapParams 1 instance_id string | 2 namespace string | 3 log_level containerd.runtime.bootstrap.v1.LogLevel | 4 containerd_version string | 5 containerd_ttrpc_address string | 6 containerd_grpc_address string | 7 containerd_binary string | 8 extensions repeated containerd.runtime.bootstrap.v1.Extension | 9 socket_dir string
containerd.runtime.bootstrap.v1.BootstrapResult 1 version int32 | 2 address string | 3 protocol string | 4 capabilities repeated containerd.runtime.bootstrap.v1.Capability | 5 metadata map<string,string> | 6 extensions repeated containerd.runtime.bootstrap.v1.Extension
`

// descriptorMessage is a generated gogo message with its descriptor.
type descriptorMessage interface {
	proto.Message
	Descriptor() ([]byte, []int)
}

var allMessages = []descriptorMessage{
	&taskapi.CreateTaskRequest{}, &taskapi.CreateTaskResponse{},
	&taskapi.DeleteRequest{}, &taskapi.DeleteResponse{},
	&taskapi.ExecProcessRequest{}, &taskapi.ExecProcessResponse{},
	&taskapi.ResizePtyRequest{}, &taskapi.StateRequest{}, &taskapi.StateResponse{},
	&taskapi.KillRequest{}, &taskapi.CloseIORequest{},
	&taskapi.PidsRequest{}, &taskapi.PidsResponse{}, &taskapi.CheckpointTaskRequest{},
	&taskapi.UpdateTaskRequest{}, &taskapi.StartRequest{}, &taskapi.StartResponse{},
	&taskapi.WaitRequest{}, &taskapi.WaitResponse{}, &taskapi.StatsRequest{}, &taskapi.StatsResponse{},
	&taskapi.ConnectRequest{}, &taskapi.ConnectResponse{}, &taskapi.ShutdownRequest{},
	&taskapi.PauseRequest{}, &taskapi.ResumeRequest{},
	&types.Mount{}, &tasktypes.ProcessInfo{},
	&events.TaskCreate{}, &events.TaskStart{}, &events.TaskDelete{}, &events.TaskIO{},
	&events.TaskExit{}, &events.TaskOOM{}, &events.TaskExecAdded{}, &events.TaskExecStarted{},
	&events.TaskPaused{}, &events.TaskResumed{}, &events.TaskCheckpointed{},
	&eventsapi.ForwardRequest{}, &eventsapi.Envelope{},
	&runcopts.Options{}, &runcopts.CheckpointOptions{}, &runcopts.ProcessDetails{},
	&bootstrap.BootstrapParams{}, &bootstrap.BootstrapResult{},
}

// TestFieldNumbers compares each generated message's descriptor with wantFields.
func TestFieldNumbers(t *testing.T) {
	want := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(wantFields), "\n") {
		name, fields, _ := strings.Cut(line, " ")
		want[name] = normalizeFields(fields)
	}
	if len(want) != len(allMessages) {
		t.Fatalf("wantFields has %d messages, allMessages %d", len(want), len(allMessages))
	}
	for _, m := range allMessages {
		fd, md := descriptor.ForMessage(m)
		name := fd.GetPackage() + "." + md.GetName()
		if got := proto.MessageName(m); got != name {
			t.Errorf("%T registered as %q, descriptor says %q", m, got, name)
		}
		w, ok := want[name]
		if !ok {
			t.Errorf("%s: not in wantFields", name)
			continue
		}
		if got := describeFields(md); got != w {
			t.Errorf("%s fields\n got: %s\nwant: %s", name, got, w)
		}
	}
}

// TestRegistry checks that every message resolves by its full name in gogo's
// registry, which is how a type_url is decoded (containerd 1.6 uses
// gogo proto.MessageType). Package types and package introspection share the
// proto package containerd.types; their names must not collide.
func TestRegistry(t *testing.T) {
	all := append([]descriptorMessage{
		&introspection.RuntimeInfo{}, &introspection.RuntimeVersion{},
		&runtimeoptions.Options{}, &bootstrap.Extension{},
	}, allMessages...)
	for _, m := range all {
		name := proto.MessageName(m)
		if got, want := proto.MessageType(name), reflect.TypeOf(m); got != want {
			t.Errorf("proto.MessageType(%q) = %v, want %v", name, got, want)
		}
	}
	for _, name := range []string{"containerd.types.Mount", "containerd.types.RuntimeInfo", "runtimeoptions.v1.Options", "containerd.runc.v1.Options"} {
		if proto.MessageType(name) == nil {
			t.Errorf("%s not registered", name)
		}
	}
}

func normalizeFields(s string) string {
	var out []string
	for _, f := range strings.Split(s, "|") {
		if f = strings.Join(strings.Fields(f), " "); f != "" {
			out = append(out, f)
		}
	}
	return strings.Join(out, " | ")
}

// describeFields renders md's fields in the notation of wantFields.
func describeFields(md *descriptor.DescriptorProto) string {
	var out []string
	for _, f := range md.Field {
		typ := strings.ToLower(strings.TrimPrefix(f.GetType().String(), "TYPE_"))
		if tn := f.GetTypeName(); tn != "" {
			typ = strings.TrimPrefix(tn, ".")
			typ = strings.TrimPrefix(typ, "google.protobuf.")
		}
		label := ""
		if f.GetLabel() == descriptor.FieldDescriptorProto_LABEL_REPEATED {
			label = "repeated "
		}
		for _, nested := range md.NestedType {
			if nested.GetOptions().GetMapEntry() && strings.HasSuffix(f.GetTypeName(), "."+nested.GetName()) {
				label, typ = "", fmt.Sprintf("map<%s,%s>", scalarName(nested.Field[0]), scalarName(nested.Field[1]))
			}
		}
		out = append(out, fmt.Sprintf("%d %s %s%s", f.GetNumber(), f.GetName(), label, typ))
	}
	return strings.Join(out, " | ")
}

func scalarName(f *descriptor.FieldDescriptorProto) string {
	return strings.ToLower(strings.TrimPrefix(f.GetType().String(), "TYPE_"))
}

// TestServiceMethods checks the ttrpc services' full names, method names and
// request/response types against PROTOCOL.md §2.2 and §3.1.
func TestServiceMethods(t *testing.T) {
	tests := []struct {
		file, service string
		methods       string
	}{{
		file:    "proto/taskapi/shim_service.proto",
		service: "containerd.task.v2.Task",
		methods: `State(StateRequest) StateResponse | Create(CreateTaskRequest) CreateTaskResponse |
			Start(StartRequest) StartResponse | Delete(DeleteRequest) DeleteResponse |
			Pids(PidsRequest) PidsResponse | Pause(PauseRequest) Empty | Resume(ResumeRequest) Empty |
			Checkpoint(CheckpointTaskRequest) Empty | Kill(KillRequest) Empty | Exec(ExecProcessRequest) Empty |
			ResizePty(ResizePtyRequest) Empty | CloseIO(CloseIORequest) Empty | Update(UpdateTaskRequest) Empty |
			Wait(WaitRequest) WaitResponse | Stats(StatsRequest) StatsResponse |
			Connect(ConnectRequest) ConnectResponse | Shutdown(ShutdownRequest) Empty`,
	}, {
		file:    "proto/eventsapi/events_service.proto",
		service: "containerd.services.events.ttrpc.v1.Events",
		methods: `Forward(ForwardRequest) Empty`,
	}}
	for _, tc := range tests {
		t.Run(tc.service, func(t *testing.T) {
			fd := fileDescriptor(t, tc.file)
			if len(fd.Service) != 1 {
				t.Fatalf("%s declares %d services, want 1", tc.file, len(fd.Service))
			}
			svc := fd.Service[0]
			if got := fd.GetPackage() + "." + svc.GetName(); got != tc.service {
				t.Fatalf("service = %q, want %q", got, tc.service)
			}
			var got []string
			for _, m := range svc.Method {
				got = append(got, fmt.Sprintf("%s(%s) %s", m.GetName(), shortName(m.GetInputType()), shortName(m.GetOutputType())))
			}
			if g, w := strings.Join(got, " | "), normalizeFields(tc.methods); g != w {
				t.Fatalf("methods\n got: %s\nwant: %s", g, w)
			}
		})
	}
}

func shortName(typeName string) string {
	return typeName[strings.LastIndex(typeName, ".")+1:]
}

// fileDescriptor returns the descriptor that gogo registered for file.
func fileDescriptor(t *testing.T, file string) *descriptor.FileDescriptorProto {
	t.Helper()
	gz := proto.FileDescriptor(file)
	if gz == nil {
		t.Fatalf("%s: not registered", file)
	}
	r, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var fd descriptor.FileDescriptorProto
	if err := proto.Unmarshal(b, &fd); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return &fd
}
