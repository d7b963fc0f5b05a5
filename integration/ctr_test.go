package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// cmdResult is one finished client invocation: ctr, crictl or nerdctl (tool).
type cmdResult struct {
	tool           string // "" for ctr
	args           []string
	stdout, stderr string
	code           int   // exit code; -1 if the tool did not exit normally
	err            error // set if the tool could not run or ran past its timeout
}

func (r cmdResult) String() string {
	tool := r.tool
	if tool == "" {
		tool = "ctr"
	}
	s := fmt.Sprintf("%s %s: exit %d", tool, strings.Join(r.args, " "), r.code)
	if r.err != nil {
		s += fmt.Sprintf(" (%v)", r.err)
	}
	return s + fmt.Sprintf("\nstdout: %q\nstderr: %q", r.stdout, r.stderr)
}

// ctr runs `ctr --address <sock> -n <ns> args...` with ctrTimeout. It never
// fails tb itself, so it is safe in goroutines; callers assert on the result.
func (d *daemon) ctr(tb testing.TB, args ...string) cmdResult {
	tb.Helper()
	return d.ctrContext(context.Background(), args...)
}

// mustCtr runs ctr and fails tb unless it exits 0. It returns stdout.
func (d *daemon) mustCtr(tb testing.TB, args ...string) string {
	tb.Helper()
	r := d.ctr(tb, args...)
	if r.code != 0 || r.err != nil {
		tb.Fatalf("%v", r)
	}
	return r.stdout
}

func (d *daemon) ctrContext(ctx context.Context, args ...string) cmdResult {
	ctx, cancel := context.WithTimeout(ctx, ctrTimeout)
	defer cancel()
	return runTool(ctx, exec.CommandContext(ctx, d.flavor.ctr, d.ctrArgs(args)...), "", args)
}

// runTool runs cmd, a client command made with ctx, to its end and returns
// what it printed and how it ended; args are what the result reports.
func runTool(ctx context.Context, cmd *exec.Cmd, tool string, args []string) cmdResult {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := cmdResult{tool: tool, args: args, code: -1}
	if cmd.ProcessState != nil {
		r.code = cmd.ProcessState.ExitCode()
	}
	r.stdout, r.stderr = stdout.String(), stderr.String()
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		r.err = fmt.Errorf("%s killed: %w", cmd.Path, ctx.Err())
	case err != nil && !errors.As(err, &exitErr):
		r.err = err
	}
	return r
}

func (d *daemon) ctrArgs(args []string) []string {
	return append([]string{"--address", d.address, "-n", d.ns}, args...)
}

// runArgs builds `run [flags] --runtime RT --fifo-dir F --rootfs ROOTFS id argv...`.
// ctr's --rootfs is a boolean flag: the rootfs path is the first positional
// argument, where an image reference would be, so it must come last.
func (d *daemon) runArgs(flags []string, id string, argv ...string) []string {
	args := append([]string{"run"}, d.flavor.runFlags...)
	args = append(args, flags...)
	args = append(args, "--runtime", d.flavor.runtime, "--fifo-dir", d.fifoDir, "--rootfs", suite.rootfs, id)
	return append(args, argv...)
}

// run runs `ctr run` with the runtime under test and the busybox rootfs.
func (d *daemon) run(tb testing.TB, flags []string, id string, argv ...string) cmdResult {
	tb.Helper()
	return d.ctr(tb, d.runArgs(flags, id, argv...)...)
}

// bgCtr is a ctr process running in the background, e.g. `ctr events` or an
// attached `ctr run` the test signals while it waits.
type bgCtr struct {
	args   []string
	cancel context.CancelFunc
	cmd    *exec.Cmd
	out    lockedBuffer // stdout and stderr
	done   chan struct{}
	err    error // cmd.Wait's result, read after done
}

// startCtr starts ctr in the background. tb.Cleanup kills it if the test
// did not wait for it, and always waits for it.
func (d *daemon) startCtr(tb testing.TB, args ...string) *bgCtr {
	tb.Helper()
	return d.startCtrTo(tb, nil, ctrTimeout, args...)
}

// startCtrTo is startCtr with ctr's output going to out (nil: b.out) and
// a limit on how long it may run.
func (d *daemon) startCtrTo(tb testing.TB, out io.Writer, limit time.Duration, args ...string) *bgCtr {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	b := &bgCtr{args: args, cancel: cancel, done: make(chan struct{})}
	b.cmd = exec.CommandContext(ctx, d.flavor.ctr, d.ctrArgs(args)...)
	if out == nil {
		out = &b.out
	}
	b.cmd.Stdout, b.cmd.Stderr = out, out
	if err := b.cmd.Start(); err != nil {
		cancel()
		tb.Fatalf("start ctr %s: %v", strings.Join(args, " "), err)
	}
	// Owned by b: stop and the cleanup below wait for done.
	go func() {
		b.err = b.cmd.Wait()
		close(b.done)
	}()
	tb.Cleanup(func() { b.stop() })
	return b
}

// wait waits for ctr to exit and returns its exit code (-1 on timeout or signal).
func (b *bgCtr) wait(timeout time.Duration) int {
	select {
	case <-b.done:
	case <-time.After(timeout):
		b.stop()
	}
	return b.cmd.ProcessState.ExitCode()
}

// stop kills ctr (if still running) and waits for it.
func (b *bgCtr) stop() {
	b.cancel()
	<-b.done
}

// lockedBuffer is a bytes.Buffer safe for one writer (exec's copier) and
// concurrent readers.
type lockedBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
