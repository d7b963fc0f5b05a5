package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/ttrpc"

	"github.com/leanshim/leanshim/proto/taskapi"
)

// startCtrStdin is startCtr with stdin fed from r: os/exec copies r into a
// pipe and closes it at r's end, as `printf … | ctr …` would.
func (d *daemon) startCtrStdin(tb testing.TB, r io.Reader, args ...string) *bgCtr {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ctrTimeout)
	b := &bgCtr{args: args, cancel: cancel, done: make(chan struct{})}
	b.cmd = exec.CommandContext(ctx, d.flavor.ctr, d.ctrArgs(args)...)
	b.cmd.Stdin = r
	b.cmd.Stdout, b.cmd.Stderr = &b.out, &b.out
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

// closeStdin sends CloseIO{stdin} for a process of id straight to its shim,
// over a connection of its own to the shim's socket, as containerd would:
// the address is in the bundle (PROTOCOL.md §1.2, §1.7).
func closeStdin(tb testing.TB, d *daemon, id, execID string) {
	tb.Helper()
	addr, err := os.ReadFile(filepath.Join(d.bundleDir(id), "address"))
	if err != nil {
		tb.Fatalf("shim address of %s: %v", id, err)
	}
	path, ok := strings.CutPrefix(string(addr), "unix://")
	if !ok {
		tb.Fatalf("shim address of %s is %q, want unix://…", id, addr)
	}
	conn, err := net.Dial("unix", path)
	if err != nil {
		tb.Fatalf("dial shim of %s: %v", id, err)
	}
	client := ttrpc.NewClient(conn)
	defer func() { _ = client.Close() }() // closes conn: the shim must not wait for it at exit
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &taskapi.CloseIORequest{Id: id, ExecId: execID, Stdin: true}
	if _, err := taskapi.NewTaskClient(client).CloseIO(ctx, req); err != nil {
		tb.Fatalf("CloseIO(%s, exec %q, stdin): %v", id, execID, err)
	}
}

func TestStdinReachesContainer(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)

	t.Run("printf abc | head -c 3", func(t *testing.T) {
		id := d.newID("stdin")
		run := d.startCtrStdin(t, strings.NewReader("abc"), d.runArgs([]string{"--rm"}, id, "/bin/head", "-c", "3")...)
		if code := run.wait(taskStateTimeout); code != 0 || run.out.String() != "abc" {
			t.Errorf("want exit 0 and exactly %q on stdout and stderr; got exit %d, %q", "abc", code, run.out.String())
		}
		assertNoLeftovers(t, d, id)
	})
	t.Run("4 MiB of random bytes arrive intact", func(t *testing.T) {
		const size = 4 << 20
		data := make([]byte, size)
		_, _ = rand.Read(data)
		sum := sha256.Sum256(data)
		id := d.newID("stdin")
		// head, not cat: ctr run never closes the task's stdin (see
		// TestCloseIOEndsStdin), so the reader must stop by itself.
		run := d.startCtrStdin(t, bytes.NewReader(data), d.runArgs([]string{"--rm"}, id, "/bin/sh", "-c", "head -c 4194304 | sha256sum")...)
		want := hex.EncodeToString(sum[:]) + "  -\n"
		if code := run.wait(taskStateTimeout); code != 0 || run.out.String() != want {
			t.Errorf("want exit 0 and %q; got exit %d, %q", want, code, run.out.String())
		}
		assertNoLeftovers(t, d, id)
	})
}

// TestCloseIOEndsStdin: a process reading stdin sees EOF only once every
// client has closed its end of the stdin FIFO and one of them has asked the
// shim, with CloseIO, to give up the shim's own end. ctr cannot be made to
// send CloseIO reliably (it does only if its stdin ends after the process
// started; ENVIRONMENT.md), so here ctr's stdin never ends, ctr is killed
// once the process has echoed its input (closing ctr's FIFO end without any
// CloseIO), and the test sends CloseIO to the shim itself over its socket.
func TestCloseIOEndsStdin(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)

	t.Run("init", func(t *testing.T) {
		id := d.newID("closeio")
		run := d.startCtrStdin(t, endlessInput(t, "abc"), d.runArgs(nil, id, "/bin/cat")...)
		waitOutput(t, run, "abc")
		run.stop()
		if _, status, _ := taskStatus(t, d, id); status != "RUNNING" {
			t.Fatalf("cat ended before CloseIO: status %q", status)
		}
		closeStdin(t, d, id, "")
		waitTaskStatus(t, d, id, "STOPPED")
		if r := d.ctr(t, "task", "rm", id); r.code != 0 || r.stderr != "" {
			t.Errorf("task rm: want exit 0 and no warning (cat exited 0 at EOF); got %v", r)
		}
		d.mustCtr(t, "container", "rm", id)
		assertNoLeftovers(t, d, id)
	})
	t.Run("exec", func(t *testing.T) {
		id, _ := startSleeper(t, d, "closeio")
		events := d.startCtr(t, "events", "namespace=="+d.ns)
		waitSubscribed(t, d, events)
		ex := d.startCtrStdin(t, endlessInput(t, "xyz"), "task", "exec", "--exec-id", "reader", id, "/bin/cat")
		waitOutput(t, ex, "xyz")
		ex.stop()
		if procs := taskProcs(t, d, id); !hasExec(procs, "reader") {
			t.Fatalf("exec cat ended before CloseIO: ctr task ps shows %v; ctr events printed:\n%s", procs, events.out.String())
		}
		closeStdin(t, d, id, "reader")
		var exit *event
		if !poll(eventTimeout, func() bool {
			for _, e := range parseEvents(events.out.String()) {
				if e.topic == "/tasks/exit" && e.fields["container_id"] == id && e.fields["id"] == "reader" {
					exit = &e
					return true
				}
			}
			return false
		}) {
			t.Fatalf("no /tasks/exit for exec reader within %s after CloseIO; ctr events printed:\n%s", eventTimeout, events.out.String())
		}
		// ctr events prints protobuf JSON: a zero exit_status is omitted.
		if st, ok := exit.fields["exit_status"]; ok && st != float64(0) {
			t.Errorf("exec cat: want exit status 0 (EOF); got %v", st)
		}
	})
}

// endlessInput returns the read end of a pipe holding data whose write end
// stays open until the test ends: a stdin that never reaches EOF.
func endlessInput(tb testing.TB, data string) *os.File {
	tb.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := w.WriteString(data); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _, _ = r.Close(), w.Close() })
	return r
}

// waitOutput waits until b has printed want.
func waitOutput(tb testing.TB, b *bgCtr, want string) {
	tb.Helper()
	if !poll(taskStateTimeout, func() bool { return b.out.String() == want }) {
		tb.Fatalf("ctr %s: want output %q within %s; got %q", strings.Join(b.args, " "), want, taskStateTimeout, b.out.String())
	}
}

// hasExec reports whether a `ctr task ps` INFO names execID.
func hasExec(procs map[int]string, execID string) bool {
	for _, info := range procs {
		if strings.Contains(info, execID) {
			return true
		}
	}
	return false
}
