package integration

import (
	"slices"
	"strings"
	"testing"
)

// TestExecInPausedContainerFails: an exec into a paused container is refused
// before anything is registered (containerd's runc shim: "cannot exec in a
// paused state") with no /tasks/exec-added for it, and once resumed the
// same exec id runs (issue 13, item 5).
func TestExecInPausedContainerFails(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	id := d.newID("paused")
	events := d.startCtr(t, "events", "namespace=="+d.ns)
	waitSubscribed(t, d, events)
	if r := d.run(t, []string{"-d"}, id, "/bin/sleep", "1000"); r.code != 0 {
		t.Fatalf("run -d: %v", r)
	}
	waitTaskStatus(t, d, id, "RUNNING")
	d.mustCtr(t, "task", "pause", id)
	waitTaskStatus(t, d, id, "PAUSED")

	r := d.ctr(t, "task", "exec", "--exec-id", "p1", id, "/bin/echo", "hi")
	if r.code == 0 || r.err != nil || r.stdout != "" || r.stderr == "" {
		t.Errorf("exec into a paused container: want a prompt failure with an error message; got %v", r)
	}
	t.Logf("refused as: %s", strings.TrimSpace(r.stderr))
	d.mustCtr(t, "task", "resume", id)
	waitTaskStatus(t, d, id, "RUNNING")
	if r := d.ctr(t, "task", "exec", "--exec-id", "p1", id, "/bin/echo", "hi"); r.code != 0 || r.stdout != "hi\n" {
		t.Errorf("exec after resume: want hi; got %v", r)
	}
	d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
	waitTaskStatus(t, d, id, "STOPPED")
	d.ctr(t, "task", "rm", id)
	d.mustCtr(t, "container", "rm", id)
	var evs []event
	if !poll(eventTimeout, func() bool {
		evs = parseEvents(events.out.String())
		return slices.ContainsFunc(evs, func(e event) bool { return e.topic == "/containers/delete" && e.fields["id"] == id })
	}) {
		t.Fatalf("no /containers/delete for %s within %s; ctr events printed:\n%s", id, eventTimeout, events.out.String())
	}
	events.stop()
	added := 0
	for _, e := range evs {
		if e.topic == "/tasks/exec-added" && e.fields["container_id"] == id {
			added++
		}
	}
	if added != 1 {
		t.Errorf("want one /tasks/exec-added (the exec after resume); got %d", added)
	}
	assertNoLeftovers(t, d, id)
}
