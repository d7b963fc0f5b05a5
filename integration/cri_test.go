package integration

// The Kubernetes path (issue 8): containerd's CRI plugin runs pods through
// the shim under test, driven with crictl as the kubelet would drive it.
// Pods use the host network (no CNI plugin needed) and two images the test
// builds itself (cri_image_test.go). Each containerd gets the handlers
// lean (io.containerd.lean.v2) and runc (io.containerd.runc.v2); the test
// uses the one of the runtime under test, so
//
//	LEANSHIM_TEST_RUNTIME=io.containerd.runc.v2 go test -run CRI ./integration/
//
// checks the test itself against containerd's own shim.

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCRI runs the pod scenarios on containerd 1.6 and 2.4.2, in parallel.
func TestCRI(t *testing.T) {
	t.Parallel()
	crictl := crictlPath(t)
	imgs := buildCRIImages(t, t.TempDir())
	// The k8s.io runc root is shared with any CRI containerd on the machine:
	// remove it afterwards only if it is ours (new, and left empty).
	if _, err := os.Stat(runcK8sRoot()); errors.Is(err, os.ErrNotExist) {
		t.Cleanup(func() { _ = os.Remove(runcK8sRoot()) }) // fails, harmlessly, unless empty
	}
	for _, fl := range criFlavors(t) {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			d := startCRIDaemon(t, fl, crictl, imgs)
			t.Run("pod", func(t *testing.T) {
				t.Parallel()
				criPodScenario(t, d)
			})
			t.Run("runtime options", func(t *testing.T) {
				t.Parallel()
				criOptionsScenario(t, d)
			})
		})
	}
}

// crictlPath is $LEANSHIM_CRICTL, else the repository's .cache/bin/crictl,
// where scripts/crictl.sh (make crictl) installs it.
func crictlPath(tb testing.TB) string {
	tb.Helper()
	p := os.Getenv("LEANSHIM_CRICTL")
	if p == "" {
		p = filepath.Join("..", ".cache", "bin", "crictl")
	}
	p, err := filepath.Abs(p)
	if err != nil {
		tb.Fatal(err)
	}
	if !isExecutable(p) {
		tb.Fatalf("crictl not at %s: run `make crictl` (scripts/crictl.sh) or set LEANSHIM_CRICTL", p)
	}
	return p
}

// criFlavors are the containerds whose CRI plugin the test drives.
func criFlavors(tb testing.TB) []criFlavor {
	tb.Helper()
	bin24 := containerd24Dir(tb)
	return []criFlavor{
		{name: "containerd-1.6", version: "1.6", containerd: suite.containerd, ctr: suite.ctr},
		{
			name: "containerd-2.4", version: "2.4", containerd: filepath.Join(bin24, "containerd"),
			ctr: filepath.Join(bin24, "ctr"), binDir: bin24,
		},
	}
}

// appScript is the long-running app container: one line on each stream,
// then it waits; SIGTERM (crictl stop) makes it say so and exit 0.
const appScript = `echo app-out; echo app-err >&2; trap 'echo got-term; exit 0' TERM; sleep 1000000 & wait`

// oomScript allocates without bound once something is written to /tmp/go
// (a FIFO, or a plain file if that write came first). The test triggers it
// with an exec, that is after Start returned: containerd 1.6's runc shim
// starts watching for OOM only in Start, so an OOM before that would be
// missed by the shim the test is checked against.
const oomScript = `mkfifo /tmp/go 2>/dev/null; read x </tmp/go; x=a; while :; do x=$x$x; done`

// criMemoryLimit is the OOM container's limit: small enough to hit at once,
// large enough for runc's own init process, which runs in that cgroup too.
const criMemoryLimit = 16 << 20

// criOOMTimeout bounds waiting for the OOMKilled reason once the OOM
// container has exited.
const criOOMTimeout = 10 * time.Second

func criPodScenario(t *testing.T, d *criDaemon) {
	pod := d.runPod(t, "pod", d.handler)
	app := d.startContainer(t, pod, "app", appScript, 0)
	exit3 := d.startContainer(t, pod, "exit3", "echo bye; exit 3", 0)
	oom := d.startContainer(t, pod, "oom", oomScript, criMemoryLimit)

	t.Run("pod containers share one shim", func(t *testing.T) {
		d.assertOneShim(t, pod, app, oom)
	})
	t.Run("memory limit in the pod's cgroup", func(t *testing.T) {
		// Also shows that removePod's cgroup check looks in the right place.
		limit := filepath.Join("/sys/fs/cgroup", pod.cgroupParent, oom.id, "memory.max") // cgroup v2
		if _, err := os.Stat("/sys/fs/cgroup/memory"); err == nil {
			limit = filepath.Join("/sys/fs/cgroup/memory", pod.cgroupParent, oom.id, "memory.limit_in_bytes")
		}
		if b, err := os.ReadFile(limit); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(criMemoryLimit) {
			t.Errorf("%s: want %d; got %q (%v)", limit, criMemoryLimit, b, err)
		}
	})
	t.Run("exec", func(t *testing.T) {
		// Streaming (the kubelet's exec: the CRI stream server copies the
		// exec's FIFOs) and synchronous (ExecSync, as probes use it; crictl
		// prints its stdout, then its stderr, both to stdout, each followed
		// by a newline). crictl exits 1 for a failed command and names its
		// exit code in the message.
		for _, mode := range []struct {
			args             []string
			wantOut, wantErr string
			exitReport       string
		}{
			{[]string{"exec"}, "exec-out\n", "exec-err\n", "command terminated with exit code 5"},
			{[]string{"exec", "--sync"}, "exec-out\n\nexec-err\n\n", "", "exited with 5"},
		} {
			r := d.crictl(append(mode.args, app.id, "/bin/sh", "-c", "echo exec-out; echo exec-err >&2")...)
			if !r.ok() || r.stdout != mode.wantOut || !strings.Contains(r.stderr, mode.wantErr) {
				t.Errorf("want exit 0, stdout %q and %q on stderr; got %v", mode.wantOut, mode.wantErr, r)
			}
			r = d.crictl(append(mode.args, app.id, "/bin/sh", "-c", "exit 5")...)
			if r.code != 1 || !strings.Contains(r.stderr, mode.exitReport) {
				t.Errorf("want exit 1 and %q; got %v", mode.exitReport, r)
			}
		}
	})
	t.Run("logs", func(t *testing.T) {
		d.assertLogs(t, app.id, "app-out\n", "app-err\n")
	})
	t.Run("exit code", func(t *testing.T) {
		st := d.waitExited(t, exit3.id)
		if st.Status.ExitCode != 3 || st.Status.Reason != "Error" {
			t.Errorf("want exit code 3, reason Error; got %+v", st.Status)
		}
		d.assertLogs(t, exit3.id, "bye\n", "")
	})
	t.Run("OOMKilled", func(t *testing.T) {
		if r := d.crictl("exec", "--sync", oom.id, "/bin/sh", "-c", "echo >/tmp/go"); !r.ok() {
			t.Fatalf("trigger the allocation: %v", r)
		}
		d.waitExited(t, oom.id)
		// The CRI plugin sets the reason when the shim's TaskOOM event
		// arrives, which may be after the exit; containerd 2.x also looks
		// at oom_kill in the task's Stats when the exit status is 137.
		var st criContainerInfo
		poll(criOOMTimeout, func() bool {
			st, _ = d.inspect(oom.id)
			return st.Status.Reason == "OOMKilled"
		})
		if st.Status.ExitCode != 137 || st.Status.Reason != "OOMKilled" {
			t.Errorf("want exit code 137 (SIGKILL), reason OOMKilled (needs the shim's TaskOOM event, or on 2.x its Stats); got %+v", st.Status)
		}
	})
	t.Run("stop and remove leave nothing behind", func(t *testing.T) {
		d.mustCrictl(t, "stop", "--timeout", "30", app.id)
		st := d.waitExited(t, app.id)
		if st.Status.ExitCode != 0 || st.Status.Reason != "Completed" {
			t.Errorf("stop (SIGTERM, trapped): want exit code 0, reason Completed; got %+v", st.Status)
		}
		d.assertLogs(t, app.id, "app-out\ngot-term\n", "app-err\n")
		d.removePod(t, pod, app, exit3, oom)
	})
}

// criOptionsScenario runs a pod through the handler whose options name a
// runc wrapper as the runtime binary, and checks the wrapper ran.
func criOptionsScenario(t *testing.T, d *criDaemon) {
	pod := d.runPod(t, "opts", d.handler+"-opts")
	c := d.startContainer(t, pod, "opts", "echo opts", 0)
	if st := d.waitExited(t, c.id); st.Status.ExitCode != 0 {
		t.Errorf("want exit code 0; got %+v", st.Status)
	}
	log, err := os.ReadFile(d.runcLog)
	if err != nil {
		t.Errorf("runc wrapper never ran: %v", err)
	}
	for _, id := range []string{pod.id, c.id} {
		if !slices.ContainsFunc(strings.Split(string(log), "\n"), func(line string) bool {
			f := strings.Fields(line)
			return slices.Contains(f, "create") && f[len(f)-1] == id
		}) {
			t.Errorf("BinaryName not honoured: no `create %s` by the runc wrapper; its log:\n%s", id, log)
		}
	}
	d.removePod(t, pod, c)
}
