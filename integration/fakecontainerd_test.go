package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leanshim/leanshim/proto/eventsapi"
	"github.com/leanshim/leanshim/proto/runcopts"
	"github.com/leanshim/leanshim/proto/taskapi"
)

// fakeContainerd records the events a shim forwards.
type fakeContainerd struct {
	ttrpcAddr string // events socket (TTRPC_ADDRESS)
	grpcAddr  string // never listened on; only names the shim socket
	ns        string
	dir       string

	mu     sync.Mutex
	events []*eventsapi.Envelope
}

func (f *fakeContainerd) Forward(ctx context.Context, r *eventsapi.ForwardRequest) (*gogotypes.Empty, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, r.Envelope)
	return &gogotypes.Empty{}, nil
}

// fakeSeq numbers fake containerds within this test process.
var fakeSeq atomic.Int64

func newFakeContainerd(t *testing.T) *fakeContainerd {
	t.Helper()
	dir, err := os.MkdirTemp(shortTempBase(), "api")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeContainerd{
		ttrpcAddr: filepath.Join(dir, "c.sock.ttrpc"),
		grpcAddr:  filepath.Join(dir, "c.sock"),
		// Its own namespace: its Cleanup removes the namespace's runc root,
		// which must not pull the state from under a parallel test's shim.
		ns:  fmt.Sprintf("lsapi%dx%d", os.Getpid(), fakeSeq.Add(1)),
		dir: dir,
	}
	l, err := net.Listen("unix", f.ttrpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	eventsapi.RegisterEventsService(srv, f)
	go func() { _ = srv.Serve(context.Background(), l) }() // stopped by Close in Cleanup
	t.Cleanup(func() {
		_ = srv.Close()
		_ = os.RemoveAll(filepath.Join("/run/containerd/runc", f.ns))
		_ = os.RemoveAll(dir)
	})
	return f
}

// topics returns "topic:id" for the events of container id, in order.
func (f *fakeContainerd) topics(t *testing.T, id string) []string {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, env := range f.events {
		if env.Namespace != f.ns || env.Timestamp == nil || env.Timestamp.Seconds == 0 {
			t.Fatalf("invalid envelope %+v", env)
		}
		if strings.HasPrefix(env.Event.TypeUrl, "type.googleapis.com/") {
			t.Fatalf("type url with prefix: %s", env.Event.TypeUrl)
		}
		// Every task event has container_id as field 1: a string match on
		// the payload is enough to pick this container's events.
		if strings.Contains(string(env.Event.Value), id) {
			out = append(out, env.Topic)
		}
	}
	return out
}

// bundle writes a bundle for id running argv in the suite's busybox rootfs.
func (f *fakeContainerd) bundle(t *testing.T, id string, argv ...string) string {
	t.Helper()
	b := filepath.Join(f.dir, id)
	if err := os.MkdirAll(filepath.Join(b, "rootfs"), 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("runc", "spec", "--bundle", b).CombinedOutput()
	if err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}
	var spec map[string]any
	raw, _ := os.ReadFile(filepath.Join(b, "config.json"))
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	p := spec["process"].(map[string]any)
	p["terminal"] = false
	p["args"] = argv
	spec["root"] = map[string]any{"path": suite.rootfs, "readonly": false}
	spec["linux"].(map[string]any)["cgroupsPath"] = "/" + f.ns + "/" + id
	raw, _ = json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(b, "config.json"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

// shim is one shim started by the test through its start action.
type shim struct {
	client *ttrpc.Client
	task   taskapi.TaskService
	pid    int
}

func (f *fakeContainerd) startShim(t *testing.T, id, bundle string) *shim {
	t.Helper()
	return f.startShimPath(t, id, bundle, "")
}

// startShimPath is startShim with binDir, if not "", first on the shim's
// PATH (where it finds its runtime binary).
func (f *fakeContainerd) startShimPath(t *testing.T, id, bundle, binDir string) *shim {
	t.Helper()
	return f.startShimWith(t, id, bundle, binDir, nil)
}

// startShimWith is startShimPath with stdin for the start action: what
// containerd 1.6 writes there, the options Any in protobuf.
func (f *fakeContainerd) startShimWith(t *testing.T, id, bundle, binDir string, stdin []byte) *shim {
	t.Helper()
	cmd := exec.Command(suite.shimPath, "-namespace", f.ns, "-id", id, "-address", f.grpcAddr, "-publish-binary", "/nonexistent", "start")
	cmd.Dir = bundle
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.Env = append(os.Environ(), "TTRPC_ADDRESS="+f.ttrpcAddr, "GOMAXPROCS=2")
	if binDir != "" {
		cmd.Env = append(cmd.Env, "PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("start: %v: %s", err, out)
	}
	addr := string(out)
	if !strings.HasPrefix(addr, "unix:///run/containerd/s/") || strings.ContainsAny(addr, "\n ") {
		t.Fatalf("start printed %q, want exactly a unix:// address", addr)
	}
	if got, _ := os.ReadFile(filepath.Join(bundle, "address")); string(got) != addr {
		t.Fatalf("address file %q, want %q", got, addr)
	}
	conn, err := net.Dial("unix", strings.TrimPrefix(addr, "unix://"))
	if err != nil {
		t.Fatal(err)
	}
	s := &shim{client: ttrpc.NewClient(conn)}
	s.task = taskapi.NewTaskClient(s.client)
	r, err := s.task.Connect(ctxT(t), &taskapi.ConnectRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	s.pid = int(r.ShimPid)
	t.Cleanup(func() {
		_ = s.client.Close()
		if shimAlive(s.pid) {
			_ = syscall.Kill(s.pid, syscall.SIGKILL) // only the shim this test started
		}
	})
	return s
}

// runSleeper creates and starts a container id running `sleep secs` in a new
// shim and returns the shim; cleanup kills the container (and whatever it
// left running), deletes it and shuts the shim down.
func (f *fakeContainerd) runSleeper(t *testing.T, id, secs string) *shim {
	t.Helper()
	b := f.bundle(t, id, "/bin/sleep", secs)
	s := f.startShim(t, id, b)
	ctx := ctxT(t)
	if _, err := s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: b}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Start(ctx, &taskapi.StartRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := ctxT(t)
		_, _ = s.task.Kill(ctx, &taskapi.KillRequest{Id: id, Signal: uint32(syscall.SIGKILL), All: true})
		_, _ = s.task.Wait(ctx, &taskapi.WaitRequest{Id: id})
		_, _ = s.task.Delete(ctx, &taskapi.DeleteRequest{Id: id})
		_, _ = s.task.Shutdown(ctx, &taskapi.ShutdownRequest{Id: id})
	})
	return s
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func optionsAny(t *testing.T, o *runcopts.Options) *gogotypes.Any {
	b, err := proto.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	return &gogotypes.Any{TypeUrl: "containerd.runc.v1.Options", Value: b}
}

func wantCode(t *testing.T, err error, code codes.Code, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("succeeded, want %s", code)
	}
	st, _ := status.FromError(err)
	if st.Code() != code || !strings.Contains(st.Message(), substr) {
		t.Fatalf("got %s %q, want %s containing %q", st.Code(), st.Message(), code, substr)
	}
}
