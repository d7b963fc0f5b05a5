package reaper

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"
)

// maxOutput caps what RunCmd keeps of a child's output; the rest is drained.
const maxOutput = 1 << 20

// RunCmd starts cmd through r, feeds it stdin (nil: /dev/null, unless cmd.Stdin
// is set), and waits for its exit. With capture, cmd's stdout and stderr go
// to one pipe whose content (at most 1 MiB) Run returns; otherwise cmd's own
// Stdout/Stderr are used (nil or *os.File only, see Start). If ctx ends
// first, the child is killed and the output pipe closed, so neither the
// child nor a grandchild holding the pipe can keep RunCmd waiting; the exit is
// still reaped before RunCmd returns ctx's error. Once it has the exit it
// sheds a thread that the fork and the waits may have added (shedThread).
func (r *Reaper) RunCmd(ctx context.Context, cmd *exec.Cmd, stdin []byte, capture bool) ([]byte, Exit, error) {
	if stdin != nil {
		f, err := memFile(stdin)
		if err != nil {
			return nil, Exit{}, err
		}
		defer f.Close()
		cmd.Stdin = f
	}
	var outR, outW *os.File
	if capture {
		var err error
		if outR, outW, err = os.Pipe(); err != nil {
			return nil, Exit{}, err
		}
		defer outR.Close()
		cmd.Stdout, cmd.Stderr = outW, outW
	}
	exitc, err := r.Start(cmd)
	if outW != nil {
		_ = outW.Close() // the child has its copy; EOF comes when it exits
	}
	if err != nil {
		return nil, Exit{}, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	stop := context.AfterFunc(ctx, func() {
		_ = cmd.Process.Kill()
		if outR != nil {
			_ = outR.Close() // ends the read below even if a grandchild holds the pipe
		}
	})
	defer stop()
	var out []byte
	if outR != nil {
		out, _ = io.ReadAll(io.LimitReader(outR, maxOutput))
		_, _ = io.Copy(io.Discard, outR) // never leave the child blocked on a full pipe
	}
	e := <-exitc
	Release(cmd)
	r.shedThread()
	if err := ctx.Err(); err != nil {
		return out, e, fmt.Errorf("%s killed: %w", cmd.Path, err)
	}
	return out, e, nil
}

// memFile returns a file at offset 0 holding b: a child's stdin of any
// size, with no writer goroutine and nothing on disk (memfd_create(2)).
func memFile(b []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("stdin", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd for stdin: %w", err)
	}
	f := os.NewFile(uintptr(fd), "stdin")
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("stdin: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("stdin: %w", err)
	}
	return f, nil
}
