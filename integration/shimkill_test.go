package integration

// What containerd's cleanup leaves after a shim is killed with SIGKILL, and
// what a long run of execs and containers leaves inside a shim.

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestShimKilled: after kill -9 of a running container's shim, containerd
// runs the delete action; the container process, the shim's socket, mounts,
// bundle and runc state are gone, and an exit is reported. (Debian's 1.6.20
// containerd-shim-runc-v2 fails this: it leaves its socket in
// /run/containerd/s; leanshim's delete action removes a socket nobody
// answers on.)
func TestShimKilled(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	id := d.newID("shimkill")
	events := d.startCtr(t, "events", "namespace=="+d.ns)
	waitSubscribed(t, d, events)
	if r := d.run(t, []string{"-d"}, id, "/bin/sleep", "1000"); r.code != 0 {
		t.Fatal(r)
	}
	pid, _, ok := taskStatus(t, d, id)
	if !ok {
		t.Fatal("task not listed")
	}
	shim := parentPid(pid)
	if !shimAlive(shim) {
		t.Fatalf("parent %d of the container is not a shim", shim)
	}
	if err := syscall.Kill(shim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !poll(20*time.Second, func() bool { return syscall.Kill(pid, 0) != nil }) {
		t.Fatalf("container process %d survived its shim", pid)
	}
	var exit *event
	if !poll(eventTimeout, func() bool {
		for _, e := range parseEvents(events.out.String()) {
			if e.topic == "/tasks/exit" && e.fields["container_id"] == id {
				exit = &e
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no /tasks/exit for %s after its shim was killed:\n%s", id, events.out.String())
	}
	if st := exit.fields["exit_status"]; st != float64(137) && st != float64(255) {
		t.Fatalf("exit status %v, want 137 (killed) or 255 (containerd's dead-shim default)", st)
	}
	// containerd forgets the task; removing the container leaves nothing.
	if !poll(20*time.Second, func() bool { _, _, ok := taskStatus(t, d, id); return !ok }) {
		t.Fatalf("task %s still listed after its shim died", id)
	}
	d.mustCtr(t, "container", "rm", id)
	assertNoLeftovers(t, d, id)
}

// TestChurnLeavesNoLeaks runs many execs into one container (grouped with a
// second one that is created and deleted over and over in the same shim)
// and checks the shim's open fds and threads return near their baseline and
// that it keeps no zombie children.
func TestChurnLeavesNoLeaks(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	group := d.newID("churn")
	ann := []string{"-d", "--annotation", "io.containerd.runc.v2.group=" + group}
	id := d.newID("churn")
	if r := d.run(t, ann, id, "/bin/sleep", "1000"); r.code != 0 {
		t.Fatal(r)
	}
	pid, _, _ := taskStatus(t, d, id)
	shim := parentPid(pid)
	warm := func(n, base int) {
		var wg sync.WaitGroup
		errs := make(chan string, n)
		for i := range n {
			wg.Go(func() {
				eid := fmt.Sprintf("e%d", base+i)
				if r := d.ctr(t, "task", "exec", "--exec-id", eid, id, "/bin/true"); r.code != 0 {
					errs <- r.String()
				}
			})
			if i%4 == 3 {
				wg.Wait()
			}
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	}
	cycle := func(n int) {
		for i := range n {
			cid := d.newID("churnc")
			if r := d.run(t, []string{"--rm", "--annotation", "io.containerd.runc.v2.group=" + group}, cid, "/bin/true"); r.code != 0 {
				t.Fatalf("cycle %d: %v", i, r)
			}
		}
	}
	warm(40, 0)
	cycle(5)
	fds0, threads0 := fdCount(shim), threadCount(shim)
	warm(400, 1000)
	cycle(40)
	if !poll(10*time.Second, func() bool { return fdCount(shim) <= fds0 }) {
		t.Errorf("shim fds grew from %d to %d over 400 execs and 40 containers", fds0, fdCount(shim))
	}
	if th := threadCount(shim); th > threads0+4 {
		t.Errorf("shim threads grew from %d to %d", threads0, th)
	}
	if z := zombieChildren(shim); len(z) > 0 {
		t.Errorf("shim keeps zombie children %v", z)
	}
	if out := d.mustCtr(t, "task", "ps", id); strings.Count(strings.TrimSpace(out), "\n") != 1 {
		t.Errorf("execs left behind in the container:\n%s", out)
	}
	d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
	waitStatus(t, d, id, "STOPPED")
	removeTask(t, d, id)
}

func fdCount(pid int) int {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(fds)
}

func threadCount(pid int) int {
	ts, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return len(ts)
}

// zombieChildren lists pid's children in state Z.
func zombieChildren(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var zs []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if err != nil {
			continue
		}
		s := string(b)
		rest := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(rest) > 1 && rest[0] == "Z" && rest[1] == strconv.Itoa(pid) {
			zs = append(zs, child)
		}
	}
	slices.Sort(zs)
	return zs
}
