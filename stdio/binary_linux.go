package stdio

// binary:// logging, as containerd 1.6 does it (pkg/process/io.go NewBinaryIO,
// io_util.go NewBinaryCmd; PROTOCOL.md §5):
//
//   - binary:///path?k=v&k2=v2 runs /path with the arguments "k v k2 v2": each
//     query key followed by its first value. containerd walks a Go map, so its
//     order is random; ours is sorted by key, one of the orders containerd may
//     produce, and reproducible.
//   - The logger's environment is exactly CONTAINER_ID and CONTAINER_NAMESPACE
//     (containerd appends them to a nil Cmd.Env), so nothing of the shim's
//     environment leaks to it. Its stdin, stdout and stderr are /dev/null.
//   - fd 3 is the read end of the process's stdout, fd 4 of its stderr, fd 5
//     the write end of the ready pipe. Open returns once the logger has written
//     a byte to fd 5 or closed it (containerd's logging.Run closes it), so the
//     process never writes before the logger is set up.
//
// binary-v2:///path?k=v (containerd 2.2+, docs/runtime-v2.md "Logging") is
// the same protocol with one change: the logger must write a byte to fd 5.
// EOF on fd 5 without that byte means the logger failed, and Open fails,
// where binary:// takes EOF as ready (loggers that only close fd 5 exist).
//
// Where leanshim differs, and why:
//   - The wait for readiness is bounded (loggerReadyTimeout), and a logger that
//     dies instead of getting ready is an error, not a ready logger. containerd
//     blocks for ever on a logger that never answers, and starts the container
//     with a dead one.
//   - The shim holds no end of the output pipes once the runtime has the
//     process's copies (CloseChild), where containerd keeps the write ends until
//     the task is deleted. So the logger reads EOF as soon as the process and
//     everything that inherited its stdout/stderr are gone, and a logger that
//     stops at EOF (containerd's documented example does) is usually done
//     before Delete.
//   - The shim copies nothing, so Pipes.Wait has nothing to drain and returns at
//     once: the output is complete, as far as the shim can tell, when the
//     process side is closed. Every byte the process wrote has then been read by
//     the logger or sits in a pipe only the logger holds, and Close does not
//     touch that pipe, so Close cannot lose output. Waiting in Wait until the
//     logger has read it all (i.e. exited) would cost every Delete the full
//     drain timeout with a logger that stops only on SIGTERM.
//   - Close sends SIGTERM (as containerd does) only if the logger is still
//     running, waits at most loggerStopWait for it to exit, and returns. If it
//     is still running then, it gets SIGKILL loggerKillTimeout (containerd's
//     12 s) after the SIGTERM, from a timer: Close's caller (the Delete rpc)
//     is not held for those 12 s as containerd holds it.
//   - The logger is started and waited for through Config.Start (the shim's
//     reaper), never os/exec's Wait: containerd 1.6 calls cmd.Wait inside the
//     shim and races its own reaper for the exit status.

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/leanshim/leanshim/procfs"
	"golang.org/x/sys/unix"
)

const (
	// loggerReadyTimeout bounds how long Open waits for a logger's ready
	// signal. It is generous: a logger may dial a remote sink first.
	loggerReadyTimeout = 10 * time.Second
	// loggerStopWait is how long Close waits for a logger to exit after
	// SIGTERM before it returns and leaves the rest to the kill timer: long
	// enough for a logger that flushes and exits on SIGTERM, short enough for
	// the Delete rpc that calls Close.
	loggerStopWait = time.Second
	// loggerKillTimeout is how long after SIGTERM a logger still running gets
	// SIGKILL (containerd's binaryIOProcTermTimeout).
	loggerKillTimeout = 12 * time.Second
)

// loggerTimeouts are the three bounds above; tests shorten them.
type loggerTimeouts struct {
	ready, stopWait, kill time.Duration
}

func defaultLoggerTimeouts() loggerTimeouts {
	return loggerTimeouts{ready: loggerReadyTimeout, stopWait: loggerStopWait, kill: loggerKillTimeout}
}

func isBinaryURI(s string) bool {
	return strings.HasPrefix(s, "binary://") || strings.HasPrefix(s, "binary-v2://")
}

// readyByteRequired reports whether the logger of uri must say it is ready
// with a byte, not just by closing fd 5 (binary-v2).
func readyByteRequired(uri string) bool { return strings.HasPrefix(uri, "binary-v2://") }

// logger is a running binary:// logger process.
type logger struct {
	cmd *exec.Cmd
	pid int // cmd.Process.Pid, read once: the reaper's Release resets it
	t   loggerTimeouts

	stopOnce sync.Once
	mu       sync.Mutex    // guards killT and the closing of exited
	killT    *time.Timer   // SIGKILL escalation, armed by stop, stopped by reap
	exited   chan struct{} // closed by reap once the reaper has waited for the logger
}

// openBinary starts the logger named by cfg.Stdout (or cfg.Stderr: containerd
// sets the same URI for both) and gives the process the write ends of its
// pipes. The logger is set up when it returns; Close stops it.
func (p *Pipes) openBinary(cfg Config) error {
	l, out, errw, err := startLogger(cfg, defaultLoggerTimeouts())
	if err != nil {
		return err
	}
	p.logger = l
	p.child.Stdout, p.child.Stderr = out, errw
	return nil
}

// loggerFiles are the three pipes between the shim and a logger. The logger
// gets theirs[i] as fd 3+i; the shim keeps ours[i].
type loggerFiles struct {
	ours, theirs [3]*os.File
}

const (
	fdStdout = iota // fd 3 of the logger
	fdStderr        // fd 4
	fdReady         // fd 5
)

func newLoggerFiles(cfg Config) (_ *loggerFiles, retErr error) {
	f := &loggerFiles{}
	defer func() {
		if retErr != nil {
			f.close()
		}
	}()
	for i := range f.ours {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("logger pipe: %w", err)
		}
		if i == fdReady { // the logger writes, the shim reads
			r, w = w, r
		}
		f.theirs[i], f.ours[i] = r, w
	}
	for _, w := range f.ours[:fdReady] {
		if err := chown(w, cfg); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// closeTheirs drops the shim's copies of the logger's ends: the ready pipe
// must reach EOF when the logger closes it, and a dead logger must leave the
// process's pipes without a reader (EPIPE), as with containerd.
func (f *loggerFiles) closeTheirs() {
	for i, fl := range f.theirs {
		if fl != nil {
			_ = fl.Close() // the logger has its own copy
			f.theirs[i] = nil
		}
	}
}

func (f *loggerFiles) close() {
	f.closeTheirs()
	for i, fl := range f.ours {
		if fl != nil {
			_ = fl.Close()
			f.ours[i] = nil
		}
	}
}

// startLogger starts the logger and waits until it is ready. It returns the
// write ends for the process's stdout and stderr (nil for a stream cfg does
// not name: the process gets /dev/null and the logger EOF on that fd).
func startLogger(cfg Config, t loggerTimeouts) (_ *logger, out, errw *os.File, retErr error) {
	uri := cfg.Stdout
	if uri == "" {
		uri = cfg.Stderr
	}
	cmd, err := loggerCmd(uri, cfg.ID, cfg.Namespace)
	if err != nil {
		return nil, nil, nil, err
	}
	if cfg.Start == nil {
		return nil, nil, nil, fmt.Errorf("log uri %q: no Starter to run the logger with", uri)
	}
	files, err := newLoggerFiles(cfg)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("log uri %q: %w", uri, err)
	}
	defer func() {
		if retErr != nil {
			files.close()
		}
	}()
	cmd.ExtraFiles = files.theirs[:]
	wait, err := cfg.Start(cmd)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("log uri %q: start logger: %w", uri, err)
	}
	l := &logger{cmd: cmd, pid: cmd.Process.Pid, t: t, exited: make(chan struct{})}
	go l.reap(wait) // ends when the logger is reaped; stop bounds that by SIGKILL
	files.closeTheirs()
	if err := awaitReady(files.ours[fdReady], t.ready, l.exiting, readyByteRequired(uri)); err != nil {
		l.kill()
		<-l.exited // SIGKILLed: the reaper reports it promptly
		return nil, nil, nil, fmt.Errorf("log uri %q: %w", uri, err)
	}
	out, errw = files.ours[fdStdout], files.ours[fdStderr]
	_ = files.ours[fdReady].Close() // read-only, nothing to flush
	if cfg.Stdout == "" {
		_ = out.Close() // nobody writes: the logger reads EOF on fd 3
		out = nil
	}
	if cfg.Stderr == "" {
		_ = errw.Close()
		errw = nil
	}
	return l, out, errw, nil
}

// loggerCmd builds the logger's command line from a binary:// URI the way
// containerd's NewBinaryCmd does (see the top of this file).
func loggerCmd(uri, id, ns string) (*exec.Cmd, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("log uri %q: %w: %w", uri, err, ErrInvalidURI)
	}
	// A host (binary://usr/bin/x) is refused: containerd would silently run
	// /bin/x.
	if u.Scheme != "binary" && u.Scheme != "binary-v2" || u.Host != "" || !filepath.IsAbs(u.Path) {
		return nil, fmt.Errorf("log uri %q: want binary:///absolute/path[?key=value...] or binary-v2:///...: %w", uri, ErrInvalidURI)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("log uri %q: query: %w: %w", uri, err, ErrInvalidURI)
	}
	var args []string
	for _, k := range slices.Sorted(maps.Keys(q)) {
		args = append(args, k)
		if vs := q[k]; len(vs) > 0 {
			args = append(args, vs[0]) // containerd passes the first value only
		}
	}
	cmd := exec.Command(u.Path, args...)
	cmd.Env = []string{"CONTAINER_ID=" + id, "CONTAINER_NAMESPACE=" + ns}
	return cmd, nil
}

var (
	errLoggerGone    = errors.New("logger exited before it was ready")
	errLoggerNoReady = errors.New("logger closed its ready pipe (fd 5) without writing a byte, which binary-v2 requires")
)

// awaitReady waits up to timeout for a byte or EOF on ready. A logger that
// closes fd 5 and one that dies both give EOF; exiting tells them apart.
// With needByte (binary-v2) EOF is never ready.
func awaitReady(ready *os.File, timeout time.Duration, exiting func() bool, needByte bool) error {
	if err := ready.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("ready pipe: %w", err)
	}
	var b [1]byte
	n, err := ready.Read(b[:])
	switch {
	case n == 1:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("logger not ready after %s", timeout)
	case err != io.EOF:
		return fmt.Errorf("read ready pipe: %w", err)
	case needByte:
		return errLoggerNoReady
	case exiting():
		return errLoggerGone
	}
	return nil
}

// pfExiting is PF_EXITING (include/linux/sched.h), the 9th field of
// /proc/<pid>/stat.
const pfExiting = 0x4

// exiting reports whether the logger has exited or is exiting. do_exit sets
// PF_EXITING before it releases the process's files, so a logger whose death
// closed fd 5 is seen exiting by the time the shim reads EOF there.
func (l *logger) exiting() bool {
	select {
	case <-l.exited:
		return true
	default:
	}
	// Not reaped yet (or only just), so the pid is still the logger's.
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(l.pid) + "/stat")
	if err != nil {
		return true // reaped meanwhile
	}
	return statExiting(stat)
}

// statExiting reports whether a /proc/<pid>/stat line is of a process that is
// exiting (PF_EXITING) or a zombie (fields 3 and 9; procfs.StatField counts
// them past the command name, which may hold anything).
func statExiting(stat []byte) bool {
	if state := procfs.StatField(stat, 3); string(state) == "Z" || string(state) == "X" {
		return true
	}
	flags, ok := procfs.StatUint(stat, 9)
	return ok && flags&pfExiting != 0
}

// reap waits for the logger through the Starter's wait, then disarms the
// kill timer and marks the logger exited.
func (l *logger) reap(wait func()) {
	wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.killT != nil {
		l.killT.Stop()
	}
	close(l.exited)
}

// stop ends the logger: SIGTERM, then up to t.stopWait for it to exit; if it
// is still running, SIGKILL t.kill after the SIGTERM from a timer. stop never
// blocks longer than t.stopWait and does nothing the second time.
func (l *logger) stop() {
	if l == nil {
		return
	}
	l.stopOnce.Do(func() {
		select {
		case <-l.exited:
			return // it stopped at EOF, as a logger should
		default:
		}
		sent := time.Now()
		l.signal(unix.SIGTERM)
		wait := time.NewTimer(l.t.stopWait)
		defer wait.Stop()
		select {
		case <-l.exited:
			return
		case <-wait.C:
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		select {
		case <-l.exited:
		default:
			l.killT = time.AfterFunc(l.t.kill-time.Since(sent), l.kill)
		}
	})
}

func (l *logger) kill() { l.signal(unix.SIGKILL) }

// signal signals the logger unless it has been reaped. os/exec started it with
// a pidfd (Go ≥ 1.23 on Linux ≥ 5.4), which Process.Signal uses, so a signal
// racing the reaper cannot reach a recycled pid: it fails with ESRCH, or with
// "process already released" once the Starter's wait has freed the Process.
func (l *logger) signal(sig unix.Signal) {
	_ = l.cmd.Process.Signal(sig) // the logger may be gone: nothing to do then
}
