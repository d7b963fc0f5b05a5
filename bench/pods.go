package main

// `go run . pods` (make bench-pods) measures issue 15: three ways of running
// a Kubernetes pod, in the same run, on containerd 2.4.2's CRI plugin driven
// with crictl:
//
//	(a) leanshim as the pod's sandbox (handler sandboxer = "shim"): no pause
//	    image, no pause container, a holder process of the shim's own;
//	(b) leanshim with a pause container (podsandbox);
//	(c) containerd's containerd-shim-runc-v2 with a pause container.
//
// Pod start latency (pods_latency.go) and the memory a pod costs beyond its
// app's processes (pods_memory.go) go to bench/RESULTS-pods.md. Pods use
// the host network: no CNI plugin runs, so neither the latency nor the
// memory includes one, for any kind alike.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// podsConfig holds the counts of the pods bench; -smoke scales them down.
type podsConfig struct {
	repo        string
	shimBin     string // prebuilt containerd-shim-lean-v2 instead of building one
	crictl      string
	out         string
	samples     int // pod start samples per kind
	rounds      int // single-pod memory readings per kind and container count
	densePods   int // pods per kind on the node at once
	concurrency int // pods started or removed at once when filling the node
	settle      time.Duration
	smoke       bool
}

func defaultPodsConfig() podsConfig {
	return podsConfig{
		repo: "..", out: "RESULTS-pods.md",
		samples: 50, rounds: 3, densePods: 100, concurrency: 4,
		settle: 5 * time.Second,
	}
}

// smoke is the quick check that every measurement works on every kind.
func (c podsConfig) smokeConfig() podsConfig {
	c.smoke, c.out = true, ""
	c.samples, c.rounds, c.densePods = 5, 1, 10
	c.settle = time.Second
	return c
}

// podKind is one way of running a pod.
type podKind struct {
	label   string
	handler string // CRI runtime handler (cri.go)
}

var podKinds = [3]podKind{
	{"(a) leanshim, shim sandbox", handlerShim},
	{"(b) leanshim + pause", handlerLean},
	{"(c) runc-v2 + pause", handlerRuncV},
}

// kindOrder is the order sample i runs the kinds in: each kind goes first,
// second and third equally often, so drift falls on all alike.
func kindOrder(i int) [3]int { return [3]int{i % 3, (i + 1) % 3, (i + 2) % 3} }

// podsBench is one run of the pods bench.
type podsBench struct {
	cfg podsConfig
	log io.Writer
	tmp string
	d   *criDaemon
	res *podsResults

	mu     sync.Mutex
	podIDs []string // every pod made, for the leftover check at the end
}

// runPods is `bench pods [flags]`.
func runPods(args []string, stdout, stderr io.Writer) int {
	cfg, err := parsePodsFlags(args, stderr)
	if err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := runPodsBench(ctx, cfg, stderr)
	if res != nil {
		table := res.markdown()
		fmt.Fprint(stdout, table)
		if cfg.out != "" && err == nil && !res.failed() {
			if werr := os.WriteFile(cfg.out, []byte(table), 0o644); werr != nil {
				err = werr
			} else {
				fmt.Fprintf(stderr, "bench pods: wrote %s\n", cfg.out)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench pods: FAIL: %v\n", err)
		return 1
	}
	if res.failed() {
		fmt.Fprintln(stderr, "bench pods: FAIL: some measurements failed (see the notes under the table)")
		return 1
	}
	return 0
}

func parsePodsFlags(args []string, stderr io.Writer) (podsConfig, error) {
	c := defaultPodsConfig()
	if smokeRequested(args) {
		c = c.smokeConfig()
	}
	fs := flag.NewFlagSet("bench pods", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.repo, "repo", c.repo, "repository root holding cmd/shim")
	fs.StringVar(&c.shimBin, "shim", "", "use this containerd-shim-lean-v2 instead of building one")
	fs.StringVar(&c.crictl, "crictl", envOr("LEANSHIM_CRICTL", ""), "crictl binary (default <repo>/.cache/bin/crictl: make crictl)")
	fs.StringVar(&c.out, "out", c.out, "results file to overwrite (\"\": print only)")
	fs.IntVar(&c.samples, "samples", c.samples, "pod start samples per kind")
	fs.IntVar(&c.rounds, "rounds", c.rounds, "single-pod memory readings per kind and container count")
	fs.IntVar(&c.densePods, "pods", c.densePods, "idle pods per kind on the node at once")
	fs.IntVar(&c.concurrency, "concurrency", c.concurrency, "pods started or removed at once when filling the node")
	fs.DurationVar(&c.settle, "settle", c.settle, "pause before memory readings")
	fs.BoolVar(&c.smoke, "smoke", false, "quick run, printed only (5 samples, 10 pods)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	var err error
	switch {
	case fs.NArg() > 0:
		err = fmt.Errorf("unexpected arguments %q", fs.Args())
	case c.samples < 1 || c.rounds < 1 || c.densePods < 1 || c.concurrency < 1:
		err = errors.New("counts must be positive")
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench pods: %v\n", err)
	}
	return c, err
}

// runPodsBench sets up, measures and tears down; it returns the results
// gathered so far even when it fails part-way.
func runPodsBench(ctx context.Context, cfg podsConfig, logw io.Writer) (_ *podsResults, retErr error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("must run as root (containerd and runc need it)")
	}
	if err := becomeSubreaper(); err != nil {
		return nil, err
	}
	b, err := setupPods(ctx, cfg, logw)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := b.teardown(); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("cleanup: %w", err))
		}
	}()
	steps := []struct {
		name string
		run  func(*podsBench, context.Context) error
	}{
		{"pod start", (*podsBench).latencyPhase},
		{"pod memory, one pod", (*podsBench).singlePodMemory},
		{"pod memory, full node", (*podsBench).densePodMemory},
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return b.res, err
		}
		b.logf("phase %s", s.name)
		start := time.Now()
		if err := s.run(b, ctx); err != nil {
			b.res.fail(fmt.Sprintf("%s: %s", s.name, firstErrLine(err)))
			b.logf("phase %s FAILED: %v", s.name, err)
			b.removeAllPods(ctx)
		}
		b.logf("phase %s done in %s", s.name, time.Since(start).Round(time.Second))
	}
	b.res.finish()
	return b.res, ctx.Err()
}

// setupPods builds the shim, the images and starts containerd 2.4.2 with
// its CRI plugin. On error nothing is left behind.
func setupPods(ctx context.Context, cfg podsConfig, logw io.Writer) (_ *podsBench, retErr error) {
	repo, err := absRepo(cfg.repo)
	if err != nil {
		return nil, err
	}
	t, err := findTools(repo, "2.4")
	if err != nil {
		return nil, err
	}
	crictl := cfg.crictl
	if crictl == "" {
		crictl = filepath.Join(repo, ".cache", "bin", "crictl")
	}
	if !isExecutable(crictl) {
		return nil, fmt.Errorf("crictl not found at %s: run `make crictl` first", crictl)
	}
	tmp, err := os.MkdirTemp("/tmp", "lsp") // short: socket paths
	if err != nil {
		return nil, err
	}
	b := &podsBench{cfg: cfg, log: logw, tmp: tmp}
	defer func() {
		if retErr != nil {
			_ = b.teardown()
		}
	}()
	shims, err := b.installShims(ctx, repo, t)
	if err != nil {
		return nil, err
	}
	rootfs := filepath.Join(tmp, "rootfs")
	if err := buildRootfs(rootfs); err != nil {
		return nil, fmt.Errorf("busybox rootfs: %w", err)
	}
	imgs, err := buildCRIImages(tmp, rootfs)
	if err != nil {
		return nil, err
	}
	b.res = newPodsResults(cfg, podsMachineInfo(repo, t, shims, crictl, imgs))
	path := filepath.Dir(shims[0].binary) + string(os.PathListSeparator) + t.dir + string(os.PathListSeparator) + os.Getenv("PATH")
	b.logf("containerd %s, crictl %s, shims in %s", t.containerd, crictl, filepath.Dir(shims[0].binary))
	if b.d, err = startCRIDaemon(ctx, filepath.Join(tmp, "d"), t, crictl, path, imgs); err != nil {
		return nil, err
	}
	return b, nil
}

// installShims puts both shims in a private bin dir, first on containerd's
// PATH: leanshim built from repo, and a copy of 2.4.2's runc-v2 shim, so
// that no other process on the machine shares either binary's pages and
// USS means the same for both.
func (b *podsBench) installShims(ctx context.Context, repo string, t tools) ([2]shim, error) {
	bin := filepath.Join(b.tmp, "bin")
	lean := filepath.Join(bin, "containerd-shim-lean-v2")
	builder := &bench{cfg: config{shimBin: b.cfg.shimBin}, log: b.log}
	if err := builder.installShim(ctx, repo, lean); err != nil {
		return [2]shim{}, err
	}
	runcShim := filepath.Join(bin, "containerd-shim-runc-v2")
	if err := copyFile(filepath.Join(t.dir, "containerd-shim-runc-v2"), runcShim, 0o755); err != nil {
		return [2]shim{}, err
	}
	return [2]shim{
		{key: "lean", label: "leanshim", runtime: "io.containerd.lean.v2", binary: lean},
		{key: "runc", label: "runc-v2", runtime: "io.containerd.runc.v2", binary: runcShim},
	}, nil
}

// teardown removes every pod, stops containerd and removes the private
// dir. It is safe on a partly set-up bench.
func (b *podsBench) teardown() error {
	var errs []error
	if b.d != nil {
		b.mu.Lock()
		ids := append([]string(nil), b.podIDs...)
		b.mu.Unlock()
		errs = append(errs, b.d.stop(ids))
	}
	reapShims()
	if b.tmp != "" {
		if m := mountsUnder(b.tmp); len(m) > 0 {
			// Never RemoveAll across a mount: it would empty the mounted tree.
			errs = append(errs, fmt.Errorf("mounts left under %s, not removed", b.tmp))
		} else {
			errs = append(errs, os.RemoveAll(b.tmp))
		}
	}
	return errors.Join(errs...)
}

// removeAllPods removes whatever pods a failed phase left.
func (b *podsBench) removeAllPods(ctx context.Context) {
	out, err := b.d.crictl(context.WithoutCancel(ctx), "pods", "-q")
	if err != nil {
		b.res.note("listing pods after a failure: " + err.Error())
		return
	}
	pods := make([]benchPod, 0)
	for _, id := range splitFields(out) {
		pods = append(pods, benchPod{id: id})
	}
	if err := b.removePods(context.WithoutCancel(ctx), pods); err != nil {
		b.res.note("removing pods after a failure: " + firstErrLine(err))
	}
}

func (b *podsBench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "bench pods: %s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// parallelN runs fn(0..n-1), at most limit at a time, and joins their errors.
func parallelN(n, limit int, fn func(i int) error) error {
	errs := make([]error, n)
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = fn(i)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
