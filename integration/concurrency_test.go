package integration

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestFiftyConcurrentRuns starts 50 `ctr run --rm` at once, each container
// exiting with its own code, so exits cannot be delivered to the wrong task
// without a test noticing.
func TestFiftyConcurrentRuns(t *testing.T) {
	t.Parallel()
	const n = 50
	d := sharedDaemon(t)

	ids := make([]string, n)
	results := make([]cmdResult, n)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		ids[i] = d.newID("many")
		wg.Go(func() {
			results[i] = d.run(t, []string{"--rm"}, ids[i], "/bin/sh", "-c", fmt.Sprintf("exit %d", i))
		})
	}
	wg.Wait()
	t.Logf("%d concurrent ctr run --rm took %s", n, time.Since(start).Round(time.Millisecond))

	for i, r := range results {
		if r.code != i || r.stdout != "" {
			t.Errorf("container %s: want exit %d and no output; got %v", ids[i], i, r)
		}
	}
	assertNoLeftovers(t, d, ids...)
}

// TestSameIDOnTwoDaemons runs a container with the same id on two private
// daemons at once: the shims must keep apart everything derived from the id
// (sockets hash the daemon's address; runc state is per namespace).
func TestSameIDOnTwoDaemons(t *testing.T) {
	t.Parallel()
	const id = "twin"
	daemons := []*daemon{startContainerd(t), startContainerd(t, withDebug())}

	pids := make([]int, len(daemons))
	for i, d := range daemons {
		if r := d.run(t, []string{"-d"}, id, "/bin/sleep", "1000"); r.code != 0 {
			t.Fatalf("daemon %d: run -d: %v", i, r)
		}
		pids[i] = waitTaskStatus(t, d, id, "RUNNING")
	}
	if pids[0] == pids[1] {
		t.Errorf("both daemons report pid %d for %s", pids[0], id)
	}
	for i, d := range daemons {
		if shims := shimProcesses(d.ns)[id]; len(shims) != 1 {
			t.Errorf("daemon %d: want one %s for -namespace %s -id %s; got %v", i, suite.shimName, d.ns, id, shims)
		}
	}
	for i, d := range daemons {
		d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
		waitTaskStatus(t, d, id, "STOPPED")
		d.mustCtr(t, "task", "rm", id)
		d.mustCtr(t, "container", "rm", id)
		assertNoLeftovers(t, d, id)
		if i == 0 {
			// The twin on the other daemon must have survived this deletion.
			if _, status, _ := taskStatus(t, daemons[1], id); status != "RUNNING" {
				t.Errorf("daemon 1: %s is %q after deleting daemon 0's twin; want RUNNING", id, status)
			}
		}
	}
}
