package integration

// Self-cleanup (issue 6): a shim that holds no container and that containerd
// forgot exits by itself after a grace period. These tests shorten the grace
// with the shim's testing knob LEANSHIM_ORPHAN_GRACE, which reaches the shim
// through the environment: the fake containerd's start inherits this
// process's, and so does a containerd the harness starts (containerd passes
// its own to the shims). t.Setenv changes the whole process, so these tests
// are not parallel with the rest of the package; their subtests run in
// parallel with each other only.

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/proto/shimv1"
	"github.com/leanshim/leanshim/proto/taskapi"
)

const (
	orphanGraceEnv = "LEANSHIM_ORPHAN_GRACE"
	// orphanExitSlack is how long after its grace an orphan may take to be
	// gone: its stop waits up to 5 s for events nobody receives.
	orphanExitSlack = 20 * time.Second
	orphanLogLine   = "and no shutdown from containerd: exiting"
)

// setOrphanGrace sets the grace of every shim started from now until t ends.
func setOrphanGrace(t *testing.T, grace time.Duration) {
	t.Helper()
	t.Setenv(orphanGraceEnv, grace.String())
}

// waitOrphanExit waits until shim has exited by itself, which must happen
// no sooner than grace after since and within orphanExitSlack after that;
// it returns how long it took.
func waitOrphanExit(t *testing.T, shim int, since time.Time, grace time.Duration) time.Duration {
	t.Helper()
	if !poll(grace+orphanExitSlack, func() bool { return !shimAlive(shim) }) {
		t.Fatalf("shim %d still running %s after it was left empty (grace %s)", shim, time.Since(since), grace)
	}
	took := time.Since(since)
	if took < grace {
		t.Fatalf("shim %d exited %s after it was left empty, before its grace of %s", shim, took, grace)
	}
	return took
}

// stayAlive fails t if shim exits within d.
func stayAlive(t *testing.T, shim int, d time.Duration, why string) {
	t.Helper()
	if poll(d, func() bool { return !shimAlive(shim) }) {
		t.Fatalf("shim %d exited, but %s", shim, why)
	}
}

func assertGone(t *testing.T, what, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s %s left behind: %v", what, path, err)
	}
}

// logFifo makes the bundle's log FIFO and holds its read end, so the shim
// logs there as it does under containerd; read returns what it wrote.
func logFifo(t *testing.T, bundle string) (read func() string) {
	t.Helper()
	path := filepath.Join(bundle, "log")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	var got strings.Builder
	return func() string {
		_ = f.SetReadDeadline(time.Now().Add(2 * time.Second))
		b, _ := io.ReadAll(f) // EOF once the shim has closed it, or the deadline
		got.Write(b)
		return got.String()
	}
}

// shimSocketOf is the socket path the bundle's address file names.
func shimSocketOf(t *testing.T, bundle string) string {
	t.Helper()
	return strings.TrimPrefix(mustRead(t, filepath.Join(bundle, "address")), "unix://")
}

// TestSelfCleanupBeforeCreate: containerd ran start and never came back with
// a Create. The shim exits by itself after the grace, says why in its log,
// and removes its socket.
func TestSelfCleanupBeforeCreate(t *testing.T) {
	const grace = 2 * time.Second
	setOrphanGrace(t, grace)
	f := newFakeContainerd(t)
	id := "orphannocreate"
	b := f.bundle(t, id, "/bin/true")
	readLog := logFifo(t, b)
	started := time.Now()
	s := f.startShim(t, id, b)
	sock := shimSocketOf(t, b)
	took := waitOrphanExit(t, s.pid, started, grace)
	t.Logf("shim exited %s after start", took)
	assertGone(t, "shim socket", sock)
	if log := readLog(); !strings.Contains(log, "no task for 2s "+orphanLogLine) {
		t.Errorf("shim log does not say why it exited:\n%s", log)
	}
}

// TestSelfCleanupAfterDelete: containerd deleted the last container and
// never sent Shutdown. The shim exits after the grace, as Shutdown would
// have made it: the TaskDelete went out, and the socket and runc state are
// gone.
func TestSelfCleanupAfterDelete(t *testing.T) {
	const grace = 2 * time.Second
	setOrphanGrace(t, grace)
	f := newFakeContainerd(t)
	id := "orphandel"
	b := f.bundle(t, id, "/bin/sleep", "1000")
	readLog := logFifo(t, b)
	s := f.startShim(t, id, b)
	ctx := ctxT(t)
	if _, err := s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: b}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Start(ctx, &taskapi.StartRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	// The first grace started at start; the container must outlive it.
	stayAlive(t, s.pid, grace+time.Second, "it runs a container")
	if _, err := s.task.Kill(ctx, &taskapi.KillRequest{Id: id, Signal: 9}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Wait(ctx, &taskapi.WaitRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	if _, err := s.task.Delete(ctx, &taskapi.DeleteRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	took := waitOrphanExit(t, s.pid, deleted, grace)
	t.Logf("shim exited %s after the Delete", took)
	assertGone(t, "shim socket", shimSocketOf(t, b))
	assertGone(t, "runc state", filepath.Join(runcRoot, f.ns, id))
	want := "/tasks/create /tasks/start /tasks/exit /tasks/delete"
	if got := strings.Join(f.topics(t, id), " "); got != want {
		t.Errorf("events %q, want %q", got, want)
	}
	if log := readLog(); !strings.Contains(log, "no task for 2s "+orphanLogLine) {
		t.Errorf("shim log does not say why it exited:\n%s", log)
	}
}

// TestSelfCleanupGroup: a Create before the grace ends keeps the shim; a
// grouped shim is empty only once its last container is deleted; then it
// exits after the grace.
func TestSelfCleanupGroup(t *testing.T) {
	const grace = 2 * time.Second
	setOrphanGrace(t, grace)
	f := newFakeContainerd(t)
	ids := []string{"orphangrpa", "orphangrpb"}
	bundles := make([]string, len(ids))
	for i, id := range ids {
		bundles[i] = f.bundle(t, id, "/bin/sleep", "1000")
		annotate(t, bundles[i], "io.containerd.runc.v2.group", "orphangrp")
	}
	started := time.Now()
	a := f.startShim(t, ids[0], bundles[0])
	ctx := ctxT(t)
	// Half the grace, then the Create: it cancels the timer start armed.
	stayAlive(t, a.pid, grace/2, "its grace has not run out yet")
	for i, id := range ids {
		s := a
		if i > 0 {
			if s = f.startShim(t, id, bundles[i]); s.pid != a.pid {
				t.Fatalf("container %s of the group got shim %d, want %d", id, s.pid, a.pid)
			}
		}
		if _, err := s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: bundles[i]}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.task.Start(ctx, &taskapi.StartRequest{Id: id}); err != nil {
			t.Fatal(err)
		}
	}
	stayAlive(t, a.pid, 2*grace-time.Since(started), "a Create came before the grace ran out")
	kill := func(id string) {
		t.Helper()
		if _, err := a.task.Kill(ctx, &taskapi.KillRequest{Id: id, Signal: 9}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.task.Wait(ctx, &taskapi.WaitRequest{Id: id}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.task.Delete(ctx, &taskapi.DeleteRequest{Id: id}); err != nil {
			t.Fatal(err)
		}
	}
	kill(ids[0])
	stayAlive(t, a.pid, 2*grace, "a container of its group is left")
	if st, err := a.task.State(ctx, &taskapi.StateRequest{Id: ids[1]}); err != nil || st.Status.String() != "RUNNING" {
		t.Fatalf("the container left: %+v %v", st, err)
	}
	deleted := time.Now()
	kill(ids[1])
	took := waitOrphanExit(t, a.pid, deleted, grace)
	t.Logf("shim exited %s after the last Delete", took)
	assertGone(t, "shim socket", shimSocketOf(t, bundles[0]))
}

// annotate adds an annotation to the bundle's config.json.
func annotate(t *testing.T, bundle, key, value string) {
	t.Helper()
	path := filepath.Join(bundle, "config.json")
	b := mustRead(t, path)
	// The spec runc wrote has no annotations; add them as the first key.
	b = strings.Replace(b, "{", `{"annotations":{"`+key+`":"`+value+`"},`, 1)
	if err := os.WriteFile(path, []byte(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSelfCleanupContainerdRestart kills containerd with SIGKILL mid-delete:
// the shim has deleted the last task (the Delete rpc is made here, over the
// shim's socket, as the dying containerd's last call), but no Shutdown came.
// containerd then starts again either remembering the task (its bundle is
// still there) or having forgotten it (bundle and work dir gone). Either
// way, after the grace no shim of ours is left, nor its socket, and once
// the container is removed nothing else is either.
func TestSelfCleanupContainerdRestart(t *testing.T) {
	const grace = 4 * time.Second
	setOrphanGrace(t, grace)
	for _, fl := range flavors(t) {
		for _, forget := range []bool{false, true} {
			name := fl.name + "/remembered"
			if forget {
				name = fl.name + "/forgotten"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				testOrphanAfterRestart(t, startContainerd(t, withFlavor(fl), withSubreaper()), grace, forget)
			})
		}
	}
}

func testOrphanAfterRestart(t *testing.T, d *daemon, grace time.Duration, forget bool) {
	id := d.newID("orphan")
	if r := d.run(t, []string{"-d"}, id, "/bin/sleep", "1000"); r.code != 0 {
		t.Fatalf("run -d: %v", r)
	}
	pid := waitTaskStatus(t, d, id, "RUNNING")
	shim := parentPid(pid)
	if !shimAlive(shim) {
		t.Fatalf("parent %d of the container is not a shim: %s", shim, cmdline(shim))
	}
	if env, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(shim), "environ")); !strings.Contains(string(env), orphanGraceEnv+"="+grace.String()) {
		t.Fatalf("%s=%s did not reach shim %d", orphanGraceEnv, grace, shim)
	}
	sock := shimSocketOf(t, d.bundleDir(id))
	// The TaskExit reaches containerd before it dies: what is left to do is
	// the delete alone.
	events := d.startCtr(t, "events", "namespace=="+d.ns)
	waitSubscribed(t, d, events)
	d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
	if !poll(eventTimeout, func() bool {
		return slices.ContainsFunc(taskEvents(events.out.String(), id), func(e event) bool { return e.topic == "/tasks/exit" })
	}) {
		t.Fatalf("no /tasks/exit for %s; ctr events printed:\n%s", id, events.out.String())
	}
	waitTaskStatus(t, d, id, "STOPPED")

	d.kill9(t)
	deleted := time.Now()
	deleteBehindContainerd(t, d, id, sock)
	if forget {
		for _, dir := range []string{d.bundleDir(id), d.workDir(id)} {
			if m := mountsUnder(dir); len(m) > 0 {
				t.Fatalf("mounts under %s after the shim's Delete: %v", dir, m)
			}
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
		}
	}
	d.restart(t)
	restarted := time.Since(deleted)

	// containerd 2.4 itself shuts down a shim it reloads and finds empty
	// (PROTOCOL.md §1.12); otherwise only the shim's own timer can end it.
	reloadedBy24 := d.flavor.name == "containerd-2.4" && !forget
	if reloadedBy24 {
		if !poll(grace+orphanExitSlack, func() bool { return !shimAlive(shim) }) {
			t.Fatalf("shim %d still running after containerd 2.4 reloaded it empty", shim)
		}
	} else {
		took := waitOrphanExit(t, shim, deleted, grace)
		t.Logf("shim exited %s after the Delete; containerd was back after %s", took, restarted)
	}
	assertGone(t, "shim socket", sock)
	// containerd may be running the shim binary's delete action for the
	// dead shim right now: wait for that one too.
	var procs map[string][]int
	if !poll(leftoverTimeout, func() bool { procs = shimProcesses(d.ns); return len(procs) == 0 }) {
		t.Errorf("shim processes of namespace %s still running: %v", d.ns, procs)
	}
	// Shim logs reach containerd's log once it is back; a shim that left
	// before that logged to nobody.
	if !forget && !reloadedBy24 && restarted < grace-time.Second {
		if !poll(5*time.Second, func() bool { return strings.Contains(readTail(d.logPath, 0), orphanLogLine) }) {
			t.Errorf("containerd's log has no %q from the shim", orphanLogLine)
		}
	}
	if !poll(taskStateTimeout, func() bool { _, _, ok := taskStatus(t, d, id); return !ok }) {
		t.Fatalf("ctr task ls still lists %s after its shim exited", id)
	}
	d.mustCtr(t, "container", "rm", id)
	assertNoLeftovers(t, d, id)
}

// deleteBehindContainerd deletes the task over the shim's own socket, with
// the rpc of the API containerd used, as a containerd that dies right after
// would have.
func deleteBehindContainerd(t *testing.T, d *daemon, id, sock string) {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	var status uint32
	if d.flavor.plugin == v1Plugin {
		r, err := shimv1.NewShimClient(client).Delete(ctxT(t), &gogotypes.Empty{})
		if err != nil {
			t.Fatalf("v1 Delete over %s: %v", sock, err)
		}
		status = r.ExitStatus
	} else {
		r, err := taskapi.NewTaskClient(client).Delete(ctxT(t), &taskapi.DeleteRequest{Id: id})
		if err != nil {
			t.Fatalf("Delete over %s: %v", sock, err)
		}
		status = r.ExitStatus
	}
	if status != 137 {
		t.Fatalf("Delete: exit status %d, want 137 (SIGKILL)", status)
	}
}
