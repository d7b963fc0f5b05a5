package integration

// The core scenarios against every containerd the shim serves, each started
// privately (PROTOCOL.md §1, §4):
//
//	containerd-1.6     Debian's containerd 1.6, runtime v2, the runtime under test
//	containerd-2.4     containerd 2.4.2 (scripts/containerd24.sh), runtime v2,
//	                   bootstrap protocol, task API v3, a private shim socket dir
//	containerd-1.6-v1  Debian's containerd 1.6, io.containerd.runtime.v1.linux
//	                   with the shim under test as its `shim`
//
// With LEANSHIM_TEST_RUNTIME=io.containerd.runc.v2 the same tests run against
// containerd's own shims (each containerd's runc v2 shim, Debian's
// containerd-shim for v1), to check that the tests test the right thing.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// scenario is one entry of the core scenario table.
type scenario struct {
	name string
	run  func(t *testing.T, d *daemon)
}

var coreScenarios = []scenario{
	{"run prints and exits with the container's code", scenarioRun},
	{"detached run, ps and kill", scenarioDetached},
	{"exec", scenarioExec},
	{"kill ends an attached run", scenarioKill},
	{"delete", scenarioDelete},
	{"events in order", scenarioEvents},
	{"20 concurrent containers", scenarioConcurrent},
	{"protocol", scenarioProtocol},
}

// TestEveryContainerd runs the core scenarios on each daemon, in parallel.
func TestEveryContainerd(t *testing.T) {
	t.Parallel()
	for _, fl := range flavors(t) {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			d := startContainerd(t, withFlavor(fl), withDebug())
			for _, sc := range coreScenarios {
				t.Run(sc.name, func(t *testing.T) {
					t.Parallel()
					sc.run(t, d)
				})
			}
		})
	}
}

func scenarioRun(t *testing.T, d *daemon) {
	id := d.newID("echo")
	r := d.run(t, []string{"--rm"}, id, "/bin/echo", "hello")
	if r.code != 0 || r.stdout != "hello\n" {
		t.Errorf("want exit 0 and stdout %q; got %v", "hello\n", r)
	}
	id2 := d.newID("exit7")
	r = d.run(t, []string{"--rm"}, id2, "/bin/sh", "-c", "echo oops >&2; exit 7")
	if r.code != 7 || r.stdout != "" || !strings.Contains(r.stderr, "oops") {
		t.Errorf("want exit 7, no stdout and oops on stderr; got %v", r)
	}
	assertNoLeftovers(t, d, id, id2)
}

func scenarioDetached(t *testing.T, d *daemon) {
	id := d.newID("sleeper")
	if r := d.run(t, []string{"-d"}, id, "/bin/sleep", "1000"); r.code != 0 {
		t.Fatalf("run -d: %v", r)
	}
	pid := waitTaskStatus(t, d, id, "RUNNING")
	if pids := taskPids(t, d, id); !slices.Equal(pids, []int{pid}) {
		t.Errorf("ctr task ps: want [%d]; got %v", pid, pids)
	}
	shims := shimProcesses(d.ns)[id]
	if suite.runtime == defaultRuntime && (len(shims) != 1 || parentPid(pid) != shims[0]) {
		t.Errorf("want the container's parent to be its one shim; shims %v, parent of %d is %d (%s)", shims, pid, parentPid(pid), cmdline(parentPid(pid)))
	}
	killAndRemove(t, d, id, "SIGKILL", 137)
}

// killAndRemove signals the task, waits until it is STOPPED, deletes it and
// its container, checks the exit code ctr reports, and that nothing is left.
func killAndRemove(t *testing.T, d *daemon, id, signal string, wantCode int) {
	t.Helper()
	d.mustCtr(t, "task", "kill", "-s", signal, id)
	waitTaskStatus(t, d, id, "STOPPED")
	r := d.ctr(t, "task", "rm", id)
	if want := fmt.Sprintf("non-zero exit code %d", wantCode); r.code != 0 || !strings.Contains(r.stderr, want) {
		t.Errorf("task rm: want exit 0 and ctr's warning %q; got %v", want, r)
	}
	d.mustCtr(t, "container", "rm", id)
	assertNoLeftovers(t, d, id)
}

func scenarioExec(t *testing.T, d *daemon) {
	id := d.newID("exec")
	if r := d.run(t, []string{"-d"}, id, "/bin/sleep", "1000"); r.code != 0 {
		t.Fatalf("run -d: %v", r)
	}
	waitTaskStatus(t, d, id, "RUNNING")
	r := d.ctr(t, "task", "exec", "--exec-id", "e1", id, "/bin/sh", "-c", "echo out; echo err >&2; exit 5")
	if r.code != 5 || r.stdout != "out\n" || !strings.Contains(r.stderr, "err") {
		t.Errorf("exec: want exit 5, stdout %q and err on stderr; got %v", "out\n", r)
	}
	if r := d.ctr(t, "task", "exec", "--exec-id", "e2", id, "/bin/cat", "/etc/passwd"); r.code != 0 || !strings.HasPrefix(r.stdout, "root:") {
		t.Errorf("exec cat: want exit 0 and the rootfs's passwd; got %v", r)
	}
	killAndRemove(t, d, id, "SIGKILL", 137)
}

func scenarioKill(t *testing.T, d *daemon) {
	id := d.newID("trap")
	// A pid 1 with a handler gets SIGTERM; sleep is short so the trap runs soon.
	run := d.startCtr(t, d.runArgs([]string{"--rm"}, id, "/bin/sh", "-c", `trap "exit 42" TERM; while :; do sleep 0.1; done`)...)
	waitTaskStatus(t, d, id, "RUNNING")
	d.mustCtr(t, "task", "kill", id) // SIGTERM
	if code := run.wait(taskStateTimeout); code != 42 {
		t.Errorf("want ctr run to exit 42 (the trap's exit); got %d, output %q", code, run.out.String())
	}
	assertNoLeftovers(t, d, id)
}

func scenarioDelete(t *testing.T, d *daemon) {
	id := d.newID("del")
	if r := d.run(t, []string{"-d"}, id, "/bin/sleep", "1000"); r.code != 0 {
		t.Fatalf("run -d: %v", r)
	}
	waitTaskStatus(t, d, id, "RUNNING")
	if r := d.ctr(t, "task", "rm", id); r.code == 0 {
		t.Errorf("task rm of a running task: want failure; got %v", r)
	}
	if _, status, _ := taskStatus(t, d, id); status != "RUNNING" {
		t.Errorf("after a refused task rm: want RUNNING; got %q", status)
	}
	d.mustCtr(t, "task", "rm", "-f", id)
	if _, _, ok := taskStatus(t, d, id); ok {
		t.Errorf("ctr task ls still lists %s after task rm -f", id)
	}
	d.mustCtr(t, "container", "rm", id)
	assertNoLeftovers(t, d, id)
}

func scenarioEvents(t *testing.T, d *daemon) {
	id := d.newID("events")
	events := d.startCtr(t, "events", "namespace=="+d.ns)
	waitSubscribed(t, d, events)
	if r := d.run(t, []string{"--rm"}, id, "/bin/sh", "-c", "exit 3"); r.code != 3 {
		t.Fatalf("want ctr run to exit 3; got %v", r)
	}
	var taskEvs []event
	if !poll(eventTimeout, func() bool {
		taskEvs = taskEvents(events.out.String(), id)
		return len(taskEvs) > 0 && taskEvs[len(taskEvs)-1].topic == "/tasks/delete"
	}) {
		t.Fatalf("no /tasks/delete for %s within %s; ctr events printed:\n%s", id, eventTimeout, events.out.String())
	}
	events.stop()
	var topics []string
	for _, e := range taskEvs {
		topics = append(topics, e.topic)
	}
	want := []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}
	if !slices.Equal(topics, want) {
		t.Fatalf("task events for %s: want %v; got %v\nctr events printed:\n%s", id, want, topics, events.out.String())
	}
	pid := taskEvs[0].fields["pid"]
	for _, e := range taskEvs {
		if e.namespace != d.ns || e.fields["pid"] != pid || pid == nil {
			t.Errorf("%s: want namespace %s and pid %v; got %s and %v", e.topic, d.ns, pid, e.namespace, e.fields["pid"])
		}
	}
	for _, e := range taskEvs[2:] {
		if status := e.fields["exit_status"]; status != float64(3) {
			t.Errorf("%s: want exit_status 3; got %v", e.topic, status)
		}
	}
	assertNoLeftovers(t, d, id)
}

// taskEvents picks the /tasks/ events of container id from `ctr events` output.
func taskEvents(out, id string) []event {
	var evs []event
	for _, e := range parseEvents(out) {
		if strings.HasPrefix(e.topic, "/tasks/") && e.fields["container_id"] == id {
			evs = append(evs, e)
		}
	}
	return evs
}

func scenarioConcurrent(t *testing.T, d *daemon) {
	const n = 20
	ids := make([]string, n)
	results := make([]cmdResult, n)
	var wg sync.WaitGroup
	for i := range n {
		ids[i] = d.newID("many")
		wg.Go(func() {
			results[i] = d.run(t, []string{"--rm"}, ids[i], "/bin/sh", "-c", fmt.Sprintf("echo %d; exit %d", i, i))
		})
	}
	wg.Wait()
	for i, r := range results {
		if want := fmt.Sprintf("%d\n", i); r.code != i || r.stdout != want {
			t.Errorf("container %s: want exit %d and stdout %q; got %v", ids[i], i, want, r)
		}
	}
	assertNoLeftovers(t, d, ids...)
}

// scenarioProtocol checks how the daemon and the shim found each other: the
// launch protocol's traces in the bundle and, for leanshim, the service
// containerd calls (the shim logs each call's full method with -debug).
func scenarioProtocol(t *testing.T, d *daemon) {
	id := d.newID("proto")
	if r := d.run(t, []string{"-d"}, id, "/bin/sleep", "1000"); r.code != 0 {
		t.Fatalf("run -d: %v", r)
	}
	waitTaskStatus(t, d, id, "RUNNING")
	bundle := d.bundleDir(id)
	var service string
	switch d.flavor.plugin {
	case v1Plugin:
		service = "containerd.runtime.linux.shim.v1.Shim"
		checkV1Launch(t, d, id)
	default:
		service = "containerd.task.v2.Task"
		if _, err := os.Stat(filepath.Join(bundle, "bootstrap.json")); err == nil {
			service = "containerd.task.v3.Task"
			checkBootstrap(t, d, id)
		} else if d.flavor.containerd != suite.containerd {
			t.Errorf("containerd 2.x wrote no bootstrap.json in %s: %v", bundle, err)
		}
	}
	if suite.runtime == defaultRuntime {
		log := readTail(d.logPath, 0)
		if want := "/" + service + "/Create"; !strings.Contains(log, want) {
			t.Errorf("daemon log: want the shim's debug line for %s; not found", want)
		}
		if strings.Contains(log, "downgrading client API version") {
			t.Errorf("containerd downgraded the task API version: the shim failed a v3 call")
		}
	}
	t.Logf("%s: containerd calls %s", d.flavor.name, service)
	killAndRemove(t, d, id, "SIGKILL", 137)
}

// checkBootstrap checks what containerd 2.4 recorded after start: task API
// version 3, ttrpc, and a socket in the configured socket dir.
func checkBootstrap(t *testing.T, d *daemon, id string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.bundleDir(id), "bootstrap.json"))
	if err != nil {
		t.Fatal(err)
	}
	var params struct {
		Version  int    `json:"version"`
		Address  string `json:"address"`
		Protocol string `json:"protocol"`
	}
	if err := json.Unmarshal(b, &params); err != nil {
		t.Fatalf("bootstrap.json %s: %v", b, err)
	}
	if params.Version != 3 || params.Protocol != "ttrpc" || params.Address != "unix://"+d.shimSocket(id) {
		t.Errorf("bootstrap.json: want version 3, ttrpc, address unix://%s; got %s", d.shimSocket(id), b)
	}
	if _, err := os.Stat(filepath.Join(d.bundleDir(id), "address")); err == nil && suite.runtime == defaultRuntime {
		t.Logf("bundle has an address file as well (written by start for containerd 1.6's reconnect)")
	}
	// -info, through containerd's introspection service.
	r := d.mustCtr(t, "plugins", "inspect-runtime", "--runtime", d.flavor.runtime)
	var info struct {
		Name     string
		Features map[string]any
	}
	if err := json.Unmarshal([]byte(r), &info); err != nil {
		t.Fatalf("inspect-runtime printed %q: %v", r, err)
	}
	if info.Name != d.flavor.runtime || info.Features["ociVersionMin"] == nil {
		t.Errorf("inspect-runtime: want name %s and runc's features; got %s", d.flavor.runtime, r)
	}
}

// checkV1Launch checks the v1 runtime's launch: no -id, no action, the work
// dir, and containerd (not a start action) as the shim's parent.
func checkV1Launch(t *testing.T, d *daemon, id string) {
	t.Helper()
	if suite.runtime != defaultRuntime {
		return // Debian's containerd-shim is not found by shimProcesses
	}
	shims := shimProcesses(d.ns)[id]
	if len(shims) != 1 {
		t.Fatalf("want one shim with -workdir .../%s; got %v", id, shims)
	}
	argv := readArgv(shims[0])
	if flagValue(argv, "id") != "" || flagValue(argv, "workdir") != d.workDir(id) || flagValue(argv, "address") != d.address {
		t.Errorf("v1 shim argv: want -workdir %s -address %s and no -id; got %q", d.workDir(id), d.address, argv)
	}
	if ppid := parentPid(shims[0]); ppid != d.containerdPid(t) {
		t.Errorf("v1 shim's parent: want containerd %d; got %d", d.containerdPid(t), ppid)
	}
}
