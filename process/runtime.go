package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

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
}

// Exit is how a process ended.
type Exit struct {
	Pid    int
	Status int // exit code, or 128+signal
	At     time.Time
}

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

// RuntimeConfig selects and configures the OCI runtime binary of a container.
type RuntimeConfig = oci.Config

// IOConfig names a process's streams (see stdio.Config).
type IOConfig = stdio.Config

// runtimeError wraps a runtime failure the way containerd words it
// ("OCI runtime create failed: <runtime message>") and keeps the class.
func runtimeError(op string, err error) error {
	switch {
	case errors.Is(err, oci.ErrNotRunning):
		return fmt.Errorf("OCI runtime %s failed: %w: %w", op, err, ErrFinished)
	case errors.Is(err, oci.ErrNotExist):
		return fmt.Errorf("OCI runtime %s failed: %w: %w", op, err, ErrNotFound)
	}
	return fmt.Errorf("OCI runtime %s failed: %w", op, err)
}

func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s holds %q", path, b)
	}
	return pid, nil
}

func ociStdio(f stdio.Files) oci.Stdio {
	return oci.Stdio{Stdin: f.Stdin, Stdout: f.Stdout, Stderr: f.Stderr}
}
