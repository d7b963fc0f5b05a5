package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/containerd/ttrpc"

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
	} {
		if got := settles(tc.method, tc.req); got != tc.want {
			t.Errorf("settles(%s, %+v) = %v, want %v", tc.method, tc.req, got, tc.want)
		}
	}
}

// The settler passes every call through, response and error alike, and
// counts none in flight afterwards.
func TestSettlerPassesThrough(t *testing.T) {
	s := newSettler()
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
		tr.forked(42, time.Now())
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
		strings.Count(out, `msg="trace forked"`) != 2 {
		t.Fatalf("trace:\n%s", out)
	}
}
