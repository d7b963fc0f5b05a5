package integration

// A client that opens its FIFO read ends late, as containerd's clients do
// under load (ctr, the CRI plugin and nerdctl open them in the background):
// the test plays containerd (fake containerd, api_test.go) so that the
// moment each reader opens is the test's to choose.

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/proto/taskapi"
)

// lateReaderTimeout bounds one late reader: a shim that never lets it reach
// EOF fails the test, it does not hang the suite.
const lateReaderTimeout = 30 * time.Second

// lateOutput is what every late-reader process prints: more than a line,
// less than a FIFO holds, on stdout, then a line on stderr.
const lateCmd = "seq 1 3000; echo err >&2"

func lateWant() string {
	var b strings.Builder
	for i := 1; i <= 3000; i++ {
		fmt.Fprintf(&b, "%d\n", i)
	}
	return b.String()
}

type lateResult struct {
	b   []byte
	err error
}

// lateReader opens path for reading once start is closed, with a blocking
// open(2) as containerd's fifo package does in the background, and reads
// to EOF.
type lateReader struct {
	path string
	res  chan lateResult
}

func startLateReader(path string, start <-chan struct{}) *lateReader {
	r := &lateReader{path: path, res: make(chan lateResult, 1)}
	go func() { // ends at EOF, or when result unblocks it
		<-start
		f, err := os.OpenFile(path, os.O_RDONLY, 0)
		if err != nil {
			r.res <- lateResult{err: err}
			return
		}
		b, err := io.ReadAll(f)
		_ = f.Close()
		r.res <- lateResult{b, err}
	}()
	return r
}

// result waits for the reader's EOF, or fails t after lateReaderTimeout (an
// open blocked for a writer, or a read never reaching EOF).
func (r *lateReader) result(t *testing.T) string {
	t.Helper()
	select {
	case res := <-r.res:
		if res.err != nil {
			t.Fatalf("reader of %s: %v", filepath.Base(r.path), res.err)
		}
		return string(res.b)
	case <-time.After(lateReaderTimeout):
		// Become the writer it waits for, so its goroutine can end.
		if w, err := os.OpenFile(r.path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			_ = w.Close()
		}
		t.Fatalf("reader of %s: no EOF within %v: hung in open(2) or read(2)", filepath.Base(r.path), lateReaderTimeout)
		return ""
	}
}

type lateCase struct {
	name      string
	delay     time.Duration
	afterExit bool // open only once Wait has returned
}

var lateCases = []lateCase{
	{name: "0ms"},
	{name: "10ms", delay: 10 * time.Millisecond},
	{name: "100ms", delay: 100 * time.Millisecond},
	{name: "1000ms", delay: time.Second},
	{name: "after-exit", afterExit: true},
}

// startSignal is closed after tc's delay, or by the test for afterExit.
func (tc lateCase) startSignal() chan struct{} {
	c := make(chan struct{})
	switch {
	case tc.afterExit:
	case tc.delay == 0:
		close(c)
	default:
		time.AfterFunc(tc.delay, func() { close(c) })
	}
	return c
}

// skipAfterExitForRuncV2: containerd's runc shim opens the FIFOs with a
// blocking open in Create or Exec, so its client must open first; only
// leanshim can be asked for a reader that comes after the exit.
func skipAfterExitForRuncV2(t *testing.T, tc lateCase) {
	if tc.afterExit && suite.runtime != defaultRuntime {
		t.Skipf("%s blocks Create/Exec until the reader opens: a reader after the exit cannot happen", suite.runtime)
	}
}

// lateFIFOs makes the process's FIFOs as a client does and starts their
// readers: stdout, and stderr unless terminal.
func lateFIFOs(t *testing.T, dir, name string, terminal bool, start <-chan struct{}) (stdout, stderr string, readers []*lateReader) {
	t.Helper()
	stdout = filepath.Join(dir, name+"-out")
	paths := []string{stdout}
	if !terminal {
		stderr = filepath.Join(dir, name+"-err")
		paths = append(paths, stderr)
	}
	for _, p := range paths {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
		readers = append(readers, startLateReader(p, start))
	}
	return stdout, stderr, readers
}

// checkLateOutput checks what the readers got: the whole output, each on
// its stream, or on a terminal both streams with \n turned into \r\n.
func checkLateOutput(t *testing.T, terminal bool, readers []*lateReader) {
	t.Helper()
	want := lateWant()
	if terminal {
		want = strings.ReplaceAll(want+"err\n", "\n", "\r\n")
	}
	if got := readers[0].result(t); got != want {
		t.Errorf("stdout: got %d bytes (%.40q…), want %d", len(got), got, len(want))
	}
	if !terminal {
		if got := readers[1].result(t); got != "err\n" {
			t.Errorf("stderr: got %q, want %q", got, "err\n")
		}
	}
}

// TestLateReaderInit: the init's output reaches a client whose read ends
// open 0 to 1000 ms after it asked for the task, or only after the task
// has exited, on FIFOs and on a terminal: every byte, then EOF; Delete
// then answers at once.
func TestLateReaderInit(t *testing.T) {
	t.Parallel()
	f := newFakeContainerd(t)
	for _, terminal := range []bool{false, true} {
		for _, tc := range lateCases {
			t.Run(fmt.Sprintf("terminal=%v/%s", terminal, tc.name), func(t *testing.T) {
				skipAfterExitForRuncV2(t, tc)
				id := fmt.Sprintf("late%s%v", strings.ReplaceAll(tc.name, "-", ""), terminal)
				b := f.bundle(t, id, "/bin/sh", "-c", lateCmd)
				if terminal {
					setTerminal(t, b)
				}
				s := f.startShim(t, id, b)
				ctx := ctxT(t)
				start := tc.startSignal()
				stdout, stderr, readers := lateFIFOs(t, f.dir, id, terminal, start)
				if _, err := s.task.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: b, Stdout: stdout, Stderr: stderr, Terminal: terminal}); err != nil {
					t.Fatal(err)
				}
				if _, err := s.task.Start(ctx, &taskapi.StartRequest{Id: id}); err != nil {
					t.Fatal(err)
				}
				if w, err := s.task.Wait(ctx, &taskapi.WaitRequest{Id: id}); err != nil || w.ExitStatus != 0 {
					t.Fatalf("wait: %+v %v", w, err)
				}
				if tc.afterExit {
					close(start)
				}
				checkLateOutput(t, terminal, readers)
				began := time.Now()
				if _, err := s.task.Delete(ctx, &taskapi.DeleteRequest{Id: id}); err != nil {
					t.Fatalf("delete: %v", err)
				}
				if took := time.Since(began); took > 2*time.Second {
					t.Errorf("Delete took %v after the client had read everything", took)
				}
				_, _ = s.task.Shutdown(ctx, &taskapi.ShutdownRequest{Id: id})
			})
		}
	}
}

// TestLateReaderExec: the same for execs, each with its own FIFOs or
// terminal, in one running container.
func TestLateReaderExec(t *testing.T) {
	t.Parallel()
	f := newFakeContainerd(t)
	id := "lateexec"
	s := f.runSleeper(t, id, "1000")
	ctx := ctxT(t)
	for _, terminal := range []bool{false, true} {
		for _, tc := range lateCases {
			t.Run(fmt.Sprintf("terminal=%v/%s", terminal, tc.name), func(t *testing.T) {
				skipAfterExitForRuncV2(t, tc)
				execID := fmt.Sprintf("e%s%v", strings.ReplaceAll(tc.name, "-", ""), terminal)
				start := tc.startSignal()
				stdout, stderr, readers := lateFIFOs(t, f.dir, execID, terminal, start)
				spec := execSpec(t, terminal, "/bin/sh", "-c", lateCmd)
				if _, err := s.task.Exec(ctx, &taskapi.ExecProcessRequest{Id: id, ExecId: execID, Stdout: stdout, Stderr: stderr, Terminal: terminal, Spec: spec}); err != nil {
					t.Fatal(err)
				}
				if _, err := s.task.Start(ctx, &taskapi.StartRequest{Id: id, ExecId: execID}); err != nil {
					t.Fatal(err)
				}
				if w, err := s.task.Wait(ctx, &taskapi.WaitRequest{Id: id, ExecId: execID}); err != nil || w.ExitStatus != 0 {
					t.Fatalf("wait: %+v %v", w, err)
				}
				if tc.afterExit {
					close(start)
				}
				checkLateOutput(t, terminal, readers)
				if _, err := s.task.Delete(ctx, &taskapi.DeleteRequest{Id: id, ExecId: execID}); err != nil {
					t.Fatalf("delete exec: %v", err)
				}
			})
		}
	}
}

// TestExecLeavesChildHoldingOutput: `sh -c 'sleep 20 & echo hi'` exits at
// once, but its background child holds the exec's stdout. Its client gets
// "hi" and EOF promptly after the exit (containerd 1.6's runc shim: about
// 2 s), and DeleteProcess answers at once.
func TestExecLeavesChildHoldingOutput(t *testing.T) {
	t.Parallel()
	f := newFakeContainerd(t)
	id := "bgchild"
	s := f.runSleeper(t, id, "1000")
	ctx := ctxT(t)
	start := make(chan struct{})
	close(start)
	stdout, stderr, readers := lateFIFOs(t, f.dir, "bg", false, start)
	spec := execSpec(t, false, "/bin/sh", "-c", "sleep 20 & echo hi")
	if _, err := s.task.Exec(ctx, &taskapi.ExecProcessRequest{Id: id, ExecId: "bg", Stdout: stdout, Stderr: stderr, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Start(ctx, &taskapi.StartRequest{Id: id, ExecId: "bg"}); err != nil {
		t.Fatal(err)
	}
	if w, err := s.task.Wait(ctx, &taskapi.WaitRequest{Id: id, ExecId: "bg"}); err != nil || w.ExitStatus != 0 {
		t.Fatalf("wait: %+v %v", w, err)
	}
	exited := time.Now()
	if got := readers[0].result(t); got != "hi\n" {
		t.Errorf("stdout %q, want %q", got, "hi\n")
	}
	if got := readers[1].result(t); got != "" {
		t.Errorf("stderr %q, want none", got)
	}
	eof := time.Since(exited)
	if _, err := s.task.Delete(ctx, &taskapi.DeleteRequest{Id: id, ExecId: "bg"}); err != nil {
		t.Fatalf("delete exec: %v", err)
	}
	deleted := time.Since(exited)
	t.Logf("%s: EOF %v after the exit, DeleteProcess done %v after it", suite.runtime, eof.Round(time.Millisecond), deleted.Round(time.Millisecond))
	if deleted > 2*time.Second {
		t.Errorf("client kept %v past the exit by a child holding the output (containerd 1.6's runc shim: 2 s)", deleted)
	}
}

// setTerminal sets process.terminal in the bundle's config.json.
func setTerminal(t *testing.T, bundle string) {
	t.Helper()
	path := filepath.Join(bundle, "config.json")
	var spec map[string]any
	raw, _ := os.ReadFile(path)
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	spec["process"].(map[string]any)["terminal"] = true
	raw, _ = json.Marshal(spec)
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// execSpec is the OCI process of an exec, as containerd sends it.
func execSpec(t *testing.T, terminal bool, argv ...string) *gogotypes.Any {
	t.Helper()
	raw, err := json.Marshal(map[string]any{
		"args": argv, "cwd": "/", "terminal": terminal,
		"env":  []string{"PATH=/bin:/usr/bin", "TERM=xterm"},
		"user": map[string]any{"uid": 0, "gid": 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &gogotypes.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: raw}
}
