package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/ttrpc"

	"github.com/leanshim/leanshim/proto/sandboxapi"
	"github.com/leanshim/leanshim/proto/shimv1"
	"github.com/leanshim/leanshim/proto/taskapi"
)

func TestSettles(t *testing.T) {
	for _, tc := range []struct {
		method string
		req    any
		want   bool
	}{
		{"/containerd.task.v2.Task/Create", &taskapi.CreateTaskRequest{Id: "c"}, true},
		{"/containerd.task.v3.Task/Start", &taskapi.StartRequest{Id: "c"}, true},
		{"/containerd.task.v2.Task/Start", &taskapi.StartRequest{Id: "c", ExecId: "e"}, false},
		{"/containerd.task.v2.Task/Delete", &taskapi.DeleteRequest{Id: "c"}, true},
		{"/containerd.task.v2.Task/Delete", &taskapi.DeleteRequest{Id: "c", ExecId: "e"}, false},
		{"/containerd.task.v2.Task/Exec", &taskapi.ExecProcessRequest{Id: "c", ExecId: "e"}, false},
		{"/containerd.task.v2.Task/State", &taskapi.StateRequest{Id: "c"}, false},
		{"/containerd.runtime.linux.shim.v1.Shim/Start", &shimv1.StartRequest{Id: "e"}, false},
		{"/containerd.runtime.sandbox.v1.Sandbox/CreateSandbox", &sandboxapi.CreateSandboxRequest{SandboxId: "p"}, true},
		{"/containerd.runtime.sandbox.v1.Sandbox/StartSandbox", &sandboxapi.StartSandboxRequest{SandboxId: "p"}, true},
		{"/containerd.runtime.sandbox.v1.Sandbox/StopSandbox", &sandboxapi.StopSandboxRequest{SandboxId: "p"}, true},
		{"/containerd.runtime.sandbox.v1.Sandbox/SandboxMetrics", &sandboxapi.SandboxMetricsRequest{SandboxId: "p"}, false},
		{"/containerd.task.v3.Task/Stats", &taskapi.StatsRequest{Id: "c"}, false},
	} {
		if got := settles(tc.method, tc.req); got != tc.want {
			t.Errorf("settles(%s, %+v) = %v, want %v", tc.method, tc.req, got, tc.want)
		}
	}
}

// The settler passes every call through, response and error alike, and
// counts none in flight afterwards.
func TestSettlerPassesThrough(t *testing.T) {
	s := newSettler(slog.New(slog.DiscardHandler))
	wantErr := errors.New("boom")
	u := func(v any) error { *v.(*taskapi.StartRequest) = taskapi.StartRequest{Id: "c"}; return nil }
	resp, err := s.intercept(context.Background(), u, &ttrpc.UnaryServerInfo{FullMethod: "/containerd.task.v2.Task/Start"},
		func(_ context.Context, un func(any) error) (any, error) {
			var req taskapi.StartRequest
			if err := un(&req); err != nil {
				return nil, err
			}
			return &taskapi.StartResponse{Pid: 7}, wantErr
		})
	if r, ok := resp.(*taskapi.StartResponse); !ok || r.Pid != 7 || !errors.Is(err, wantErr) {
		t.Fatalf("got %v, %v", resp, err)
	}
	if n := s.inflight.Load(); n != 0 {
		t.Fatalf("%d calls in flight after return", n)
	}
}

// countingSettler returns a settler whose releases are counted, not done.
func countingSettler() (*settler, *atomic.Int32) {
	s := newSettler(slog.New(slog.DiscardHandler))
	released := new(atomic.Int32)
	s.release = func() { released.Add(1) }
	s.dropText = func() {}
	return s, released
}

// caller returns a function that serves one call of method through s,
// with req as its request and a handler that only decodes it.
func caller(s *settler) func(method string, req *taskapi.StartRequest) {
	return func(method string, req *taskapi.StartRequest) {
		_, _ = s.intercept(context.Background(), func(v any) error {
			if r, ok := v.(*taskapi.StartRequest); ok {
				*r = *req
			}
			return nil
		}, &ttrpc.UnaryServerInfo{FullMethod: method},
			func(_ context.Context, un func(any) error) (any, error) {
				var r taskapi.StartRequest
				return nil, un(&r)
			})
	}
}

// A Wait or WaitSandbox stays open for a task's or pod's life (CRI keeps
// one on each): it must not count as a call in flight, or a shim under CRI
// would never hand a Create's garbage back. Other calls in flight do hold
// the release back until the last one ends.
func TestSettlerIgnoresLongWaits(t *testing.T) {
	s, released := countingSettler()
	runtime.GC() // the sentinel goes: the settler acts as in a shim that has collected
	if !s.collectedSince() {
		t.Fatal("sentinel survived a collection")
	}
	// call serves one call of method whose handler signals entered, then
	// waits for block.
	call := func(method string, entered chan<- struct{}, block <-chan struct{}) {
		_, _ = s.intercept(context.Background(), func(any) error { return nil }, &ttrpc.UnaryServerInfo{FullMethod: method},
			func(_ context.Context, un func(any) error) (any, error) {
				var req taskapi.CreateTaskRequest
				err := un(&req)
				entered <- struct{}{}
				<-block
				return nil, err
			})
	}
	open := make(chan struct{})
	closed := make(chan struct{})
	close(closed)
	entered := make(chan struct{}, 4)
	var calls sync.WaitGroup
	for _, m := range []string{"/containerd.task.v3.Task/Wait", "/containerd.runtime.sandbox.v1.Sandbox/WaitSandbox"} {
		calls.Go(func() { call(m, entered, open) })
		<-entered
	}
	if n := s.inflight.Load(); n != 0 {
		t.Errorf("%d long waits counted in flight", n)
	}
	call("/containerd.task.v3.Task/Create", entered, closed)
	<-entered
	if n := released.Load(); n != 1 {
		t.Fatalf("Create with only waits open released %d times, want 1", n)
	}
	// A State in flight holds the release back.
	calls.Go(func() { call("/containerd.task.v3.Task/State", entered, open) })
	<-entered
	call("/containerd.task.v3.Task/Create", entered, closed)
	<-entered
	if n := released.Load(); n != 1 {
		t.Fatalf("Create beside a State in flight released (%d releases, want 1)", n)
	}
	close(open)
	calls.Wait()
	if n := s.inflight.Load(); n != 0 {
		t.Fatalf("%d calls in flight after all returned", n)
	}
}

// After a collection of the runtime's own, the next quiet call (a stats
// poll) releases the pages it freed, once; an exec's calls never do.
func TestSettlerReleasesAfterCollection(t *testing.T) {
	s, released := countingSettler()
	call := caller(s)
	stats := "/containerd.task.v3.Task/Stats"
	call(stats, &taskapi.StartRequest{})
	if n := released.Load(); n != 0 {
		t.Fatalf("a shim that never collected released %d times", n)
	}
	runtime.GC()
	call(stats, &taskapi.StartRequest{})
	if n := released.Load(); n != 1 {
		t.Fatalf("first stats call after a collection: %d releases, want 1", n)
	}
	call(stats, &taskapi.StartRequest{})
	if n := released.Load(); n != 1 {
		t.Fatalf("stats call with no collection since the release: %d releases, want 1", n)
	}
	runtime.GC()
	call("/containerd.task.v3.Task/Exec", &taskapi.StartRequest{})
	call("/containerd.task.v3.Task/Start", &taskapi.StartRequest{Id: "c", ExecId: "e"})
	call("/containerd.task.v3.Task/Kill", &taskapi.StartRequest{})
	if n := released.Load(); n != 1 {
		t.Fatalf("an exec's calls released (%d releases, want 1)", n)
	}
	call("/containerd.runtime.sandbox.v1.Sandbox/SandboxMetrics", &taskapi.StartRequest{})
	if n := released.Load(); n != 2 {
		t.Fatalf("SandboxMetrics after a collection: %d releases, want 2", n)
	}
	// A container's Start releases whenever the shim has collected once.
	call("/containerd.task.v3.Task/Start", &taskapi.StartRequest{Id: "c"})
	if n := released.Load(); n != 3 {
		t.Fatalf("an init's Start: %d releases, want 3", n)
	}
}

// An init's Start drops the binary's read-only pages, also in a shim that
// never collected (no heap release there); a release after a collection
// drops them too; a Create or StartSandbox (more calls follow at once),
// stats polls and an exec's calls alone do not.
func TestSettlerDropsText(t *testing.T) {
	s, released := countingSettler()
	dropped := new(atomic.Int32)
	s.dropText = func() { dropped.Add(1) }
	call := caller(s)
	want := func(what string, drops, releases int32) {
		t.Helper()
		if d, r := dropped.Load(), released.Load(); d != drops || r != releases {
			t.Fatalf("%s: %d drops and %d releases, want %d and %d", what, d, r, drops, releases)
		}
	}
	call("/containerd.task.v3.Task/Stats", &taskapi.StartRequest{Id: "c"})
	want("stats poll in a shim that never collected", 0, 0)
	call("/containerd.task.v3.Task/Create", &taskapi.StartRequest{Id: "c"})
	call("/containerd.runtime.sandbox.v1.Sandbox/StartSandbox", &taskapi.StartRequest{})
	want("a Create and a StartSandbox, which more calls always follow", 0, 0)
	call("/containerd.task.v3.Task/Start", &taskapi.StartRequest{Id: "c"})
	want("an init's Start in a shim that never collected", 1, 0)
	call("/containerd.task.v3.Task/Start", &taskapi.StartRequest{Id: "c", ExecId: "e"})
	call("/containerd.task.v3.Task/Exec", &taskapi.StartRequest{Id: "c", ExecId: "e"})
	want("an exec's calls", 1, 0)
	runtime.GC()
	call("/containerd.task.v3.Task/Stats", &taskapi.StartRequest{Id: "c"})
	want("stats poll after a collection", 2, 1)
	call("/containerd.task.v3.Task/Stats", &taskapi.StartRequest{Id: "c"})
	want("stats poll with no collection since", 2, 1)
}

// The tracer writes nothing while off; on, it notes an exec's Start and
// nothing for an init's.
func TestTracer(t *testing.T) {
	var buf bytes.Buffer
	tr := &tracer{log: slog.New(slog.NewTextHandler(&buf, nil))}
	call := func(req *taskapi.StartRequest) {
		u := func(v any) error { *v.(*taskapi.StartRequest) = *req; return nil }
		_, _ = tr.intercept(func(ctx context.Context, u ttrpc.Unmarshaler, _ *ttrpc.UnaryServerInfo, m ttrpc.Method) (any, error) {
			return m(ctx, u)
		})(context.Background(), u, &ttrpc.UnaryServerInfo{FullMethod: "/containerd.task.v2.Task/Start"},
			func(_ context.Context, un func(any) error) (any, error) {
				var got taskapi.StartRequest
				return nil, un(&got)
			})
		if started := tr.forking(); started != nil {
			started(42)
		}
		tr.reaped(42, time.Now())
	}
	call(&taskapi.StartRequest{Id: "c", ExecId: "e1"})
	if buf.Len() != 0 {
		t.Fatalf("tracer off wrote %q", buf.String())
	}
	tr.toggle()
	call(&taskapi.StartRequest{Id: "c", ExecId: "e2"})
	call(&taskapi.StartRequest{Id: "c"})
	out := buf.String()
	if strings.Count(out, `msg="trace exec start request"`) != 1 || !strings.Contains(out, "exec=e2") ||
		strings.Count(out, `msg="trace forked" pid=42 ns=`) != 2 || strings.Count(out, `msg="trace reaped" pid=42 ns=`) != 2 {
		t.Fatalf("trace:\n%s", out)
	}
	// Every line says how long the shim has waited for a CPU so far.
	if n := strings.Count(out, "wait_ns="); n != 5 || strings.Contains(out, "wait_ns=-1") {
		t.Fatalf("trace has %d wait_ns, want 5, all read:\n%s", n, out)
	}
}

// runDelay grows while the shim's threads wait for a CPU: n threads busy
// for 50 ms on fewer CPUs wait, in all, about (n - CPUs) × 50 ms.
func TestRunDelayGrows(t *testing.T) {
	var f schedFiles
	if d := f.runDelay(); d != -1 {
		t.Fatalf("runDelay %d before opens, want -1", d)
	}
	f.opens()
	defer f.close()
	before := f.runDelay()
	if before < 0 {
		t.Fatalf("runDelay %d: schedstat unreadable", before)
	}
	n := 2*runtime.NumCPU() + 2
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(n)) // n running at once
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			end := time.Now().Add(50 * time.Millisecond)
			for time.Now().Before(end) {
			}
		})
	}
	wg.Wait()
	// Half the least, for threads the runtime parks before their time.
	if after, least := f.runDelay(), int64(n-runtime.NumCPU())*int64(25*time.Millisecond)/2; after-before < least {
		t.Fatalf("runDelay grew by %v with %d busy threads on %d CPUs, want at least %v",
			time.Duration(after-before), n, runtime.NumCPU(), time.Duration(least))
	}
}
