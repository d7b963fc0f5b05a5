package task

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/leanshim/leanshim/pod"
	"github.com/leanshim/leanshim/proto/criapi"
	"github.com/leanshim/leanshim/proto/sandboxapi"
	"github.com/leanshim/leanshim/proto/types"
)

// The sandbox API (containerd.runtime.sandbox.v1.Sandbox): containerd 2.x
// calls it on the shim of a pod whose CRI runtime handler says sandboxer =
// "shim". The pod is a pod.Pod; its containers then come to this shim
// through the task API like any grouped container.

var _ sandboxapi.SandboxService = (*Service)(nil)

// podSandboxConfigType is the type the CRI plugin's CreateSandbox options
// carry.
const podSandboxConfigType = "runtime.v1.PodSandboxConfig"

// sandboxStopTimeout bounds StopSandbox's wait for the pod's containers when
// containerd gives no timeout.
const sandboxStopTimeout = 10 * time.Second

// pod returns the sandbox of id, or a NotFound error.
func (s *Service) pod(id string) (*pod.Pod, error) {
	s.mu.Lock()
	p := s.pods[id]
	s.mu.Unlock()
	if p == nil {
		return nil, fmt.Errorf("sandbox %q: %w", id, errNotFound)
	}
	return p, nil
}

// CreateSandbox writes the pod's files; StartSandbox starts its holder.
func (s *Service) CreateSandbox(ctx context.Context, r *sandboxapi.CreateSandboxRequest) (_ *sandboxapi.CreateSandboxResponse, retErr error) {
	if err := validID("sandbox id", r.SandboxId); err != nil {
		return nil, toStatus(err)
	}
	if r.BundlePath == "" {
		return nil, toStatus(fmt.Errorf("sandbox %q: bundle path is empty: %w", r.SandboxId, errInvalid))
	}
	if err := noNUL("path", r.BundlePath, r.NetnsPath); err != nil {
		return nil, toStatus(err)
	}
	if s.cfg.Pods == nil {
		return nil, toStatus(fmt.Errorf("sandbox %q: this shim runs no sandboxes: %w", r.SandboxId, errPrecondition))
	}
	cfg, err := podConfig(r)
	if err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	if _, ok := s.pods[r.SandboxId]; ok {
		s.mu.Unlock()
		return nil, toStatus(fmt.Errorf("sandbox %q: %w", r.SandboxId, errAlreadyExists))
	}
	s.pods[r.SandboxId] = nil // reserved
	s.mu.Unlock()
	p, err := s.cfg.Pods.Create(cfg)
	s.mu.Lock()
	if err != nil {
		delete(s.pods, r.SandboxId)
	} else {
		s.pods[r.SandboxId] = p
	}
	s.mu.Unlock()
	if err != nil {
		return nil, toStatus(err)
	}
	return &sandboxapi.CreateSandboxResponse{}, nil
}

// podConfig reads CreateSandbox's request: the CRI PodSandboxConfig in its
// options says which namespaces the pod shares with the node, its hostname,
// DNS and cgroup parent. Without options (a client other than CRI) the pod
// has the network namespace of netns_path, or the node's.
func podConfig(r *sandboxapi.CreateSandboxRequest) (pod.Config, error) {
	cfg := pod.Config{ID: r.SandboxId, Bundle: r.BundlePath, NetNS: r.NetnsPath, HostNetwork: r.NetnsPath == ""}
	if r.Options == nil {
		return cfg, nil
	}
	name := r.Options.TypeUrl[strings.LastIndex(r.Options.TypeUrl, "/")+1:]
	if name != podSandboxConfigType {
		return cfg, fmt.Errorf("sandbox %q: options of type %q, want %s: %w", r.SandboxId, r.Options.TypeUrl, podSandboxConfigType, errInvalid)
	}
	var pc criapi.PodSandboxConfig
	if err := pc.Unmarshal(r.Options.Value); err != nil {
		return cfg, fmt.Errorf("sandbox %q: options: %v: %w", r.SandboxId, err, errInvalid)
	}
	if err := noNUL("hostname", pc.Hostname); err != nil {
		return cfg, err
	}
	cfg.Hostname = pc.Hostname
	if d := pc.DnsConfig; d != nil {
		cfg.DNS = &pod.DNS{Servers: d.Servers, Searches: d.Searches, Options: d.Options}
	}
	ns := pc.GetLinux().GetSecurityContext().GetNamespaceOptions()
	if u := ns.GetUsernsOptions(); u != nil && u.Mode == criapi.NamespaceMode_POD {
		// The CRI plugin would have the containers join the holder's user
		// namespace, which is the node's: refused, never run as root of
		// the node.
		return cfg, fmt.Errorf("sandbox %q: user-namespaced pods are not supported with sandboxer \"shim\": %w", r.SandboxId, errInvalid)
	}
	cfg.CgroupParent = pc.GetLinux().GetCgroupParent()
	cfg.HostNetwork = ns.GetNetwork() == criapi.NamespaceMode_NODE
	cfg.HostIPC = ns.GetIpc() == criapi.NamespaceMode_NODE
	cfg.SharePID = ns.GetPid() == criapi.NamespaceMode_POD
	if cfg.HostNetwork && cfg.NetNS != "" {
		return cfg, fmt.Errorf("sandbox %q: host network with a network namespace path: %w", r.SandboxId, errInvalid)
	}
	return cfg, nil
}

// StartSandbox starts the pod's holder, whose namespaces the pod's
// containers join.
func (s *Service) StartSandbox(ctx context.Context, r *sandboxapi.StartSandboxRequest) (*sandboxapi.StartSandboxResponse, error) {
	p, err := s.pod(r.SandboxId)
	if err != nil {
		return nil, toStatus(err)
	}
	pid, err := p.Start()
	if err != nil {
		return nil, toStatus(err)
	}
	_, _, created, _ := p.Status()
	return &sandboxapi.StartSandboxResponse{Pid: uint32(pid), CreatedAt: timestamp(created)}, nil
}

// Platform is the shim's own: the pod's containers run on this machine.
func (s *Service) Platform(ctx context.Context, r *sandboxapi.PlatformRequest) (*sandboxapi.PlatformResponse, error) {
	if _, err := s.pod(r.SandboxId); err != nil {
		return nil, toStatus(err)
	}
	return &sandboxapi.PlatformResponse{Platform: &types.Platform{Os: runtime.GOOS, Architecture: runtime.GOARCH}}, nil
}

// StopSandbox stops the pod's containers still running (SIGKILL to all
// their processes; the CRI plugin has stopped them gracefully before), waits
// for them within the timeout, then ends the holder.
func (s *Service) StopSandbox(ctx context.Context, r *sandboxapi.StopSandboxRequest) (*sandboxapi.StopSandboxResponse, error) {
	p, err := s.pod(r.SandboxId)
	if err != nil {
		return nil, toStatus(err)
	}
	timeout := sandboxStopTimeout
	if r.TimeoutSecs > 0 {
		timeout = time.Duration(r.TimeoutSecs) * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s.stopContainers(ctx)
	if err := p.Stop(ctx); err != nil {
		return nil, toStatus(err)
	}
	return &sandboxapi.StopSandboxResponse{}, nil
}

// stopContainers kills every process of every container of the shim (all of
// them are the pod's) and waits for the inits' exits until ctx ends.
func (s *Service) stopContainers(ctx context.Context) {
	s.mu.Lock()
	cs := make([]*container, 0, len(s.containers))
	for _, c := range s.containers {
		if c != nil {
			cs = append(cs, c)
		}
	}
	s.mu.Unlock()
	for _, c := range cs {
		_ = c.init.Kill(ctx, 9, true) // best effort: a stopped one says so
	}
	for _, c := range cs {
		_, _ = c.waitInit(ctx)
	}
}

// WaitSandbox returns once the holder has exited: the pod is not ready.
func (s *Service) WaitSandbox(ctx context.Context, r *sandboxapi.WaitSandboxRequest) (*sandboxapi.WaitSandboxResponse, error) {
	p, err := s.pod(r.SandboxId)
	if err != nil {
		return nil, toStatus(err)
	}
	e, err := p.Wait(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &sandboxapi.WaitSandboxResponse{ExitStatus: uint32(e.Status), ExitedAt: timestamp(e.At)}, nil
}

// SandboxStatus names the pod's state as the CRI plugin shows it: ready
// while the holder runs.
func (s *Service) SandboxStatus(ctx context.Context, r *sandboxapi.SandboxStatusRequest) (*sandboxapi.SandboxStatusResponse, error) {
	p, err := s.pod(r.SandboxId)
	if err != nil {
		return nil, toStatus(err)
	}
	st, pid, created, e := p.Status()
	resp := &sandboxapi.SandboxStatusResponse{SandboxId: r.SandboxId, Pid: uint32(pid),
		State: "SANDBOX_NOTREADY", CreatedAt: timestamp(created)}
	switch st {
	case pod.Ready:
		resp.State = "SANDBOX_READY"
	case pod.Stopped:
		resp.ExitedAt = timestamp(e.At)
	}
	if r.Verbose {
		resp.Info = map[string]string{"shim_pid": fmt.Sprint(os.Getpid())}
	}
	return resp, nil
}

// PingSandbox answers while the shim holds the sandbox.
func (s *Service) PingSandbox(ctx context.Context, r *sandboxapi.PingRequest) (*sandboxapi.PingResponse, error) {
	if _, err := s.pod(r.SandboxId); err != nil {
		return nil, toStatus(err)
	}
	return &sandboxapi.PingResponse{}, nil
}

// ShutdownSandbox stops the pod, removes its files and forgets it. The
// shim should then end if nothing is left in it (containerd closes its
// connection and deletes the bundle next): the caller follows with
// Shutdown, as cmd/shim's guard does.
func (s *Service) ShutdownSandbox(ctx context.Context, r *sandboxapi.ShutdownSandboxRequest) (*sandboxapi.ShutdownSandboxResponse, error) {
	p, err := s.pod(r.SandboxId)
	if err != nil {
		return nil, toStatus(err)
	}
	ctx, cancel := context.WithTimeout(ctx, sandboxStopTimeout)
	defer cancel()
	s.stopContainers(ctx)
	if err := p.Shutdown(ctx); err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	delete(s.pods, r.SandboxId)
	s.mu.Unlock()
	return &sandboxapi.ShutdownSandboxResponse{}, nil
}

// SandboxMetrics reports the pod's cgroup parent, which holds its
// containers and its holder.
func (s *Service) SandboxMetrics(ctx context.Context, r *sandboxapi.SandboxMetricsRequest) (*sandboxapi.SandboxMetricsResponse, error) {
	p, err := s.pod(r.SandboxId)
	if err != nil {
		return nil, toStatus(err)
	}
	if s.cfg.Cgroups == nil {
		return nil, toStatus(fmt.Errorf("sandbox %q: no cgroups on this machine: %w", r.SandboxId, errNotFound))
	}
	cg, err := p.Cgroup()
	if err != nil {
		return nil, toStatus(fmt.Errorf("sandbox %q: %w", r.SandboxId, err))
	}
	m, err := cg.Stats()
	if err != nil {
		return nil, toStatus(err)
	}
	data, err := marshalAny(m)
	if err != nil {
		return nil, toStatus(err)
	}
	return &sandboxapi.SandboxMetricsResponse{Metrics: &types.Metric{
		Timestamp: timestamp(time.Now()), Id: r.SandboxId, Data: data,
	}}, nil
}

// UpdateSandbox accepts containerd's new record of the sandbox: nothing in
// it (labels, extensions, annotations) changes what the shim does.
func (s *Service) UpdateSandbox(ctx context.Context, r *sandboxapi.UpdateSandboxRequest) (*sandboxapi.UpdateSandboxResponse, error) {
	if _, err := s.pod(r.SandboxId); err != nil {
		return nil, toStatus(err)
	}
	return &sandboxapi.UpdateSandboxResponse{}, nil
}

// patchPodSpec gives a container of one of the shim's pods the pod's files
// (pod.PatchSpec).
func (s *Service) patchPodSpec(bundle string) error {
	s.mu.Lock()
	ps := make([]*pod.Pod, 0, len(s.pods))
	for _, p := range s.pods {
		if p != nil {
			ps = append(ps, p)
		}
	}
	s.mu.Unlock()
	for _, p := range ps {
		if err := p.PatchSpec(bundle); err != nil {
			return err
		}
	}
	return nil
}
