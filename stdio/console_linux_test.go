package stdio

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const consoleTestTimeout = 10 * time.Second

// openPty returns a pty's master fd and its slave as a pollable *os.File,
// both closed at cleanup. The slave is in raw mode unless canonical is set,
// so bytes pass unchanged. (No File.Fd here: it would make a file blocking.)
func openPty(t *testing.T, canonical bool) (master int, slave *os.File) {
	t.Helper()
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	t.Cleanup(func() { _ = unix.Close(m) })
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil { // unlockpt(3)
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(m, unix.TIOCGPTN) // ptsname(3)
	if err != nil {
		t.Fatalf("ptsname: %v", err)
	}
	name := fmt.Sprintf("/dev/pts/%d", n)
	s, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open slave: %v", err)
	}
	slave = os.NewFile(uintptr(s), name) // non-blocking: pollable
	t.Cleanup(func() { _ = slave.Close() })
	tio, err := unix.IoctlGetTermios(s, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Lflag &^= unix.ECHO // the tests read only what they write
	if !canonical {         // cfmakeraw(3)
		tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		tio.Oflag &^= unix.OPOST
		tio.Lflag &^= unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	}
	if err := unix.IoctlSetTermios(s, unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	return m, slave
}

// sendFds plays the runtime: it connects to the console socket and sends fds
// (SCM_RIGHTS) with the pty's name as payload, as runc does.
func sendFds(t *testing.T, socket string, fds ...int) {
	t.Helper()
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		t.Fatalf("dial console socket: %v", err)
	}
	defer conn.Close()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := conn.WriteMsgUnix([]byte("/dev/pts/0"), oob, nil); err != nil {
		t.Fatalf("send fds: %v", err)
	}
}

// checkFDs fails t if fds opened during the test are still open at its end.
// Call it first: cleanups run last-in first-out.
func checkFDs(t *testing.T) {
	t.Helper()
	before := openFDs(t)
	t.Cleanup(func() {
		for fd, target := range openFDs(t) {
			if _, ok := before[fd]; !ok {
				t.Errorf("fd %s (%s) opened during the test is still open", fd, target)
			}
		}
	})
}

// openFDs maps this process's open fds to what they point to.
func openFDs(t *testing.T) map[string]string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	fds := make(map[string]string, len(ents))
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if target != fmt.Sprintf("/proc/%d/fd", os.Getpid()) { // ReadDir's own
			fds[e.Name()] = target
		}
	}
	return fds
}

// openConsolePipes opens a terminal's streams on fresh FIFOs and returns them
// with the client's ends: stdin for writing, stdout for reading.
func openConsolePipes(t *testing.T) (p *Pipes, stdin, stdout *os.File) {
	t.Helper()
	in, out := mkfifo(t, "in"), mkfifo(t, "out")
	p, err := Open(Config{Terminal: true, Stdin: in, Stdout: "fifo://" + out, Stderr: mkfifo(t, "unused")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if stdout, err = os.OpenFile(out, os.O_RDONLY, 0); err != nil { // as ctr does
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdout.Close() })
	if stdin, err = os.OpenFile(in, os.O_WRONLY, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdin.Close() })
	return p, stdin, stdout
}

// receive sends master to p's console socket and has p receive it.
func receive(t *testing.T, p *Pipes, master int) {
	t.Helper()
	sendFds(t, p.ConsoleSocket(), master)
	ctx, cancel := context.WithTimeout(t.Context(), consoleTestTimeout)
	defer cancel()
	if err := p.ReceiveConsole(ctx); err != nil {
		t.Fatalf("ReceiveConsole: %v", err)
	}
}

func readFull(t *testing.T, r *os.File, n int) string {
	t.Helper()
	_ = r.SetReadDeadline(time.Now().Add(consoleTestTimeout))
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("read %s: got %q: %v", r.Name(), b, err)
	}
	return string(b)
}

// TestConsoleDrainsOnExit: once the process has exited, everything it wrote
// reaches the client, then EOF, even while another process (here the test)
// still holds the slave; and EIO in between (the slave closed and opened
// again) does not end the output.
func TestConsoleDrainsOnExit(t *testing.T) {
	checkFDs(t)
	p, _, stdout := openConsolePipes(t)
	master, slave := openPty(t, false)
	receive(t, p, master)
	// All holders gone: reads of the master fail with EIO until it is
	// opened again.
	if _, err := slave.Write([]byte("before hangup|")); err != nil {
		t.Fatal(err)
	}
	name := slave.Name()
	_ = slave.Close()
	if got := readFull(t, stdout, len("before hangup|")); got != "before hangup|" {
		t.Fatalf("client read %q", got)
	}
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(stdout); got <- b }() // ends at EOF; the test waits for it
	slave, err := os.OpenFile(name, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close() // the holder that outlives the process
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)
	if _, err := slave.Write(data); err != nil { // blocks until copied but the last pty buffers
		t.Fatal(err)
	}
	p.ProcessExited()

	select {
	case b := <-got:
		if !bytes.Equal(b, data) {
			t.Errorf("client got %d bytes, want %d (equal prefix: %v)", len(b), len(data), bytes.HasPrefix(data, b))
		}
	case <-time.After(consoleTestTimeout):
		t.Fatal("no EOF on the stdout FIFO after the process exited")
	}
	ctx, cancel := context.WithTimeout(t.Context(), consoleTestTimeout)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		t.Errorf("Wait: %v", err)
	}
}

// TestConsoleStdinEOF: the shim holds the stdin FIFO until CloseStdin; at EOF
// it types the terminal's EOF, which a canonical reader reads as EOF.
func TestConsoleStdinEOF(t *testing.T) {
	checkFDs(t)
	p, stdin, _ := openConsolePipes(t)
	master, slave := openPty(t, true)
	// The EOF character the process set, not ^D, ends its input.
	rc, err := slave.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		var tio *unix.Termios
		if tio, serr = unix.IoctlGetTermios(int(fd), unix.TCGETS); serr == nil {
			tio.Cc[unix.VEOF] = 'A' & 0x1f // ^A
			serr = unix.IoctlSetTermios(int(fd), unix.TCSETS, tio)
		}
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	receive(t, p, master)
	if _, err := stdin.Write([]byte("line\n")); err != nil {
		t.Fatal(err)
	}
	_ = stdin.Close() // the client detaches
	if got := readFull(t, slave, 5); got != "line\n" {
		t.Fatalf("process read %q", got)
	}
	// The shim's hold: no EOF yet. (A deadline proves an absence.)
	_ = slave.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := slave.Read(make([]byte, 16)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("before CloseStdin: want no input; read %d, %v", n, err)
	}
	if err := p.CloseStdin(); err != nil {
		t.Fatal(err)
	}
	_ = slave.SetReadDeadline(time.Now().Add(consoleTestTimeout))
	if n, err := slave.Read(make([]byte, 16)); n != 0 || err != io.EOF {
		t.Fatalf("after CloseStdin: want EOF (VEOF on an empty line); read %d, %v", n, err)
	}
}

func TestConsoleResize(t *testing.T) {
	checkFDs(t)
	p, _, _ := openConsolePipes(t)
	if err := p.Resize(1, 1); err != nil {
		t.Errorf("Resize before the master arrived: want a no-op; got %v", err)
	}
	master, slave := openPty(t, false)
	receive(t, p, master)
	if err := p.Resize(100, 30); err != nil {
		t.Fatal(err)
	}
	rc, err := slave.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ws *unix.Winsize
	if cerr := rc.Control(func(fd uintptr) { ws, err = unix.IoctlGetWinsize(int(fd), unix.TIOCGWINSZ) }); cerr != nil || err != nil {
		t.Fatal(cerr, err)
	}
	if ws.Col != 100 || ws.Row != 30 {
		t.Errorf("slave window: got %dx%d, want 100x30", ws.Col, ws.Row)
	}
	_ = p.Close()
	if err := p.Resize(80, 24); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Resize after Close: want os.ErrClosed; got %v", err)
	}

	pipes, err := Open(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer pipes.Close()
	if err := pipes.Resize(80, 24); err != nil || pipes.ConsoleSocket() != "" {
		t.Errorf("without a terminal: want no socket and Resize a no-op; got %q, %v", pipes.ConsoleSocket(), err)
	}
	if err := pipes.ReceiveConsole(t.Context()); err != nil {
		t.Errorf("ReceiveConsole without a terminal: %v", err)
	}
}

// TestConsoleToLogger: a terminal whose output goes to a binary:// logger
// (nerdctl run -t, containerd's cio.TerminalBinaryIO): the logger gets the
// terminal's output on its fd 3 and EOF once the process has exited, its fd
// 4 at once; stdin still comes from its FIFO.
func TestConsoleToLogger(t *testing.T) {
	dir := t.TempDir()
	uri := copyLoggerURI(t, dir, "")
	in := mkfifo(t, "in")
	p, err := Open(Config{Terminal: true, Stdin: in, Stdout: uri, Stderr: uri, Start: execStarter, ID: "c1", Namespace: "ns"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	stdin, err := os.OpenFile(in, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	master, slave := openPty(t, false)
	receive(t, p, master)
	if _, err := stdin.Write([]byte("typed")); err != nil {
		t.Fatal(err)
	}
	if got := readFull(t, slave, 5); got != "typed" {
		t.Errorf("process read %q, want %q", got, "typed")
	}
	if _, err := slave.Write([]byte("to the logger")); err != nil {
		t.Fatal(err)
	}
	_ = slave.Close()
	p.ProcessExited()
	ctx, cancel := context.WithTimeout(t.Context(), consoleTestTimeout)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	waitExited(t, p.logger, consoleTestTimeout) // it ends by itself at EOF on fd 3 and 4
	if b, _ := os.ReadFile(filepath.Join(dir, "out")); string(b) != "to the logger" {
		t.Errorf("logger's fd 3 got %q", b)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "err")); err != nil || len(b) != 0 {
		t.Errorf("logger's fd 4 got %q, %v; want EOF and nothing", b, err)
	}
}
