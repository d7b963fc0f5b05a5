package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ttyTimeout bounds each wait for text on the terminal and for ctr's exit.
const ttyTimeout = 20 * time.Second

// TestTTYRun types into `ctr run -t` on a terminal the test owns: the shell
// in the container answers, sees the window size ctr forwards on SIGWINCH
// (ResizePty), and its exit code becomes ctr's.
func TestTTYRun(t *testing.T) {
	t.Parallel()
	scenarioTTYRun(t, sharedDaemon(t))
}

func scenarioTTYRun(t *testing.T, d *daemon) {
	id := d.newID("tty")
	removeOnCleanup(t, d, id)
	term := startTermCtr(t, d, d.runArgs([]string{"-t", "--rm"}, id, "/bin/sh")...)

	term.checkShell(t)
	term.send(t, "exit 3\r")
	if code := term.wait(t); code != 3 {
		t.Errorf("ctr run -t: want exit 3 from `exit 3`; got %d\nscreen: %q", code, term.text())
	}
	assertNoLeftovers(t, d, id)
}

// TestTTYExec does the same through `ctr task exec -t` into a running
// container: the exec gets a terminal of its own.
func TestTTYExec(t *testing.T) {
	t.Parallel()
	scenarioTTYExec(t, sharedDaemon(t))
}

func scenarioTTYExec(t *testing.T, d *daemon) {
	id := d.newID("ttyexec")
	removeOnCleanup(t, d, id)
	if r := d.run(t, []string{"-d"}, id, "/bin/sleep", "1000"); r.code != 0 {
		t.Fatalf("run -d: %v", r)
	}
	waitTaskStatus(t, d, id, "RUNNING")
	term := startTermCtr(t, d, "task", "exec", "-t", "--exec-id", "e1", id, "/bin/sh")

	term.checkShell(t)
	term.send(t, "exit 3\r")
	if code := term.wait(t); code != 3 {
		t.Errorf("ctr task exec -t: want exit 3 from `exit 3`; got %d\nscreen: %q", code, term.text())
	}
	if pids := taskPids(t, d, id); len(pids) != 1 {
		t.Errorf("after the exec exited: want only the init in ctr task ps; got %v", pids)
	}
	d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
	waitTaskStatus(t, d, id, "STOPPED")
	d.mustCtr(t, "task", "rm", id)
	d.mustCtr(t, "container", "rm", id)
	assertNoLeftovers(t, d, id)
}

// TestTTYOutputDrainedAtExit: everything a process writes to its terminal
// just before it exits reaches the client before the end of the output.
func TestTTYOutputDrainedAtExit(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	id := d.newID("ttyseq")
	removeOnCleanup(t, d, id)
	term := startTermCtr(t, d, d.runArgs([]string{"-t", "--rm"}, id, "/bin/seq", "1", "30000")...)

	if code := term.wait(t); code != 0 {
		t.Errorf("ctr run -t seq: want exit 0; got %d", code)
	}
	// ctr has exited: it read the output to EOF before deleting the task.
	lines := strings.Split(strings.TrimSuffix(term.text(), "\n"), "\n")
	if n := len(lines); n != 30000 || lines[0] != "1" || lines[n-1] != "30000" {
		t.Errorf("want the 30000 lines of seq 1 30000; got %d, last %q", n, lines[n-1])
	}
	assertNoLeftovers(t, d, id)
}

// removeOnCleanup kills and removes the task and container id at cleanup,
// for a test that failed before it did so itself.
func removeOnCleanup(t *testing.T, d *daemon, id string) {
	t.Helper()
	t.Cleanup(func() {
		if _, _, ok := taskStatus(t, d, id); ok {
			d.ctr(t, "task", "kill", "-s", "SIGKILL", id)
			d.ctr(t, "task", "rm", "-f", id)
		}
		d.ctr(t, "container", "rm", id) // fails harmlessly if removed
	})
}

// checkShell drives an interactive /bin/sh: a computed answer, the initial
// window size (24x80, set before ctr started) and a resize to 30x100.
func (c *termCtr) checkShell(t *testing.T) {
	t.Helper()
	c.expect(t, 0, regexp.MustCompile(`/ # `)) // busybox's prompt for root in /
	mark := c.len()
	c.send(t, "echo $((6*7))\r") // the echo of the command line has no 42
	c.expect(t, mark, regexp.MustCompile(`\n42\n`))

	c.waitSize(t, 24, 80) // ctr's first ResizePty, sent after start
	c.resize(t, 30, 100)  // ctr gets SIGWINCH and calls ResizePty
	c.waitSize(t, 30, 100)
}

// termCtr is ctr running on a pty the test owns, as on a user's terminal:
// ctr is a session leader with the slave as controlling terminal and stdio;
// the test types into the master and reads the screen from it.
type termCtr struct {
	master *os.File // pollable, so the reader can be stopped by Close
	cmd    *exec.Cmd
	cancel context.CancelFunc
	done   chan struct{} // closed when cmd.Wait returned
	read   chan struct{} // closed when the reader stopped

	mu     sync.Mutex    // guards screen
	screen []byte        // everything ctr wrote to the terminal, without '\r'
	more   chan struct{} // receives after each read (capacity 1, never blocks the reader)
}

// startTermCtr starts ctr with args on a new 24x80 terminal. Cleanup kills
// ctr if it still runs and waits for it and for the reader.
func startTermCtr(t *testing.T, d *daemon, args ...string) *termCtr {
	t.Helper()
	return startOnTerminal(t, d.flavor.ctr, d.ctrArgs(args), nil)
}

// startOnTerminal is startTermCtr for any client: bin with argv (after
// argv[0]) and env (nil: the test's).
func startOnTerminal(t *testing.T, bin string, argv, env []string) *termCtr {
	t.Helper()
	master, slave := openTerminal(t, 24, 80)
	ctx, cancel := context.WithTimeout(context.Background(), ctrTimeout)
	c := &termCtr{master: master, cancel: cancel, done: make(chan struct{}), read: make(chan struct{}), more: make(chan struct{}, 1)}
	c.cmd = exec.CommandContext(ctx, bin, argv...)
	c.cmd.Env = env
	c.cmd.Stdin, c.cmd.Stdout, c.cmd.Stderr = slave, slave, slave
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0} // Ctty: ctr's fd 0
	err := c.cmd.Start()
	_ = slave.Close() // ctr has its own copies; the master reads EIO once they are gone
	if err != nil {
		cancel()
		_ = master.Close()
		t.Fatalf("start %s %s: %v", filepath.Base(bin), strings.Join(argv, " "), err)
	}
	go func() { // owned by c: cleanup waits for done
		_ = c.cmd.Wait()
		close(c.done)
	}()
	go c.readScreen() // owned by c: ends at EIO or when cleanup closes the master
	t.Cleanup(func() {
		c.cancel()
		<-c.done
		_ = c.master.Close()
		<-c.read
		if t.Failed() {
			t.Logf("terminal of %s %s:\n%q", filepath.Base(bin), strings.Join(argv, " "), c.text())
		}
	})
	return c
}

// openTerminal allocates a pty of rows x cols: a non-blocking master (the
// test's) and the slave (ctr's), opened without becoming the test's
// controlling terminal.
func openTerminal(t *testing.T, rows, cols uint16) (master, slave *os.File) {
	t.Helper()
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	master = os.NewFile(uintptr(m), "/dev/ptmx") // non-blocking: the poller serves it
	fail := func(what string, err error) {
		_ = master.Close()
		t.Fatalf("%s: %v", what, err)
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		fail("unlockpt", err)
	}
	n, err := unix.IoctlGetInt(m, unix.TIOCGPTN)
	if err != nil {
		fail("ptsname", err)
	}
	if err := unix.IoctlSetWinsize(m, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		fail("set window size", err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		fail("open pty slave", err)
	}
	return master, slave
}

func (c *termCtr) readScreen() {
	defer close(c.read)
	buf := make([]byte, 32<<10)
	for {
		n, err := c.master.Read(buf)
		if n > 0 {
			c.mu.Lock()
			// ctr may leave the terminal cooked (ONLCR: \r\r\n): lines
			// end in \n here whatever the modes.
			c.screen = append(c.screen, bytes.ReplaceAll(buf[:n], []byte("\r"), nil)...)
			c.mu.Unlock()
			select {
			case c.more <- struct{}{}:
			default: // a wake-up is pending already
			}
		}
		if err != nil {
			return // EIO: ctr is gone; or cleanup closed the master
		}
	}
}

func (c *termCtr) text() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.screen)
}

func (c *termCtr) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.screen)
}

// send types s.
func (c *termCtr) send(t *testing.T, s string) {
	t.Helper()
	if _, err := c.master.Write([]byte(s)); err != nil {
		t.Fatalf("type %q: %v", s, err)
	}
}

// expect waits until the screen after offset from matches re and returns the
// submatches. It fails t after ttyTimeout or if ctr's output ended first.
func (c *termCtr) expect(t *testing.T, from int, re *regexp.Regexp) []string {
	t.Helper()
	m, ok := c.await(from, re, ttyTimeout)
	if !ok {
		t.Fatalf("terminal: want %q after offset %d within %s; screen: %q", re, from, ttyTimeout, c.text())
	}
	return m
}

func (c *termCtr) await(from int, re *regexp.Regexp, timeout time.Duration) ([]string, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		c.mu.Lock()
		m := re.FindStringSubmatch(string(c.screen[from:]))
		c.mu.Unlock()
		if m != nil {
			return m, true
		}
		select {
		case <-c.more:
		case <-c.read:
			c.mu.Lock()
			m := re.FindStringSubmatch(string(c.screen[from:]))
			c.mu.Unlock()
			return m, m != nil
		case <-timer.C:
			return nil, false
		}
	}
}

// waitSize asks `stty size` until the container's terminal is rows x cols:
// ctr forwards a size asynchronously, so an answer may predate it.
func (c *termCtr) waitSize(t *testing.T, rows, cols int) {
	t.Helper()
	want := fmt.Sprintf("%d %d", rows, cols)
	answer := regexp.MustCompile(`\n(\d+ \d+|stty: .*)\n`) // size 0x0: "stty: standard input"
	var got []string
	deadline := time.Now().Add(ttyTimeout)
	for time.Now().Before(deadline) {
		mark := c.len()
		c.send(t, "stty size\r")
		got = c.expect(t, mark, answer)
		if got[1] == want {
			return
		}
	}
	t.Fatalf("container terminal size: want %q (rows cols) within %s; last answer %q", want, ttyTimeout, got)
}

// resize sets the test terminal's size; the kernel sends ctr SIGWINCH.
func (c *termCtr) resize(t *testing.T, rows, cols uint16) {
	t.Helper()
	rc, err := c.master.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	ws := &unix.Winsize{Row: rows, Col: cols}
	if cerr := rc.Control(func(fd uintptr) { err = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, ws) }); cerr != nil || err != nil {
		t.Fatalf("resize test terminal: %v %v", cerr, err)
	}
}

// wait waits for ctr to exit and returns its exit code; -1 if it had to be
// killed after ttyTimeout.
func (c *termCtr) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(ttyTimeout):
		c.cancel()
		<-c.done
		t.Errorf("ctr did not exit within %s", ttyTimeout)
	}
	<-c.read // the rest of the screen
	return c.cmd.ProcessState.ExitCode()
}
