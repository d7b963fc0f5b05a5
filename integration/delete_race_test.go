package integration

import (
	"slices"
	"sync"
	"testing"
)

// TestConcurrentTaskDeletes removes each of ten stopped tasks with three
// concurrent `ctr task rm`: every task gets exactly one /tasks/delete event,
// and nothing is left behind (issue 13, item 2).
func TestConcurrentTaskDeletes(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	events := d.startCtr(t, "events", "namespace=="+d.ns)
	waitSubscribed(t, d, events)

	const n = 10
	ids := make([]string, n)
	for i := range ids {
		id := d.newID("rmrace")
		ids[i] = id
		if r := d.run(t, []string{"-d"}, id, "/bin/sh", "-c", "exit 7"); r.code != 0 {
			t.Fatalf("run -d: %v", r)
		}
		waitTaskStatus(t, d, id, "STOPPED")
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() { d.ctr(t, "task", "rm", id) }) // two of them may fail: one Delete wins
		}
		wg.Wait()
		d.mustCtr(t, "container", "rm", id)
	}
	isContainerDelete := func(id string) func(event) bool {
		return func(e event) bool { return e.topic == "/containers/delete" && e.fields["id"] == id }
	}
	var evs []event
	if !poll(eventTimeout, func() bool {
		evs = parseEvents(events.out.String())
		return slices.ContainsFunc(evs, isContainerDelete(ids[n-1]))
	}) {
		t.Fatalf("no /containers/delete for %s within %s; ctr events printed:\n%s", ids[n-1], eventTimeout, events.out.String())
	}
	events.stop()
	for _, id := range ids {
		deletes := 0
		for _, e := range evs {
			if e.topic == "/tasks/delete" && e.fields["container_id"] == id {
				deletes++
			}
		}
		if deletes != 1 {
			t.Errorf("%s: want one /tasks/delete; got %d", id, deletes)
		}
	}
	assertNoLeftovers(t, d, ids...)
}
