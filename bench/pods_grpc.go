package main

// Pod start as kubelet drives it: one long-lived gRPC connection to the CRI
// plugin and the calls kubelet makes for a pod of one container
// (RunPodSandbox, ImageStatus, CreateContainer, StartContainer), then
// ContainerStatus until RUNNING. crictl (pods_latency.go) pays a process
// start and a connection per verb, about 50 ms each here, four times per
// pod, for every kind alike; a node never does.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criClient is one gRPC connection to the CRI plugin, as kubelet keeps.
type criClient struct {
	conn *grpc.ClientConn
	rt   runtimeapi.RuntimeServiceClient
	img  runtimeapi.ImageServiceClient
}

func dialCRI(address string) (*criClient, error) {
	conn, err := grpc.NewClient("unix://"+address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	return &criClient{conn: conn, rt: runtimeapi.NewRuntimeServiceClient(conn), img: runtimeapi.NewImageServiceClient(conn)}, nil
}

// runPodGRPC runs a host-network pod of kind k with one idle container over
// c and returns the time from RunPodSandbox to the container RUNNING. The
// pod has the same configuration as runPod's; it is returned filled as far
// as it got, for removal.
func (b *podsBench) runPodGRPC(ctx context.Context, c *criClient, k int) (benchPod, time.Duration, error) {
	p := benchPod{kind: k}
	seq := b.d.pods.Add(1)
	name := fmt.Sprintf("pod-%d", seq)
	ns := &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}
	podCfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "leanshim-bench", Uid: fmt.Sprintf("%s-%d", filepath.Base(b.tmp), seq)},
		LogDirectory: filepath.Join(b.d.podDir, name),
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent:    fmt.Sprintf("%s-%d", b.d.cgroupParent, seq),
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: ns},
		},
	}
	if err := os.MkdirAll(podCfg.LogDirectory, 0o755); err != nil {
		return p, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, crictlTimeout)
	defer cancel()
	begin := time.Now()
	run, err := c.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podCfg, RuntimeHandler: podKinds[k].handler})
	if err != nil {
		return p, 0, fmt.Errorf("RunPodSandbox: %w", err)
	}
	p.id = run.PodSandboxId
	b.mu.Lock()
	b.podIDs = append(b.podIDs, p.id)
	b.mu.Unlock()
	image := &runtimeapi.ImageSpec{Image: appImageRef}
	if st, err := c.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: image}); err != nil || st.Image == nil {
		return p, 0, fmt.Errorf("ImageStatus %s: %v, %w", appImageRef, st, err)
	}
	cr, err := c.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: p.id, SandboxConfig: podCfg,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "app0"},
			Image:    image,
			Command:  idleCommand,
			LogPath:  "app0.log",
			Linux:    &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: ns}},
		},
	})
	if err != nil {
		return p, 0, fmt.Errorf("CreateContainer: %w", err)
	}
	p.ctrs = append(p.ctrs, cr.ContainerId)
	if _, err := c.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		return p, 0, fmt.Errorf("StartContainer: %w", err)
	}
	for {
		st, err := c.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: cr.ContainerId})
		if err != nil {
			return p, 0, fmt.Errorf("ContainerStatus: %w", err)
		}
		if st.Status.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING {
			return p, time.Since(begin), nil
		}
		if err := sleepCtx(ctx, time.Millisecond); err != nil {
			return p, 0, fmt.Errorf("container %s not running: state %v: %w", cr.ContainerId, st.Status.GetState(), err)
		}
	}
}

// grpcLatency times samples pods of each kind started over one gRPC
// connection, kinds alternating, each removed after (not timed).
func (b *podsBench) grpcLatency(ctx context.Context) (med, p99 [3]float64, err error) {
	c, err := dialCRI(b.d.address)
	if err != nil {
		return med, p99, err
	}
	defer c.conn.Close()
	var times [3][]time.Duration
	for i := range b.cfg.samples {
		for _, k := range kindOrder(i) {
			p, t, err := b.runPodGRPC(ctx, c, k)
			if rerr := b.removePods(ctx, []benchPod{p}); err == nil {
				err = rerr
			}
			if err != nil {
				return med, p99, fmt.Errorf("%s over gRPC: %w", podKinds[k].label, err)
			}
			times[k] = append(times[k], t)
		}
	}
	for k := range times {
		med[k], p99[k] = median(millis(times[k])), percentile(millis(times[k]), 99)
	}
	return med, p99, nil
}
