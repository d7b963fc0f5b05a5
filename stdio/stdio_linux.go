package stdio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"time"
)

// Config names a process's streams as containerd sends them: "" for none, a
// FIFO path (or fifo:// URI), or file:///path (stdout and stderr appended to
// that file). UID and GID own the pipes the process gets (io_uid/io_gid).
type Config struct {
	Stdin, Stdout, Stderr string
	Terminal              bool
	UID, GID              int
	// Start starts a helper process of the streams (a binary:// logger)
	// and returns a function that blocks until it has exited. The shim's
	// reaper must be the one that waits (it is the only wait4 caller), so
	// os/exec's Wait is never used here.
	Start Starter
	// ID and Namespace name the container to a binary:// logger.
	ID, Namespace string
	// Log, if set, records when output is discarded because its FIFO has no
	// reader (see output); ExecID, if set, names the exec in those lines.
	Log    *slog.Logger
	ExecID string
	// ReaderGrace is how long output is held for the first reader of an
	// output FIFO that has none at Open (DefaultReaderGrace if 0).
	ReaderGrace time.Duration
}

func (c Config) readerGrace() time.Duration {
	if c.ReaderGrace > 0 {
		return c.ReaderGrace
	}
	return DefaultReaderGrace
}

// ErrInvalidURI: a stream's URI is malformed (Open's error wraps it).
// Missing files come back as os.ErrNotExist, unknown schemes as
// errors.ErrUnsupported.
var ErrInvalidURI = errors.New("invalid stdio uri")

// Starter starts cmd; wait blocks until cmd has exited and frees it.
type Starter func(cmd *exec.Cmd) (wait func(), err error)

// Files are the files a process inherits as fds 0-2; nil means /dev/null.
type Files struct {
	Stdin, Stdout, Stderr *os.File
}

// Pipes is the shim side of one process's streams. Open returns it with its
// copiers running; the owner passes Child to the runtime, calls CloseChild
// once the runtime has handed the files on, and Close when the process is
// deleted. All methods are safe for concurrent use.
type Pipes struct {
	child Files

	mu        sync.Mutex // guards stdinHold, closers
	stdinHold *os.File   // shim's write end of the stdin FIFO, dropped by CloseStdin
	closers   []*os.File // every shim-side file, closed by Close

	pending int           // output copiers still running; guarded by mu
	done    chan struct{} // closed when pending reaches 0

	logger *logger // binary:// logger or nil; set by Open, stopped by Close

	outs []*output  // the output FIFOs; set by Open, closed by Close
	srcs []*os.File // the read ends of the process's output pipes; set by Open

	con *console // the terminal with Config.Terminal, or nil; closed by Close
}

// Open opens the streams named by cfg and starts one copier per stream. It
// does not block on a FIFO that has no reader or writer yet.
func Open(cfg Config) (_ *Pipes, retErr error) {
	p := &Pipes{done: make(chan struct{})}
	if cfg.Terminal {
		if err := p.openConsole(cfg); err != nil {
			return nil, err
		}
		return p, nil
	}
	defer func() {
		if retErr != nil {
			p.CloseChild()
			_ = p.Close()
		}
	}()
	if err := p.openStdin(cfg); err != nil {
		return nil, err
	}
	if err := p.openOutputs(cfg); err != nil {
		return nil, err
	}
	// Under mu: the copiers already run and decrement pending under mu.
	p.mu.Lock()
	idle := p.pending == 0
	p.mu.Unlock()
	if idle {
		close(p.done)
	}
	return p, nil
}

// Child returns the files the process must inherit.
func (p *Pipes) Child() Files { return p.child }

// CloseChild closes the shim's copies of the child's files. Call it once the
// runtime has started the process (it holds its own copies); until then an
// output copier cannot see EOF.
func (p *Pipes) CloseChild() {
	for _, f := range []*os.File{p.child.Stdin, p.child.Stdout, p.child.Stderr} {
		if f != nil {
			_ = f.Close() // the process has its own copy
		}
	}
}

// CloseStdin gives up the shim's hold on the stdin FIFO: once the client
// closes its end too, the process reads EOF.
func (p *Pipes) CloseStdin() error {
	p.mu.Lock()
	f := p.stdinHold
	p.stdinHold = nil
	p.mu.Unlock()
	if f == nil {
		return nil
	}
	return f.Close()
}

// Wait blocks until every output copier has written all the process's output
// and closed its FIFO, or ctx ends.
func (p *Pipes) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for output to drain: %w", ctx.Err())
	}
}

// Close closes every shim-side file, which ends the copiers. Output not yet
// copied is lost, so call Wait first when the process has exited.
func (p *Pipes) Close() error {
	_ = p.CloseStdin()
	p.mu.Lock()
	fs := p.closers
	p.closers = nil
	p.mu.Unlock()
	for _, f := range fs {
		_ = f.Close() // a copier may have closed it already
	}
	for _, o := range p.outs {
		o.close() // ends a copier still running, and the watch for a reader
	}
	// nil-safe; waits for the console's copiers, which close a logger's
	// pipe: before the logger is stopped, so that it can end by itself.
	p.closeConsole()
	p.logger.stop() // nil-safe; blocks at most loggerStopWait
	return nil
}

// ProcessExited tells p that its process has exited. Its output then ends
// as soon as the process's pipes (or the pty) hold nothing more, even if
// another process (a child it left behind) still holds them open: whatever
// the process wrote is delivered, and its client is not kept waiting for
// EOF. It does nothing for a nil p, and never blocks.
func (p *Pipes) ProcessExited() {
	if p == nil {
		return
	}
	for _, r := range p.srcs {
		// Wakes the copier from the poller into drainExited.
		_ = r.SetReadDeadline(time.Unix(1, 0))
	}
	if p.con == nil {
		return
	}
	c := p.con
	c.mu.Lock()
	defer c.mu.Unlock()
	c.exited = true
	if c.master != nil {
		// Wakes copyOut from the poller into its drain.
		_ = c.master.SetReadDeadline(time.Unix(1, 0))
	}
}

func (p *Pipes) track(fs ...*os.File) {
	p.mu.Lock()
	p.closers = append(p.closers, fs...)
	p.mu.Unlock()
}

func (p *Pipes) openStdin(cfg Config) error {
	if cfg.Stdin == "" {
		return nil
	}
	// Non-blocking open for reading succeeds without a writer; then our own
	// write end keeps reads from seeing EOF until CloseStdin (fifo(7)).
	src, hold, err := openStdinFIFO(cfg.Stdin)
	if err != nil {
		return err
	}
	p.track(src)
	p.stdinHold = hold
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	p.track(w)
	p.child.Stdin = r
	if err := chown(r, cfg); err != nil {
		return err
	}
	go copyStdin(w, src) // ends at EOF on the FIFO or when Close closes src; owned by p
	return nil
}

func (p *Pipes) openOutputs(cfg Config) error {
	if isFileURI(cfg.Stdout) || isFileURI(cfg.Stderr) {
		return p.openLogFile(cfg)
	}
	if isBinaryURI(cfg.Stdout) || isBinaryURI(cfg.Stderr) {
		return p.openBinary(cfg)
	}
	for _, s := range []struct {
		uri, name string
		dst       **os.File
	}{{cfg.Stdout, "stdout", &p.child.Stdout}, {cfg.Stderr, "stderr", &p.child.Stderr}} {
		if s.uri == "" {
			continue
		}
		out, err := openOutputFIFO(s.uri, s.name, cfg)
		if err != nil {
			return err
		}
		p.outs = append(p.outs, out)
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		p.track(r)
		p.srcs = append(p.srcs, r)
		*s.dst = w
		if err := chown(w, cfg); err != nil {
			return err
		}
		p.mu.Lock() // the copiers already started decrement it under mu
		p.pending++
		p.mu.Unlock()
		go p.copyOut(out, r) // ends at EOF (all writers gone) or Close; owned by p
	}
	return nil
}

// copyOut copies the process's output pipe to its FIFO (see output) until
// EOF, or until the pipe is empty once the process has exited; then it
// closes the pipe and lets the FIFO's write end go once a reader has it.
func (p *Pipes) copyOut(dst *output, src *os.File) {
	defer p.copierDone()
	if errors.Is(dst.copyFrom(src), os.ErrDeadlineExceeded) {
		dst.drainExited(src)
	}
	_ = src.Close()
	dst.finish()
}

// bufferedCopy copies src to dst through a pooled buffer until src ends; a
// write that fails for a reason other than a missing reader turns it into a
// drain. It returns os.ErrDeadlineExceeded when the process's exit ended
// the wait (drainExited then takes what is left).
func bufferedCopy(dst *output, src *os.File) error {
	buf := getBuf()
	defer putBuf(buf)
	var werr error
	for {
		n, err := src.Read(*buf)
		if n > 0 && werr == nil {
			werr = dst.Write((*buf)[:n])
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		if err != nil {
			return nil // io.EOF: every writer is gone; or Close
		}
	}
}

func (p *Pipes) copierDone() {
	p.mu.Lock()
	p.pending--
	last := p.pending == 0
	p.mu.Unlock()
	if last {
		close(p.done)
	}
}

// copyStdin copies the stdin FIFO into the process until EOF, then closes the
// process's stdin.
func copyStdin(dst, src *os.File) {
	_, handled, err := spliceCopy(dst, src)
	if !handled {
		buf := getBuf()
		defer putBuf(buf)
		for {
			n, rerr := src.Read(*buf)
			if n > 0 {
				if _, werr := dst.Write((*buf)[:n]); werr != nil {
					break // the process closed its stdin
				}
			}
			if rerr != nil {
				break
			}
		}
	}
	_ = err         // EPIPE (the process closed its stdin) or Close: both end the copy
	_ = dst.Close() // the process reads EOF
	_ = src.Close()
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) { bufPool.Put(b) }

func chown(f *os.File, cfg Config) error {
	if cfg.UID == 0 && cfg.GID == 0 {
		return nil
	}
	if err := f.Chown(cfg.UID, cfg.GID); err != nil {
		return fmt.Errorf("chown stdio pipe: %w", err)
	}
	return nil
}
