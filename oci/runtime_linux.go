package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/leanshim/leanshim/reaper"
)

// Starter starts a command and reports its exit exactly once. *reaper.Reaper
// implements it; it must be the only wait4 caller in the process.
type Starter interface {
	Start(cmd *exec.Cmd) (<-chan reaper.Exit, error)
}

// Stdio is what a started container or exec process inherits as fds 0-2.
// A nil file means /dev/null.
type Stdio struct {
	Stdin, Stdout, Stderr *os.File
}

// Runtime runs one OCI runtime binary for one container. It holds no state
// besides its configuration and is safe for concurrent use.
type Runtime struct {
	cfg     Config
	starter Starter
}

// New returns a Runtime that starts every command through s.
func New(cfg Config, s Starter) *Runtime {
	return &Runtime{cfg: cfg, starter: s}
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

// run starts the runtime with args and waits for it through the Starter.
// With stdio, the child inherits those files and its output is not captured
// (create and exec hand them on to the container). Otherwise stdout and
// stderr are captured and returned. If ctx ends first the runtime is killed,
// and its exit is still waited for, so nothing is left behind.
func (r *Runtime) run(ctx context.Context, args []string, stdio *Stdio, stdin []byte) ([]byte, error) {
	cmd := exec.Command(r.cfg.binary(), append(r.cfg.globalArgs(), args...)...)
	// The runtime must not outlive the shim (it would hold the container
	// half-created), and must not inherit systemd's notify socket.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Env = withoutEnv(os.Environ(), "NOTIFY_SOCKET")

	var outR, outW *os.File
	var err error
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
	} else {
		if outR, outW, err = os.Pipe(); err != nil {
			return nil, err
		}
		defer outR.Close()
		cmd.Stdout, cmd.Stderr = outW, outW
	}
	if stdin != nil {
		f, err := stdinFile(stdin)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		cmd.Stdin = f
	}
	exitc, err := r.starter.Start(cmd)
	if outW != nil {
		_ = outW.Close() // the child has its copy; EOF comes when it exits
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", r.cfg.binary(), err)
	}
	// Kill the runtime if the request is abandoned; the exit is still reaped.
	// Closing our read end too: a child of the runtime that inherited its
	// output must not keep the read below waiting past the deadline.
	stop := context.AfterFunc(ctx, func() {
		_ = cmd.Process.Kill()
		if outR != nil {
			_ = outR.Close()
		}
	})
	defer stop()
	var out []byte
	if outR != nil {
		out, _ = io.ReadAll(io.LimitReader(outR, 1<<20))
	}
	e := <-exitc
	reaper.Release(cmd)
	if e.Status != 0 {
		if ctx.Err() != nil {
			return out, fmt.Errorf("%s %s: %w", r.cfg.binary(), args[0], ctx.Err())
		}
		return out, runtimeError(r.cfg.Log, out, &ExitError{Status: e.Status})
	}
	return out, nil
}

// stdinFile returns a pipe read end that yields b and then EOF. b must fit in
// the pipe buffer (64 KiB), which resource JSON does.
func stdinFile(b []byte) (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(b); err != nil {
		_ = r.Close()
		_ = w.Close()
		return nil, fmt.Errorf("write runtime stdin: %w", err)
	}
	if err := w.Close(); err != nil {
		_ = r.Close()
		return nil, err
	}
	return r, nil
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
