package integration

// Early exits and ordering under stress: containers and execs that exit the
// moment they start, 200 of each, 16 at a time, each report their own exit
// code exactly once, with their task events complete and in order.

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	stressN           = 200
	stressParallelism = 16
)

// stressExit is the exit code of the i-th instant process: every code
// 0..199 once, so a swapped or duplicated exit shows.
func stressExit(i int) int { return i % 256 }

// stressEventsLimit bounds the `ctr events` that watches a stress run.
const stressEventsLimit = 10 * time.Minute

// stressRun calls fn(i) for i in [0, stressN), stressParallelism at a time.
func stressRun(fn func(i int)) time.Duration {
	start := time.Now()
	sem := make(chan struct{}, stressParallelism)
	var wg sync.WaitGroup
	for i := range stressN {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(i)
		})
	}
	wg.Wait()
	return time.Since(start)
}

func TestStressInstantContainers(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	// Not ctrTimeout: on a loaded machine the whole run may take longer,
	// and an events stream cut short loses the last events.
	events := d.startCtrTo(t, nil, stressEventsLimit, "events", "namespace=="+d.ns)
	waitSubscribed(t, d, events)

	ids := make([]string, stressN)
	for i := range ids {
		ids[i] = d.newID("instant")
	}
	results := make([]cmdResult, stressN)
	took := stressRun(func(i int) {
		argv := []string{"/bin/sh", "-c", fmt.Sprintf("exit %d", stressExit(i))}
		if stressExit(i) == 0 {
			argv = []string{"/bin/true"}
		}
		results[i] = d.run(t, []string{"--rm"}, ids[i], argv...)
	})
	t.Logf("%d instant containers, %d at a time: %v", stressN, stressParallelism, took.Round(time.Millisecond))
	for i, r := range results {
		if r.err != nil || r.code != stressExit(i) {
			t.Errorf("container %s: want exit %d; got %v", ids[i], stressExit(i), r)
		}
	}

	// ctr run --rm deletes each container last: once every /containers/delete
	// is in, every task event has been published.
	pending := map[string]bool{}
	for _, id := range ids {
		pending[id] = true
	}
	var evs []event
	if !poll(eventTimeout, func() bool {
		evs = parseEvents(events.out.String())
		for _, e := range evs {
			if id, _ := e.fields["id"].(string); e.topic == "/containers/delete" {
				delete(pending, id)
			}
		}
		return len(pending) == 0
	}) {
		t.Fatalf("no /containers/delete event within %s for %d containers, e.g. %v", eventTimeout, len(pending), firstKeys(pending, 5))
	}
	events.stop()

	byID := map[string][]event{}
	for _, e := range evs {
		if id, _ := e.fields["container_id"].(string); strings.HasPrefix(e.topic, "/tasks/") && id != "" {
			byID[id] = append(byID[id], e)
		}
	}
	want := []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}
	bad := 0
	for i, id := range ids {
		var topics []string
		for _, e := range byID[id] {
			topics = append(topics, e.topic)
		}
		if !slices.Equal(topics, want) {
			if bad++; bad <= 10 {
				t.Errorf("task events for %s: want %v; got %v", id, want, topics)
			}
			continue
		}
		for _, e := range byID[id][2:] {
			if got := e.fields["exit_status"]; stressExit(i) != 0 && got != float64(stressExit(i)) {
				t.Errorf("%s %s: want exit_status %d; got %v", id, e.topic, stressExit(i), got)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d containers had wrong task events", bad, stressN)
	}
	assertNoLeftovers(t, d, ids...)
}

func TestStressInstantExecs(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	// Not ctrTimeout: on a loaded machine the whole run may take longer,
	// and an events stream cut short loses the last events.
	events := d.startCtrTo(t, nil, stressEventsLimit, "events", "namespace=="+d.ns)
	waitSubscribed(t, d, events)
	id, initPid := startSleeper(t, d, "instantx")

	results := make([]cmdResult, stressN)
	took := stressRun(func(i int) {
		results[i] = d.ctr(t, "task", "exec", "--exec-id", fmt.Sprintf("x%d", i), id,
			"/bin/sh", "-c", fmt.Sprintf("exit %d", stressExit(i)))
	})
	t.Logf("%d instant execs into one container, %d at a time: %v", stressN, stressParallelism, took.Round(time.Millisecond))
	for i, r := range results {
		if r.err != nil || r.code != stressExit(i) {
			t.Errorf("exec x%d: want exit %d; got %v", i, stressExit(i), r)
		}
	}
	if procs := taskProcs(t, d, id); len(procs) != 1 || procs[initPid] == "" {
		t.Errorf("ctr task ps %s after all execs: want only the init %d; got %v", id, initPid, procs)
	}

	// End the init: its exit must come after every exec's.
	d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
	waitTaskStatus(t, d, id, "STOPPED")
	var evs []event
	initExit := func(e event) bool {
		return e.topic == "/tasks/exit" && e.fields["container_id"] == id && e.fields["id"] == id
	}
	if !poll(eventTimeout, func() bool {
		evs = parseEvents(events.out.String())
		return slices.ContainsFunc(evs, initExit)
	}) {
		t.Fatalf("no /tasks/exit for the init of %s within %s", id, eventTimeout)
	}
	events.stop()

	// Per exec: exec-added, exec-started, exit, once each and in that order,
	// all before the init's exit.
	byExec := map[string][]string{}
	exitStatus := map[string]any{}
	initExits := 0
	for _, e := range evs {
		if e.fields["container_id"] != id {
			continue
		}
		execID, _ := e.fields["exec_id"].(string)
		if e.topic == "/tasks/exit" {
			execID, _ = e.fields["id"].(string)
		}
		if execID == id {
			initExits++
			continue
		}
		if initExits > 0 {
			t.Errorf("%s for exec %q after the init's exit", e.topic, execID)
		}
		if execID != "" {
			byExec[execID] = append(byExec[execID], e.topic)
			if e.topic == "/tasks/exit" {
				exitStatus[execID] = e.fields["exit_status"]
			}
		}
	}
	if initExits != 1 {
		t.Errorf("want one /tasks/exit for the init; got %d", initExits)
	}
	want := []string{"/tasks/exec-added", "/tasks/exec-started", "/tasks/exit"}
	bad := 0
	for i := range stressN {
		x := fmt.Sprintf("x%d", i)
		if got := byExec[x]; !slices.Equal(got, want) {
			if bad++; bad <= 10 {
				t.Errorf("events of exec %s: want %v; got %v", x, want, got)
			}
			continue
		}
		// ctr events omits a zero exit_status (proto3 JSON).
		if got := exitStatus[x]; stressExit(i) != 0 && got != float64(stressExit(i)) {
			t.Errorf("exec %s: want exit_status %d; got %v", x, stressExit(i), got)
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d execs had wrong events", bad, stressN)
	}
}

func firstKeys(m map[string]bool, n int) []string {
	var keys []string
	for k := range m {
		if len(keys) == n {
			break
		}
		keys = append(keys, k)
	}
	return keys
}
