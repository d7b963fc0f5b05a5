package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// results is the table being filled by the phases, plus the machine and
// settings it came from. Phases run one at a time, so it needs no lock.
type results struct {
	cfg      config
	machine  [][2]string
	rows     []row
	notes    []string
	sections []string // markdown sections after the notes (the memory map)
	failures int
	start    time.Time
	end      time.Time
	loadEnd  string
}

// row is one line of the table. A value is NaN when it was not measured.
type row struct {
	metric string
	unit   string
	prec   int // decimals shown
	lean   float64
	runc   float64
	goals  []goal
}

// goal is one target of issue 7: a bound on the ratio leanshim/runc-v2, or
// on leanshim's own value in the row's unit.
type goal struct {
	atMost bool // ≤ v, else ≥ v
	v      float64
	ratio  bool
}

func maxRatio(v float64) goal { return goal{atMost: true, v: v, ratio: true} }
func minRatio(v float64) goal { return goal{v: v, ratio: true} }
func maxValue(v float64) goal { return goal{atMost: true, v: v} }

func (g goal) String(unit string) string {
	op := "≥"
	if g.atMost {
		op = "≤"
	}
	if g.ratio {
		return fmt.Sprintf("%s %g×", op, g.v)
	}
	return fmt.Sprintf("%s %g %s", op, g.v, unit)
}

// met reports whether r meets g, and whether that is known at all.
func (g goal) met(r row) (ok, known bool) {
	x := r.lean
	if g.ratio {
		x = r.ratio()
	}
	if math.IsNaN(x) {
		return false, false
	}
	if g.atMost {
		return x <= g.v, true
	}
	return x >= g.v, true
}

func (r row) ratio() float64 {
	if math.IsNaN(r.lean) || math.IsNaN(r.runc) || r.runc <= 0 {
		return math.NaN()
	}
	return r.lean / r.runc
}

func newResults(cfg config, machine [][2]string) *results {
	return &results{cfg: cfg, machine: machine, start: time.Now()}
}

// add appends a row.
func (res *results) add(metric, unit string, prec int, lean, runc float64, goals ...goal) {
	res.rows = append(res.rows, row{metric: metric, unit: unit, prec: prec, lean: lean, runc: runc, goals: goals})
}

// section adds a markdown section printed after the notes.
func (res *results) section(md string) { res.sections = append(res.sections, md) }

// note records an observation printed under the table.
func (res *results) note(s string) { res.notes = append(res.notes, s) }

// fail records a measurement that could not be made; the run then fails.
func (res *results) fail(s string) {
	res.failures++
	res.note("FAILED: " + s)
}

func (res *results) failed() bool { return res.failures > 0 }

func (res *results) finish() {
	res.end = time.Now()
	res.loadEnd = loadavg()
}

// markdown renders the results as RESULTS.md, also printed to stdout.
func (res *results) markdown() string {
	if res.end.IsZero() {
		res.finish()
	}
	var sb strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	w("# leanshim vs containerd-shim-runc-v2\n\n")
	w("`%s`, %s, %s. Medians unless marked p99; ratio = leanshim / runc-v2; targets from issue 7.\n\n",
		res.command(), res.start.UTC().Format("2006-01-02 15:04 MST"), res.end.Sub(res.start).Round(time.Second))
	w("| metric | unit | leanshim | runc-v2 | ratio | target | |\n|---|---|--:|--:|--:|---|---|\n")
	for _, r := range res.rows {
		var targets []string
		verdict := ""
		for _, g := range r.goals {
			targets = append(targets, g.String(r.unit))
			if ok, known := g.met(r); known && !ok {
				verdict = "MISS"
			} else if known && verdict == "" {
				verdict = "ok"
			}
		}
		w("| %s | %s | %s | %s | %s | %s | %s |\n", r.metric, r.unit, format(r.lean, r.prec), format(r.runc, r.prec),
			format(r.ratio(), 2), strings.Join(targets, ", "), verdict)
	}
	if len(res.notes) > 0 {
		w("\nNotes:\n\n")
		for _, n := range res.notes {
			w("- %s\n", n)
		}
	}
	for _, s := range res.sections {
		w("\n%s", s)
	}
	w("\n## Machine\n\n| | |\n|---|---|\n")
	for _, kv := range res.machine {
		w("| %s | %s |\n", kv[0], kv[1])
	}
	w("| load average at end | %s |\n", res.loadEnd)
	c := res.cfg
	w("\n## Settings\n\nrounds %d (alternating which shim goes first), idle containers %d per shim, grouped containers %d, "+
		"lifecycle samples %d, sequential execs %d, exec burst %d, start burst %d, stdout %d MiB, "+
		"drift execs %d (baseline after %d, %d in flight%s), idle window %s, settle %s.\n\n"+
		"Memory is read with `sync` first, from /proc/PID/smaps_rollup (USS = Private_Clean + Private_Dirty); "+
		"idle memory and threads at the end of the idle window; wake-ups are context switches of all the "+
		"shim's threads; shim CPU is utime+stime from /proc/PID/stat while the container still runs. "+
		"The machine may have been shared with other work (load average above): timings are indicative.\n",
		c.rounds, c.idleN, c.groupN, c.lifecycleN, c.execN, c.execConc, c.startConc, c.streamBytes>>20,
		c.driftExecs, c.driftBase, c.driftConc, driftWho(c.driftLean), c.idle, c.settle)
	return sb.String()
}

// driftWho says, in the settings, when only leanshim ran the drift execs.
func driftWho(leanOnly bool) string {
	if leanOnly {
		return "; leanshim only, runc-v2's container idled (-drift-lean-only)"
	}
	return ""
}

// command is how to reproduce the run.
func (res *results) command() string {
	cmd := "make bench"
	if res.cfg.smoke {
		cmd = "make bench-smoke"
	}
	if res.cfg.containerd == "2.4" {
		cmd = "CONTAINERD=2.4 " + cmd
	}
	return cmd
}

func format(x float64, prec int) string {
	if math.IsNaN(x) {
		return "—"
	}
	return fmt.Sprintf("%.*f", prec, x)
}

// median returns the middle of xs (the mean of the two middles), NaN if empty.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// percentile returns the nearest-rank p-th percentile of xs, NaN if empty.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(xs))
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// millis converts durations to milliseconds.
func millis(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Millisecond)
	}
	return out
}

// machineInfo describes where the numbers came from.
func machineInfo(repo string, t tools, shims [2]shim) [][2]string {
	memKiB, _ := readKeyed("/proc/meminfo", "MemTotal")
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	cgroups := "v1 (hybrid)"
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		cgroups = "v2"
	}
	info := [][2]string{
		{"date", time.Now().UTC().Format(time.RFC3339)},
		{"cpus (nproc)", fmt.Sprintf("%d × %s", runtime.NumCPU(), cpuModel())},
		{"memory", fmt.Sprintf("%.1f GiB", firstOr(memKiB, 0)/(1<<20))},
		{"kernel", strings.TrimSpace(string(kernel))},
		{"cgroups", cgroups},
		{"containerd", firstLine(t.containerd, "--version")},
		{"runc", firstLine(t.runc, "--version")},
		{"runc-v2 shim", shimVersion(shims[1])},
		{"leanshim", shimVersion(shims[0])},
		{"leanshim source", firstLine("git", "-C", repo, "describe", "--always", "--dirty")},
		{"bench built with", runtime.Version()},
		{"load average at start", loadavg()},
	}
	return info
}

func firstOr(xs []float64, def float64) float64 {
	if len(xs) == 0 {
		return def
	}
	return xs[0]
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown cpu"
}

func loadavg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// firstLine runs a command and returns the first line of its output.
func firstLine(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return fmt.Sprintf("(%v)", err)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// shimVersion is the shim's path and its -v output on one line, without
// the name or path it starts with.
func shimVersion(s shim) string {
	v := oneLine(s.binary, "-v")
	for _, prefix := range []string{s.binary + ":", s.name() + ":", s.name()} {
		v = strings.TrimPrefix(v, prefix)
	}
	return s.binary + " (" + strings.TrimSpace(v) + ")"
}

// oneLine runs a command and joins its output's lines, e.g. a shim's -v.
func oneLine(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return fmt.Sprintf("(%v)", err)
	}
	return strings.Join(strings.Fields(string(out)), " ")
}
