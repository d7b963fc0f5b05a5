package process

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/leanshim/leanshim/oci"
	"github.com/leanshim/leanshim/reaper"
)

// silentRuntime is a runtime that succeeds but never sends a terminal to the
// console socket, as a runtime ignoring --console-socket would. Its Exec
// starts a real process (left for the reaper) and writes its pid file.
type silentRuntime struct {
	create  oci.CreateOpts
	exec    oci.ExecOpts
	deleted bool // Delete(force) was called
	started *os.Process
}

func (r *silentRuntime) Create(_ context.Context, _ string, o oci.CreateOpts) error {
	r.create = o
	return nil
}

func (r *silentRuntime) Exec(_ context.Context, _ string, o oci.ExecOpts) error {
	r.exec = o
	cmd := exec.Command("/bin/sleep", "60")
	if err := cmd.Start(); err != nil { // the reaper waits for it
		return err
	}
	r.started = cmd.Process
	return os.WriteFile(o.PidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
}

func (r *silentRuntime) Checkpoint(context.Context, string, oci.CheckpointOpts) error { return nil }
func (r *silentRuntime) Restore(context.Context, string, oci.RestoreOpts) error       { return nil }
func (r *silentRuntime) Delete(_ context.Context, _ string, force bool) error {
	r.deleted = force
	return nil
}

func (r *silentRuntime) Start(context.Context, string) error           { return nil }
func (r *silentRuntime) Kill(context.Context, string, int, bool) error { return nil }
func (r *silentRuntime) Pause(context.Context, string) error           { return nil }
func (r *silentRuntime) Resume(context.Context, string) error          { return nil }
func (r *silentRuntime) Update(context.Context, string, []byte) error  { return nil }
func (r *silentRuntime) Ps(context.Context, string) ([]int, error)     { return nil, nil }

// runReaper runs a reaper for the test; cleanup stops it and waits.
func runReaper(t *testing.T) *reaper.Reaper {
	t.Helper()
	r, err := reaper.New(reaper.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }() // owned by the test: cleanup joins it
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func terminalBundle(t *testing.T) string {
	t.Helper()
	bundle := t.TempDir()
	spec := `{"linux":{"namespaces":[{"type":"pid"}]}}`
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	return bundle
}

// TestInitTerminalNeverArrives: a runtime that returns without sending the
// terminal fails the create within the context, the half-made container is
// force-deleted, and the console socket is gone.
func TestInitTerminalNeverArrives(t *testing.T) {
	rt := &silentRuntime{}
	f := &Factory{reaper: runReaper(t), newRuntime: func(oci.Config) Runtime { return rt }}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err := f.NewInit(ctx, InitConfig{ID: "c", Bundle: terminalBundle(t), IO: IOConfig{Terminal: true}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("NewInit: want the context's deadline; got %v", err)
	}
	if rt.create.ConsoleSocket == "" {
		t.Fatal("runtime create got no --console-socket")
	}
	if _, err := os.Stat(filepath.Dir(rt.create.ConsoleSocket)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("console socket dir: want removed; got %v", err)
	}
	if !rt.deleted {
		t.Error("want the runtime's delete --force after the failure")
	}
}

// TestExecTerminalNeverArrives: the exec the runtime started without a
// terminal is killed and reaped, and Start fails.
func TestExecTerminalNeverArrives(t *testing.T) {
	rt := &silentRuntime{}
	r := runReaper(t)
	init := &Init{id: "c", bundle: terminalBundle(t), rt: rt, factory: &Factory{reaper: r}, done: make(chan struct{})}
	e := init.NewExec(ExecConfig{ID: "e", Spec: []byte(`{}`), IO: IOConfig{Terminal: true}})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := e.Start(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Start: want the context's deadline; got %v", err)
	}
	if rt.exec.ConsoleSocket == "" || rt.started == nil {
		t.Fatalf("runtime exec: want --console-socket and a started process; got %+v", rt.exec)
	}
	// Reaped: the pid is no longer ours to signal.
	if err := rt.started.Signal(syscall.Signal(0)); err == nil {
		t.Errorf("exec process %d still exists after the failed Start", rt.started.Pid)
	}
	if _, err := os.Stat(rt.exec.PidFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file: want removed; got %v", err)
	}
}

func TestResizeWithoutTerminal(t *testing.T) {
	e := (&Init{}).NewExec(ExecConfig{ID: "e"})
	for _, tc := range []struct {
		name          string
		width, height uint32
		wantErr       error
	}{
		{"fits", 80, 24, nil},
		{"largest", 65535, 65535, nil},
		{"too wide", 65536, 24, ErrInvalidArgument},
		{"too high", 80, 1 << 20, ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// An exec not started has no streams yet: a no-op when valid.
			if err := e.Resize(tc.width, tc.height); !errors.Is(err, tc.wantErr) {
				t.Errorf("Resize(%d, %d): want %v; got %v", tc.width, tc.height, tc.wantErr, err)
			}
		})
	}
}
