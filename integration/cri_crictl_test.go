package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// cmdResult is one finished crictl invocation.
type cmdResult struct {
	args           []string
	stdout, stderr string
	code           int   // exit code; -1 if it did not exit normally
	err            error // set if it could not run or ran past its timeout
}

func (r cmdResult) ok() bool { return r.code == 0 && r.err == nil }

func (r cmdResult) String() string {
	s := fmt.Sprintf("crictl %s: exit %d", strings.Join(r.args, " "), r.code)
	if r.err != nil {
		s += fmt.Sprintf(" (%v)", r.err)
	}
	return s + fmt.Sprintf("\nstdout: %q\nstderr: %q", r.stdout, r.stderr)
}

// crictl runs crictl against the daemon with crictlTimeout. It never fails
// a test itself; callers assert on the result.
func (d *criDaemon) crictl(args ...string) cmdResult {
	ctx, cancel := context.WithTimeout(context.Background(), crictlTimeout)
	defer cancel()
	var stdout, stderr strings.Builder
	cmd := exec.CommandContext(ctx, d.crictlBin, append([]string{"--config", d.crictlConfig}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := cmdResult{args: args, code: -1, stdout: stdout.String(), stderr: stderr.String()}
	if cmd.ProcessState != nil {
		r.code = cmd.ProcessState.ExitCode()
	}
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		r.err = fmt.Errorf("crictl killed: %w", ctx.Err())
	case err != nil && !errors.As(err, &exitErr):
		r.err = err
	}
	return r
}

// mustCrictl runs crictl and fails tb unless it exits 0; it returns stdout
// without surrounding space.
func (d *criDaemon) mustCrictl(tb testing.TB, args ...string) string {
	tb.Helper()
	r := d.crictl(args...)
	if !r.ok() {
		tb.Fatalf("%v", r)
	}
	return strings.TrimSpace(r.stdout)
}

// crictlJSON runs crictl (an inspect command) and decodes its JSON output.
func (d *criDaemon) crictlJSON(v any, args ...string) error {
	r := d.crictl(args...)
	if !r.ok() {
		return errors.New(r.String())
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		return fmt.Errorf("crictl %s: %w in %q", strings.Join(args, " "), err, r.stdout)
	}
	return nil
}
