package proto_test

import (
	"strings"
	"testing"

	"github.com/gogo/protobuf/proto"
	"github.com/gogo/protobuf/protoc-gen-gogo/descriptor"

	"github.com/leanshim/leanshim/proto/criapi"
	"github.com/leanshim/leanshim/proto/sandboxapi"
	"github.com/leanshim/leanshim/proto/types"
)

// wantSandboxFields lists the sandbox API's messages (containerd api v1.12.0,
// containerd 2.4.2: runtime/sandbox/v1/sandbox.proto, types/platform.proto,
// types/metrics.proto, types/sandbox.proto) and the CRI subset leanshim
// decodes (k8s.io/cri-api pkg/apis/runtime/v1/api.proto: same numbers and
// types for the fields declared), in the notation of wantFields (a map's
// message values read "message": Sandbox.extensions is map<string, Any>).
const wantSandboxFields = `
containerd.runtime.sandbox.v1.CreateSandboxRequest  1 sandbox_id string | 2 bundle_path string | 3 rootfs repeated containerd.types.Mount | 4 options Any | 5 netns_path string | 6 annotations map<string,string>
containerd.runtime.sandbox.v1.CreateSandboxResponse
containerd.runtime.sandbox.v1.StartSandboxRequest   1 sandbox_id string
containerd.runtime.sandbox.v1.StartSandboxResponse  1 pid uint32 | 2 created_at Timestamp | 3 spec Any
containerd.runtime.sandbox.v1.PlatformRequest       1 sandbox_id string
containerd.runtime.sandbox.v1.PlatformResponse      1 platform containerd.types.Platform
containerd.runtime.sandbox.v1.StopSandboxRequest    1 sandbox_id string | 2 timeout_secs uint32
containerd.runtime.sandbox.v1.StopSandboxResponse
containerd.runtime.sandbox.v1.UpdateSandboxRequest  1 sandbox_id string | 2 resources Any | 3 annotations map<string,string> | 4 sandbox containerd.types.Sandbox | 5 fields repeated string
containerd.runtime.sandbox.v1.UpdateSandboxResponse
containerd.runtime.sandbox.v1.WaitSandboxRequest    1 sandbox_id string
containerd.runtime.sandbox.v1.WaitSandboxResponse   1 exit_status uint32 | 2 exited_at Timestamp
containerd.runtime.sandbox.v1.SandboxStatusRequest  1 sandbox_id string | 2 verbose bool
containerd.runtime.sandbox.v1.SandboxStatusResponse 1 sandbox_id string | 2 pid uint32 | 3 state string | 4 info map<string,string> | 5 created_at Timestamp | 6 exited_at Timestamp | 7 extra Any
containerd.runtime.sandbox.v1.PingRequest           1 sandbox_id string
containerd.runtime.sandbox.v1.PingResponse
containerd.runtime.sandbox.v1.ShutdownSandboxRequest 1 sandbox_id string
containerd.runtime.sandbox.v1.ShutdownSandboxResponse
containerd.runtime.sandbox.v1.SandboxMetricsRequest 1 sandbox_id string
containerd.runtime.sandbox.v1.SandboxMetricsResponse 1 metrics containerd.types.Metric
containerd.types.Platform  1 os string | 2 architecture string | 3 variant string | 4 os_version string | 5 os_features repeated string
containerd.types.Metric    1 timestamp Timestamp | 2 id string | 3 data Any
containerd.types.Sandbox   1 sandbox_id string | 2 runtime containerd.types.Sandbox.Runtime | 3 spec Any | 4 labels map<string,string> | 5 created_at Timestamp | 6 updated_at Timestamp | 7 extensions map<string,message> | 10 sandboxer string
runtime.v1.PodSandboxConfig      1 metadata runtime.v1.PodSandboxMetadata | 2 hostname string | 3 log_directory string | 4 dns_config runtime.v1.DNSConfig | 8 linux runtime.v1.LinuxPodSandboxConfig
runtime.v1.PodSandboxMetadata    1 name string | 2 uid string | 3 namespace string | 4 attempt uint32
runtime.v1.DNSConfig             1 servers repeated string | 2 searches repeated string | 3 options repeated string
runtime.v1.LinuxPodSandboxConfig 1 cgroup_parent string | 2 security_context runtime.v1.LinuxSandboxSecurityContext
runtime.v1.LinuxSandboxSecurityContext 1 namespace_options runtime.v1.NamespaceOption
runtime.v1.NamespaceOption       1 network runtime.v1.NamespaceMode | 2 pid runtime.v1.NamespaceMode | 3 ipc runtime.v1.NamespaceMode | 4 target_id string | 5 userns_options runtime.v1.UserNamespace
runtime.v1.UserNamespace         1 mode runtime.v1.NamespaceMode
`

var sandboxMessages = []descriptorMessage{
	&sandboxapi.CreateSandboxRequest{}, &sandboxapi.CreateSandboxResponse{},
	&sandboxapi.StartSandboxRequest{}, &sandboxapi.StartSandboxResponse{},
	&sandboxapi.PlatformRequest{}, &sandboxapi.PlatformResponse{},
	&sandboxapi.StopSandboxRequest{}, &sandboxapi.StopSandboxResponse{},
	&sandboxapi.UpdateSandboxRequest{}, &sandboxapi.UpdateSandboxResponse{},
	&sandboxapi.WaitSandboxRequest{}, &sandboxapi.WaitSandboxResponse{},
	&sandboxapi.SandboxStatusRequest{}, &sandboxapi.SandboxStatusResponse{},
	&sandboxapi.PingRequest{}, &sandboxapi.PingResponse{},
	&sandboxapi.ShutdownSandboxRequest{}, &sandboxapi.ShutdownSandboxResponse{},
	&sandboxapi.SandboxMetricsRequest{}, &sandboxapi.SandboxMetricsResponse{},
	&types.Platform{}, &types.Metric{}, &types.Sandbox{},
	&criapi.PodSandboxConfig{}, &criapi.PodSandboxMetadata{}, &criapi.DNSConfig{},
	&criapi.LinuxPodSandboxConfig{}, &criapi.LinuxSandboxSecurityContext{}, &criapi.NamespaceOption{}, &criapi.UserNamespace{},
}

func TestSandboxFieldNumbers(t *testing.T) {
	want := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(wantSandboxFields), "\n") {
		name, fields, _ := strings.Cut(line, " ")
		want[name] = normalizeFields(fields)
	}
	if len(want) != len(sandboxMessages) {
		t.Fatalf("wantSandboxFields has %d messages, sandboxMessages %d", len(want), len(sandboxMessages))
	}
	for _, m := range sandboxMessages {
		fd, md := descriptor.ForMessage(m)
		name := fd.GetPackage() + "." + md.GetName()
		if got := proto.MessageName(m); got != name {
			t.Errorf("%T registered as %q, descriptor says %q", m, got, name)
		}
		if got := describeFields(md); got != want[name] {
			t.Errorf("%s fields\n got: %s\nwant: %s", name, got, want[name])
		}
	}
}

// TestSandboxServiceMethods checks the service name and methods against
// containerd api v1.12.0's Sandbox service.
func TestSandboxServiceMethods(t *testing.T) {
	fd := fileDescriptor(t, "proto/sandboxapi/sandbox_service.proto")
	if len(fd.Service) != 1 {
		t.Fatalf("%d services, want 1", len(fd.Service))
	}
	svc := fd.Service[0]
	if got := fd.GetPackage() + "." + svc.GetName(); got != "containerd.runtime.sandbox.v1.Sandbox" {
		t.Fatalf("service %q", got)
	}
	var got []string
	for _, m := range svc.Method {
		got = append(got, m.GetName()+"("+shortName(m.GetInputType())+") "+shortName(m.GetOutputType()))
	}
	want := "CreateSandbox(CreateSandboxRequest) CreateSandboxResponse | StartSandbox(StartSandboxRequest) StartSandboxResponse | " +
		"Platform(PlatformRequest) PlatformResponse | StopSandbox(StopSandboxRequest) StopSandboxResponse | " +
		"WaitSandbox(WaitSandboxRequest) WaitSandboxResponse | SandboxStatus(SandboxStatusRequest) SandboxStatusResponse | " +
		"PingSandbox(PingRequest) PingResponse | ShutdownSandbox(ShutdownSandboxRequest) ShutdownSandboxResponse | " +
		"SandboxMetrics(SandboxMetricsRequest) SandboxMetricsResponse | UpdateSandbox(UpdateSandboxRequest) UpdateSandboxResponse"
	if g := strings.Join(got, " | "); g != want {
		t.Fatalf("methods\n got: %s\nwant: %s", g, want)
	}
}
