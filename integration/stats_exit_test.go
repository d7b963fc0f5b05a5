package integration

import (
	"strings"
	"testing"
)

// TestMetricsAfterExit asks for a stopped task's metrics, as a metrics
// scrape does between a container's exit and its deletion. containerd's
// runc shim answers from the cgroup, which exists until the task is
// deleted; so must the shim under test, on every containerd, instead of an
// error on every scrape.
func TestMetricsAfterExit(t *testing.T) {
	t.Parallel()
	for _, fl := range []flavor{defaultFlavor(), containerd24Flavor(t)} {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			d := startContainerd(t, withFlavor(fl))
			id := d.newID("statsexit")
			if r := d.run(t, []string{"-d", "--memory-limit", "67108864"}, id, "/bin/sh", "-c", "exit 3"); r.code != 0 {
				t.Fatal(r)
			}
			waitTaskStatus(t, d, id, "STOPPED")
			for range 3 { // every scrape
				r := d.ctr(t, "task", "metrics", id)
				if r.code != 0 || !strings.Contains(r.stdout, "67108864") {
					t.Fatalf("metrics of a stopped task: want exit 0 and the 64 MiB limit; got %v", r)
				}
			}
			t.Logf("metrics after exit:\n%s", d.mustCtr(t, "task", "metrics", id))
			removeTask(t, d, id) // the task and the container
			if r := d.ctr(t, "task", "metrics", id); r.code == 0 {
				t.Errorf("metrics of a deleted task: want an error; got %v", r)
			}
		})
	}
}
