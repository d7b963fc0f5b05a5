package task

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	gogotypes "github.com/gogo/protobuf/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leanshim/leanshim/proto/criapi"
	"github.com/leanshim/leanshim/proto/sandboxapi"
	"github.com/leanshim/leanshim/proto/taskapi"
)

func podOptions(t *testing.T, pc *criapi.PodSandboxConfig) *gogotypes.Any {
	t.Helper()
	b, err := pc.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return &gogotypes.Any{TypeUrl: podSandboxConfigType, Value: b}
}

// Bad requests get containerd's error classes, never Unimplemented (which
// containerd 2.4 reads as an older API).
func TestSandboxBadInput(t *testing.T) {
	s := newFakeService(t)
	ctx := t.Context()
	bundle := t.TempDir()
	for _, tc := range []struct {
		name string
		req  *sandboxapi.CreateSandboxRequest
		want codes.Code
	}{
		{"no id", &sandboxapi.CreateSandboxRequest{BundlePath: bundle}, codes.InvalidArgument},
		{"bad id", &sandboxapi.CreateSandboxRequest{SandboxId: "../x", BundlePath: bundle}, codes.InvalidArgument},
		{"no bundle", &sandboxapi.CreateSandboxRequest{SandboxId: "p"}, codes.InvalidArgument},
		{"NUL in netns", &sandboxapi.CreateSandboxRequest{SandboxId: "p", BundlePath: bundle, NetnsPath: "a\x00b"}, codes.InvalidArgument},
		{"options of another type", &sandboxapi.CreateSandboxRequest{SandboxId: "p", BundlePath: bundle,
			Options: &gogotypes.Any{TypeUrl: "containerd.runc.v1.Options"}}, codes.InvalidArgument},
		{"options that do not decode", &sandboxapi.CreateSandboxRequest{SandboxId: "p", BundlePath: bundle,
			Options: &gogotypes.Any{TypeUrl: podSandboxConfigType, Value: []byte{0xff, 0xff}}}, codes.InvalidArgument},
		{"host network with a netns", &sandboxapi.CreateSandboxRequest{SandboxId: "p", BundlePath: bundle, NetnsPath: "/x",
			Options: podOptions(t, &criapi.PodSandboxConfig{Linux: &criapi.LinuxPodSandboxConfig{SecurityContext: &criapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &criapi.NamespaceOption{Network: criapi.NamespaceMode_NODE}}}})}, codes.InvalidArgument},
		{"user namespace", &sandboxapi.CreateSandboxRequest{SandboxId: "p", BundlePath: bundle,
			Options: podOptions(t, &criapi.PodSandboxConfig{Linux: &criapi.LinuxPodSandboxConfig{SecurityContext: &criapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &criapi.NamespaceOption{UsernsOptions: &criapi.UserNamespace{Mode: criapi.NamespaceMode_POD}}}}})}, codes.InvalidArgument},
	} {
		if _, err := s.CreateSandbox(ctx, tc.req); status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if n := s.Count(); n != 0 {
		t.Errorf("bad creates left %d sandboxes", n)
	}
	if ents, _ := os.ReadDir(bundle); len(ents) != 0 {
		t.Errorf("bad creates left files in the bundle: %v", ents)
	}
	unknown := "nope"
	calls := map[string]func() error{
		"Start": func() error {
			_, err := s.StartSandbox(ctx, &sandboxapi.StartSandboxRequest{SandboxId: unknown})
			return err
		},
		"Platform": func() error { _, err := s.Platform(ctx, &sandboxapi.PlatformRequest{SandboxId: unknown}); return err },
		"Stop": func() error {
			_, err := s.StopSandbox(ctx, &sandboxapi.StopSandboxRequest{SandboxId: unknown})
			return err
		},
		"Wait": func() error {
			_, err := s.WaitSandbox(ctx, &sandboxapi.WaitSandboxRequest{SandboxId: unknown})
			return err
		},
		"Status": func() error {
			_, err := s.SandboxStatus(ctx, &sandboxapi.SandboxStatusRequest{SandboxId: unknown})
			return err
		},
		"Ping": func() error { _, err := s.PingSandbox(ctx, &sandboxapi.PingRequest{SandboxId: unknown}); return err },
		"Shutdown": func() error {
			_, err := s.ShutdownSandbox(ctx, &sandboxapi.ShutdownSandboxRequest{SandboxId: unknown})
			return err
		},
		"Metrics": func() error {
			_, err := s.SandboxMetrics(ctx, &sandboxapi.SandboxMetricsRequest{SandboxId: unknown})
			return err
		},
		"Update": func() error {
			_, err := s.UpdateSandbox(ctx, &sandboxapi.UpdateSandboxRequest{SandboxId: unknown})
			return err
		},
	}
	for name, call := range calls {
		if err := call(); status.Code(err) != codes.NotFound {
			t.Errorf("%s of an unknown sandbox: %v, want NotFound", name, err)
		}
	}
}

// A shim with no pod factory (the v1 runtime's) refuses sandboxes cleanly.
func TestSandboxWithoutPods(t *testing.T) {
	s := newFakeService(t, func(c *Config) { c.Pods = nil })
	_, err := s.CreateSandbox(t.Context(), &sandboxapi.CreateSandboxRequest{SandboxId: "p", BundlePath: t.TempDir()})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("%v, want FailedPrecondition", err)
	}
}

func TestPodConfigFromCRI(t *testing.T) {
	req := &sandboxapi.CreateSandboxRequest{SandboxId: "p", BundlePath: "/b", NetnsPath: "/var/run/netns/cni-1",
		Options: podOptions(t, &criapi.PodSandboxConfig{
			Hostname:  "h",
			DnsConfig: &criapi.DNSConfig{Servers: []string{"1.1.1.1"}, Searches: []string{"s"}, Options: []string{"ndots:5"}},
			Linux: &criapi.LinuxPodSandboxConfig{CgroupParent: "/kubepods/pod1", SecurityContext: &criapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &criapi.NamespaceOption{Pid: criapi.NamespaceMode_CONTAINER, Ipc: criapi.NamespaceMode_NODE}}},
		})}
	// containerd's typeurl may prefix the name; the name is what counts.
	req.Options.TypeUrl = "type.googleapis.com/" + req.Options.TypeUrl
	cfg, err := podConfig(req)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hostname != "h" || cfg.DNS == nil || cfg.DNS.Servers[0] != "1.1.1.1" || cfg.DNS.Options[0] != "ndots:5" ||
		cfg.CgroupParent != "/kubepods/pod1" || cfg.HostNetwork || !cfg.HostIPC || cfg.SharePID || cfg.NetNS != req.NetnsPath {
		t.Fatalf("%+v", cfg)
	}
	// Without options: the netns path decides the network.
	cfg, err = podConfig(&sandboxapi.CreateSandboxRequest{SandboxId: "p", BundlePath: "/b"})
	if err != nil || !cfg.HostNetwork {
		t.Fatalf("%+v %v", cfg, err)
	}
}

// The whole lifecycle as containerd drives it, on a host-network pod: the
// pod keeps the shim (Count, Shutdown), Connect on the sandbox id names the
// holder, Stop makes Wait return, after ShutdownSandbox Shutdown ends the
// shim.
func TestSandboxLifecycle(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (namespaces, mounts): run as make test does")
	}
	shut := make(chan struct{})
	s := newFakeService(t, func(c *Config) { c.Shutdown = func() { close(shut) } })
	ctx := t.Context()
	bundle := t.TempDir()
	opts := podOptions(t, &criapi.PodSandboxConfig{Linux: &criapi.LinuxPodSandboxConfig{SecurityContext: &criapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &criapi.NamespaceOption{Network: criapi.NamespaceMode_NODE, Pid: criapi.NamespaceMode_CONTAINER}}}})
	if _, err := s.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{SandboxId: "pod", BundlePath: bundle, Options: opts}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = s.ShutdownSandbox(context.Background(), &sandboxapi.ShutdownSandboxRequest{SandboxId: "pod"})
	})
	if _, err := s.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{SandboxId: "pod", BundlePath: bundle}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("second create: %v, want AlreadyExists", err)
	}
	st, err := s.SandboxStatus(ctx, &sandboxapi.SandboxStatusRequest{SandboxId: "pod"})
	if err != nil || st.State != "SANDBOX_NOTREADY" || st.SandboxId != "pod" {
		t.Fatalf("status before start: %+v %v", st, err)
	}
	start, err := s.StartSandbox(ctx, &sandboxapi.StartSandboxRequest{SandboxId: "pod"})
	if err != nil || start.Pid == 0 || start.CreatedAt == nil {
		t.Fatalf("start: %+v %v", start, err)
	}
	if _, err := s.StartSandbox(ctx, &sandboxapi.StartSandboxRequest{SandboxId: "pod"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("second start: %v, want FailedPrecondition", err)
	}
	st, err = s.SandboxStatus(ctx, &sandboxapi.SandboxStatusRequest{SandboxId: "pod"})
	if err != nil || st.State != "SANDBOX_READY" || st.Pid != start.Pid {
		t.Fatalf("status: %+v %v", st, err)
	}
	conn, err := s.Connect(ctx, &taskapi.ConnectRequest{Id: "pod"})
	if err != nil || conn.TaskPid != start.Pid {
		t.Errorf("Connect on the sandbox id: %+v %v, want task pid %d", conn, err, start.Pid)
	}
	if p, err := s.Platform(ctx, &sandboxapi.PlatformRequest{SandboxId: "pod"}); err != nil || p.Platform.Os != "linux" {
		t.Errorf("platform: %+v %v", p, err)
	}
	// The task API's Shutdown (containerd sends one after each task's
	// Delete) must not end a shim that holds a pod.
	if _, err := s.Shutdown(ctx, &taskapi.ShutdownRequest{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-shut:
		t.Fatal("Shutdown ended a shim that holds a pod")
	default:
	}
	waited := make(chan *sandboxapi.WaitSandboxResponse, 1)
	go func() { // joined below through waited
		w, _ := s.WaitSandbox(context.Background(), &sandboxapi.WaitSandboxRequest{SandboxId: "pod"})
		waited <- w
	}()
	if _, err := s.StopSandbox(ctx, &sandboxapi.StopSandboxRequest{SandboxId: "pod", TimeoutSecs: 5}); err != nil {
		t.Fatal(err)
	}
	select {
	case w := <-waited:
		if w == nil || w.ExitStatus != 137 || w.ExitedAt == nil {
			t.Errorf("wait: %+v", w)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitSandbox did not return after StopSandbox")
	}
	st, _ = s.SandboxStatus(ctx, &sandboxapi.SandboxStatusRequest{SandboxId: "pod"})
	if st.State != "SANDBOX_NOTREADY" || st.ExitedAt == nil {
		t.Errorf("status after stop: %+v", st)
	}
	if _, err := s.ShutdownSandbox(ctx, &sandboxapi.ShutdownSandboxRequest{SandboxId: "pod"}); err != nil {
		t.Fatal(err)
	}
	// cmd/shim follows with Shutdown, which now finds the shim empty.
	if _, err := s.Shutdown(ctx, &taskapi.ShutdownRequest{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-shut:
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown after the last pod's ShutdownSandbox did not end the shim")
	}
	if n := s.Count(); n != 0 {
		t.Errorf("count %d after shutdown", n)
	}
	if _, err := os.Stat(filepath.Join(bundle, "hostname")); !os.IsNotExist(err) {
		t.Errorf("pod files left: %v", err)
	}
}
