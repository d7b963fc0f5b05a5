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

// discarded returns how many bytes of output were thrown away because their
// FIFO had no reader.
func (p *Pipes) discarded() int64 {
	var n int64
	for _, o := range p.outs {
		n += o.total.Load()
	}
	if o, ok := p.consoleOutput(); ok {
		n += o.total.Load()
	}
	return n
}

// consoleOutput returns the terminal's output FIFO, if it has one.
func (p *Pipes) consoleOutput() (*output, bool) {
	if p.con == nil {
		return nil, false
	}
	o, ok := p.con.out.(*output)
	return o, ok
}

// waitDiscarded waits until p has discarded at least n bytes.
func waitDiscarded(t *testing.T, p *Pipes, n int64) {
	t.Helper()
	deadline := time.Now().Add(writeTimeout)
	for p.discarded() < n {
		if time.Now().After(deadline) {
			t.Fatalf("discarded %d bytes, want at least %d", p.discarded(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestNoReaderWithinGrace: while no reader has opened the FIFO, the shim
// holds it for the grace: the output waits in the FIFO (and, once that is
// full, the process waits). When the grace ends without a reader, the start
// of the output that the FIFO holds is kept for a reader that comes later,
// the rest is discarded and counted, and the process is not blocked any
// more; a reader that comes later gets what the FIFO kept and what is
// written from then on.
func TestNoReaderWithinGrace(t *testing.T) {
	out := mkfifo(t, "out")
	fifoSize := pipeSize(t, out)                                // before Open: this open is a reader too
	p, err := Open(Config{Stdout: out, ReaderGrace: time.Hour}) // ended below
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := p.Child()
	pipeCap := fdPipeSize(t, c.Stdout)
	data := make([]byte, 4<<20) // far more than a pipe and a FIFO hold
	for i := range data {
		data[i] = byte(i / 4096) // each 4 KiB page its own byte: order shows
	}
	wrote := make(chan struct{})
	go func() { // the process; it must block until the grace ends
		defer close(wrote)
		_, _ = c.Stdout.Write(data)
	}()
	// The FIFO is full and so is the process's pipe: the process waits.
	waitPipeHolds(t, p.outs[0].hold, fifoSize)
	waitPipeHolds(t, int(c.Stdout.Fd()), pipeCap)
	select {
	case <-wrote:
		t.Fatal("the process wrote 4 MiB while the FIFO was held for its first reader")
	default:
	}
	endGrace(p.outs[0])
	select {
	case <-wrote:
	case <-time.After(writeTimeout):
		t.Fatalf("the process is still blocked %v after the grace ended", writeTimeout)
	}
	waitDiscarded(t, p, int64(len(data)-fifoSize))

	r, err := os.Open(out) // a reader comes (the shim's write end is there)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	mustWrite(t, c.Stdout, []byte("after\n"))
	p.CloseChild()
	_ = r.SetReadDeadline(time.Now().Add(writeTimeout))
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte{}, data[:fifoSize]...), "after\n"...)
	if !bytes.Equal(got, want) {
		t.Fatalf("late reader read %d bytes (%x…), want the first %d written and %q", len(got), got[:min(len(got), 8)], fifoSize, "after\n")
	}
	if d := p.discarded(); d != int64(len(data)-fifoSize) {
		t.Fatalf("discarded %d bytes, want %d", d, len(data)-fifoSize)
	}
}

// TestGraceEnds: the grace is a real deadline: with a short one and no
// reader, a process that writes far more than the pipes hold is blocked for
// the grace and then goes on.
func TestGraceEnds(t *testing.T) {
	out := mkfifo(t, "out")
	const grace = 100 * time.Millisecond
	began := time.Now()
	p, err := Open(Config{Stdout: out, ReaderGrace: grace})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	defer p.CloseChild() // the process's end
	mustWrite(t, p.Child().Stdout, make([]byte, 4<<20))
	if took := time.Since(began); took < grace {
		t.Fatalf("4 MiB went through %v after Open, before the grace (%v) ended", took, grace)
	}
}

// endGrace ends o's wait for its first reader now, as its timer would.
func endGrace(o *output) { o.graceEnded() }

// fdPipeSize returns the capacity of the pipe f is an end of.
func fdPipeSize(t *testing.T, f *os.File) int {
	t.Helper()
	n, err := unix.FcntlInt(f.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitPipeHolds waits until the pipe or FIFO fd is an end of holds n bytes
// (FIONREAD works on either end).
func waitPipeHolds(t *testing.T, fd int, n int) {
	t.Helper()
	deadline := time.Now().Add(writeTimeout)
	for {
		got, _ := unix.IoctlGetInt(fd, unix.TIOCINQ)
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pipe holds %d bytes, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// pipeSize returns the capacity of the FIFO at path.
func pipeSize(t *testing.T, path string) int {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := unix.FcntlInt(f.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	return n
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
	if d := p.discarded(); d != int64(len(lost)) {
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
	if d := p.discarded(); d != 0 {
		t.Fatalf("discarded %d bytes with a reader present", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestOutputWriteDiscardsWithoutReader covers the buffered path (a
// terminal's output, and the copying fallback): once the reader has been
// seen and has left, writes are discarded and counted, and go through again
// once a reader opens.
func TestOutputWriteDiscardsWithoutReader(t *testing.T) {
	path := mkfifo(t, "out")
	var logged strings.Builder
	first, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	o, err := openOutputFIFO(path, "stdout", Config{Log: testLogger(&logged), ExecID: "probe"})
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	_ = first.Close() // the reader seen at open has left
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
	o.finish()
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
