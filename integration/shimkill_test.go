package integration

// What containerd's cleanup leaves after a shim is killed with SIGKILL, and
// what a long run of execs and containers leaves inside a shim.

import (
	"fmt"
	"os"
	"regexp"
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

// churnScale is how many execs and container cycles TestChurnLeavesNoLeaks
// runs: a CI-sized 440 and 45 by default, the 10,000 and 1,000 with
// LEANSHIM_SOAK=1 (make soak).
func churnScale() (execs, cycles int) {
	if os.Getenv("LEANSHIM_SOAK") != "" {
		return 10000, 1000
	}
	return 440, 45
}

// Tolerances of TestChurnLeavesNoLeaks, between the baseline taken halfway
// and the end: goroutines and open fds must come back to it exactly, a few
// threads may be added (Go keeps an M it made for a blocking call), and
// anonymous memory may move with the Go heap's cycle, not by a per-exec leak
// (5,000 execs leaking 400 bytes each would be 2 MB on top). Not RSS: it
// also counts the binary's pages, which the shim drops after a container's
// calls and maps back as it runs code (cmd/shim/text_linux.go), several MiB
// either way between two readings.
const (
	churnThreadSlack = 4
	churnAnonSlack   = 2 << 20
)

// TestChurnLeavesNoLeaks runs many execs into one container (grouped with a
// second one that is created and deleted over and over in the same shim)
// and checks that over the second half of the run the shim's goroutines,
// open fds, threads and anonymous memory stay at their halfway baseline within the
// tolerances above, and that it keeps no zombie children.
func TestChurnLeavesNoLeaks(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	execs, cycles := churnScale()
	t.Logf("%d execs and %d container cycles", execs, cycles)
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
	// The first half brings the shim to its steady state: Go's heap grows
	// to its first collection goal (4 MB) before it is ever collected, so
	// a baseline taken earlier would count that as growth.
	warm(execs/2, 0)
	cycle(cycles / 2)
	fds0, threads0, anon0 := fdCount(shim), threadCount(shim), rssAnonBytes(shim)
	links0 := fdLinks(shim)
	gor0 := shimGoroutines(t, d, shim)
	warm(execs-execs/2, 100000)
	cycle(cycles - cycles/2)
	if !poll(10*time.Second, func() bool { return fdCount(shim) <= fds0 }) {
		t.Errorf("shim fds grew from %d to %d over %d execs and %d containers: before %v, after %v",
			fds0, fdCount(shim), execs, cycles, links0, fdLinks(shim))
	}
	var gor int
	if !poll(10*time.Second, func() bool { gor = shimGoroutines(t, d, shim); return gor <= gor0 }) {
		t.Errorf("shim goroutines grew from %d to %d", gor0, gor)
	}
	if th := threadCount(shim); th > threads0+churnThreadSlack {
		t.Errorf("shim threads grew from %d to %d", threads0, th)
	}
	if anon := rssAnonBytes(shim); anon > anon0+churnAnonSlack {
		t.Errorf("shim anonymous memory grew from %d to %d bytes (tolerance %d)", anon0, anon, churnAnonSlack)
	}
	if z := zombieChildren(shim); len(z) > 0 {
		t.Errorf("shim keeps zombie children %v", z)
	}
	t.Logf("shim after churn: fds %d (baseline %d), goroutines %d (%d), threads %d (%d), anonymous %d KiB (%d)",
		fdCount(shim), fds0, gor, gor0, threadCount(shim), threads0, rssAnonBytes(shim)>>10, anon0>>10)
	if out := d.mustCtr(t, "task", "ps", id); strings.Count(strings.TrimSpace(out), "\n") != 1 {
		t.Errorf("execs left behind in the container:\n%s", out)
	}
	d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
	waitStatus(t, d, id, "STOPPED")
	removeTask(t, d, id)
}

// rssAnonBytes is pid's resident anonymous memory (RssAnon, proc(5)):
// heap, stacks, the Go runtime's own; not the binary's file pages.
func rssAnonBytes(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

var memstatsRE = regexp.MustCompile(`msg=memstats goroutines=(\d+).*`)

// shimGoroutines asks the shim for its goroutine count: on SIGUSR1 it logs
// its memory statistics, and containerd copies the shim's log into its own.
// No other test signals a shim, so the first memstats line after the signal
// is this shim's.
func shimGoroutines(t *testing.T, d *daemon, shim int) int {
	t.Helper()
	from := fileSize(t, d.logPath)
	if err := syscall.Kill(shim, syscall.SIGUSR1); err != nil {
		t.Fatalf("SIGUSR1 to shim %d: %v", shim, err)
	}
	n := -1
	if !poll(10*time.Second, func() bool {
		m := memstatsRE.FindStringSubmatch(readFrom(t, d.logPath, from))
		if m != nil {
			n, _ = strconv.Atoi(m[1])
			t.Logf("%s", m[0])
		}
		return m != nil
	}) {
		t.Fatalf("shim %d logged no memstats after SIGUSR1", shim)
	}
	return n
}

func fdCount(pid int) int {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(fds)
}

// fdLinks lists what pid's open fds point at.
func fdLinks(pid int) []string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, _ := os.ReadDir(dir)
	var links []string
	for _, fd := range fds {
		l, _ := os.Readlink(dir + "/" + fd.Name())
		links = append(links, fd.Name()+"="+l)
	}
	return links
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
