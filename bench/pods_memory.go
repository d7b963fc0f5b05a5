package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
)

// holderArg0 is argv[0] of leanshim's pod holder (argv: leanshim-pod <sandbox id>).
const holderArg0 = "leanshim-pod"

// podMem is what one pod costs beyond its app's processes, in KiB: every
// process of the pod's shim(s) except the app containers' process trees.
// That is the shim(s), the sandbox process (holder or pause) and anything
// else the shim keeps (none today, for any kind).
type podMem struct {
	uss, pss         float64
	shimUSS, shimPSS float64
	sbUSS, sbPSS     float64
	shimAnon         float64 // the shims' Anonymous: heap, stacks, runtime, never text
	procs            int     // processes counted
	shims            int
}

func (m *podMem) addTo(sum *podMem) {
	sum.uss += m.uss
	sum.pss += m.pss
	sum.shimUSS += m.shimUSS
	sum.shimPSS += m.shimPSS
	sum.sbUSS += m.sbUSS
	sum.sbPSS += m.sbPSS
	sum.shimAnon += m.shimAnon
	sum.procs += m.procs
	sum.shims += m.shims
}

// procTree is the machine's processes, read once per reading.
type procTree struct {
	stat     map[int]procStat
	children map[int][]int
}

func readProcTree() procTree {
	t := procTree{stat: map[int]procStat{}, children: map[int][]int{}}
	for _, pid := range allPids() {
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		t.stat[pid] = st
		t.children[st.ppid] = append(t.children[st.ppid], pid)
	}
	return t
}

// singlePodMemory runs one pod alone on the node (for this bench), with 1
// and with 3 idle containers, rounds times per kind, kinds alternating,
// and reports the medians: what the first pod on a node costs, shim text
// included.
func (b *podsBench) singlePodMemory(ctx context.Context) error {
	for _, n := range []int{1, 3} {
		var uss, pss, shimPSS, sbPSS [3][]float64
		for r := range b.cfg.rounds {
			for _, k := range kindOrder(r) {
				m, err := b.measurePods(ctx, k, 1, n)
				if err != nil {
					return fmt.Errorf("%s, %d containers: %w", podKinds[k].label, n, err)
				}
				uss[k], pss[k] = append(uss[k], m.uss), append(pss[k], m.pss)
				shimPSS[k], sbPSS[k] = append(shimPSS[k], m.shimPSS), append(sbPSS[k], m.sbPSS)
			}
		}
		med := func(xs [3][]float64) [3]float64 { return [3]float64{median(xs[0]), median(xs[1]), median(xs[2])} }
		what := fmt.Sprintf("one pod alone, %d idle container%s", n, plural(n))
		b.res.add("pod overhead PSS, "+what, "KiB", 0, med(pss), 0.4)
		b.res.add("pod overhead USS, "+what, "KiB", 0, med(uss), 0.4)
		b.res.add("of which shim PSS", "KiB", 0, med(shimPSS), 0)
		b.res.add("of which sandbox process PSS (holder or pause)", "KiB", 0, med(sbPSS), 0)
	}
	return nil
}

// densePodMemory fills the node with densePods pods of one container per
// kind, one kind at a time, and reports the per-pod averages.
func (b *podsBench) densePodMemory(ctx context.Context) error {
	var avg [3]podMem
	for _, k := range kindOrder(0) {
		m, err := b.measurePods(ctx, k, b.cfg.densePods, 1)
		if err != nil {
			return fmt.Errorf("%s, %d pods: %w", podKinds[k].label, b.cfg.densePods, err)
		}
		avg[k] = m
	}
	get := func(f func(podMem) float64) [3]float64 { return [3]float64{f(avg[0]), f(avg[1]), f(avg[2])} }
	what := fmt.Sprintf("%d idle pods of 1 container on the node, per pod", b.cfg.densePods)
	b.res.add("pod overhead PSS, "+what, "KiB", 0, get(func(m podMem) float64 { return m.pss }), 0.4)
	b.res.add("pod overhead USS, "+what, "KiB", 0, get(func(m podMem) float64 { return m.uss }), 0.4)
	b.res.add("of which shim PSS", "KiB", 0, get(func(m podMem) float64 { return m.shimPSS }), 0)
	b.res.add("of which shim USS", "KiB", 0, get(func(m podMem) float64 { return m.shimUSS }), 0)
	b.res.add("shim Anonymous (heap, stacks, Go runtime: no text)", "KiB", 0, get(func(m podMem) float64 { return m.shimAnon }), 0)
	b.res.add("of which sandbox process PSS (holder or pause)", "KiB", 0, get(func(m podMem) float64 { return m.sbPSS }), 0)
	b.res.add("of which sandbox process USS (holder or pause)", "KiB", 0, get(func(m podMem) float64 { return m.sbUSS }), 0)
	b.res.add("processes counted per pod (shims + sandbox + other)", "procs", 1, get(func(m podMem) float64 { return float64(m.procs) }), 0)
	return nil
}

// measurePods starts pods pods of kind k with n containers each, waits for
// settle, reads them and removes them; it returns the per-pod average.
func (b *podsBench) measurePods(ctx context.Context, k, pods, n int) (_ podMem, retErr error) {
	made := make([]benchPod, pods)
	defer func() {
		if err := b.removePods(ctx, made); retErr == nil && err != nil {
			retErr = err
		}
	}()
	err := parallelN(pods, b.cfg.concurrency, func(i int) error {
		p, _, err := b.runPod(ctx, k, n)
		made[i] = p
		return err
	})
	if err != nil {
		return podMem{}, err
	}
	if err := sleepCtx(ctx, b.cfg.settle); err != nil {
		return podMem{}, err
	}
	syscall.Sync() // freshly written binaries count as Private_Dirty (ENVIRONMENT.md)
	tree := readProcTree()
	var sum podMem
	for _, p := range made {
		m, err := b.podOverhead(ctx, p, tree)
		if err != nil {
			return podMem{}, err
		}
		m.addTo(&sum)
	}
	f := float64(pods)
	return podMem{uss: sum.uss / f, pss: sum.pss / f, shimUSS: sum.shimUSS / f, shimPSS: sum.shimPSS / f,
		sbUSS: sum.sbUSS / f, sbPSS: sum.sbPSS / f, shimAnon: sum.shimAnon / f, procs: sum.procs / pods, shims: sum.shims / pods}, nil
}

// podOverhead finds the pod's processes and sums their memory. The app
// processes are the containers' inits (crictl inspect) and their
// descendants; the shims are the parents of the inits and of the sandbox
// process (each is the subreaper of what it runs); the overhead is the
// shims' whole trees without the app processes.
func (b *podsBench) podOverhead(ctx context.Context, p benchPod, tree procTree) (podMem, error) {
	sandbox, err := b.sandboxPid(ctx, p)
	if err != nil {
		return podMem{}, err
	}
	apps := map[int]bool{}
	var shims []int
	for _, id := range append([]string{""}, p.ctrs...) {
		pid := sandbox
		if id != "" {
			var st criStatus
			if err := b.d.crictlJSON(ctx, &st, "inspect", id); err != nil {
				return podMem{}, err
			}
			pid = st.Info.Pid
			apps[pid] = true
		}
		ppid := tree.stat[pid].ppid
		if !strings.HasPrefix(tree.stat[ppid].comm, "containerd-shim") {
			return podMem{}, fmt.Errorf("pod %s: parent %d of pid %d is %q, not a shim", p.id, ppid, pid, tree.stat[ppid].comm)
		}
		if !slices.Contains(shims, ppid) {
			shims = append(shims, ppid)
		}
	}
	m := podMem{shims: len(shims)}
	for _, pid := range overheadPids(tree, shims, apps) {
		mm, err := readMem(pid)
		if err != nil {
			return podMem{}, fmt.Errorf("pod %s: %w", p.id, err)
		}
		m.procs++
		m.uss += mm.uss
		m.pss += mm.pss
		switch {
		case slices.Contains(shims, pid):
			m.shimUSS += mm.uss
			m.shimPSS += mm.pss
			m.shimAnon += mm.anon
		case pid == sandbox:
			m.sbUSS += mm.uss
			m.sbPSS += mm.pss
		}
	}
	return m, nil
}

// overheadPids returns roots and their descendants, leaving out the
// subtrees of the pids in skip.
func overheadPids(tree procTree, roots []int, skip map[int]bool) []int {
	var out []int
	todo := append([]int(nil), roots...)
	for len(todo) > 0 {
		pid := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if skip[pid] || slices.Contains(out, pid) {
			continue
		}
		out = append(out, pid)
		todo = append(todo, tree.children[pid]...)
	}
	return out
}

// sandboxPid is the process whose namespaces the pod's containers join:
// leanshim's holder in shim mode, else the pause container's process.
func (b *podsBench) sandboxPid(ctx context.Context, p benchPod) (int, error) {
	if podKinds[p.kind].handler == handlerShim {
		var pids []int
		for _, pid := range allPids() {
			if argv := readArgv(pid); len(argv) == 2 && argv[0] == holderArg0 && argv[1] == p.id {
				pids = append(pids, pid)
			}
		}
		if len(pids) != 1 {
			return 0, fmt.Errorf("pod %s: %d holder processes %v, want 1: %w", p.id, len(pids), pids, errNoSandbox)
		}
		return pids[0], nil
	}
	var st criStatus
	if err := b.d.crictlJSON(ctx, &st, "inspectp", p.id); err != nil {
		return 0, err
	}
	if st.Info.Pid <= 0 {
		return 0, fmt.Errorf("pod %s: inspectp has no pause pid: %w", p.id, errNoSandbox)
	}
	return st.Info.Pid, nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
