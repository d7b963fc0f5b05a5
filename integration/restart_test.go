package integration

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestContainerdRestart kills each daemon with SIGKILL while three containers
// run, starts it again on the same state, and checks that containerd
// reconnects to the shims (v2: the address or bootstrap.json in the bundle;
// v1: the address file and the socket containerd made), that the tasks are
// still RUNNING with the same pids, that exec works, and that killing them
// reports each one's own exit code, in ctr's output and in the TaskExit the
// shims publish to the new containerd.
func TestContainerdRestart(t *testing.T) {
	t.Parallel()
	for _, fl := range flavors(t) {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			testRestart(t, startContainerd(t, withFlavor(fl), withSubreaper()))
		})
	}
}

func testRestart(t *testing.T, d *daemon) {
	const n = 3
	ids := make([]string, n)
	pids := make([]int, n)
	for i := range ids {
		ids[i] = d.newID("survivor")
		// Exits 41, 42, 43 on SIGTERM: each exit code names its container.
		script := fmt.Sprintf(`trap "exit %d" TERM; while :; do sleep 0.1; done`, 41+i)
		if r := d.run(t, []string{"-d"}, ids[i], "/bin/sh", "-c", script); r.code != 0 {
			t.Fatalf("run -d: %v", r)
		}
		pids[i] = waitTaskStatus(t, d, ids[i], "RUNNING")
	}

	d.killAndRestart(t)

	for i, id := range ids {
		if pid := waitTaskStatus(t, d, id, "RUNNING"); pid != pids[i] {
			t.Errorf("%s: pid %d after the restart, %d before", id, pid, pids[i])
		}
		want := fmt.Sprintf("alive %d\n", i)
		if r := d.ctr(t, "task", "exec", "--exec-id", "after", id, "/bin/echo", strings.TrimSpace(want)); r.code != 0 || r.stdout != want {
			t.Errorf("%s: exec after the restart: want exit 0 and %q; got %v", id, want, r)
		}
	}

	events := d.startCtr(t, "events", "namespace=="+d.ns)
	waitSubscribed(t, d, events)
	for _, id := range ids {
		d.mustCtr(t, "task", "kill", id) // SIGTERM: the trap exits
	}
	for i, id := range ids {
		want := float64(41 + i)
		if !poll(eventTimeout, func() bool {
			for _, e := range taskEvents(events.out.String(), id) {
				if e.topic == "/tasks/exit" && e.fields["id"] == id && e.fields["exit_status"] == want {
					return true
				}
			}
			return false
		}) {
			t.Errorf("%s: no /tasks/exit with exit_status %v from the restarted containerd; ctr events printed:\n%s", id, want, events.out.String())
		}
		waitTaskStatus(t, d, id, "STOPPED")
		r := d.ctr(t, "task", "rm", id)
		if w := fmt.Sprintf("non-zero exit code %d", 41+i); r.code != 0 || !strings.Contains(r.stderr, w) {
			t.Errorf("%s: task rm: want exit 0 and %q; got %v", id, w, r)
		}
		d.mustCtr(t, "container", "rm", id)
	}
	assertNoLeftovers(t, d, ids...)
}

// killAndRestart kills containerd with SIGKILL, as a crash would, and starts
// it again on the same config, root and state.
func (d *daemon) killAndRestart(tb testing.TB) {
	tb.Helper()
	d.kill9(tb)
	d.restart(tb)
}

// kill9 kills containerd with SIGKILL. The daemon must have been started
// withSubreaper: the killed containerd's subreaper stays, reaping the shims
// it adopted, until they have exited.
func (d *daemon) kill9(tb testing.TB) {
	tb.Helper()
	if !d.subreaper {
		tb.Fatal("kill9 needs a daemon started withSubreaper()")
	}
	pid := readPid(tb, d.cur.pidFile)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		tb.Fatalf("kill -9 containerd %d: %v", pid, err)
	}
	if !poll(daemonStopTimeout, func() bool { return syscall.Kill(pid, 0) != nil }) {
		tb.Fatalf("containerd %d still there after SIGKILL", pid)
	}
	d.retired = append(d.retired, d.cur)
}

// restart starts containerd again after kill9, on the same config, root and
// state.
func (d *daemon) restart(tb testing.TB) {
	tb.Helper()
	if err := d.start(); err != nil {
		tb.Fatal(err)
	}
	if err := d.waitReady(); err != nil {
		tb.Fatal(err)
	}
}

func readPid(tb testing.TB, path string) int {
	tb.Helper()
	var pid int
	if !poll(daemonStartTimeout, func() bool {
		b, err := os.ReadFile(path)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid > 0
	}) {
		tb.Fatalf("no pid in %s", path)
	}
	return pid
}

// containerdPid is the pid of the running containerd.
func (d *daemon) containerdPid(tb testing.TB) int {
	tb.Helper()
	if d.cur.pidFile != "" {
		return readPid(tb, d.cur.pidFile)
	}
	return d.cur.cmd.Process.Pid
}
