package stdio

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestConsoleSocketHandshake(t *testing.T) {
	checkFDs(t)
	p, stdin, stdout := openConsolePipes(t)
	sock := p.ConsoleSocket()
	if len(sock) >= len(unix.RawSockaddrUnix{}.Path) {
		t.Errorf("socket path %q is %d bytes, too long for sun_path", sock, len(sock))
	}
	if !strings.HasPrefix(filepath.Base(filepath.Dir(sock)), "leanshim-pty") || filepath.Base(sock) != "pty.sock" {
		t.Errorf("socket path %q: want <tmp>/leanshim-pty*/pty.sock", sock)
	}
	if fi, err := os.Stat(filepath.Dir(sock)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("socket dir: want mode 0700; got %v, %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("console socket: %v %v", fi, err)
	}
	if c := p.Child(); c.Stdin != nil || c.Stdout != nil || c.Stderr != nil {
		t.Errorf("a terminal's process inherits no pipes; got %+v", c)
	}

	master, slave := openPty(t, false)
	receive(t, p, master)
	if _, err := os.Stat(filepath.Dir(sock)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket dir after receive: want it removed; got %v", err)
	}
	if _, err := stdin.Write([]byte("typed")); err != nil {
		t.Fatal(err)
	}
	if got := readFull(t, slave, 5); got != "typed" {
		t.Errorf("process read %q, want %q", got, "typed")
	}
	if _, err := slave.Write([]byte("printed")); err != nil {
		t.Fatal(err)
	}
	if got := readFull(t, stdout, 7); got != "printed" {
		t.Errorf("client read %q, want %q", got, "printed")
	}
}

// TestConsoleReceiveFailures: a runtime that does not send exactly one
// terminal fd is refused, and one that never connects cannot hang the shim.
// Either way Close leaves nothing behind and Wait returns.
func TestConsoleReceiveFailures(t *testing.T) {
	devNull := func(t *testing.T) int {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		return int(f.Fd())
	}
	ptyMaster := func(t *testing.T) int { m, _ := openPty(t, false); return m }
	for _, tc := range []struct {
		name    string
		send    func(t *testing.T, socket string)
		wantErr error
	}{
		{"never connects", nil, context.DeadlineExceeded},
		{"connects, sends nothing", func(t *testing.T, s string) {
			c, err := net.Dial("unix", s)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
		}, context.DeadlineExceeded},
		{"no fd", func(t *testing.T, s string) { sendFds(t, s) }, nil},
		{"two fds", func(t *testing.T, s string) { sendFds(t, s, ptyMaster(t), ptyMaster(t)) }, nil},
		{"not a terminal", func(t *testing.T, s string) { sendFds(t, s, devNull(t)) }, unix.ENOTTY},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkFDs(t)
			p, err := Open(Config{Terminal: true, Stdout: mkfifo(t, "out")})
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Dir(p.ConsoleSocket())
			if tc.send != nil {
				tc.send(t, p.ConsoleSocket())
			}
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			defer cancel()
			err = p.ReceiveConsole(ctx)
			if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
				t.Errorf("ReceiveConsole: want an error (%v); got %v", tc.wantErr, err)
			}
			if err := p.Close(); err != nil {
				t.Error(err)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket dir after Close: want it removed; got %v", err)
			}
			if err := p.Wait(t.Context()); err != nil {
				t.Errorf("Wait after Close: %v", err)
			}
		})
	}
}

// TestConsoleCloseBeforeReceive: a runtime that failed never sends; Close
// alone frees everything.
func TestConsoleCloseBeforeReceive(t *testing.T) {
	checkFDs(t)
	p, _, _ := openConsolePipes(t)
	dir := filepath.Dir(p.ConsoleSocket())
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket dir after Close: want it removed; got %v", err)
	}
	if err := p.Wait(t.Context()); err != nil {
		t.Errorf("Wait after Close: %v", err)
	}
	if err := p.ReceiveConsole(t.Context()); !errors.Is(err, os.ErrClosed) {
		t.Errorf("ReceiveConsole after Close: want os.ErrClosed; got %v", err)
	}
}
