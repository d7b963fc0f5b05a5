package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/leanshim/leanshim/reaper"
)

// Runner runs a command to completion and reports its exit. *reaper.Reaper
// implements it; it must be the only wait4 caller in the process.
type Runner interface {
	RunCmd(ctx context.Context, cmd *exec.Cmd, stdin []byte, capture bool) ([]byte, reaper.Exit, error)
}

// Stdio is what a started container or exec process inherits as fds 0-2.
// A nil file means /dev/null.
type Stdio struct {
	Stdin, Stdout, Stderr *os.File
}

// Runtime runs one OCI runtime binary for one container. It holds no state
// besides its configuration and is safe for concurrent use.
type Runtime struct {
	cfg    Config
	runner Runner
}

// New returns a Runtime that runs every command through r.
func New(cfg Config, r Runner) *Runtime {
	return &Runtime{cfg: cfg, runner: r}
}

// Create runs "create": the container's init is created and waits for Start.
// The init pid is in o.PidFile when Create returns nil.
func (r *Runtime) Create(ctx context.Context, id string, o CreateOpts) error {
	_, err := r.run(ctx, createArgs(id, o), &o.Stdio, nil)
	return err
}

// Start runs "start".
func (r *Runtime) Start(ctx context.Context, id string) error {
	_, err := r.run(ctx, []string{"start", id}, nil, nil)
	return err
}

// Exec runs "exec --detach": the process is running when Exec returns nil and
// its pid is in o.PidFile.
func (r *Runtime) Exec(ctx context.Context, id string, o ExecOpts) error {
	_, err := r.run(ctx, execArgs(id, o), &o.Stdio, nil)
	return err
}

// Kill runs "kill", signalling the init (or every process, with all).
func (r *Runtime) Kill(ctx context.Context, id string, sig int, all bool) error {
	_, err := r.run(ctx, killArgs(id, sig, all), nil, nil)
	return err
}

// Delete runs "delete"; with force a running container is killed first.
func (r *Runtime) Delete(ctx context.Context, id string, force bool) error {
	_, err := r.run(ctx, deleteArgs(id, force), nil, nil)
	return err
}

// Pause runs "pause".
func (r *Runtime) Pause(ctx context.Context, id string) error {
	_, err := r.run(ctx, []string{"pause", id}, nil, nil)
	return err
}

// Resume runs "resume".
func (r *Runtime) Resume(ctx context.Context, id string) error {
	_, err := r.run(ctx, []string{"resume", id}, nil, nil)
	return err
}

// Update runs "update --resources -" with the LinuxResources JSON on stdin.
func (r *Runtime) Update(ctx context.Context, id string, resources []byte) error {
	_, err := r.run(ctx, []string{"update", "--resources", "-", id}, nil, resources)
	return err
}

// Ps runs "ps --format json" and returns the container's pids.
func (r *Runtime) Ps(ctx context.Context, id string) ([]int, error) {
	out, err := r.run(ctx, []string{"ps", "--format", "json", id}, nil, nil)
	if err != nil {
		return nil, err
	}
	var pids []int
	if err := json.Unmarshal(bytes.TrimSpace(out), &pids); err != nil {
		return nil, fmt.Errorf("%s ps: parse %q: %w", r.cfg.binary(), out, err)
	}
	return pids, nil
}

// run starts the runtime with args and waits for it through the Runner.
// With stdio, the child inherits those files and its output is not captured
// (create and exec hand them on to the container). Otherwise stdout and
// stderr are captured and returned. If ctx ends first the runtime is killed,
// and its exit is still waited for, so nothing is left behind.
func (r *Runtime) run(ctx context.Context, args []string, stdio *Stdio, stdin []byte) ([]byte, error) {
	cmd := exec.Command(r.cfg.binary(), append(r.cfg.globalArgs(args[0]), args...)...)
	// The runtime must not outlive the shim (it would hold the container
	// half-created), and must not inherit systemd's notify socket.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Env = withoutEnv(os.Environ(), "NOTIFY_SOCKET")
	if stdio != nil {
		// Assign only non-nil files: a nil *os.File in the io.Reader/Writer
		// field would not mean /dev/null to os/exec.
		if stdio.Stdin != nil {
			cmd.Stdin = stdio.Stdin
		}
		if stdio.Stdout != nil {
			cmd.Stdout = stdio.Stdout
		}
		if stdio.Stderr != nil {
			cmd.Stderr = stdio.Stderr
		}
	}
	logOffset := logSize(r.cfg.Log) // what this command appends starts here
	out, e, err := r.runner.RunCmd(ctx, cmd, stdin, stdio == nil)
	switch {
	case err != nil && ctx.Err() != nil:
		return out, fmt.Errorf("%s %s: %w", r.cfg.binary(), args[0], ctx.Err())
	case err != nil:
		return out, fmt.Errorf("%s %s: %w", r.cfg.binary(), args[0], err)
	case e.Status != 0:
		return out, runtimeError(r.cfg.Log, logOffset, out, &ExitError{Status: e.Status})
	}
	return out, nil
}

func withoutEnv(env []string, key string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}
