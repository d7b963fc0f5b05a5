package stdio

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// execStarter plays the shim's reaper: nothing else in the test process
// reaps, so os/exec's Wait is safe here.
func execStarter(cmd *exec.Cmd) (func(), error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() { _ = cmd.Wait() }, nil
}

// writeScript writes an executable shell script and returns its path. A
// logger runs with no PATH (only CONTAINER_ID and CONTAINER_NAMESPACE), so
// scripts name their commands by absolute path.
func writeScript(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "logger")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// copyLogger is a well-behaved logger: it records its arguments, copies fd 3
// and fd 4 to files in the dir named by its "dir" argument, says it is ready
// (a byte on fd 5, or with the argument "close", by closing fd 5) and exits
// once both streams reach EOF.
const copyLogger = `
printf '%s\n' "$@" > "$DIR/args"
/bin/cat <&3 > "$DIR/out" 4<&- 5>&- &
/bin/cat <&4 > "$DIR/err" 3<&- 5>&- &
exec 3<&- 4<&-
case " $* " in *" close "*) ;; *) printf R >&5 ;; esac
exec 5>&-
wait
`

// copyLoggerURI returns a binary:// URI for copyLogger writing to dir; extra
// is appended to the query.
func copyLoggerURI(t *testing.T, dir, extra string) string {
	t.Helper()
	// DIR comes through the arguments: find it after the "dir" key.
	script := writeScript(t, `for a in "$@"; do [ "$prev" = dir ] && DIR=$a; prev=$a; done
`+copyLogger)
	return "binary://" + script + "?dir=" + url.QueryEscape(dir) + extra
}

// waitExited waits for the logger to be reaped.
func waitExited(t *testing.T, l *logger, within time.Duration) {
	t.Helper()
	select {
	case <-l.exited:
	case <-time.After(within):
		t.Fatalf("logger still running after %s", within)
	}
}

func TestBinaryLoggerGetsOutput(t *testing.T) {
	for _, ready := range []string{"byte", "close"} {
		t.Run("ready by "+ready, func(t *testing.T) {
			dir := t.TempDir()
			extra := "&b=2&a=1"
			if ready == "close" {
				extra += "&close"
			}
			uri := copyLoggerURI(t, dir, extra)
			p, err := Open(Config{Stdout: uri, Stderr: uri, Start: execStarter, ID: "c1", Namespace: "ns1"})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()

			env, err := os.ReadFile("/proc/" + strconv.Itoa(p.logger.cmd.Process.Pid) + "/environ")
			if err != nil {
				t.Fatal(err)
			}
			if want := "CONTAINER_ID=c1\x00CONTAINER_NAMESPACE=ns1\x00"; string(env) != want {
				t.Errorf("logger environment: want %q; got %q", want, env)
			}
			// The shim copies nothing: Wait has nothing to drain.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if err := p.Wait(ctx); err != nil {
				t.Fatalf("Wait with a binary logger: %v", err)
			}

			data := make([]byte, 1<<20)
			_, _ = rand.Read(data)
			data = append(data, "last line without newline"...)
			c := p.Child()
			if _, err := c.Stdout.Write(data); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Stderr.Write([]byte("oops")); err != nil {
				t.Fatal(err)
			}
			p.CloseChild() // the process is gone: the logger reads EOF and exits
			waitExited(t, p.logger, 10*time.Second)

			if got, _ := os.ReadFile(filepath.Join(dir, "out")); !bytes.Equal(got, data) {
				t.Errorf("logger's stdout: got %d bytes, want %d", len(got), len(data))
			}
			if got, _ := os.ReadFile(filepath.Join(dir, "err")); string(got) != "oops" {
				t.Errorf("logger's stderr: want %q; got %q", "oops", got)
			}
			args, _ := os.ReadFile(filepath.Join(dir, "args"))
			want := "a\n1\nb\n2\n"
			if ready == "close" {
				want += "close\n\n"
			}
			want += "dir\n" + dir + "\n"
			if string(args) != want {
				t.Errorf("logger args: want %q; got %q", want, args)
			}
			start := time.Now()
			_ = p.Close()
			if d := time.Since(start); d > 100*time.Millisecond {
				t.Errorf("Close of an exited logger took %s", d)
			}
		})
	}
}

// TestBinaryV2Logger: binary-v2:// is binary:// whose logger must write a
// byte to fd 5; one that only closes fd 5 is refused, as containerd 2.2+'s
// shim refuses it, and is stopped and reaped.
func TestBinaryV2Logger(t *testing.T) {
	dir := t.TempDir()
	uri := strings.Replace(copyLoggerURI(t, dir, ""), "binary://", "binary-v2://", 1)
	p, err := Open(Config{Stdout: uri, Stderr: uri, Start: execStarter, ID: "c1", Namespace: "ns1"})
	if err != nil {
		t.Fatalf("binary-v2 logger that writes its ready byte: %v", err)
	}
	c := p.Child()
	if _, err := c.Stdout.Write([]byte("v2")); err != nil {
		t.Fatal(err)
	}
	p.CloseChild()
	waitExited(t, p.logger, 10*time.Second)
	if got, _ := os.ReadFile(filepath.Join(dir, "out")); string(got) != "v2" {
		t.Errorf("logger's stdout: want %q; got %q", "v2", got)
	}
	_ = p.Close()

	before := openFds(t)
	closer := strings.Replace(copyLoggerURI(t, t.TempDir(), "&close"), "binary://", "binary-v2://", 1)
	var started *exec.Cmd
	start := func(cmd *exec.Cmd) (func(), error) { started = cmd; return execStarter(cmd) }
	_, _, _, err = startLogger(Config{Stdout: closer, Stderr: closer, Start: start}, defaultLoggerTimeouts())
	if !errors.Is(err, errLoggerNoReady) || !strings.Contains(err.Error(), closer) {
		t.Fatalf("binary-v2 logger that only closes fd 5: want %v naming %s; got %v", errLoggerNoReady, closer, err)
	}
	if started.ProcessState == nil {
		t.Error("startLogger returned before the refused logger was reaped")
	}
	if after := openFds(t); after != before {
		t.Errorf("open fds: %d before, %d after", before, after)
	}
}

// TestBinaryLoggerStdoutOnly: a stream the config does not name goes to
// /dev/null and the logger reads EOF on its fd at once.
func TestBinaryLoggerStdoutOnly(t *testing.T) {
	dir := t.TempDir()
	p, err := Open(Config{Stdout: copyLoggerURI(t, dir, ""), Start: execStarter})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := p.Child()
	if c.Stdout == nil || c.Stderr != nil {
		t.Fatalf("want a stdout pipe and /dev/null for stderr; got %+v", c)
	}
	_, _ = c.Stdout.Write([]byte("x"))
	p.CloseChild()
	waitExited(t, p.logger, 10*time.Second)
	if got, _ := os.ReadFile(filepath.Join(dir, "out")); string(got) != "x" {
		t.Errorf("logger's stdout: want %q; got %q", "x", got)
	}
}

func TestLoggerCmd(t *testing.T) {
	tests := []struct {
		uri      string
		wantPath string
		wantArgs []string
		wantErr  bool
	}{
		{uri: "binary:///usr/bin/lg", wantPath: "/usr/bin/lg"},
		{uri: "binary:///usr/bin/lg?b=2&a=1", wantPath: "/usr/bin/lg", wantArgs: []string{"a", "1", "b", "2"}},
		{uri: "binary:///lg?k=v1&k=v2", wantPath: "/lg", wantArgs: []string{"k", "v1"}},
		{uri: "binary:///lg?flag", wantPath: "/lg", wantArgs: []string{"flag", ""}},
		{uri: "binary:///lg?x=a%20b+c", wantPath: "/lg", wantArgs: []string{"x", "a b c"}},
		{uri: "binary:///dir%20x/lg", wantPath: "/dir x/lg"},
		{uri: "binary://usr/bin/lg", wantErr: true}, // containerd would run /bin/lg
		{uri: "binary://lg", wantErr: true},
		{uri: "binary:lg", wantErr: true},
		{uri: "binary:///lg?%zz", wantErr: true},
		{uri: "file:///lg", wantErr: true},
		{uri: "binary-v2:///usr/bin/lg?b=2&a=1", wantPath: "/usr/bin/lg", wantArgs: []string{"a", "1", "b", "2"}},
		{uri: "binary-v2://usr/bin/lg", wantErr: true},
		{uri: "binary-v3:///lg", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.uri, func(t *testing.T) {
			cmd, err := loggerCmd(tc.uri, "id", "ns")
			if tc.wantErr {
				if err == nil {
					t.Fatalf("want an error; got %v", cmd.Args)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cmd.Path != tc.wantPath || !slices.Equal(cmd.Args[1:], tc.wantArgs) {
				t.Errorf("want %s %q; got %s %q", tc.wantPath, tc.wantArgs, cmd.Path, cmd.Args[1:])
			}
			if want := []string{"CONTAINER_ID=id", "CONTAINER_NAMESPACE=ns"}; !slices.Equal(cmd.Env, want) {
				t.Errorf("env: want %q; got %q", want, cmd.Env)
			}
		})
	}
}

func TestBinaryLoggerFailsToStart(t *testing.T) {
	tests := []struct {
		name, script, want string
		t                  loggerTimeouts
	}{
		{"exits", "exit 3\n", "exited before it was ready", defaultLoggerTimeouts()},
		{"never ready", "exec /bin/sleep 1000\n", "not ready after 200ms", loggerTimeouts{ready: 200 * time.Millisecond}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := openFds(t)
			uri := "binary://" + writeScript(t, tc.script)
			var started *exec.Cmd
			start := func(cmd *exec.Cmd) (func(), error) { started = cmd; return execStarter(cmd) }
			begin := time.Now()
			_, _, _, err := startLogger(Config{Stdout: uri, Stderr: uri, Start: start}, tc.t)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), uri) {
				t.Fatalf("want an error naming %s and saying %q; got %v", uri, tc.want, err)
			}
			if d := time.Since(begin); d > 5*time.Second {
				t.Errorf("failing took %s", d)
			}
			// The logger has been reaped (a SIGKILLed sleep, or sh's exit 3).
			if started.ProcessState == nil {
				t.Fatal("startLogger returned before the logger was reaped")
			}
			if after := openFds(t); after != before {
				t.Errorf("open fds: %d before, %d after", before, after)
			}
		})
	}
	t.Run("missing binary", func(t *testing.T) {
		uri := "binary://" + filepath.Join(t.TempDir(), "missing")
		_, err := Open(Config{Stdout: uri, Stderr: uri, Start: execStarter})
		if err == nil || !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("want ErrNotExist; got %v", err)
		}
	})
}

func TestStatExiting(t *testing.T) {
	tests := []struct {
		name, stat string
		want       bool
	}{
		{"running", "42 (sh) S 1 42 42 0 -1 4194560 100 0 0 0", false},
		{"exiting", "42 (sh) R 1 42 42 0 -1 4194564 100 0 0 0", true},
		{"zombie", "42 (sh) Z 1 42 42 0 -1 4194564 100 0 0 0", true},
		{"dead", "42 (sh) X 1 42 42 0 -1 4194560 100 0 0 0", true},
		{"odd name", "42 (a) S (b) R 1 42 42 0 -1 4194560 1 0", false},
		{"odd name exiting", "42 (a) S (b) R 1 42 42 0 -1 4 1 0", true},
		{"truncated", "42 (sh) S 1 42", false},
		{"garbage", "nonsense", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := statExiting([]byte(tc.stat)); got != tc.want {
				t.Errorf("statExiting(%q) = %v, want %v", tc.stat, got, tc.want)
			}
		})
	}
}

// stubbornLogger is ready at once, never exits at EOF and, with the argument
// "ignore", ignores SIGTERM (an ignored disposition survives exec).
const stubbornLogger = `
[ "$1" = ignore ] && trap '' TERM
printf R >&5
exec 5>&- 3<&- 4<&-
exec /bin/sleep 1000
`

func TestBinaryLoggerStop(t *testing.T) {
	tests := []struct {
		name       string
		query      string
		wantSignal syscall.Signal
	}{
		{"SIGTERM ends it", "", syscall.SIGTERM},
		{"SIGKILL after the kill timeout", "?ignore", syscall.SIGKILL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			uri := "binary://" + writeScript(t, stubbornLogger) + tc.query
			lt := loggerTimeouts{ready: 5 * time.Second, stopWait: 300 * time.Millisecond, kill: 1500 * time.Millisecond}
			l, out, errw, err := startLogger(Config{Stdout: uri, Stderr: uri, Start: execStarter}, lt)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = out.Close(), errw.Close() // the process is gone; the logger does not care
			begin := time.Now()
			l.stop()
			stopped := time.Since(begin)
			if stopped > lt.stopWait+200*time.Millisecond {
				t.Errorf("stop blocked %s; want at most stopWait %s", stopped, lt.stopWait)
			}
			if tc.wantSignal == syscall.SIGKILL {
				select {
				case <-l.exited:
					t.Fatal("a logger ignoring SIGTERM exited before the kill timeout")
				default:
				}
			}
			waitExited(t, l, 10*time.Second)
			elapsed := time.Since(begin)
			ws := l.cmd.ProcessState.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != tc.wantSignal {
				t.Fatalf("logger ended by %v; want signal %v", l.cmd.ProcessState, tc.wantSignal)
			}
			if tc.wantSignal == syscall.SIGKILL && elapsed < lt.kill-50*time.Millisecond {
				t.Errorf("SIGKILL came %s after SIGTERM; want the kill timeout %s", elapsed, lt.kill)
			}
			l.stop() // a second stop does nothing
		})
	}
}

// TestBinaryNoFdLeak opens and closes a logged process twice; the second
// round must leave exactly as many fds open as the first.
func TestBinaryNoFdLeak(t *testing.T) {
	var counts []int
	for range 2 {
		dir := t.TempDir()
		p, err := Open(Config{Stdout: copyLoggerURI(t, dir, ""), Stderr: "x", Start: execStarter})
		if err != nil {
			t.Fatal(err)
		}
		p.CloseChild()
		waitExited(t, p.logger, 10*time.Second)
		_ = p.Close()
		counts = append(counts, openFds(t))
	}
	if counts[0] != counts[1] {
		t.Errorf("open fds after each round: %v", counts)
	}
}

// openFds counts this process's open fds. It opens a pipe first, so the
// runtime's poller (created on first use) is counted every time.
func openFds(t *testing.T) int {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = r.Close(), w.Close()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}
