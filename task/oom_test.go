package task

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/cgroup"
	"github.com/leanshim/leanshim/proto/taskapi"
)

// oomAtAdd is an OOMWatcher that reports an OOM the moment a container is
// added, as a container killed for memory during its create would be.
type oomAtAdd struct{ report func(id string) }

func (o *oomAtAdd) Add(id string, _ *cgroup.Cgroup) error { o.report(id); return nil }
func (o *oomAtAdd) Remove(string)                         {}

// TestOOMAfterCreate: a TaskOOM reported as soon as the watch starts comes
// after TaskCreate, in the container's event order.
func TestOOMAfterCreate(t *testing.T) {
	hier, err := cgroup.Detect()
	if err != nil {
		t.Skipf("no cgroup hierarchy on this machine: %v", err)
	}
	oom := &oomAtAdd{}
	s := newFakeService(t, func(c *Config) { c.Cgroups, c.OOM = hier, oom })
	oom.report = s.ReportOOM
	s.create(t, "c")
	want := []string{"/tasks/create c", "/tasks/oom c"}
	if got := s.rec.of("c"); !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
}

var testExecSpec = &gogotypes.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: []byte(`{"args":["sh"],"cwd":"/"}`)}

// blockingOOM is an OOMWatcher whose Add waits until the test releases it,
// and which knows which containers it watches.
type blockingOOM struct {
	adding  chan struct{} // closed when Add has started
	release chan struct{} // closed by the test: Add returns

	mu      sync.Mutex // guards watched
	watched map[string]bool
}

func (o *blockingOOM) Add(id string, _ *cgroup.Cgroup) error {
	close(o.adding)
	<-o.release
	o.mu.Lock()
	defer o.mu.Unlock()
	o.watched[id] = true
	return nil
}

func (o *blockingOOM) Remove(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.watched, id)
}

// TestDeleteRacingOOMWatch: a container deleted while its Create is still
// starting the OOM watch leaves no watch behind.
func TestDeleteRacingOOMWatch(t *testing.T) {
	hier, err := cgroup.Detect()
	if err != nil {
		t.Skipf("no cgroup hierarchy on this machine: %v", err)
	}
	oom := &blockingOOM{adding: make(chan struct{}), release: make(chan struct{}), watched: map[string]bool{}}
	s := newFakeService(t, func(c *Config) { c.Cgroups, c.OOM = hier, oom })
	created := make(chan error, 1)
	bundle := s.bundle(t, "c")
	go func() { // joined below
		_, err := s.Create(t.Context(), &taskapi.CreateTaskRequest{Id: "c", Bundle: bundle})
		created <- err
	}()
	<-oom.adding
	if _, err := s.Kill(t.Context(), &taskapi.KillRequest{Id: "c", Signal: 9}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := s.Wait(ctx, &taskapi.WaitRequest{Id: "c"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(t.Context(), &taskapi.DeleteRequest{Id: "c"}); err != nil {
		t.Fatal(err)
	}
	close(oom.release)
	if err := <-created; err != nil {
		t.Fatal(err)
	}
	oom.mu.Lock()
	defer oom.mu.Unlock()
	if len(oom.watched) != 0 {
		t.Errorf("OOM watches left after the container's Delete: %v", oom.watched)
	}
}
