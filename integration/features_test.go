package integration

// The rest of the task API through real containerd and runc: pause and
// resume, stats, OOM events, update, and crun selected by runtime options.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/proto/taskapi"
)

// taskTopicsUntilDelete returns the /tasks/ topics `ctr events` printed for
// container id, once its /tasks/delete is among them.
func taskTopicsUntilDelete(t *testing.T, events *bgCtr, id string) []string {
	t.Helper()
	var topics []string
	if !poll(eventTimeout, func() bool {
		topics = topics[:0]
		for _, e := range parseEvents(events.out.String()) {
			if strings.HasPrefix(e.topic, "/tasks/") && e.fields["container_id"] == id {
				topics = append(topics, e.topic)
			}
		}
		return slices.Contains(topics, "/tasks/delete")
	}) {
		t.Fatalf("no /tasks/delete for %s: %v", id, topics)
	}
	return topics
}

func waitStatus(t *testing.T, d *daemon, id, want string) { t.Helper(); waitTaskStatus(t, d, id, want) }

func removeTask(t *testing.T, d *daemon, id string) {
	t.Helper()
	d.mustCtr(t, "task", "rm", id)
	d.mustCtr(t, "container", "rm", id)
	assertNoLeftovers(t, d, id)
}

func TestPauseResumeAndKillWhilePaused(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	id := d.newID("pause")
	events := d.startCtr(t, "events", "namespace=="+d.ns)
	waitSubscribed(t, d, events)
	if r := d.run(t, []string{"-d"}, id, "/bin/sleep", "1000"); r.code != 0 {
		t.Fatal(r)
	}
	d.mustCtr(t, "task", "pause", id)
	waitStatus(t, d, id, "PAUSED")
	d.mustCtr(t, "task", "resume", id)
	waitStatus(t, d, id, "RUNNING")
	d.mustCtr(t, "task", "pause", id)
	waitStatus(t, d, id, "PAUSED")
	// A paused container can still be killed and deleted.
	d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
	waitStatus(t, d, id, "STOPPED")
	removeTask(t, d, id)
	topics := taskTopicsUntilDelete(t, events, id)
	want := []string{"/tasks/create", "/tasks/start", "/tasks/paused", "/tasks/resumed", "/tasks/paused", "/tasks/exit", "/tasks/delete"}
	if !slices.Equal(topics, want) {
		t.Fatalf("events %v; want %v", topics, want)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	id := d.newID("metrics")
	if r := d.run(t, []string{"-d", "--memory-limit", "67108864"}, id, "/bin/sleep", "1000"); r.code != 0 {
		t.Fatal(r)
	}
	out := d.mustCtr(t, "task", "metrics", id)
	metric := func(name string) string {
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == name {
				return f[1]
			}
		}
		return ""
	}
	for _, m := range []string{"memory.usage_in_bytes", "cpuacct.usage", "pids.current"} {
		if v := metric(m); v == "" || v == "0" {
			t.Errorf("%s is %q; want a non-zero figure from the shim's answer:\n%s", m, v, out)
		}
	}
	// ctr prints a table with the memory limit it read from our Metrics.
	if !strings.Contains(out, "memory.limit_in_bytes") && !strings.Contains(out, "memory.max") {
		t.Fatalf("metrics without a memory limit line:\n%s", out)
	}
	if !strings.Contains(out, "67108864") {
		t.Fatalf("metrics do not show the 64 MiB limit:\n%s", out)
	}
	if !strings.Contains(out, "pids.current") {
		t.Fatalf("metrics without pids:\n%s", out)
	}
	d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
	waitStatus(t, d, id, "STOPPED")
	removeTask(t, d, id)
}

// TestOOMBeforeExit: a container killed by the OOM killer publishes
// /tasks/oom, and before its /tasks/exit.
func TestOOMBeforeExit(t *testing.T) {
	t.Parallel()
	scenarioOOM(t, sharedDaemon(t))
}

func scenarioOOM(t *testing.T, d *daemon) {
	id := d.newID("oom")
	events := d.startCtr(t, "events", "namespace=="+d.ns)
	waitSubscribed(t, d, events)
	r := d.run(t, []string{"--rm", "--memory-limit", "16777216"}, id, "/bin/sh", "-c", "x=a; while :; do x=$x$x; done")
	if r.code != 137 {
		t.Fatalf("want the OOM-killed container to exit 137; got %v", r)
	}
	topics := taskTopicsUntilDelete(t, events, id)
	oom, exit := slices.Index(topics, "/tasks/oom"), slices.Index(topics, "/tasks/exit")
	if oom < 0 || exit < 0 || oom > exit {
		t.Fatalf("want /tasks/oom before /tasks/exit; got %v", topics)
	}
	assertNoLeftovers(t, d, id)
}

// TestCrunThroughRuntimeOptions selects crun with the runtime options file
// (`ctr --runtime-config-path`, a runtimeoptions.v1.Options): the core
// scenarios run, and the container is in crun's state, not runc's.
func TestCrunThroughRuntimeOptions(t *testing.T) {
	if _, err := exec.LookPath("crun"); err != nil {
		t.Fatalf("crun is not installed (scripts/deps.sh installs it): %v", err)
	}
	if !strings.HasSuffix(suite.runtime, ".lean.v2") {
		t.Skipf("ctr passes --runtime-config-path only to non-runc runtimes; %s is not leanshim", suite.runtime)
	}
	t.Parallel()
	d := sharedDaemon(t)
	cfg := filepath.Join(t.TempDir(), "crun.toml")
	if err := os.WriteFile(cfg, []byte("BinaryName = \"crun\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	flags := func(more ...string) []string { return append([]string{"--runtime-config-path", cfg}, more...) }

	id := d.newID("crun")
	r := d.run(t, flags("--rm"), id, "/bin/echo", "hello")
	// crun 1.8 refuses hybrid hosts whose cgroup2 mount holds a controller;
	// the suite's setup frees it (freeUnifiedHierarchy), so crun must run.
	if r.code != 0 || r.stdout != "hello\n" {
		t.Fatalf("echo through crun: %v", r)
	}
	if r := d.run(t, flags("--rm"), d.newID("crun"), "/bin/sh", "-c", "exit 7"); r.code != 7 {
		t.Fatalf("exit 7 through crun: %v", r)
	}
	assertNoLeftovers(t, d, id)

	id = d.newID("crund")
	if r := d.run(t, flags("-d"), id, "/bin/sleep", "1000"); r.code != 0 {
		t.Fatal(r)
	}
	root := filepath.Join("/run/containerd/runc", d.ns)
	out, err := exec.Command("crun", "--root", root, "list").CombinedOutput()
	if err != nil || !strings.Contains(string(out), id) {
		t.Fatalf("crun list does not show %s: %v\n%s", id, err, out)
	}
	if r := d.ctr(t, "task", "exec", "--exec-id", "e1", id, "/bin/echo", "hi"); r.code != 0 || r.stdout != "hi\n" {
		t.Fatalf("exec through crun: %v", r)
	}
	d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
	waitStatus(t, d, id, "STOPPED")
	removeTask(t, d, id)
}

// TestUpdateResources changes a running container's memory limit through
// the task API (ctr has no task update) and reads it back from the cgroup.
func TestUpdateResources(t *testing.T) {
	f := newFakeContainerd(t)
	id := "apiupdate"
	s := f.runSleeper(t, id, "1000")
	ctx := ctxT(t)
	res := &gogotypes.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", Value: []byte(`{"memory":{"limit":33554432}}`)}
	if _, err := s.task.Update(ctx, &taskapi.UpdateTaskRequest{Id: id, Resources: res}); err != nil {
		t.Fatal(err)
	}
	limit, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", f.ns, id, "memory.limit_in_bytes"))
	if err != nil || strings.TrimSpace(string(limit)) != "33554432" {
		t.Fatalf("memory limit after update: %q %v", limit, err)
	}
	st, err := s.task.Stats(ctx, &taskapi.StatsRequest{Id: id})
	if err != nil || st.Stats == nil || st.Stats.TypeUrl != "io.containerd.cgroups.v1.Metrics" {
		t.Fatalf("stats: %+v %v", st, err)
	}
	_, err = s.task.Update(ctx, &taskapi.UpdateTaskRequest{Id: id, Resources: &gogotypes.Any{Value: []byte(`{"memory":{"limit":"nope"}}`)}})
	if err == nil {
		t.Fatal("update with invalid resources succeeded")
	}
	if _, err := s.task.Kill(ctx, &taskapi.KillRequest{Id: id, Signal: 9}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Wait(ctx, &taskapi.WaitRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Delete(context.Background(), &taskapi.DeleteRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(filepath.Join("/sys/fs/cgroup/memory", f.ns, id))
}

// TestGroupSharesOneShim: three containers with the same group annotation
// are served by one shim; deleting two leaves the third running; deleting
// the last ends the shim.
func TestGroupSharesOneShim(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	group := d.newID("grp")
	ann := []string{"-d", "--annotation", "io.containerd.runc.v2.group=" + group}
	ids := []string{d.newID("g"), d.newID("g"), d.newID("g")}
	for _, id := range ids {
		if r := d.run(t, ann, id, "/bin/sleep", "1000"); r.code != 0 {
			t.Fatal(r)
		}
	}
	addr := func(id string) string {
		b, _ := os.ReadFile(filepath.Join(d.bundleDir(id), "address"))
		return string(b)
	}
	if a := addr(ids[0]); a == "" || addr(ids[1]) != a || addr(ids[2]) != a {
		t.Fatalf("grouped containers have different shim addresses: %q %q %q", addr(ids[0]), addr(ids[1]), addr(ids[2]))
	}
	shimPid := func() int {
		for _, id := range ids {
			if pid, _, ok := taskStatus(t, d, id); ok {
				return parentPid(pid)
			}
		}
		return 0
	}
	shim := shimPid()
	for _, id := range ids {
		pid, _, _ := taskStatus(t, d, id)
		if parentPid(pid) != shim {
			t.Fatalf("container %s has parent %d, want the group's shim %d", id, parentPid(pid), shim)
		}
	}
	for _, id := range ids[:2] {
		d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
		waitStatus(t, d, id, "STOPPED")
		d.mustCtr(t, "task", "rm", id)
		d.mustCtr(t, "container", "rm", id)
	}
	if _, st, _ := taskStatus(t, d, ids[2]); st != "RUNNING" {
		t.Fatalf("the third container is %q after deleting the other two", st)
	}
	if !shimAlive(shim) {
		t.Fatalf("the group's shim %d exited while a container remains", shim)
	}
	d.mustCtr(t, "task", "kill", "-s", "SIGKILL", ids[2])
	waitStatus(t, d, ids[2], "STOPPED")
	removeTask(t, d, ids[2])
	if !poll(10*time.Second, func() bool { return !shimAlive(shim) }) {
		t.Fatalf("the group's shim %d still runs after its last container was deleted", shim)
	}
	assertNoLeftovers(t, d, ids...)
}

// TestPausedProcessesAreFrozen: a counter written by the container stops
// while it is paused and moves again after resume.
func TestPausedProcessesAreFrozen(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	id := d.newID("frozen")
	counter := filepath.Join(suite.rootfs, "tmp", id)
	script := "i=0; while :; do i=$((i+1)); echo $i > /tmp/" + id + "; done"
	if r := d.run(t, []string{"-d"}, id, "/bin/sh", "-c", script); r.code != 0 {
		t.Fatal(r)
	}
	defer os.Remove(counter)
	read := func() string { b, _ := os.ReadFile(counter); return strings.TrimSpace(string(b)) }
	advancing := func() bool {
		a := read()
		return poll(5*time.Second, func() bool { b := read(); return b != "" && b != a })
	}
	if !advancing() {
		t.Fatal("the counter does not advance in a running container")
	}
	d.mustCtr(t, "task", "pause", id)
	waitStatus(t, d, id, "PAUSED")
	before := read()
	// A window, not a wait on a condition: this checks an absence (the
	// counter does not move), which no event announces. The window only
	// sets how sensitive the check is, never whether it flakes: a running
	// loop writes thousands of times in it, and a paused one never does.
	time.Sleep(300 * time.Millisecond)
	if after := read(); after != before {
		t.Fatalf("the counter moved from %s to %s while paused", before, after)
	}
	d.mustCtr(t, "task", "resume", id)
	waitStatus(t, d, id, "RUNNING")
	if !advancing() {
		t.Fatal("the counter does not advance after resume")
	}
	d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
	waitStatus(t, d, id, "STOPPED")
	removeTask(t, d, id)
}

// shimAlive reports whether pid is a running (not zombie) shim process.
func shimAlive(pid int) bool {
	argv := readArgv(pid)
	return len(argv) > 0 && isShimBinary(pid, argv[0])
}
