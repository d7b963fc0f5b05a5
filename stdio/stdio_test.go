package stdio

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func mkfifo(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOutputReachesClientWithEOF(t *testing.T) {
	out, errp := mkfifo(t, "out"), mkfifo(t, "err")
	p, err := Open(Config{Stdout: out, Stderr: "fifo://" + errp})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// The client opens its read ends (as ctr does).
	rOut, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer rOut.Close()
	rErr, err := os.Open(errp)
	if err != nil {
		t.Fatal(err)
	}
	defer rErr.Close()

	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)
	c := p.Child()
	go func() { // plays the process
		_, _ = c.Stdout.Write(data)
		_, _ = c.Stdout.Write([]byte("last line without newline"))
		_, _ = c.Stderr.Write([]byte("oops"))
		p.CloseChild()
	}()
	gotErr := make(chan []byte)
	go func() { b, _ := io.ReadAll(rErr); gotErr <- b }()
	got, err := io.ReadAll(rOut) // returns only at EOF: the shim closed the FIFO
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte{}, data...), "last line without newline"...)
	if !bytes.Equal(got, want) {
		t.Fatalf("stdout: got %d bytes, want %d", len(got), len(want))
	}
	if e := <-gotErr; string(e) != "oops" {
		t.Fatalf("stderr %q", e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestStdinHeldUntilCloseStdin(t *testing.T) {
	in := mkfifo(t, "in")
	p, err := Open(Config{Stdin: in})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	defer p.CloseChild() // the process's end
	w, err := os.OpenFile(in, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	_ = w.Close() // the client detaches: the process must not see EOF yet
	c := p.Child()
	buf := make([]byte, 3)
	if _, err := io.ReadFull(c.Stdin, buf); err != nil || string(buf) != "abc" {
		t.Fatalf("read %q, %v", buf, err)
	}
	eof := make(chan error, 1)
	go func() { _, err := c.Stdin.Read(make([]byte, 1)); eof <- err }()
	select {
	case err := <-eof:
		t.Fatalf("stdin ended before CloseStdin: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := p.CloseStdin(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-eof:
		if err != io.EOF {
			t.Fatalf("got %v, want EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no EOF after CloseStdin")
	}
}

func TestFileURI(t *testing.T) {
	log := filepath.Join(t.TempDir(), "sub", "x.log")
	if err := os.MkdirAll(filepath.Dir(log), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(log, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Open(Config{Stdout: "file://" + log, Stderr: "file://" + log})
	if err != nil {
		t.Fatal(err)
	}
	c := p.Child()
	if c.Stdout == nil || c.Stdout != c.Stderr {
		t.Fatal("stdout and stderr must share the log file")
	}
	_, _ = c.Stdout.Write([]byte("out\n"))
	_, _ = c.Stderr.Write([]byte("err\n"))
	p.CloseChild()
	_ = p.Close()
	b, _ := os.ReadFile(log)
	if string(b) != "old\nout\nerr\n" {
		t.Fatalf("log %q", b)
	}
}

func TestNullAndErrors(t *testing.T) {
	p, err := Open(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if c := p.Child(); c.Stdin != nil || c.Stdout != nil || c.Stderr != nil {
		t.Fatal("null io must give /dev/null (nil files)")
	}
	if err := p.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []Config{
		{Stdout: "binary:///usr/bin/logger"},
		{Stdout: filepath.Join(t.TempDir(), "missing")},
		{Stdout: "file://"},
	} {
		if _, err := Open(cfg); err == nil {
			t.Errorf("Open(%+v) succeeded", cfg)
		} else if strings.TrimSpace(err.Error()) == "" {
			t.Errorf("Open(%+v): empty error", cfg)
		}
	}
}

// TestEOFWhileFIFOFull: the process writes more than the FIFO holds and
// exits while nobody reads; once the client reads, it must get every byte
// and then EOF (splice reports EAGAIN, not EOF, while the FIFO is full).
func TestEOFWhileFIFOFull(t *testing.T) {
	out := mkfifo(t, "out")
	p, err := Open(Config{Stdout: out})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	r, err := os.OpenFile(out, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data := make([]byte, 100<<10) // more than the FIFO's 64 KiB
	_, _ = rand.Read(data)
	c := p.Child()
	wrote := make(chan struct{})
	go func() { // plays the process: the pipe takes what the FIFO cannot
		_, _ = c.Stdout.Write(data)
		p.CloseChild()
		close(wrote)
	}()
	<-wrote
	// Wait until the FIFO is full, so the copier sits at EOF behind it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, _ := unix.IoctlGetInt(int(r.Fd()), unix.TIOCINQ)
		if n >= 64<<10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("FIFO holds only %d bytes", n)
		}
		time.Sleep(time.Millisecond)
	}
	if err := unix.SetNonblock(int(r.Fd()), false); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, want %d", len(got), len(data))
	}
}
