package proto_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"

	"github.com/containerd/ttrpc"
	gogotypes "github.com/gogo/protobuf/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leanshim/leanshim/proto/eventsapi"
	"github.com/leanshim/leanshim/proto/taskapi"
)

// fakeTask answers Connect and leaves every other method unimplemented.
type fakeTask struct {
	taskapi.TaskService // nil: calling any other method panics
}

func (fakeTask) Connect(_ context.Context, req *taskapi.ConnectRequest) (*taskapi.ConnectResponse, error) {
	return &taskapi.ConnectResponse{ShimPid: 1, TaskPid: 2, Version: req.Id}, nil
}

// Kill fails as containerd's shims do for a process that is gone: the reply
// carries a status (google.rpc.Status), not a response.
func (fakeTask) Kill(context.Context, *taskapi.KillRequest) (*gogotypes.Empty, error) {
	return nil, status.Error(codes.NotFound, "process already finished")
}

type fakeEvents struct{ got chan *eventsapi.Envelope }

func (f fakeEvents) Forward(_ context.Context, req *eventsapi.ForwardRequest) (*gogotypes.Empty, error) {
	f.got <- req.Envelope
	return &gogotypes.Empty{}, nil
}

// serve starts a ttrpc server with both services on a unix socket in a temp
// dir and returns a client connected to it. Both are closed by t.Cleanup.
func serve(t *testing.T, task taskapi.TaskService, ev eventsapi.EventsService) *ttrpc.Client {
	t.Helper()
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	taskapi.RegisterTaskService(srv, task)
	eventsapi.RegisterEventsService(srv, ev)

	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	// Stopped by srv.Close in the cleanup below, which waits for it.
	go func() { done <- srv.Serve(context.Background(), l) }()
	conn, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client := ttrpc.NewClient(conn)
	t.Cleanup(func() {
		_ = client.Close() // test client, nothing to flush
		_ = srv.Close()    // error is the listener's close
		if err := <-done; err != nil && !errors.Is(err, ttrpc.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return client
}

// TestTTRPCStubs drives the generated client and server stubs over a real
// socket, and calls the services by the names containerd uses.
func TestTTRPCStubs(t *testing.T) {
	got := make(chan *eventsapi.Envelope, 1)
	client := serve(t, fakeTask{}, fakeEvents{got: got})
	ctx := t.Context()

	resp, err := taskapi.NewTaskClient(client).Connect(ctx, &taskapi.ConnectRequest{Id: "c1"})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if resp.ShimPid != 1 || resp.TaskPid != 2 || resp.Version != "c1" {
		t.Fatalf("Connect = %v", resp)
	}

	// containerd dials the service by its full name; so must the stubs.
	var raw taskapi.ConnectResponse
	if err := client.Call(ctx, "containerd.task.v2.Task", "Connect", &taskapi.ConnectRequest{Id: "c2"}, &raw); err != nil {
		t.Fatalf("raw Connect: %v", err)
	}
	if raw.Version != "c2" {
		t.Fatalf("raw Connect = %v", &raw)
	}

	env := &eventsapi.Envelope{Namespace: "default", Topic: "/tasks/oom"}
	if _, err := eventsapi.NewEventsClient(client).Forward(ctx, &eventsapi.ForwardRequest{Envelope: env}); err != nil {
		t.Fatalf("Forward: %v", err)
	}
	if e := <-got; e.Topic != "/tasks/oom" || e.Namespace != "default" {
		t.Fatalf("forwarded envelope = %v", e)
	}
}

// An error reply's status decodes on the client with its code and message:
// ttrpc v1.1 unmarshals google.rpc.Status with gogo, which panics on a
// genproto built for protobuf-go alone (containerd/ttrpc#62; go.mod).
func TestTTRPCErrorStatus(t *testing.T) {
	client := serve(t, fakeTask{}, fakeEvents{})
	_, err := taskapi.NewTaskClient(client).Kill(t.Context(), &taskapi.KillRequest{Id: "c1"})
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.NotFound || st.Message() != "process already finished" {
		t.Fatalf("Kill error = %v (status %v, %v), want NotFound: process already finished", err, st, ok)
	}
}
