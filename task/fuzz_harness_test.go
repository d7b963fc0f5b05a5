package task

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	"github.com/leanshim/leanshim/process"
	"github.com/leanshim/leanshim/proto/eventsapi"
	"github.com/leanshim/leanshim/proto/taskapi"
	"github.com/leanshim/leanshim/proto/tasktypes"
	"github.com/leanshim/leanshim/reaper"
)

const (
	fuzzService     = "containerd.task.v2.Task"
	fuzzCallTimeout = 5 * time.Second // longer is a hang
	fuzzSentinel    = "sentinel"
)

// fuzzHarness is one Service behind a ttrpc server on a unix socket, with
// a fake runtime, and a client. It starts on the first input of the process
// (start), never in the fuzzing coordinator: that process runs the target's
// setup too, and a second wait4(-1) caller there would reap its workers.
type fuzzHarness struct {
	dir     string // the test's directory: sandbox/ and private/
	sandbox fuzzSandbox

	once     sync.Once
	startErr error

	cancel      context.CancelFunc // stops the reaper and the publisher
	bg          sync.WaitGroup     // the reaper, publisher and server goroutines; joined by close
	life        *os.File           // the fake's processes live while this is open
	pub         *Publisher
	events      *fuzzEvents
	svc         *Service
	srv         *ttrpc.Server
	client      *ttrpc.Client
	tasks       taskapi.TaskService
	sentinelPid uint32
}

// newFuzzHarness lays out the test directory and the fake runtime's
// environment; start does the rest.
func newFuzzHarness(f *testing.F) *fuzzHarness {
	h := &fuzzHarness{dir: f.TempDir()}
	h.sandbox = fuzzSandbox{dir: filepath.Join(h.dir, "sandbox")}
	if err := h.layout(); err != nil {
		f.Fatal(err)
	}
	priv := filepath.Join(h.dir, "private")
	// The runtime is "runc" unless a Create's options say otherwise (and
	// the sandbox refuses any other name): the fake, first in PATH.
	f.Setenv("PATH", filepath.Join(priv, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	f.Setenv("LEANSHIM_FUZZ_STATE", filepath.Join(priv, "state"))
	f.Setenv("LEANSHIM_FUZZ_LIFE", filepath.Join(priv, "life"))
	f.Cleanup(h.close)
	return h
}

// layout makes the sandbox the seeds name (bundles with and without a good
// spec, FIFOs, a runtime options file) and the harness's private files.
func (h *fuzzHarness) layout() error {
	sb := h.sandbox.dir
	ownPid := `{"linux":{"namespaces":[{"type":"pid"}]}}`
	files := []struct{ name, content string }{
		{"sandbox/bundles/ok/config.json", ownPid},
		{"sandbox/bundles/shared/config.json", `{}`},
		{"sandbox/bundles/badspec/config.json", `{"linux":`},
		{"sandbox/bundles/nospec/.keep", ""},
		{"sandbox/fixture/" + fuzzSentinel + "/config.json", ownPid},
		{"sandbox/fixture/c1/config.json", ownPid},
		{"sandbox/fixture/c2/config.json", ownPid},
		{"sandbox/io/file", ""},
		{"sandbox/ckpt/.keep", ""},
		{"sandbox/runtime.toml", "BinaryName = \"runc\"\nNoPivotRoot = true\n"},
		{"private/state/.keep", ""},
	}
	for _, f := range files {
		p := filepath.Join(h.dir, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(f.content), 0o644); err != nil {
			return err
		}
	}
	for _, p := range []string{filepath.Join(sb, "io/in"), filepath.Join(sb, "io/out"), filepath.Join(h.dir, "private/life")} {
		if err := unix.Mkfifo(p, 0o600); err != nil {
			return fmt.Errorf("mkfifo %s: %w", p, err)
		}
	}
	fake, err := os.ReadFile("testdata/fuzz-runtime/runc")
	if err != nil {
		return err
	}
	bin := filepath.Join(h.dir, "private/bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(bin, "runc"), fake, 0o755)
}

// start starts the harness once per process; every input after a failed
// start fails the same way.
func (h *fuzzHarness) start(t *testing.T) {
	t.Helper()
	h.once.Do(func() { h.startErr = h.up() })
	if h.startErr != nil {
		t.Fatalf("fuzz harness: %v", h.startErr)
	}
}

func (h *fuzzHarness) up() error {
	// A subreaper: the fake's processes outlive their parent, as runc's do.
	r, err := reaper.New(reaper.Config{Subreaper: true})
	if err != nil {
		return err
	}
	// The fake's processes block reading this FIFO while a writer has it
	// open, and end when the last writer, this process, exits (fifo(7)).
	life, err := os.OpenFile(filepath.Join(h.dir, "private/life"), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	h.life = life
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.bg.Go(func() { _ = r.Run(ctx) }) // stopped by cancel, joined by close
	log := slog.New(slog.DiscardHandler)
	h.pub = NewPublisher(fuzzDiscard{}, "fuzz", log)
	h.bg.Go(func() { _ = h.pub.Run(ctx) }) // ends after pub.Close, joined by close
	h.events = &fuzzEvents{pub: h.pub, exits: make(map[string]chan struct{})}
	h.svc = New(Config{Namespace: "fuzz", Processes: process.NewFactory(r), Publisher: h.events, Log: log})
	if err := h.serve(); err != nil {
		return err
	}
	resp, err := h.svc.Create(ctx, &taskapi.CreateTaskRequest{Id: fuzzSentinel, Bundle: h.sandbox.dir + "/fixture/" + fuzzSentinel})
	if err != nil {
		return fmt.Errorf("create the sentinel: %w", err)
	}
	h.sentinelPid = resp.Pid
	return h.restore("")
}

// serve starts the ttrpc server, registered as cmd/shim does it but behind
// the sandbox, and connects the client.
func (h *fuzzHarness) serve() error {
	srv, err := ttrpc.NewServer(ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()),
		ttrpc.WithUnaryServerInterceptor(h.sandbox.intercept))
	if err != nil {
		return err
	}
	h.srv = srv
	taskapi.RegisterTaskService(srv, h.svc)
	sock := filepath.Join(h.dir, "private/ttrpc.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	h.bg.Go(func() { _ = srv.Serve(context.Background(), l) }) // ends on Shutdown/Close, joined by close
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return err
	}
	h.client = ttrpc.NewClient(conn)
	h.tasks = taskapi.NewTaskClient(h.client)
	return nil
}

// close stops what start started: the server, every container, then the
// reaper and the publisher. It runs once the fuzz target is done.
func (h *fuzzHarness) close() {
	if h.cancel == nil {
		return // never started (the coordinator), or failed before the reaper
	}
	if h.client != nil {
		_ = h.client.Close()
	}
	if h.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := h.srv.Shutdown(ctx); err != nil {
			_ = h.srv.Close()
		}
		cancel()
	}
	if h.svc != nil {
		for _, id := range h.ids() {
			_ = h.teardown(id) // best effort: closing life ends what is left
		}
		h.svc.WaitBackground()
	}
	_ = h.life.Close()
	if h.pub != nil {
		h.pub.Close()
	}
	h.cancel()
	h.bg.Wait()
}

// call sends req, as it is, as the request of method.
func (h *fuzzHarness) call(method string, req []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), fuzzCallTimeout)
	defer cancel()
	r, resp := fuzzRaw(req), fuzzRaw(nil)
	return h.client.Call(ctx, fuzzService, method, &r, &resp)
}

// checkSentinel asks for the sentinel's State over ttrpc: it must be as it
// was created, whatever the input did.
func (h *fuzzHarness) checkSentinel() error {
	ctx, cancel := context.WithTimeout(context.Background(), fuzzCallTimeout)
	defer cancel()
	resp, err := h.tasks.State(ctx, &taskapi.StateRequest{Id: fuzzSentinel})
	if err != nil {
		return fmt.Errorf("sentinel State: %w", err)
	}
	if resp.Status != tasktypes.Status_CREATED || resp.Pid != h.sentinelPid {
		return fmt.Errorf("sentinel State: %s pid %d, want CREATED pid %d", resp.Status, resp.Pid, h.sentinelPid)
	}
	return nil
}

// fuzzDiscard is a Sender that drops every event.
type fuzzDiscard struct{}

func (fuzzDiscard) Send(context.Context, *eventsapi.Envelope) error { return nil }
