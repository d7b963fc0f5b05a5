package integration

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

const eventTimeout = 15 * time.Second

// event is one line of `ctr events`: "<date> <time> +0000 UTC <ns> <topic> <json>".
type event struct {
	namespace, topic string
	fields           map[string]any
}

func TestTaskEventsInOrder(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	id := d.newID("events")

	events := d.startCtr(t, "events", "namespace=="+d.ns)
	waitSubscribed(t, d, events)

	if r := d.run(t, []string{"--rm"}, id, "/bin/sh", "-c", "exit 3"); r.code != 3 {
		t.Fatalf("want ctr run to exit 3; got %v", r)
	}
	// ctr run --rm deletes the container last: once its event is in, all
	// task events for id have been published.
	var evs []event
	if !poll(eventTimeout, func() bool {
		evs = parseEvents(events.out.String())
		return slices.ContainsFunc(evs, func(e event) bool { return e.topic == "/containers/delete" && e.fields["id"] == id })
	}) {
		t.Fatalf("no /containers/delete event for %s within %s; ctr events printed:\n%s", id, eventTimeout, events.out.String())
	}
	events.stop()

	var topics []string
	var taskEvs []event
	for _, e := range evs {
		if strings.HasPrefix(e.topic, "/tasks/") && e.fields["container_id"] == id {
			topics = append(topics, e.topic)
			taskEvs = append(taskEvs, e)
		}
	}
	want := []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}
	if !slices.Equal(topics, want) {
		t.Fatalf("task events for %s: want %v; got %v\nctr events printed:\n%s", id, want, topics, events.out.String())
	}
	pid := taskEvs[0].fields["pid"]
	for _, e := range taskEvs {
		if e.namespace != d.ns {
			t.Errorf("%s: want namespace %s; got %s", e.topic, d.ns, e.namespace)
		}
		if e.fields["pid"] != pid || pid == nil {
			t.Errorf("%s: want pid %v as in /tasks/create; got %v", e.topic, pid, e.fields["pid"])
		}
	}
	for _, e := range taskEvs[2:] {
		if status := e.fields["exit_status"]; status != float64(3) {
			t.Errorf("%s: want exit_status 3; got %v", e.topic, status)
		}
	}
	if exitID := taskEvs[2].fields["id"]; exitID != id {
		t.Errorf("/tasks/exit: want process id %q (the init process); got %v", id, exitID)
	}
	assertNoLeftovers(t, d, id)
}

// waitSubscribed returns once events is receiving: `ctr events` prints
// nothing when it subscribes, so touch the namespace until the resulting
// /namespaces/update event shows up.
func waitSubscribed(tb testing.TB, d *daemon, events *bgCtr) {
	tb.Helper()
	n := 0
	if !poll(eventTimeout, func() bool {
		n++
		d.mustCtr(tb, "namespaces", "label", d.ns, fmt.Sprintf("leanshim.test/probe=%d", n))
		return strings.Contains(events.out.String(), "/namespaces/update")
	}) {
		tb.Fatalf("ctr events saw no /namespaces/update within %s; it printed:\n%s", eventTimeout, events.out.String())
	}
}

func parseEvents(out string) []event {
	var evs []event
	for _, line := range strings.Split(out, "\n") {
		f := strings.SplitN(line, " ", 7)
		if len(f) != 7 {
			continue
		}
		e := event{namespace: f[4], topic: f[5]}
		if err := json.Unmarshal([]byte(f[6]), &e.fields); err != nil {
			continue
		}
		evs = append(evs, e)
	}
	return evs
}
