package integration

// Pods without pause containers (issue 15): containerd 2.4's CRI plugin
// with a runtime handler whose sandboxer is "shim" calls leanshim's sandbox
// API (containerd.runtime.sandbox.v1) for the pod, and no pause image is in
// the image store at all. The pod has a network namespace of its own (CNI
// ptp, cri_daemon_test.go's cniConfig), a hostname, DNS settings and a
// shared PID namespace, so that what the pause-container path gives a pod's
// containers (hostname, /etc/hosts, resolv.conf, /dev/shm, one network,
// IPC and PID namespace) is checked on the shim's own sandbox.
//
// With LEANSHIM_TEST_RUNTIME=io.containerd.runc.v2 the same scenario runs
// in podsandbox mode (pause container, runc handler), the reference for
// what the containers should see: containerd's runc shim has no sandbox API.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// shimPodHostname and the DNS settings of the shim-sandbox pods.
const (
	shimPodHostname = "lean-pod"
	shimPodDNS      = "10.0.0.10"
	shimPodSearch   = "svc.test"
)

func TestCRIShimSandbox(t *testing.T) {
	t.Parallel()
	crictl := crictlPath(t)
	imgs := buildCRIImages(t, t.TempDir())
	fl := criFlavors(t)[1] // containerd 2.4.2: the sandbox API is 2.x's
	handler, opts := "lean-shim", []criOption{withoutPauseImage(), withCRISubreaper()}
	if suite.runtime != defaultRuntime {
		handler, opts = criHandlers[suite.runtime], []criOption{withCRISubreaper()} // reference: pause container
	}
	d := startCRIDaemon(t, fl, crictl, imgs, opts...)

	t.Run("pod", func(t *testing.T) { shimPodScenario(t, d, handler) })
	t.Run("holder killed: pod not ready", func(t *testing.T) {
		pod := d.runNetPod(t, "killed", handler, 2) // CONTAINER pid namespaces
		holder := d.sandboxPid(t, pod, handler)
		if err := syscall.Kill(holder, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		d.waitPodState(t, pod, "SANDBOX_NOTREADY")
		d.removePod(t, pod)
		d.assertNoHolder(t, pod)
	})
	t.Run("containerd restarted with a pod running", func(t *testing.T) {
		pod := d.runNetPod(t, "restart", handler, 0)
		c := d.startNetContainer(t, pod, "app", appScript)
		d.kill9(t)
		d.restart(t)
		d.waitPodState(t, pod, "SANDBOX_READY")
		r := d.crictl("exec", "--sync", c.id, "/bin/sh", "-c", "hostname; echo still-here")
		if !r.ok() || !strings.HasPrefix(r.stdout, shimPodHostname+"\nstill-here\n") {
			t.Errorf("exec after containerd's restart: %v", r)
		}
		// A container created after the restart still gets the pod's files.
		c2 := d.startNetContainer(t, pod, "late", "cat /etc/hostname; sleep 1000000")
		d.assertLogs(t, c2.id, shimPodHostname+"\n", "")
		d.mustCrictl(t, "stop", c.id)
		d.mustCrictl(t, "stop", c2.id)
		d.removePod(t, pod, c, c2)
		d.assertNoHolder(t, pod)
	})
}

// withCRISubreaper runs the CRI containerd under a subreaper, so the test
// can kill it (kill9) and start it again (restart).
func withCRISubreaper() criOption { return func(d *criDaemon) { d.subreaper = true } }

func shimPodScenario(t *testing.T, d *criDaemon, handler string) {
	pod := d.runNetPod(t, "shim", handler, 0) // pid POD: shareProcessNamespace
	var st struct {
		Status struct {
			State string `json:"state"`
		} `json:"status"`
	}
	if err := d.crictlJSON(&st, "inspectp", pod.id); err != nil || st.Status.State != "SANDBOX_READY" {
		t.Fatalf("inspectp: state %q, %v", st.Status.State, err)
	}
	server := d.startNetContainer(t, pod, "server",
		`echo shm-data >/dev/shm/from-server; echo server-up; nc -l -p 7777; sleep 999999`)
	client := d.startNetContainer(t, pod, "client", appScript)
	d.assertLogs(t, server.id, "server-up\n", "")

	if handler == "lean-shim" {
		t.Run("no pause image, no pause container", func(t *testing.T) {
			if imgs := d.mustCrictl(t, "images", "-q"); strings.Contains(d.mustCrictl(t, "images"), "pause") {
				t.Errorf("a pause image is in the store: %s", imgs)
			}
			ctrs := strings.Fields(d.mustCtr(t, "containers", "ls", "-q"))
			if len(ctrs) != 2 {
				t.Errorf("containerd holds %d containers for the pod, want its 2 (no pause container): %v", len(ctrs), ctrs)
			}
		})
		t.Run("one shim for the pod", func(t *testing.T) { d.assertSandboxShim(t, pod, server, client) })
	}
	t.Run("the pod's network, IPC, UTS and PID namespaces", func(t *testing.T) {
		script := `echo hello-over-localhost | nc 127.0.0.1 7777; echo; cat /dev/shm/from-server; hostname; cat /etc/hostname; ` +
			`cat /etc/resolv.conf; ps -o args; readlink /proc/self/ns/net`
		r := d.crictl("exec", "--sync", client.id, "/bin/sh", "-c", script)
		if !r.ok() {
			t.Fatalf("exec: %v", r)
		}
		out := r.stdout
		for _, want := range []string{
			"shm-data\n", shimPodHostname + "\n" + shimPodHostname + "\n",
			"search " + shimPodSearch + "\n", "nameserver " + shimPodDNS + "\n",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("client does not see %q in the pod; its output:\n%s", want, out)
			}
		}
		// The server's process, one PID namespace: its shell until nc has
		// answered, then the sleep the shell execs.
		if !strings.Contains(out, "echo shm-data") && !strings.Contains(out, "sleep 999999") {
			t.Errorf("client does not see the server's process; its output:\n%s", out)
		}
		hostNet, _ := os.Readlink("/proc/self/ns/net")
		if strings.Contains(out, hostNet) {
			t.Errorf("the pod is in the host's network namespace %s", hostNet)
		}
		d.assertLogs(t, server.id, "server-up\nhello-over-localhost\n", "")
	})
	// containerd 2.4 reads a shim-mode pod's stats through SandboxMetrics
	// (podsandbox mode: the pause container's cgroup parent, read by CRI).
	t.Run("pod and container stats", func(t *testing.T) {
		type counter struct {
			Value string `json:"value"`
		}
		var pods struct {
			Stats []struct {
				Linux struct {
					CPU    struct{ UsageCoreNanoSeconds counter } `json:"cpu"`
					Memory struct{ WorkingSetBytes counter }      `json:"memory"`
				} `json:"linux"`
			} `json:"stats"`
		}
		if err := d.crictlJSON(&pods, "statsp", "--id", pod.id, "-o", "json"); err != nil || len(pods.Stats) != 1 {
			t.Fatalf("statsp: %+v %v", pods, err)
		}
		var ctrs struct {
			Stats []struct {
				CPU    struct{ UsageCoreNanoSeconds counter } `json:"cpu"`
				Memory struct{ WorkingSetBytes counter }      `json:"memory"`
			} `json:"stats"`
		}
		if err := d.crictlJSON(&ctrs, "stats", "--id", server.id, "-o", "json"); err != nil || len(ctrs.Stats) != 1 {
			t.Fatalf("stats: %+v %v", ctrs, err)
		}
		for what, v := range map[string]string{
			"pod cpu": pods.Stats[0].Linux.CPU.UsageCoreNanoSeconds.Value, "pod memory": pods.Stats[0].Linux.Memory.WorkingSetBytes.Value,
			"container cpu": ctrs.Stats[0].CPU.UsageCoreNanoSeconds.Value, "container memory": ctrs.Stats[0].Memory.WorkingSetBytes.Value,
		} {
			if n, err := strconv.ParseUint(v, 10, 64); err != nil || n == 0 {
				t.Errorf("%s: %q, want a positive count", what, v)
			}
		}
	})
	t.Run("streaming exec", func(t *testing.T) {
		r := d.crictl("exec", client.id, "/bin/sh", "-c", "echo streamed; echo err >&2; exit 4")
		if r.code != 1 || r.stdout != "streamed\n" || !strings.Contains(r.stderr, "err\n") ||
			!strings.Contains(r.stderr, "exit code 4") {
			t.Errorf("want stdout streamed, stderr err and exit code 4; got %v", r)
		}
	})
	t.Run("stop, stopp, rmp leave nothing", func(t *testing.T) {
		d.mustCrictl(t, "stop", "--timeout", "30", client.id)
		if st := d.waitExited(t, client.id); st.Status.ExitCode != 0 {
			t.Errorf("client: %+v", st.Status)
		}
		d.mustCrictl(t, "stopp", pod.id)
		d.waitPodState(t, pod, "SANDBOX_NOTREADY")
		d.removePod(t, pod, server, client)
		if handler == "lean-shim" {
			d.assertNoHolder(t, pod)
		}
	})
}

// runNetPod runs a pod with a network namespace of its own (CNI), the
// shim-sandbox hostname and DNS settings, and PID namespace mode pidMode
// (0 POD: one for the pod; 2 CONTAINER: one per container).
func (d *criDaemon) runNetPod(t *testing.T, name, handler string, pidMode int) criPod {
	t.Helper()
	return d.runPodWith(t, name, handler, map[string]any{
		"hostname":   shimPodHostname,
		"dns_config": map[string]any{"servers": []string{shimPodDNS}, "searches": []string{shimPodSearch}},
	}, map[string]any{"pid": pidMode})
}

// startNetContainer creates and starts a busybox container running `sh -c
// script` in a runNetPod pod, with the pod's namespace options.
func (d *criDaemon) startNetContainer(t *testing.T, pod criPod, name, script string) criCtr {
	t.Helper()
	var podCfg struct {
		Linux struct {
			SecurityContext map[string]any `json:"security_context"`
		} `json:"linux"`
	}
	b, err := os.ReadFile(pod.configPath)
	if err == nil {
		err = json.Unmarshal(b, &podCfg)
	}
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(d.dir, fmt.Sprintf("ctr-%s-%s.json", pod.name, name))
	writeJSON(t, path, map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": criAppImage},
		"command":  []string{"/bin/sh", "-c", script},
		"log_path": name + ".log",
		"linux":    map[string]any{"security_context": podCfg.Linux.SecurityContext},
	})
	c := criCtr{name: name, id: d.mustCrictl(t, "create", pod.id, path, pod.configPath)}
	d.mustCrictl(t, "start", c.id)
	return c
}

// waitPodState waits until crictl inspectp reports the pod in state.
func (d *criDaemon) waitPodState(t *testing.T, pod criPod, state string) {
	t.Helper()
	var got string
	if !poll(criStateTimeout, func() bool {
		var st struct {
			Status struct {
				State string `json:"state"`
			} `json:"status"`
		}
		if err := d.crictlJSON(&st, "inspectp", pod.id); err != nil {
			got = err.Error()
			return false
		}
		got = st.Status.State
		return got == state
	}) {
		t.Fatalf("pod %s: state %s, want %s", pod.id, got, state)
	}
}

// holderPids lists the pod holders (pod.HolderArg0) of sandbox id.
func holderPids(id string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if argv := readArgv(pid); len(argv) == 2 && argv[0] == "leanshim-pod" && argv[1] == id {
			pids = append(pids, pid)
		}
	}
	return pids
}

// holderPid returns the pid of the pod's holder; there must be one.
func (d *criDaemon) holderPid(t *testing.T, pod criPod) int {
	t.Helper()
	pids := holderPids(pod.id)
	if len(pids) != 1 {
		t.Fatalf("pod %s: %d holder processes (%v), want 1", pod.id, len(pids), pids)
	}
	return pids[0]
}

// sandboxPid is the process whose namespaces the pod's containers join:
// the holder, or in the reference run the pause container's process (from
// crictl inspectp's verbose info).
func (d *criDaemon) sandboxPid(t *testing.T, pod criPod, handler string) int {
	t.Helper()
	if handler == "lean-shim" {
		return d.holderPid(t, pod)
	}
	var st struct {
		Info struct {
			Pid int `json:"pid"`
		} `json:"info"`
	}
	if err := d.crictlJSON(&st, "inspectp", pod.id); err != nil || st.Info.Pid <= 0 {
		t.Fatalf("pause pid of pod %s: %d, %v", pod.id, st.Info.Pid, err)
	}
	return st.Info.Pid
}

// assertNoHolder fails t if a holder of the pod is still running.
func (d *criDaemon) assertNoHolder(t *testing.T, pod criPod) {
	t.Helper()
	if !poll(leftoverTimeout, func() bool { return len(holderPids(pod.id)) == 0 }) {
		t.Errorf("pod %s removed, its holder still runs: %v", pod.id, holderPids(pod.id))
	}
}

// assertSandboxShim checks that one shim process serves the pod: it was
// started for the sandbox, and containerd reaches the containers at the
// sandbox's address (their bootstrap.json), without a start of their own.
func (d *criDaemon) assertSandboxShim(t *testing.T, pod criPod, ctrs ...criCtr) {
	t.Helper()
	var ids []string
	for _, pid := range d.shimDaemons() {
		ids = append(ids, flagValue(readArgv(pid), "id"))
	}
	if len(ids) != 1 || ids[0] != pod.id {
		t.Errorf("shim processes for ids %v, want one, for the sandbox %s", ids, pod.id)
	}
	sandboxBundle := filepath.Join(d.state, "io.containerd.sandbox.controller.v1.shim", criNamespace, pod.id)
	want, err := bootstrapAddress(sandboxBundle)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ctrs {
		if got, err := bootstrapAddress(d.bundleDir(c.id)); err != nil || got != want {
			t.Errorf("container %s at %q (%v), want the sandbox's shim at %q", c.name, got, err, want)
		}
	}
}

// bootstrapAddress reads the shim address containerd 2.x keeps in a bundle.
func bootstrapAddress(bundle string) (string, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "bootstrap.json"))
	if err != nil {
		return "", err
	}
	var p struct {
		Address string `json:"address"`
	}
	err = json.Unmarshal(b, &p)
	return p.Address, err
}
