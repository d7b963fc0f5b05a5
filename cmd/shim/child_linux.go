package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/leanshim/leanshim/reaper"
)

const (
	// maxChildStdin is what runChild can feed a child: it writes stdin into
	// the pipe before the child starts, and a pipe holds at least one page
	// even when the user's pipe buffer quota is used up (pipe(7)).
	maxChildStdin = 4096
	// maxChildOutput caps what runChild keeps of a child's output.
	maxChildOutput = 1 << 20
)

// runChild runs cmd to completion through r, the only wait4 caller of the
// process, with stdin as its standard input. It returns the child's stdout
// and stderr together (at most maxChildOutput) and its exit status. When ctx
// ends first the child is killed; its exit is reaped before runChild returns
// ctx's error. cmd's Stdin, Stdout and Stderr must be unset.
func runChild(ctx context.Context, r *reaper.Reaper, cmd *exec.Cmd, stdin []byte) (_ []byte, status int, retErr error) {
	if len(stdin) > maxChildStdin {
		return nil, 0, fmt.Errorf("%d bytes of stdin for %s: more than %d", len(stdin), cmd.Path, maxChildStdin)
	}
	if len(stdin) > 0 {
		pr, pw, err := os.Pipe()
		if err != nil {
			return nil, 0, err
		}
		defer pr.Close()
		_, err = pw.Write(stdin) // fits in the pipe: never blocks
		if cerr := pw.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, 0, fmt.Errorf("stdin for %s: %w", cmd.Path, err)
		}
		cmd.Stdin = pr
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, 0, err
	}
	defer outR.Close()
	cmd.Stdout, cmd.Stderr = outW, outW
	exitc, err := r.Start(cmd)
	_ = outW.Close() // the child has its copy; EOF comes when it exits
	if err != nil {
		return nil, 0, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = cmd.Process.Kill() })
	defer stop()
	out, _ := io.ReadAll(io.LimitReader(outR, maxChildOutput))
	_, _ = io.Copy(io.Discard, outR) // never leave the child blocked on a full pipe
	e := <-exitc
	reaper.Release(cmd)
	if err := ctx.Err(); err != nil {
		return out, e.Status, fmt.Errorf("%s killed: %w", cmd.Path, err)
	}
	return out, e.Status, nil
}

// withReaper runs fn with a reaper of its own, for the short-lived actions
// (delete, -info) whose children must be reaped too; that process is not a
// subreaper, so the reaper sees only its own children.
func withReaper(ctx context.Context, fn func(*reaper.Reaper) error) error {
	r, err := reaper.New(reaper.Config{})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { // owned here: stopped by cancel, joined below
		defer close(done)
		_ = r.Run(ctx)
	}()
	defer func() { cancel(); <-done }()
	return fn(r)
}
