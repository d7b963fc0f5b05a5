package stdio

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// writeTimeout bounds how long the process side may take to write what the
// tests write: far longer than a non-blocking copier needs.
const writeTimeout = 10 * time.Second

// mustWrite writes b as the process does and fails t if the write blocks.
func mustWrite(t *testing.T, w *os.File, b []byte) {
	t.Helper()
	done := make(chan error, 1)
	go func() { _, err := w.Write(b); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("process write: %v", err)
		}
	case <-time.After(writeTimeout):
		t.Fatalf("process write of %d bytes blocked for %v", len(b), writeTimeout)
	}
}

// waitDiscarded waits until p has discarded at least n bytes.
func waitDiscarded(t *testing.T, p *Pipes, n int64) {
	t.Helper()
	deadline := time.Now().Add(writeTimeout)
	for p.Discarded() < n {
		if time.Now().After(deadline) {
			t.Fatalf("discarded %d bytes, want at least %d", p.Discarded(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestNoReaderAtOpen: a FIFO nobody reads yet never blocks the process and
// never hands it EPIPE; what it writes meanwhile is discarded and counted,
// and a reader that comes later gets what is written from then on.
func TestNoReaderAtOpen(t *testing.T) {
	out := mkfifo(t, "out")
	p, err := Open(Config{Stdout: out})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := p.Child()
	lost := bytes.Repeat([]byte("x"), 4<<20) // far more than a pipe and a FIFO hold
	mustWrite(t, c.Stdout, lost)
	waitDiscarded(t, p, int64(len(lost)))
	if got := p.Discarded(); got != int64(len(lost)) {
		t.Fatalf("discarded %d bytes, want %d", got, len(lost))
	}

	r, err := os.Open(out) // a reader comes (blocks until the shim's write end exists: it does)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	mustWrite(t, c.Stdout, []byte("after\n"))
	p.CloseChild()
	b, err := io.ReadAll(r)
	if err != nil || string(b) != "after\n" {
		t.Fatalf("late reader read %q, %v; want %q", b, err, "after\n")
	}
	if got := p.Discarded(); got != int64(len(lost)) {
		t.Fatalf("discarded %d bytes after the reader came, want %d", got, len(lost))
	}
}

// TestReaderGoneAndBack plays containerd going down and coming back: what
// the FIFO held when the reader left is kept for the next reader, the rest
// written while nobody reads is discarded without blocking the process, and
// once a reader is back nothing more is lost.
func TestReaderGoneAndBack(t *testing.T) {
	out := mkfifo(t, "out")
	p, err := Open(Config{Stdout: out, Stderr: mkfifo(t, "err")})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	first, err := os.OpenFile(out, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	c := p.Child()
	mustWrite(t, c.Stdout, []byte("seen\n"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(first, buf); err != nil || string(buf) != "seen\n" {
		t.Fatalf("first reader: %q, %v", buf, err)
	}
	kept := bytes.Repeat([]byte("k"), 10<<10) // fits in the FIFO
	mustWrite(t, c.Stdout, kept)
	waitFIFOHolds(t, out, len(kept))
	_ = first.Close() // containerd is gone

	lost := bytes.Repeat([]byte("d"), 2<<20)
	mustWrite(t, c.Stdout, lost)
	waitDiscarded(t, p, int64(len(lost)))

	second, err := os.OpenFile(out, os.O_RDONLY, 0) // containerd is back
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	mustWrite(t, c.Stdout, []byte("back\n"))
	p.CloseChild()
	got, err := io.ReadAll(second)
	if err != nil {
		t.Fatal(err)
	}
	want := string(kept) + "back\n"
	if string(got) != want {
		t.Fatalf("second reader got %d bytes (%.20q…), want the %d kept bytes and %q", len(got), got, len(kept), "back\n")
	}
	if d := p.Discarded(); d != int64(len(lost)) {
		t.Fatalf("discarded %d bytes, want %d", d, len(lost))
	}
}

// waitFIFOHolds waits until the FIFO at path buffers n bytes.
func waitFIFOHolds(t *testing.T, path string, n int) {
	t.Helper()
	// A second reader that never reads: it may ask how much is buffered.
	r, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	deadline := time.Now().Add(writeTimeout)
	for {
		got, _ := ioctlInq(r)
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("FIFO holds %d bytes, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSlowReaderLosesNothing: while a reader is there, however slow, every
// byte reaches it (the process waits instead) and nothing is discarded.
func TestSlowReaderLosesNothing(t *testing.T) {
	out := mkfifo(t, "out")
	p, err := Open(Config{Stdout: out})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	r, err := os.OpenFile(out, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	c := p.Child()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the process; blocking here is the point
		defer wg.Done()
		_, _ = c.Stdout.Write(data)
		p.CloseChild()
	}()
	var got []byte
	buf := make([]byte, 16<<10)
	for i := 0; ; i++ {
		if i%8 == 0 {
			time.Sleep(20 * time.Millisecond) // slow: the pipes fill up
		}
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	wg.Wait()
	if !bytes.Equal(got, data) {
		t.Fatalf("reader got %d bytes, want %d", len(got), len(data))
	}
	if d := p.Discarded(); d != 0 {
		t.Fatalf("discarded %d bytes with a reader present", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestOutputWriteDiscardsWithoutReader covers the buffered path (a
// terminal's output and the copying fallback): writes without a reader are
// discarded and counted, and go through again once a reader opens.
func TestOutputWriteDiscardsWithoutReader(t *testing.T) {
	path := mkfifo(t, "out")
	var logged strings.Builder
	o, err := openOutputFIFO(path, "stdout", Config{Log: testLogger(&logged), ExecID: "probe"})
	if err != nil {
		t.Fatal(err)
	}
	defer o.f.Close()
	if err := o.Write(bytes.Repeat([]byte("a"), 100<<10)); err != nil {
		t.Fatal(err)
	}
	if err := o.Write([]byte("bb")); err != nil {
		t.Fatal(err)
	}
	if got := o.total.Load(); got != 100<<10+2 {
		t.Fatalf("discarded %d, want %d", got, 100<<10+2)
	}
	r, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := o.Write([]byte("seen")); err != nil {
		t.Fatal(err)
	}
	o.end()
	_ = o.f.Close()
	b, _ := io.ReadAll(r)
	if string(b) != "seen" {
		t.Fatalf("reader got %q", b)
	}
	for _, want := range []string{"no reader", "reader again", "discarded_bytes=102402", "exec=probe"} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logged.String())
		}
	}
}

func ioctlInq(f *os.File) (int, error) { return unix.IoctlGetInt(int(f.Fd()), unix.TIOCINQ) }

func testLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
