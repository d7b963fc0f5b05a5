package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// benchPod is a pod the bench made.
type benchPod struct {
	id   string
	kind int      // index in podKinds
	ctrs []string // container ids
}

// podTimes is how long each step of starting a pod with one container took.
type podTimes struct {
	runp, create, start, running time.Duration // running: from runp's fork to inspect saying RUNNING
}

// idleCommand is every app container's process: busybox sleep ignores
// SIGTERM as pid 1, but stopp stops a pod's containers with SIGKILL.
var idleCommand = []string{"/bin/sleep", "1000000"}

// latencyPhase starts samples pods of each kind, kinds alternating, each
// with one busybox container, timing from runp until crictl inspect says
// the container runs; each pod is removed after (not timed).
func (b *podsBench) latencyPhase(ctx context.Context) error {
	var times [3][]podTimes
	for i := range b.cfg.samples {
		for _, k := range kindOrder(i) {
			p, t, err := b.runPod(ctx, k, 1)
			if rerr := b.removePods(ctx, []benchPod{p}); err == nil {
				err = rerr
			}
			if err != nil {
				return fmt.Errorf("%s: %w", podKinds[k].label, err)
			}
			times[k] = append(times[k], t)
		}
	}
	pick := func(f func(podTimes) time.Duration) (med, p99 [3]float64) {
		for k := range times {
			var ds []time.Duration
			for _, t := range times[k] {
				ds = append(ds, f(t))
			}
			med[k], p99[k] = median(millis(ds)), percentile(millis(ds), 99)
		}
		return med, p99
	}
	total, totalP99 := pick(func(t podTimes) time.Duration { return t.running })
	runp, runpP99 := pick(func(t podTimes) time.Duration { return t.runp })
	create, _ := pick(func(t podTimes) time.Duration { return t.create })
	start, _ := pick(func(t podTimes) time.Duration { return t.start })
	n := b.cfg.samples
	b.res.add(fmt.Sprintf("pod start: runp + create + start + inspect until RUNNING (%d per kind)", n), "ms", 0, total, 0.7)
	b.res.add("pod start, p99", "ms", 0, totalP99, 0)
	b.res.add("of which `crictl runp`", "ms", 0, runp, 0)
	b.res.add("`crictl runp`, p99", "ms", 0, runpP99, 0)
	b.res.add("of which `crictl create`", "ms", 0, create, 0)
	b.res.add("of which `crictl start`", "ms", 0, start, 0)
	base, err := b.crictlBaseline(ctx)
	if err != nil {
		return err
	}
	// What the shims and containerd take: crictl's own start-up and
	// connection, paid 4 times per sample, taken out.
	var net [3]float64
	for k := range total {
		net[k] = total[k] - 4*base
	}
	b.res.add("pod start minus 4 × `crictl version` (containerd + shim + runtime share)", "ms", 0, net, 0)
	grpcMed, grpcP99, err := b.grpcLatency(ctx)
	if err != nil {
		return err
	}
	b.res.add(fmt.Sprintf("pod start as kubelet: one gRPC connection, RunPodSandbox + ImageStatus + CreateContainer + "+
		"StartContainer + ContainerStatus until RUNNING (%d per kind)", n), "ms", 0, grpcMed, 0.7)
	b.res.add("pod start as kubelet, p99", "ms", 0, grpcP99, 0)
	return nil
}

// crictlBaseline notes, and returns in ms, what one crictl call costs
// with no shim involved.
func (b *podsBench) crictlBaseline(ctx context.Context) (float64, error) {
	var ds []time.Duration
	for range 20 {
		start := time.Now()
		if _, err := b.d.crictl(ctx, "version"); err != nil {
			return 0, err
		}
		ds = append(ds, time.Since(start))
	}
	base := median(millis(ds))
	b.res.note(fmt.Sprintf("`crictl version` (containerd only, no shim) takes %.1f ms (median of 20): the pod start "+
		"above is at least 4 crictl calls, about %.0f ms of which no shim can remove.", base, 4*base))
	return base, nil
}

// runPod runs a host-network pod of kind k with n idle containers and
// times the steps. The returned pod is filled as far as it got, so the
// caller can remove it on error too.
func (b *podsBench) runPod(ctx context.Context, k, n int) (benchPod, podTimes, error) {
	p := benchPod{kind: k}
	var t podTimes
	podConfig, err := b.writePodConfig()
	if err != nil {
		return p, t, err
	}
	begin := time.Now()
	if p.id, err = b.d.crictl(ctx, "runp", "--runtime", podKinds[k].handler, podConfig); err != nil {
		return p, t, err
	}
	t.runp = time.Since(begin)
	b.mu.Lock()
	b.podIDs = append(b.podIDs, p.id)
	b.mu.Unlock()
	for i := range n {
		ctrConfig, err := b.writeContainerConfig(i)
		if err != nil {
			return p, t, err
		}
		step := time.Now()
		id, err := b.d.crictl(ctx, "create", p.id, ctrConfig, podConfig)
		if err != nil {
			return p, t, err
		}
		p.ctrs = append(p.ctrs, id)
		t.create += time.Since(step)
		step = time.Now()
		if _, err := b.d.crictl(ctx, "start", id); err != nil {
			return p, t, err
		}
		t.start += time.Since(step)
		if err := b.waitRunning(ctx, id); err != nil {
			return p, t, err
		}
	}
	t.running = time.Since(begin)
	return p, t, nil
}

// waitRunning polls crictl inspect until the container is RUNNING.
func (b *podsBench) waitRunning(ctx context.Context, id string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st criStatus
		err := b.d.crictlJSON(ctx, &st, "inspect", id)
		if err == nil && st.Status.State == "CONTAINER_RUNNING" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("container %s not running after 30s: state %q, %v", id, st.Status.State, err)
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
}

// writePodConfig writes a new pod's config: host network, a log dir and a
// cgroup parent of its own (the bench's prefix, so cleanup finds it).
func (b *podsBench) writePodConfig() (string, error) {
	seq := b.d.pods.Add(1)
	name := fmt.Sprintf("pod-%d", seq)
	logDir := filepath.Join(b.d.podDir, name)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(b.d.podDir, name+".json")
	return path, writeJSONFile(path, map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "leanshim-bench", "uid": fmt.Sprintf("%s-%d", filepath.Base(b.tmp), seq)},
		"log_directory": logDir,
		"linux": map[string]any{
			"cgroup_parent":    fmt.Sprintf("%s-%d", b.d.cgroupParent, seq),
			"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}, // NODE
		},
	})
}

// writeContainerConfig writes (once) the config of the i-th container of a
// pod: busybox, idle, host network as its pod.
func (b *podsBench) writeContainerConfig(i int) (string, error) {
	path := filepath.Join(b.d.podDir, fmt.Sprintf("app%d.json", i))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	return path, writeJSONFile(path, map[string]any{
		"metadata": map[string]any{"name": fmt.Sprintf("app%d", i)},
		"image":    map[string]any{"image": appImageRef},
		"command":  idleCommand,
		"log_path": fmt.Sprintf("app%d.log", i),
		"linux":    map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
	})
}

// removePods stops and removes pods, concurrency at a time, and reaps the
// shims that exited.
func (b *podsBench) removePods(ctx context.Context, pods []benchPod) error {
	ctx = context.WithoutCancel(ctx) // a ^C must still leave nothing behind
	err := parallelN(len(pods), b.cfg.concurrency, func(i int) error {
		if pods[i].id == "" {
			return nil
		}
		return b.d.removePod(ctx, pods[i].id)
	})
	reapShims()
	return err
}

func writeJSONFile(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

func splitFields(s string) []string { return strings.Fields(s) }

var errNoSandbox = errors.New("no sandbox process")
