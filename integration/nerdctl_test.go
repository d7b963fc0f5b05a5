package integration

// nerdctl (github.com/containerd/nerdctl/v2, built by scripts/nerdctl.sh)
// against a private containerd 2.4.2, with `--runtime` the runtime under
// test. nerdctl is the client that uses what ctr does not: it is its own
// `binary://` logger for every container (json-file, read back by `nerdctl
// logs`), it passes a terminal together with that logger for `run -t -d`
// (cio.TerminalBinaryIO), and it reads Pids, Stats and State through the
// task API for top, stats and inspect.
//
// Every nerdctl runs with its own --address, --namespace (the daemon's, so
// the daemon's cleanup sees what a test left), --data-root and CNI config
// dir, and `--net none`: no host network state is touched. (A bridge
// network does work here with Debian's containernetworking-plugins 1.1.1
// in /usr/lib/cni, through either shim: the container gets its address and
// reaches the gateway. But removing the containers left each one's NAT
// chain in the host's iptables with both shims, which a test on a shared
// machine must not do.)

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestNerdctl drives the nerdctl workflow through the runtime under test
// under containerd 2.4.2, each step asserting what the container did or
// what state containerd reports for it.
func TestNerdctl(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := startContainerd(t, withFlavor(containerd24Flavor(t)))
	n := newNerdctl(t, d, dir)
	archive := filepath.Join(dir, "busybox.tar")
	cfg := imageConfig{
		Cmd: []string{"/bin/sh"},
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	}
	if err := writeDockerArchive(archive, nerdctlImage, suite.rootfs, cfg); err != nil {
		t.Fatalf("busybox image: %v", err)
	}
	n.must(t, "load", "-i", archive)
	t.Logf("%s, containerd 2.4.2, runtime %s", strings.TrimSpace(n.must(t, "--version")), suite.runtime)

	for _, tc := range []struct {
		name string
		run  func(t *testing.T, n *nerdctl)
	}{
		{"run attached", nerdctlRunAttached},
		{"run --rm", nerdctlRunRm},
		{"run -i", nerdctlRunInteractive},
		{"run -d, logs, exec, top, stats, pause, stop", nerdctlDetached},
		{"kill", nerdctlKill},
		{"rm -f", nerdctlRmForce},
		{"exec -t", nerdctlExecTTY},
		{"run -t -d", nerdctlRunTTYDetached},
	} {
		// One at a time: each case is a few nerdctl calls, and 2 cores.
		t.Run(tc.name, func(t *testing.T) { tc.run(t, n) })
	}
}

// nerdctlRunArgs is `run --runtime RT --net none [flags] image argv...`.
func nerdctlRunArgs(flags []string, argv ...string) []string {
	args := append([]string{"run", "--runtime", suite.runtime, "--net", "none"}, flags...)
	return append(append(args, nerdctlImage), argv...)
}

// nerdctlRunAttached: stdout and stderr reach nerdctl apart, the exit code
// becomes nerdctl's, and the logger kept both streams for `nerdctl logs`.
func nerdctlRunAttached(t *testing.T, n *nerdctl) {
	const name = "attached"
	n.removeOnCleanup(t, name)
	r := n.run("", nerdctlRunArgs([]string{"--name", name}, "sh", "-c", "echo out; echo err >&2; exit 3")...)
	if r.code != 3 || r.stdout != "out\n" || !strings.Contains(r.stderr, "err\n") {
		t.Fatalf("want exit 3, stdout \"out\\n\", stderr with \"err\\n\"; got %v", r)
	}
	if status, code := n.state(t, name); status != "exited" || code != 3 {
		t.Errorf("after the run: want exited with 3, got %s with %d", status, code)
	}
	lr := n.run("", "logs", name)
	if lr.code != 0 || lr.stdout != "out\n" || lr.stderr != "err\n" {
		t.Errorf("nerdctl logs: want stdout \"out\\n\" and stderr \"err\\n\"; got %v", lr)
	}
	n.must(t, "rm", name)
}

// nerdctlRunRm: the output arrives, and the container is gone afterwards.
func nerdctlRunRm(t *testing.T, n *nerdctl) {
	const name = "removed"
	n.removeOnCleanup(t, name)
	r := n.run("", nerdctlRunArgs([]string{"--rm", "--name", name}, "echo", "bye")...)
	if r.code != 0 || r.stdout != "bye\n" {
		t.Fatalf("want exit 0 and stdout \"bye\\n\"; got %v", r)
	}
	n.assertGone(t, name)
}

// nerdctlRunInteractive: stdin reaches the container, and its end ends
// cat: nerdctl then calls CloseIO, which drops the shim's hold on the stdin
// FIFO. The input comes once the container runs, as from a user typing.
//
// Not `printf ... | nerdctl run -i`: there the input can end before
// containerd knows the task, and nerdctl 2.0.5 then never sends CloseIO
// ("failed to get task for StdinCloser" in its debug log), so cat waits for
// ever. That race is nerdctl's: containerd's runc shim loses it too under
// load (it opens the stdin FIFO after `runc create`, which narrows the
// window), leanshim (which opens it before) every time.
func nerdctlRunInteractive(t *testing.T, n *nerdctl) {
	const name, in = "interactive", "line one\nline two\n"
	n.removeOnCleanup(t, name)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close() // a second Close after the one below is harmless
	run := n.start(t, pr, nerdctlRunArgs([]string{"--rm", "-i", "--name", name}, "sh", "-c", "cat; echo eof")...)
	_ = pr.Close() // nerdctl has its own copy
	n.waitState(t, name, "running")
	if _, err := pw.WriteString(in); err != nil {
		t.Fatal(err)
	}
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	if code := run.wait(ctrTimeout); code != 0 || run.out.String() != in+"eof\n" {
		t.Fatalf("want exit 0 and output %q; got exit %d, %q", in+"eof\n", code, run.out.String())
	}
}

// nerdctlDetached runs one container detached and goes through the
// commands that work on a running one, ending with stop (SIGTERM, which the
// container's trap turns into exit 7).
func nerdctlDetached(t *testing.T, n *nerdctl) {
	const name = "detached"
	n.removeOnCleanup(t, name)
	script := `trap 'echo term; exit 7' TERM; echo started; sleep 1000 & wait`
	id := strings.TrimSpace(n.must(t, nerdctlRunArgs([]string{"-d", "--name", name}, "sh", "-c", script)...))
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(id) {
		t.Fatalf("run -d: want the container id on stdout, got %q", id)
	}
	n.waitState(t, name, "running")
	n.waitLogs(t, name, regexp.MustCompile(`^started\n$`))

	follow := n.start(t, nil, "logs", "-f", name)
	r := n.run("", "exec", name, "sh", "-c", "echo $((6*7)); echo more > /proc/1/fd/1; exit 5")
	if r.code != 1 || r.stdout != "42\n" || !strings.Contains(r.stderr, execFailed(5)) {
		t.Fatalf("exec: want stdout \"42\\n\", exit 1 and %q; got %v", execFailed(5), r)
	}
	if !poll(ctrTimeout, func() bool { return strings.Contains(follow.out.String(), "started\nmore\n") }) {
		t.Fatalf("logs -f: want \"started\\nmore\\n\" within %s, got %q", ctrTimeout, follow.out.String())
	}

	top := n.must(t, "top", name)
	if !strings.Contains(top, "sleep 1000") || !strings.Contains(top, "PID") {
		t.Errorf("top: want a ps table with \"sleep 1000\", got %q", top)
	}
	stats := strings.TrimSpace(n.must(t, "stats", "--no-stream", "--format", "{{.Name}}|{{.PIDs}}|{{.MemUsage}}", name))
	if m := regexp.MustCompile(`^` + name + `\|(\d+)\|(\S+) / `).FindStringSubmatch(stats); m == nil || m[1] != "2" || strings.HasPrefix(m[2], "0B") {
		t.Errorf("stats: want %s with 2 pids (sh, sleep) and memory in use, got %q", name, stats)
	}

	n.must(t, "pause", name)
	n.waitState(t, name, "paused")
	n.must(t, "unpause", name)
	n.waitState(t, name, "running")
	if r := n.run("", "exec", name, "echo", "thawed"); r.code != 0 || r.stdout != "thawed\n" {
		t.Errorf("exec after unpause: want \"thawed\\n\", got %v", r)
	}

	n.must(t, "stop", name)
	if status, code := n.state(t, name); status != "exited" || code != 7 {
		t.Errorf("after stop: want exited with 7 (the trap's), got %s with %d", status, code)
	}
	// logs -f ends when nerdctl sees the task exit, which may be before its
	// logger has written the last line to the log file: the container
	// writes straight into the logger's pipe (no shim copy), so that race
	// is nerdctl's own, and a loaded machine loses it (a fresh-clone CI run
	// did). What the shim owes is that the line reaches the log, and that
	// logs -f ends.
	if code := follow.wait(ctrTimeout); code != 0 || !strings.HasPrefix(follow.out.String(), "started\nmore\n") {
		t.Errorf("logs -f: want exit 0 once the container stopped, starting with \"started\\nmore\\n\"; got exit %d, %q", code, follow.out.String())
	}
	n.waitLogs(t, name, regexp.MustCompile(`^started\nmore\nterm\n$`))
	n.must(t, "rm", name)
}

// nerdctlKill: kill sends SIGKILL by default, which even a pid 1 that
// ignores SIGTERM cannot survive.
func nerdctlKill(t *testing.T, n *nerdctl) {
	const name = "killed"
	n.removeOnCleanup(t, name)
	n.must(t, nerdctlRunArgs([]string{"-d", "--name", name}, "sleep", "1000")...)
	n.waitState(t, name, "running")
	n.must(t, "kill", name)
	n.waitState(t, name, "exited")
	if _, code := n.state(t, name); code != 137 {
		t.Errorf("after kill: want exit code 137 (SIGKILL), got %d", code)
	}
	n.must(t, "rm", name)
}

// nerdctlRmForce removes a running container: task and container are gone
// from containerd, not only from nerdctl's list.
func nerdctlRmForce(t *testing.T, n *nerdctl) {
	const name = "forced"
	n.removeOnCleanup(t, name)
	id := strings.TrimSpace(n.must(t, nerdctlRunArgs([]string{"-d", "--name", name}, "sleep", "1000")...))
	n.waitState(t, name, "running")
	n.must(t, "rm", "-f", name)
	n.assertGone(t, name)
	for _, kind := range []string{"task", "container"} {
		if ids := strings.Fields(n.d.mustCtr(t, kind, "ls", "-q")); slices.Contains(ids, id) {
			t.Errorf("after rm -f: containerd still has %s %s", kind, id)
		}
	}
}

// execFailed is how nerdctl 2.0.5 reports an exec's exit code: in its
// error, nerdctl itself exiting 1 (`docker exec` would exit with the code).
func execFailed(code int) string {
	return fmt.Sprintf("exec failed with exit code %d", code)
}

// nerdctlExecTTY: `exec -t` on nerdctl's own terminal gives the process a
// pty, and its exit code reaches nerdctl.
func nerdctlExecTTY(t *testing.T, n *nerdctl) {
	const name = "exectty"
	n.removeOnCleanup(t, name)
	n.must(t, nerdctlRunArgs([]string{"-d", "--name", name}, "sleep", "1000")...)
	n.waitState(t, name, "running")
	c := startOnTerminal(t, n.bin, append(append([]string{}, n.global...), "exec", "-t", name, "sh", "-c", "tty; echo $((6*7)); exit 3"), n.env)
	c.expect(t, 0, regexp.MustCompile(`/dev/pts/\d+\n42\n`))
	if code := c.wait(t); code != 1 || !strings.Contains(c.text(), execFailed(3)) {
		t.Errorf("exec -t: want exit 1 and %q, got %d; terminal %q", execFailed(3), code, c.text())
	}
	n.must(t, "rm", "-f", name)
}

// nerdctlRunTTYDetached: `run -t -d` gives the container a pty whose output
// goes to nerdctl's binary:// logger (cio.TerminalBinaryIO), read back with
// `nerdctl logs`.
func nerdctlRunTTYDetached(t *testing.T, n *nerdctl) {
	const name = "ttydetached"
	n.removeOnCleanup(t, name)
	r := n.run("", nerdctlRunArgs([]string{"-t", "-d", "--name", name}, "sh", "-c", "tty; echo ttyok; sleep 1000")...)
	if r.code != 0 {
		t.Fatalf("run -t -d: %v", r)
	}
	n.waitState(t, name, "running")
	// A terminal ends lines with \r\n (ONLCR).
	n.waitLogs(t, name, regexp.MustCompile(`^/dev/pts/\d+\r\nttyok\r\n$`))
	n.must(t, "rm", "-f", name)
	n.assertGone(t, name)
}
