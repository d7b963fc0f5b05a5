package main

import (
	"fmt"
	"math"
	"os"
	"strings"
	"time"
)

// podsResults is the pods bench's table: one column per kind of pod, and
// the ratios to (c), the reference. Steps run one at a time: no lock.
type podsResults struct {
	cfg      podsConfig
	machine  [][2]string
	rows     []podsRow
	notes    []string
	failures int
	start    time.Time
	end      time.Time
	loadEnd  string
}

// podsRow is one line; a value is NaN when it was not measured. maxRatio,
// when positive, is issue 15's target on (a)/(c).
type podsRow struct {
	metric   string
	unit     string
	prec     int
	v        [3]float64
	maxRatio float64
}

func newPodsResults(cfg podsConfig, machine [][2]string) *podsResults {
	return &podsResults{cfg: cfg, machine: machine, start: time.Now()}
}

func (res *podsResults) add(metric, unit string, prec int, v [3]float64, maxRatio float64) {
	res.rows = append(res.rows, podsRow{metric: metric, unit: unit, prec: prec, v: v, maxRatio: maxRatio})
}

func (res *podsResults) note(s string) { res.notes = append(res.notes, s) }

func (res *podsResults) fail(s string) {
	res.failures++
	res.note("FAILED: " + s)
}

func (res *podsResults) failed() bool { return res.failures > 0 }

func (res *podsResults) finish() {
	res.end = time.Now()
	res.loadEnd = loadavg()
}

// ratio returns v[i]/v[2], NaN when either is unknown.
func (r podsRow) ratio(i int) float64 {
	if math.IsNaN(r.v[i]) || math.IsNaN(r.v[2]) || r.v[2] <= 0 {
		return math.NaN()
	}
	return r.v[i] / r.v[2]
}

// verdict is "ok" or "MISS" against the row's target, "" without one.
func (r podsRow) verdict() string {
	x := r.ratio(0)
	if r.maxRatio <= 0 || math.IsNaN(x) {
		return ""
	}
	if x <= r.maxRatio {
		return "ok"
	}
	return "MISS"
}

// markdown renders RESULTS-pods.md, also printed to stdout.
func (res *podsResults) markdown() string {
	if res.end.IsZero() {
		res.finish()
	}
	var sb strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	cmd := "make bench-pods"
	if res.cfg.smoke {
		cmd = "make bench-pods-smoke"
	}
	w("# Pods: leanshim's shim sandbox vs pause containers (issue 15)\n\n")
	w("`%s`, %s, %s, containerd 2.4.2 with its CRI plugin, driven with crictl; host-network pods (no CNI). "+
		"Medians unless marked p99 or per pod; targets from issue 15 on (a)/(c).\n\n",
		cmd, res.start.UTC().Format("2006-01-02 15:04 MST"), res.end.Sub(res.start).Round(time.Second))
	w("| metric | unit | %s | %s | %s | a/c | b/c | target | |\n|---|---|--:|--:|--:|--:|--:|---|---|\n",
		podKinds[0].label, podKinds[1].label, podKinds[2].label)
	for _, r := range res.rows {
		target := ""
		if r.maxRatio > 0 {
			target = fmt.Sprintf("a ≤ %g× c", r.maxRatio)
		}
		w("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.metric, r.unit,
			format(r.v[0], r.prec), format(r.v[1], r.prec), format(r.v[2], r.prec),
			format(r.ratio(0), 2), format(r.ratio(1), 2), target, r.verdict())
	}
	if len(res.notes) > 0 {
		w("\nNotes:\n\n")
		for _, n := range res.notes {
			w("- %s\n", n)
		}
	}
	w("\n## Machine\n\n| | |\n|---|---|\n")
	for _, kv := range res.machine {
		w("| %s | %s |\n", kv[0], kv[1])
	}
	w("| load average at end | %s |\n", res.loadEnd)
	c := res.cfg
	w("\n## How it was measured\n\n"+
		"Handlers: (a) `lean-shim`, runtime_type io.containerd.lean.v2 with `sandboxer = \"shim\"` and "+
		"`disable_pause_image_pull = true`; (b) `lean`, io.containerd.lean.v2, podsandbox; (c) `runc`, "+
		"io.containerd.runc.v2, podsandbox. (b) and (c) use a pause image whose /pause is Kubernetes' pause "+
		"(C, `gcc -Os -static`); the app image is a static busybox. Both shims are private copies, first on "+
		"containerd's PATH, so no other process shares their pages. runc for all kinds is the machine's.\n\n"+
		"Pod start: %d samples per kind, kinds alternating (each goes first equally often); one sample is "+
		"`crictl runp`, `crictl create`, `crictl start` of one busybox container (`sleep`) and `crictl inspect` "+
		"polled until CONTAINER_RUNNING, wall time from runp's fork; the pod is then removed with `stopp` + `rmp`, "+
		"not timed.\n\n"+
		"Pod overhead memory: the pod's shim processes (the parents of its containers' inits and of its sandbox "+
		"process) and everything below them except the app containers' process trees, i.e. shim(s) + holder or "+
		"pause; USS (Private_Clean + Private_Dirty) and PSS summed over those processes, from "+
		"/proc/PID/smaps_rollup after `sync` and %s of idling. One pod alone: %d readings per kind and container "+
		"count, kinds alternating, nothing else of the bench running (the first pod's cost: no other process maps the "+
		"private shim copy, so its resident text counts in full in USS and PSS). Full node: %d pods per kind at once (started %d at a time), one kind at a time, the per-pod "+
		"average (shared text divided among them in PSS). The machine may have been shared with other work "+
		"(load average above): timings are indicative.\n",
		c.samples, c.settle, c.rounds, c.densePods, c.concurrency)
	return sb.String()
}

// podsMachineInfo is machineInfo plus what the pods bench adds.
func podsMachineInfo(repo string, t tools, shims [2]shim, crictl string, imgs criImages) [][2]string {
	info := machineInfo(repo, t, shims)
	return append(info,
		[2]string{"crictl", firstLine(crictl, "--version") + " (" + crictl + ")"},
		[2]string{"pause binary", fmt.Sprintf("%d bytes, static C (%s)", imgs.pauseSize, firstLine("gcc", "--version"))},
		[2]string{"shim binaries", fmt.Sprintf("leanshim %s, runc-v2 %s", fileSize(shims[0].binary), fileSize(shims[1].binary))},
		[2]string{"pod network", "host (network NODE): no CNI plugin runs"},
	)
}

// fileSize is the size of the file at path in MiB, for the machine table.
func fileSize(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%.1f MiB", float64(fi.Size())/(1<<20))
}
