package integration

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// criPod is a pod sandbox run by the test.
type criPod struct {
	id           string
	name         string
	configPath   string // the pod config crictl create needs again
	cgroupParent string
}

// criCtr is a container in a criPod.
type criCtr struct {
	id, name string
}

// runPod runs a host-network pod sandbox with the runtime handler and
// returns it; any failure is fatal.
func (d *criDaemon) runPod(t *testing.T, name, handler string) criPod {
	t.Helper()
	return d.runPodWith(t, name, handler, nil, map[string]any{"network": 2}) // NODE
}

// runPodWith runs a pod whose config is the test's usual one (name,
// uid, log directory, cgroup parent) plus extra top-level fields and the
// given namespace options; any failure is fatal.
func (d *criDaemon) runPodWith(t *testing.T, name, handler string, extra, nsOptions map[string]any) criPod {
	t.Helper()
	seq := criPodSeq.Add(1)
	p := criPod{
		name:         fmt.Sprintf("%s-%d", name, seq),
		configPath:   filepath.Join(d.dir, fmt.Sprintf("pod-%s-%d.json", name, seq)),
		cgroupParent: fmt.Sprintf("%s-%d", d.cgroupParent, seq),
	}
	logDir := filepath.Join(d.logDir, p.name)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{
		"metadata":      map[string]any{"name": p.name, "namespace": "leanshim-test", "uid": fmt.Sprintf("%s-%d", filepath.Base(d.dir), seq)},
		"log_directory": logDir,
		"linux": map[string]any{
			"cgroup_parent":    p.cgroupParent,
			"security_context": map[string]any{"namespace_options": nsOptions},
		},
	}
	for k, v := range extra {
		cfg[k] = v
	}
	writeJSON(t, p.configPath, cfg)
	p.id = d.mustCrictl(t, "runp", "--runtime", handler, p.configPath)
	return p
}

// startContainer creates and starts a busybox container in pod running
// `sh -c script`, with a memory limit if memLimit > 0; failure is fatal.
func (d *criDaemon) startContainer(t *testing.T, pod criPod, name, script string, memLimit int64) criCtr {
	t.Helper()
	linux := map[string]any{
		"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}},
	}
	if memLimit > 0 {
		linux["resources"] = map[string]any{"memory_limit_in_bytes": memLimit}
	}
	path := filepath.Join(d.dir, fmt.Sprintf("ctr-%s-%s.json", pod.name, name))
	writeJSON(t, path, map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": criAppImage},
		"command":  []string{"/bin/sh", "-c", script},
		"log_path": name + ".log",
		"linux":    linux,
	})
	c := criCtr{name: name, id: d.mustCrictl(t, "create", pod.id, path, pod.configPath)}
	d.mustCrictl(t, "start", c.id)
	return c
}

func writeJSON(tb testing.TB, path string, v any) {
	tb.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		tb.Fatal(err)
	}
}

// criContainerInfo is what the test reads of `crictl inspect` (and, for a
// pod, of `crictl inspectp`: status.state and info.pid).
type criContainerInfo struct {
	Status struct {
		ID       string `json:"id"`
		State    string `json:"state"`
		ExitCode int    `json:"exitCode"`
		Reason   string `json:"reason"`
		Message  string `json:"message"`
	} `json:"status"`
	Info struct {
		Pid int `json:"pid"`
	} `json:"info"`
}

func (d *criDaemon) inspect(id string) (criContainerInfo, error) {
	var st criContainerInfo
	err := d.crictlJSON(&st, "inspect", id)
	return st, err
}

// waitExited waits until the CRI plugin reports the container exited (it
// learns that through the shim's Wait) and returns its status.
func (d *criDaemon) waitExited(t *testing.T, id string) criContainerInfo {
	t.Helper()
	var st criContainerInfo
	var err error
	if !poll(criStateTimeout, func() bool {
		st, err = d.inspect(id)
		return err == nil && st.Status.State == "CONTAINER_EXITED"
	}) {
		t.Fatalf("container %s not exited after %s: %+v %v", id, criStateTimeout, st.Status, err)
	}
	return st
}

// assertLogs waits until `crictl logs` shows exactly wantOut on stdout and
// wantErr among its stderr (containerd writes the CRI log file as the
// output arrives, so the test polls).
func (d *criDaemon) assertLogs(t *testing.T, id, wantOut, wantErr string) {
	t.Helper()
	var r cmdResult
	if !poll(criStateTimeout, func() bool {
		r = d.crictl("logs", id)
		return r.ok() && r.stdout == wantOut && strings.Contains(r.stderr, wantErr)
	}) {
		t.Errorf("crictl logs: want stdout %q and %q on stderr; got %v", wantOut, wantErr, r)
	}
}

// assertOneShim checks that the pod's running tasks share one shim: their
// bundles name the same shim address, one shim process serves them, and it
// is the parent of the pause process and of the app's init process.
func (d *criDaemon) assertOneShim(t *testing.T, pod criPod, ctrs ...criCtr) {
	t.Helper()
	want, err := d.taskAddress(pod.id)
	if err != nil {
		t.Fatalf("sandbox task address: %v", err)
	}
	ids := []string{pod.id}
	for _, c := range ctrs {
		ids = append(ids, c.id)
		if got, err := d.taskAddress(c.id); err != nil || got != want {
			t.Errorf("container %s: shim address %q (%v); want the sandbox's %q", c.name, got, err, want)
		}
	}
	var shims []string
	var shimPid int
	for _, pid := range d.shimDaemons() {
		if slices.Contains(ids, flagValue(readArgv(pid), "id")) {
			shims = append(shims, fmt.Sprintf("%d: %s", pid, cmdline(pid)))
			shimPid = pid
		}
	}
	if len(shims) != 1 {
		t.Fatalf("want one shim process for the pod; got %d:\n  %s", len(shims), strings.Join(shims, "\n  "))
	}
	t.Logf("shim %s at %s", shims[0], want)
	var podInfo criContainerInfo
	if err := d.crictlJSON(&podInfo, "inspectp", pod.id); err != nil {
		t.Fatal(err)
	}
	tasks := []struct{ name, id string }{{"pause", pod.id}}
	for _, c := range ctrs {
		tasks = append(tasks, struct{ name, id string }{c.name, c.id})
	}
	for _, task := range tasks {
		pid := podInfo.Info.Pid
		if task.id != pod.id {
			st, err := d.inspect(task.id)
			if err != nil {
				t.Fatal(err)
			}
			pid = st.Info.Pid
		}
		if ppid := parentPid(pid); pid == 0 || ppid != shimPid {
			t.Errorf("%s: process %d has parent %d (%s); want the pod's shim %d", task.name, pid, ppid, cmdline(ppid), shimPid)
		}
	}
}

// removePod stops and removes the containers and the pod as the kubelet
// does, then checks that nothing of them is left: not in the CRI plugin,
// not in containerd, no shim process, socket, bundle, work dir, runc state,
// cgroup or mount, and no file under containerd's root or state named after
// one of them.
func (d *criDaemon) removePod(t *testing.T, pod criPod, ctrs ...criCtr) {
	t.Helper()
	ids := []string{pod.id}
	for _, c := range ctrs {
		d.mustCrictl(t, "stop", c.id) // already exited: a no-op
		d.mustCrictl(t, "rm", c.id)
		ids = append(ids, c.id)
	}
	d.mustCrictl(t, "stopp", pod.id)
	d.mustCrictl(t, "rmp", pod.id)

	listed := d.mustCrictl(t, "pods", "-q") + " " + d.mustCrictl(t, "ps", "-a", "-q") + " " +
		d.mustCtr(t, "containers", "ls", "-q") + " " + d.mustCtr(t, "tasks", "ls", "-q")
	for _, id := range ids {
		if strings.Contains(listed, id) {
			t.Errorf("%s still listed by crictl pods/ps or ctr containers/tasks", id)
		}
	}
	assertNoLeftovers(t, d.daemon, ids...)
	var found []string
	if !poll(leftoverTimeout, func() bool {
		found = d.criLeftovers(pod, ids)
		return len(found) == 0
	}) {
		t.Errorf("leftovers after removing pod %s:\n  %s", pod.id, strings.Join(found, "\n  "))
	}
}

// criLeftovers lists what assertNoLeftovers does not look at: this
// daemon's shim processes for ids, the containers' cgroups under the pod's
// cgroup parent, mounts and files under the daemon's dir naming an id.
func (d *criDaemon) criLeftovers(pod criPod, ids []string) []string {
	var found []string
	for _, pid := range d.shimDaemons() {
		if slices.Contains(ids, flagValue(readArgv(pid), "id")) {
			found = append(found, fmt.Sprintf("shim process %d: %s", pid, cmdline(pid)))
		}
	}
	cgroups, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", pod.cgroupParent, "*"))
	for _, cg := range cgroups {
		if fi, err := os.Stat(cg); err == nil && fi.IsDir() {
			found = append(found, "cgroup "+cg)
		}
	}
	namesID := func(p string) bool {
		return slices.ContainsFunc(ids, func(id string) bool { return strings.Contains(p, id) })
	}
	for _, m := range mountsUnder(d.dir) {
		if namesID(m) {
			found = append(found, "mount "+m)
		}
	}
	for _, dir := range []string{d.root, d.state, d.socketDir} {
		_ = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
			switch {
			case err != nil:
				return nil // gone while walking
			case e.IsDir() && strings.HasPrefix(e.Name(), "io.containerd.snapshotter.v1."):
				return fs.SkipDir // image layers, named by number
			case namesID(e.Name()):
				found = append(found, "file "+p)
			}
			return nil
		})
	}
	return found
}
