package integration

// The nerdctl client of nerdctl_test.go: where its binary is, and each
// command run with the daemon's address and namespace and private dirs.

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// nerdctlImage lives only in the private daemon's store; the made-up
// registry name keeps any pull from succeeding.
const nerdctlImage = "leanshim.test/nerdctl-busybox:1"

// nerdctlPath is $LEANSHIM_NERDCTL, else the repository's .cache/bin/nerdctl,
// where scripts/nerdctl.sh puts it. A missing binary fails the test.
func nerdctlPath(tb testing.TB) string {
	tb.Helper()
	p := os.Getenv("LEANSHIM_NERDCTL")
	if p == "" {
		p = filepath.Join("..", ".cache", "bin", "nerdctl")
	}
	p, err := filepath.Abs(p)
	if err != nil {
		tb.Fatal(err)
	}
	if !isExecutable(p) {
		tb.Fatalf("nerdctl not at %s: run `bash scripts/nerdctl.sh` or set LEANSHIM_NERDCTL", p)
	}
	return p
}

// nerdctl runs the nerdctl binary against one daemon with private state.
type nerdctl struct {
	d      *daemon
	bin    string
	global []string // flags before every subcommand
	env    []string
}

// newNerdctl points nerdctl at d, with its data root and CNI config under
// dir and no nerdctl.toml of the machine's.
func newNerdctl(tb testing.TB, d *daemon, dir string) *nerdctl {
	tb.Helper()
	return &nerdctl{
		d:   d,
		bin: nerdctlPath(tb),
		global: []string{
			"--address", d.address, "--namespace", d.ns,
			"--data-root", filepath.Join(dir, "nerdctl"),
			"--cni-netconfpath", filepath.Join(dir, "cni"),
			"--snapshotter", "overlayfs", "--cgroup-manager", "cgroupfs",
		},
		// A path that does not exist: nerdctl then reads no config file.
		env: append(os.Environ(), "NERDCTL_TOML="+filepath.Join(dir, "nerdctl.toml")),
	}
}

func (n *nerdctl) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, n.bin, append(append([]string{}, n.global...), args...)...)
	cmd.Env = n.env
	return cmd
}

// run runs nerdctl with stdin (none if "") and ctrTimeout. It never fails tb.
func (n *nerdctl) run(stdin string, args ...string) cmdResult {
	ctx, cancel := context.WithTimeout(context.Background(), ctrTimeout)
	defer cancel()
	cmd := n.command(ctx, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	return runTool(ctx, cmd, "nerdctl", args)
}

// must runs nerdctl and fails tb unless it exits 0. It returns stdout.
func (n *nerdctl) must(tb testing.TB, args ...string) string {
	tb.Helper()
	r := n.run("", args...)
	if r.code != 0 || r.err != nil {
		tb.Fatalf("%v", r)
	}
	return r.stdout
}

// start runs nerdctl in the background (e.g. `logs -f`) with stdin (nil:
// none) and its stdout and stderr in the result's out; cleanup kills it if
// the test did not wait for it, and always waits for it.
func (n *nerdctl) start(tb testing.TB, stdin io.Reader, args ...string) *bgCtr {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ctrTimeout)
	b := &bgCtr{args: args, cancel: cancel, done: make(chan struct{})}
	b.cmd = n.command(ctx, args...)
	b.cmd.Stdin = stdin
	b.cmd.Stdout, b.cmd.Stderr = &b.out, &b.out
	if err := b.cmd.Start(); err != nil {
		cancel()
		tb.Fatalf("start nerdctl %s: %v", strings.Join(args, " "), err)
	}
	// Owned by b: stop and the cleanup below wait for done.
	go func() {
		b.err = b.cmd.Wait()
		close(b.done)
	}()
	tb.Cleanup(func() { b.stop() })
	return b
}

// state returns `nerdctl inspect`'s status and exit code of a container,
// which nerdctl reads from the task (State) through the shim.
func (n *nerdctl) state(tb testing.TB, name string) (string, int) {
	tb.Helper()
	out := strings.TrimSpace(n.must(tb, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name))
	status, code, ok := strings.Cut(out, " ")
	c, err := strconv.Atoi(code)
	if !ok || err != nil {
		tb.Fatalf("nerdctl inspect %s: want \"<status> <exit code>\", got %q", name, out)
	}
	return status, c
}

// waitState waits until the container exists and its status is want.
func (n *nerdctl) waitState(tb testing.TB, name, want string) {
	tb.Helper()
	var r cmdResult
	ok := poll(ctrTimeout, func() bool {
		r = n.run("", "inspect", "--format", "{{.State.Status}}", name)
		return r.code == 0 && strings.TrimSpace(r.stdout) == want
	})
	if !ok {
		tb.Fatalf("container %s: want status %q within %s, last %v", name, want, ctrTimeout, r)
	}
}

// waitLogs waits until `nerdctl logs` of the container matches re and
// returns the logs: the logger writes them asynchronously.
func (n *nerdctl) waitLogs(tb testing.TB, name string, re *regexp.Regexp) string {
	tb.Helper()
	var r cmdResult
	if !poll(ctrTimeout, func() bool { r = n.run("", "logs", name); return r.code == 0 && re.MatchString(r.stdout+r.stderr) }) {
		tb.Fatalf("nerdctl logs %s: want %q within %s; last %v", name, re, ctrTimeout, r)
	}
	return r.stdout + r.stderr
}

// removeOnCleanup removes the container at cleanup, whatever its state.
func (n *nerdctl) removeOnCleanup(t *testing.T, name string) {
	t.Helper()
	t.Cleanup(func() {
		if r := n.run("", "rm", "-f", name); r.code != 0 && !strings.Contains(r.stderr, "no such container") {
			t.Errorf("cleanup: %v", r)
		}
	})
}

// assertGone fails tb if nerdctl still lists the container, running or not.
func (n *nerdctl) assertGone(tb testing.TB, name string) {
	tb.Helper()
	names := strings.Fields(n.must(tb, "ps", "-a", "--format", "{{.Names}}"))
	if slices.Contains(names, name) {
		tb.Errorf("container %s still listed: %q", name, names)
	}
}
