package task

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leanshim/leanshim/cgroup"
	"github.com/leanshim/leanshim/pod"
	"github.com/leanshim/leanshim/process"
	"github.com/leanshim/leanshim/proto/events"
	"github.com/leanshim/leanshim/proto/taskapi"
	"github.com/leanshim/leanshim/proto/tasktypes"
	"github.com/leanshim/leanshim/reaper"
)

// recorder is the Events of a test Service: it keeps every event as
// "topic id" (id: the exec id of an exec's event, else the container id).
type recorder struct {
	mu     sync.Mutex // guards events
	events []string
}

func (r *recorder) Publish(topic string, ev proto.Message) {
	id := ""
	switch ev := ev.(type) {
	case *events.TaskExit:
		id = ev.Id
	case *events.TaskExecAdded:
		id = ev.ExecId
	case *events.TaskExecStarted:
		id = ev.ExecId
	case interface{ GetContainerId() string }:
		id = ev.GetContainerId()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, topic+" "+id)
}

// of returns the events recorded so far whose id is one of ids.
func (r *recorder) of(ids ...string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		for _, id := range ids {
			if len(e) > len(id) && e[len(e)-len(id)-1:] == " "+id {
				out = append(out, e)
			}
		}
	}
	return out
}

// fakeService is a Service on a real reaper whose runtime is the fake of
// testdata/fuzz-runtime (a container's processes are `cat` of a FIFO that
// lives while the test runs). Tests using it must not run in parallel: the
// test process has one reaper at a time.
type fakeService struct {
	*Service
	rec *recorder
	dir string
}

func newFakeService(t *testing.T, opts ...func(*Config)) *fakeService {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"bin", "state"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fake, err := os.ReadFile("testdata/fuzz-runtime/runc")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/runc"), fake, 0o755); err != nil {
		t.Fatal(err)
	}
	life := filepath.Join(dir, "life")
	if err := unix.Mkfifo(life, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", filepath.Join(dir, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("LEANSHIM_FUZZ_STATE", filepath.Join(dir, "state"))
	t.Setenv("LEANSHIM_FUZZ_LIFE", life)
	// The fake's processes block reading life while a writer holds it, and
	// end when it is closed (fifo(7)).
	lf, err := os.OpenFile(life, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	r, err := reaper.New(reaper.Config{Subreaper: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }() // owned by the test: cleanup stops and joins it
	rec := &recorder{}
	cfg := Config{Namespace: "test", Processes: process.NewFactory(r), Publisher: rec, Log: slog.New(slog.DiscardHandler),
		Pods: pod.NewFactory(r, nil, nil)}
	for _, o := range opts {
		o(&cfg)
	}
	svc := New(cfg)
	t.Cleanup(func() {
		_ = lf.Close() // every fake process ends
		svc.WaitBackground()
		cancel()
		<-done
	})
	return &fakeService{Service: svc, rec: rec, dir: dir}
}

// create makes a container with its own bundle (its own pid namespace).
func (s *fakeService) create(t *testing.T, id string) {
	t.Helper()
	if _, err := s.Create(t.Context(), &taskapi.CreateTaskRequest{Id: id, Bundle: s.bundle(t, id)}); err != nil {
		t.Fatal(err)
	}
}

// bundle makes the bundle of container id: its own pid namespace.
func (s *fakeService) bundle(t *testing.T, id string) string {
	t.Helper()
	bundle := filepath.Join(s.dir, "bundles", id)
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		t.Fatal(err)
	}
	spec := `{"linux":{"namespaces":[{"type":"pid"}]}}`
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	return bundle
}

// stopped creates, starts and kills a container, and waits for its exit.
func (s *fakeService) stopped(t *testing.T, id string) {
	t.Helper()
	s.create(t, id)
	if _, err := s.Start(t.Context(), &taskapi.StartRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Kill(t.Context(), &taskapi.KillRequest{Id: id, Signal: 9}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := s.Wait(ctx, &taskapi.WaitRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentDeletesPublishOneTaskDelete: of three concurrent Deletes of
// a stopped task one succeeds; the others get FailedPrecondition (a Delete
// is in progress) or NotFound (it is done), and TaskDelete goes out once.
func TestConcurrentDeletesPublishOneTaskDelete(t *testing.T) {
	s := newFakeService(t)
	for i := range 10 {
		id := fmt.Sprintf("del%d", i)
		s.stopped(t, id)
		errs := make([]error, 3)
		var wg sync.WaitGroup
		for j := range errs {
			wg.Go(func() { _, errs[j] = s.Delete(t.Context(), &taskapi.DeleteRequest{Id: id}) })
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch status.Code(err) {
			case codes.OK:
				ok++
			case codes.FailedPrecondition, codes.NotFound:
			default:
				t.Errorf("%s: Delete: want OK, FailedPrecondition or NotFound; got %v", id, err)
			}
		}
		want := []string{"/tasks/create " + id, "/tasks/start " + id, "/tasks/exit " + id, "/tasks/delete " + id}
		if got := s.rec.of(id); ok != 1 || !slices.Equal(got, want) {
			t.Fatalf("%s: %d Deletes succeeded, events %q; want 1 and %q", id, ok, got, want)
		}
	}
}

// TestInitExitHeldForExecs: while an exec outlives the init (here: the fake
// runtime has no pid namespace to end it), State reports the init RUNNING
// and Wait blocks; once the exec's exit is out, both see the init's exit.
func TestInitExitHeldForExecs(t *testing.T) {
	s := newFakeService(t)
	s.create(t, "c")
	if _, err := s.Start(t.Context(), &taskapi.StartRequest{Id: "c"}); err != nil {
		t.Fatal(err)
	}
	spec := &gogotypes.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: []byte(`{"args":["sh"],"cwd":"/"}`)}
	if _, err := s.Exec(t.Context(), &taskapi.ExecProcessRequest{Id: "c", ExecId: "x", Spec: spec}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(t.Context(), &taskapi.StartRequest{Id: "c", ExecId: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Kill(t.Context(), &taskapi.KillRequest{Id: "c", Signal: 9}); err != nil {
		t.Fatal(err)
	}
	c, err := s.get("c")
	if err != nil {
		t.Fatal(err)
	}
	<-c.init.Done() // the init's exit is recorded
	st, err := s.State(t.Context(), &taskapi.StateRequest{Id: "c"})
	if err != nil || st.Status != tasktypes.Status_RUNNING {
		t.Errorf("State of the init while its exec runs: want RUNNING; got %v, %v", st, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.Wait(ctx, &taskapi.WaitRequest{Id: "c"}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("Wait for the init while its exec runs: want DeadlineExceeded; got %v", err)
	}
	if _, err := s.Kill(t.Context(), &taskapi.KillRequest{Id: "c", ExecId: "x", Signal: 9}); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer wcancel()
	w, err := s.Wait(wctx, &taskapi.WaitRequest{Id: "c"})
	if err != nil || w.ExitStatus != 137 {
		t.Fatalf("Wait for the init: want 137; got %v, %v", w, err)
	}
	st, err = s.State(t.Context(), &taskapi.StateRequest{Id: "c"})
	if err != nil || st.Status != tasktypes.Status_STOPPED || st.ExitStatus != 137 {
		t.Errorf("State of the init: want STOPPED 137; got %v, %v", st, err)
	}
	want := []string{"/tasks/create c", "/tasks/start c", "/tasks/exec-added x", "/tasks/exec-started x", "/tasks/exit x", "/tasks/exit c"}
	if got := s.rec.of("c", "x"); !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
}

// TestStatsWhileRestoreStarts: Stats reads the container's cgroup while the
// Start of a restored container sets it (run with -race; issue 13, item 11).
func TestStatsWhileRestoreStarts(t *testing.T) {
	hier, err := cgroup.Detect()
	if err != nil {
		t.Skipf("no cgroup hierarchy on this machine: %v", err)
	}
	s := newFakeService(t, func(c *Config) { c.Cgroups = hier })
	if _, err := s.Create(t.Context(), &taskapi.CreateTaskRequest{Id: "r", Bundle: s.bundle(t, "r"), Checkpoint: s.dir}); err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() { // joined below
		_, err := s.Start(t.Context(), &taskapi.StartRequest{Id: "r"})
		started <- err
	}()
	for {
		_, _ = s.Stats(t.Context(), &taskapi.StatsRequest{Id: "r"}) // NotFound until the cgroup is known
		select {
		case err := <-started:
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Stats(t.Context(), &taskapi.StatsRequest{Id: "r"}); err != nil {
				t.Errorf("Stats of the started container: %v", err)
			}
			return
		default:
		}
	}
}
