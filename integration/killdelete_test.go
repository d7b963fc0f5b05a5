package integration

import (
	"strings"
	"sync"
	"testing"
)

// TestKillAllRacingDelete: containerd's CRI cleans up a failed sandbox with a
// Kill (all) and a Delete at once. On cgroup v1 runc's kill --all freezes the
// cgroup while it signals, and a runc delete meanwhile fails ("... that is
// not stopped: paused"); the shim serialises the two, so every Delete of a
// stopped task succeeds (issue 13, item 7).
func TestKillAllRacingDelete(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	var ids []string
	for range 15 {
		id := d.newID("killrm")
		ids = append(ids, id)
		if r := d.run(t, []string{"-d"}, id, "/bin/sleep", "1000"); r.code != 0 {
			t.Fatalf("run -d: %v", r)
		}
		waitTaskStatus(t, d, id, "RUNNING")
		d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
		waitTaskStatus(t, d, id, "STOPPED")
		var wg sync.WaitGroup
		var rm cmdResult
		for range 3 {
			wg.Go(func() { d.ctr(t, "task", "kill", "--all", "-s", "SIGKILL", id) }) // may fail: the task is gone
		}
		wg.Go(func() { rm = d.ctr(t, "task", "rm", id) })
		wg.Wait()
		if rm.code != 0 && strings.Contains(rm.stderr, "paused") {
			t.Errorf("%s: task rm raced kill --all: %v: %s", id, rm, rm.stderr)
		}
		if _, _, ok := taskStatus(t, d, id); ok {
			if r := d.ctr(t, "task", "rm", id); r.code != 0 {
				t.Errorf("%s: task left behind and cannot be removed: %v", id, r)
			}
		}
		d.mustCtr(t, "container", "rm", id)
	}
	assertNoLeftovers(t, d, ids...)
}
