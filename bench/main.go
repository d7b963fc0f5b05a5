// Command bench measures leanshim (io.containerd.lean.v2) against
// containerd's own containerd-shim-runc-v2 (io.containerd.runc.v2) under one
// private containerd, in the same run, alternating between the two, on the
// same busybox rootfs (issue 7). It prints a table of medians (p99 where it
// applies) with the ratio leanshim/runc-v2 and writes it, with the machine it
// came from, to bench/RESULTS.md.
//
// Run it as root: `make bench` or `make bench-smoke` from the repository
// root, or, for flags (-h lists them),
//
//	cd bench && go run . [-smoke] [-only idle,exec] [flags]
//
// It builds its own copy of cmd/shim into a private directory (never the
// shared bin/), starts containerd with its own root, state, sockets and a
// namespace of its own (leanshim-bench-<pid>), and removes all of it on the
// way out, failure and ^C included. CONTAINERD=2.4 (or -containerd 2.4)
// uses the containerd 2.4.2 build in .cache/containerd-2.4.2/bin
// (make containerd24) with its own containerd-shim-runc-v2.
//
// It is a separate module so that the product's import rules, vet and race
// tests never see it; it imports nothing from the product.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// config holds every count the bench uses; -smoke scales them all down.
type config struct {
	containerd  string // "1.6" (Debian's, from PATH) or "2.4"
	repo        string // repository root: cmd/shim is built from here
	shimBin     string // prebuilt containerd-shim-lean-v2 to use instead of building
	out         string // results file; "" prints only
	only        string // comma-separated phase names; "" runs all
	rounds      int    // rounds of the round-based phases, alternating the order
	idleN       int    // containers per shim kind in the idle phase
	groupN      int    // containers in one grouped shim
	lifecycleN  int    // ctr run --rm samples per shim
	execN       int    // sequential exec samples per shim
	execConc    int    // execs at once in the exec burst
	startConc   int    // containers started at once in the start burst
	streamBytes int64  // bytes written to stdout in the throughput phase
	driftExecs  int    // execs in the drift phase
	driftBase   int    // execs after which the drift baseline is taken
	driftConc   int    // execs in flight during the drift phase
	driftLean   bool   // drift phase on leanshim only (half the time; no runc-v2 column)
	idle        time.Duration
	settle      time.Duration // pause before memory and wake-up readings
	smoke       bool
}

func defaultConfig() config {
	return config{
		containerd: envOr("CONTAINERD", "1.6"),
		repo:       "..",
		out:        "RESULTS.md",
		rounds:     3,
		idleN:      20,
		groupN:     20,
		lifecycleN: 50,
		execN:      200,
		execConc:   50,
		startConc:  50,
		// 1 GiB
		streamBytes: 1 << 30,
		driftExecs:  10000,
		driftBase:   1000,
		driftConc:   4,
		idle:        60 * time.Second,
		settle:      5 * time.Second,
	}
}

// smokeConfig is the tiny run make bench-smoke does: it checks that every
// phase works on both shims in well under two minutes, not how fast they are.
func smokeConfig(c config) config {
	c.smoke = true
	c.out = ""
	c.rounds = 1
	c.idleN, c.groupN = 3, 3
	c.lifecycleN, c.execN = 5, 10
	c.execConc, c.startConc = 5, 5
	c.streamBytes = 100 << 20
	c.driftExecs, c.driftBase, c.driftConc = 50, 10, 4
	c.idle, c.settle = 2*time.Second, time.Second
	return c
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "pods" {
		return runPods(args[1:], stdout, stderr) // issue 15: pods.go
	}
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := runBench(ctx, cfg, stderr)
	if res != nil {
		table := res.markdown()
		fmt.Fprint(stdout, table)
		if cfg.out != "" && err == nil {
			if werr := os.WriteFile(cfg.out, []byte(table), 0o644); werr != nil {
				err = werr
			} else {
				fmt.Fprintf(stderr, "bench: wrote %s\n", cfg.out)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: FAIL: %v\n", err)
		return 1
	}
	if res.failed() {
		fmt.Fprintln(stderr, "bench: FAIL: some measurements failed (see the notes under the table)")
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	c := defaultConfig()
	if smokeRequested(args) {
		c = smokeConfig(c) // the preset becomes the defaults; explicit flags still win
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.containerd, "containerd", c.containerd, "containerd to run: 1.6 or 2.4 (env CONTAINERD)")
	fs.StringVar(&c.repo, "repo", c.repo, "repository root holding cmd/shim")
	fs.StringVar(&c.shimBin, "shim", "", "use this containerd-shim-lean-v2 instead of building one")
	fs.StringVar(&c.out, "out", c.out, "results file to overwrite (\"\": print only; default \"\" with -smoke or -only)")
	fs.StringVar(&c.only, "only", "", "run only these phases (comma-separated: "+strings.Join(phaseNames(), ",")+")")
	fs.IntVar(&c.rounds, "rounds", c.rounds, "rounds of the round-based measurements")
	fs.IntVar(&c.idleN, "idle-containers", c.idleN, "idle containers per shim kind")
	fs.IntVar(&c.groupN, "group-containers", c.groupN, "containers in one grouped shim")
	fs.IntVar(&c.lifecycleN, "lifecycle", c.lifecycleN, "ctr run --rm samples per shim")
	fs.IntVar(&c.execN, "execs", c.execN, "sequential exec samples per shim")
	fs.IntVar(&c.execConc, "exec-concurrency", c.execConc, "execs at once in the exec burst")
	fs.IntVar(&c.startConc, "start-concurrency", c.startConc, "containers started at once")
	fs.Int64Var(&c.streamBytes, "stream-bytes", c.streamBytes, "bytes of stdout per throughput run")
	fs.IntVar(&c.driftExecs, "drift-execs", c.driftExecs, "execs in the memory drift phase")
	fs.IntVar(&c.driftBase, "drift-base", c.driftBase, "execs before the drift baseline")
	fs.IntVar(&c.driftConc, "drift-concurrency", c.driftConc, "execs in flight in the drift phase")
	fs.BoolVar(&c.driftLean, "drift-lean-only", false, "drift phase on leanshim only (for a loaded machine)")
	fs.DurationVar(&c.idle, "idle", c.idle, "idle window for wake-ups")
	fs.DurationVar(&c.settle, "settle", c.settle, "pause before memory and wake-up readings")
	fs.BoolVar(&c.smoke, "smoke", false, "tiny run of every phase, printed only (the defaults become: "+
		"3 containers, 100 MiB, 50 drift execs, 2 s idle)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.only != "" && !flagSet(fs, "out") {
		c.out = "" // a partial run must not replace a full RESULTS.md
	}
	if fs.NArg() > 0 {
		err := fmt.Errorf("unexpected arguments %q", fs.Args())
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return c, err
	}
	if err := c.validate(); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return c, err
	}
	return c, nil
}

func flagSet(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

// smokeRequested reports whether args ask for -smoke, before flag parsing,
// so that the smoke preset can serve as the defaults the flags override.
func smokeRequested(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-smoke", "--smoke", "-smoke=true", "--smoke=true":
			return true
		}
	}
	return false
}

func (c config) validate() error {
	switch {
	case c.containerd != "1.6" && c.containerd != "2.4":
		return fmt.Errorf("containerd %q: want 1.6 or 2.4", c.containerd)
	case c.rounds < 1, c.idleN < 1, c.groupN < 2, c.lifecycleN < 1, c.execN < 1,
		c.execConc < 1, c.startConc < 1, c.streamBytes < 1, c.driftConc < 1:
		return errors.New("counts must be positive (and -group-containers at least 2)")
	case c.streamBytes%(1<<20) != 0:
		return errors.New("-stream-bytes must be a multiple of 1 MiB (dd writes 1 MiB blocks)")
	case c.driftBase < 1 || c.driftExecs <= c.driftBase:
		return errors.New("-drift-execs must exceed -drift-base, which must be positive")
	}
	for _, p := range splitList(c.only) {
		if !slices.Contains(phaseNames(), p) {
			return fmt.Errorf("unknown phase %q in -only (have %s)", p, strings.Join(phaseNames(), ","))
		}
	}
	return nil
}

// runBench sets up the machine, runs the phases and tears everything down.
// It returns the results gathered so far even when it fails part-way.
func runBench(ctx context.Context, cfg config, logw io.Writer) (_ *results, retErr error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("must run as root (containerd and runc need it): sudo make bench")
	}
	// Shim daemons are orphaned by their start process: become their
	// reaper, or each one stays a zombie of pid 1 here (ENVIRONMENT.md).
	if err := becomeSubreaper(); err != nil {
		return nil, err
	}
	b, err := setup(ctx, cfg, logw)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := b.teardown(); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("cleanup: %w", err))
		}
	}()
	for _, p := range phases {
		if cfg.only != "" && !slices.Contains(splitList(cfg.only), p.name) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return b.res, err
		}
		b.logf("phase %s", p.name)
		start := time.Now()
		if err := p.run(b, ctx); err != nil {
			b.res.fail(fmt.Sprintf("phase %s: %s", p.name, firstErrLine(err)))
			b.logf("phase %s FAILED: %v", p.name, err)
		}
		if err := b.clearNamespace(); err != nil {
			b.res.note(fmt.Sprintf("after phase %s: %v", p.name, err))
		}
		b.logf("phase %s done in %s", p.name, time.Since(start).Round(time.Second))
	}
	b.res.finish()
	return b.res, ctx.Err()
}

// phase is one measurement; it leaves no container behind on success, and
// runBench clears the namespace after it either way.
type phase struct {
	name string
	run  func(*bench, context.Context) error
}

var phases = []phase{
	{"idle", (*bench).idlePhase},
	{"group", (*bench).groupPhase},
	{"map", (*bench).mapPhase},
	{"lifecycle", (*bench).lifecyclePhase},
	{"exec", (*bench).execPhase},
	{"burst", (*bench).burstPhase},
	{"stream", (*bench).streamPhase},
	{"drift", (*bench).driftPhase},
}

func phaseNames() []string {
	var names []string
	for _, p := range phases {
		names = append(names, p.name)
	}
	return names
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// firstErrLine shortens a joined error (one line per failed container) for
// the notes under the table.
func firstErrLine(err error) string {
	msg := err.Error()
	first, rest, ok := strings.Cut(msg, "\n")
	if !ok {
		return msg
	}
	return fmt.Sprintf("%s (and %d more lines)", first, strings.Count(rest, "\n")+1)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// absRepo resolves the repository root and checks it holds cmd/shim.
func absRepo(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(abs, "cmd", "shim")); err != nil {
		return "", fmt.Errorf("repository root %s has no cmd/shim (use -repo): %w", abs, err)
	}
	return abs, nil
}
