package stdio

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lateReaderTimeout bounds a late reader's open and read: a shim that never
// lets it finish fails the test instead of hanging the suite.
const lateReaderTimeout = 10 * time.Second

type readResult struct {
	b   []byte
	err error
}

// readLate opens path for reading once start is closed, as containerd's
// clients do in the background (a blocking open(2): it waits for a writer),
// and reads until EOF. If nothing ends by lateReaderTimeout, the test opens
// the FIFO for writing itself so that the reader's goroutine ends.
func readLate(t *testing.T, path string, start <-chan struct{}) <-chan readResult {
	t.Helper()
	res := make(chan readResult, 1)
	go func() {
		<-start
		f, err := os.OpenFile(path, os.O_RDONLY, 0)
		if err != nil {
			res <- readResult{err: err}
			return
		}
		b, err := io.ReadAll(f)
		_ = f.Close() // before the result: the test checks for leaked fds
		res <- readResult{b, err}
	}()
	return res
}

// await waits for a late reader's result, or fails t.
func await(t *testing.T, path string, res <-chan readResult) []byte {
	t.Helper()
	select {
	case r := <-res:
		if r.err != nil {
			t.Fatalf("late reader of %s: %v", path, r.err)
		}
		return r.b
	case <-time.After(lateReaderTimeout):
		// Unblock an open that waits for a writer, or a read that waits
		// for EOF, so that the goroutine can end.
		if w, err := os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
			_ = w.Close()
		}
		t.Fatalf("late reader of %s: no EOF within %v (hung in open or read)", path, lateReaderTimeout)
		return nil
	}
}

// after closes a channel once d has passed, or at once for d == 0.
func after(d time.Duration) chan struct{} {
	c := make(chan struct{})
	if d == 0 {
		close(c)
		return c
	}
	time.AfterFunc(d, func() { close(c) })
	return c
}

// TestLateReaderGetsEverything: a client whose read ends open late (0 to
// 1000 ms after the process started, or only after it has exited) gets
// every byte of stdout and stderr, then EOF, and never blocks; nothing is
// discarded; and the output counts as drained (Wait) without waiting for the
// reader, so a Delete is not held up by a client that never comes.
func TestLateReaderGetsEverything(t *testing.T) {
	for _, tc := range []struct {
		name      string
		delay     time.Duration
		afterExit bool
		size      int
	}{
		{name: "0ms", size: 48 << 10},
		{name: "10ms", delay: 10 * time.Millisecond, size: 48 << 10},
		{name: "100ms", delay: 100 * time.Millisecond, size: 48 << 10},
		{name: "1000ms", delay: time.Second, size: 48 << 10},
		{name: "after-exit", afterExit: true, size: 48 << 10},
		// More than the FIFO and the pipe hold: the process waits for the
		// reader (within the grace) and loses nothing.
		{name: "1MiB-100ms", delay: 100 * time.Millisecond, size: 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkFDs(t)
			out, errp := mkfifo(t, "out"), mkfifo(t, "err")
			p, err := Open(Config{Stdout: out, Stderr: "fifo://" + errp})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			start := after(tc.delay)
			if tc.afterExit {
				start = make(chan struct{})
			}
			gotOut, gotErr := readLate(t, out, start), readLate(t, errp, start)

			data := make([]byte, tc.size)
			_, _ = rand.Read(data)
			c := p.Child()
			wrote := make(chan struct{})
			go func() { // plays the process, then its exit
				defer close(wrote)
				_, _ = c.Stdout.Write(data)
				_, _ = c.Stderr.Write([]byte("to stderr"))
				p.CloseChild()
				p.ProcessExited()
			}()
			if tc.afterExit {
				<-wrote
				ctx, cancel := context.WithTimeout(t.Context(), lateReaderTimeout)
				defer cancel()
				if err := p.Wait(ctx); err != nil {
					t.Fatalf("Wait with no reader yet: %v", err)
				}
				close(start)
			}
			if b := await(t, out, gotOut); !bytes.Equal(b, data) {
				t.Errorf("stdout: got %d bytes, want %d (prefix: %v)", len(b), len(data), bytes.HasPrefix(data, b))
			}
			if b := await(t, errp, gotErr); string(b) != "to stderr" {
				t.Errorf("stderr: got %q", b)
			}
			if d := p.discarded(); d != 0 {
				t.Errorf("discarded %d bytes", d)
			}
		})
	}
}

// TestExitedProcessLeftAChild: a child the process left behind holds the
// output pipe open (`sh -c 'sleep 20 & echo hi'`). Once the process has
// exited, what it wrote reaches the client and then EOF, without waiting
// for the child, so the client returns at once.
func TestExitedProcessLeftAChild(t *testing.T) {
	for _, late := range []bool{false, true} {
		t.Run(fmt.Sprintf("late-reader=%v", late), func(t *testing.T) {
			out := mkfifo(t, "out")
			p, err := Open(Config{Stdout: out})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			start := after(0)
			if late {
				start = make(chan struct{})
			}
			got := readLate(t, out, start)
			c := p.Child()
			child, err := unix.Dup(int(c.Stdout.Fd())) // the background child's copy
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(child)
			if _, err := c.Stdout.Write([]byte("hi\n")); err != nil {
				t.Fatal(err)
			}
			p.CloseChild()
			began := time.Now()
			p.ProcessExited()
			if late {
				close(start)
			}
			if b := await(t, out, got); string(b) != "hi\n" {
				t.Fatalf("client got %q, want %q", b, "hi\n")
			}
			ctx, cancel := context.WithTimeout(t.Context(), lateReaderTimeout)
			defer cancel()
			if err := p.Wait(ctx); err != nil {
				t.Fatalf("Wait: %v", err)
			}
			t.Logf("EOF %v after the exit, with the child still holding the pipe", time.Since(began))
			// The child writing later is not the process's output: it must
			// not block (the pipe is closed: EPIPE, which a shell ignores).
			if _, err := unix.Write(child, []byte("late")); err != unix.EPIPE {
				t.Errorf("child's write after the drain: %v, want EPIPE", err)
			}
		})
	}
}

// TestConsoleLateReader: a terminal's output reaches a client that opens the
// stdout FIFO only after the process has exited.
func TestConsoleLateReader(t *testing.T) {
	checkFDs(t)
	out := mkfifo(t, "out")
	p, err := Open(Config{Terminal: true, Stdout: out})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	master, slave := openPty(t, false)
	receive(t, p, master)
	if _, err := slave.Write([]byte("printed before anyone read")); err != nil {
		t.Fatal(err)
	}
	_ = slave.Close()
	p.ProcessExited()
	ctx, cancel := context.WithTimeout(t.Context(), lateReaderTimeout)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		t.Fatalf("Wait with no reader yet: %v", err)
	}
	start := make(chan struct{})
	got := readLate(t, out, start)
	close(start)
	// A terminal turns \n into \r\n (ONLCR); there is none here.
	if b := await(t, out, got); string(b) != "printed before anyone read" {
		t.Fatalf("client got %q", b)
	}
}
