package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/leanshim/leanshim/oci"
	"github.com/leanshim/leanshim/reaper"
	"github.com/leanshim/leanshim/stdio"
)

// Runtime is what a process needs from the OCI runtime. *oci.Runtime
// implements it.
type Runtime interface {
	Create(ctx context.Context, id string, o oci.CreateOpts) error
	Start(ctx context.Context, id string) error
	Exec(ctx context.Context, id string, o oci.ExecOpts) error
	Kill(ctx context.Context, id string, sig int, all bool) error
	Delete(ctx context.Context, id string, force bool) error
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
	Update(ctx context.Context, id string, resources []byte) error
	Ps(ctx context.Context, id string) ([]int, error)
	Checkpoint(ctx context.Context, id string, o oci.CheckpointOpts) error
	Restore(ctx context.Context, id string, o oci.RestoreOpts) error
}

// Exit is how a process ended. The reaper owns the type (it records every
// exit it reaps); process names it for its callers, which do not import the
// reaper, and also makes up the exits of processes that never ran (255,
// notRun) or that Cleanup killed (137). One type, so an exit passes from the
// reaper to the task service without being copied field by field.
type Exit = reaper.Exit

// Factory makes processes. It holds what every process shares: the reaper
// and the way to build a runtime client.
type Factory struct {
	reaper     *reaper.Reaper
	newRuntime func(oci.Config) Runtime
}

// NewFactory returns a Factory whose processes are reaped by r and run the
// OCI runtime binary named in their RuntimeConfig.
func NewFactory(r *reaper.Reaper) *Factory {
	return &Factory{reaper: r, newRuntime: func(c oci.Config) Runtime { return oci.New(c, r) }}
}

// starter lets stdio start helper processes (binary:// loggers) through the
// reaper.
func (f *Factory) starter() stdio.Starter {
	return func(cmd *exec.Cmd) (func(), error) {
		ch, err := f.reaper.Start(cmd)
		if err != nil {
			return nil, err
		}
		return func() { <-ch; reaper.Release(cmd) }, nil
	}
}

// RuntimeConfig selects and configures the OCI runtime binary of a
// container. NewInit records it in the bundle (the JSON names are that
// file's format), so Cleanup runs the same runtime.
type RuntimeConfig struct {
	Binary        string `json:"binary,omitempty"` // name or path; "runc" when empty
	Root          string `json:"root"`             // state root, e.g. /run/containerd/runc/<namespace>
	Log           string `json:"log,omitempty"`    // the runtime's JSON log, <bundle>/log.json
	SystemdCgroup bool   `json:"systemd_cgroup,omitempty"`
	Criu          string `json:"criu,omitempty"` // criu binary for checkpoint and restore; "" for the runtime's default
}

// oci is c as the runtime client takes it.
func (c RuntimeConfig) oci() oci.Config {
	return oci.Config{Binary: c.Binary, Root: c.Root, Log: c.Log, SystemdCgroup: c.SystemdCgroup, Criu: c.Criu}
}

// IOConfig names a process's streams as containerd sends them: "" for none,
// a FIFO path (or fifo:// URI), file:///path, or binary:// or binary-v2://
// (a logging program). UID and GID own the pipes the process gets
// (io_uid/io_gid). Log, if set, records output discarded because its FIFO
// had no reader.
type IOConfig struct {
	Stdin, Stdout, Stderr string
	Terminal              bool
	UID, GID              int
	Log                   *slog.Logger
}

// open opens c's streams for a process of container id in namespace ns
// (execID is "" for the init); a binary:// logger is started through the
// reaper.
func (c IOConfig) open(f *Factory, id, ns, execID string) (*stdio.Pipes, error) {
	return stdio.Open(stdio.Config{
		Stdin: c.Stdin, Stdout: c.Stdout, Stderr: c.Stderr, Terminal: c.Terminal,
		UID: c.UID, GID: c.GID, Log: c.Log,
		Start: f.starter(), ID: id, Namespace: ns, ExecID: execID,
	})
}

// runtimeError wraps a runtime failure the way containerd words it
// ("OCI runtime create failed: <runtime message>") and keeps the class. The
// class only means something for operations on an existing container: a
// create or exec that fails is a plain failure, whatever the runtime said.
func runtimeError(op string, err error) error {
	switch {
	case op == "create" || op == "exec":
	case errors.Is(err, oci.ErrNotRunning):
		return fmt.Errorf("OCI runtime %s failed: %w: %w", op, err, ErrFinished)
	case errors.Is(err, oci.ErrNotExist):
		return fmt.Errorf("OCI runtime %s failed: %w: %w", op, err, ErrNotFound)
	}
	return fmt.Errorf("OCI runtime %s failed: %w", op, err)
}

func ociStdio(f stdio.Files) oci.Stdio {
	return oci.Stdio{Stdin: f.Stdin, Stdout: f.Stdout, Stderr: f.Stderr}
}

// runtimeConfigFile is where NewInit records the runtime a container uses, so
// the shim's delete action can clean up from the bundle alone.
const runtimeConfigFile = "leanshim-runtime.json"

// saveRuntimeConfig records c in the bundle.
func saveRuntimeConfig(bundle string, c RuntimeConfig) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := writeBundleFile(bundle, runtimeConfigFile, b, 0o600); err != nil {
		return fmt.Errorf("record runtime config: %w", err)
	}
	return nil
}

// loadRuntimeConfig reads what saveRuntimeConfig recorded.
func loadRuntimeConfig(bundle string) (RuntimeConfig, error) {
	var c RuntimeConfig
	b, err := os.ReadFile(filepath.Join(bundle, runtimeConfigFile))
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("parse %s: %w", runtimeConfigFile, err)
	}
	return c, nil
}

// sharesPidNamespace reports whether the bundle's spec runs the container in
// a pid namespace it does not own (the host's or another container's): then
// the init's exit does not end the other processes, and the shim must.
func sharesPidNamespace(bundle string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return false, fmt.Errorf("read spec: %w", err)
	}
	var spec struct {
		Linux *struct {
			Namespaces []struct {
				Type string `json:"type"`
				Path string `json:"path"`
			} `json:"namespaces"`
		} `json:"linux"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return false, fmt.Errorf("parse spec: %w", err)
	}
	if spec.Linux == nil {
		return true, nil
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == "pid" {
			return ns.Path != "", nil
		}
	}
	return true, nil
}
