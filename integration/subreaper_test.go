package integration

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// subreaperEnv, when set in this test binary's environment, makes it a
// subreaper instead of a test run (TestMain checks it first): it runs its
// arguments as a child (containerd), writes the child's pid to the file the
// variable names, passes SIGTERM and SIGINT on to it, and reaps every child,
// its own and the adopted ones, until none is left. So a containerd killed
// by a test leaves no orphan to this machine's pid 1, which reaps none.
const subreaperEnv = "LEANSHIM_TEST_SUBREAPER"

// isSubreaper reports whether this process was started as a subreaper.
func isSubreaper() bool { return os.Getenv(subreaperEnv) != "" }

// runSubreaper is the subreaper's main; it returns the child's exit code.
func runSubreaper(argv []string) int {
	if len(argv) == 0 {
		fmt.Fprintln(os.Stderr, "subreaper: no command")
		return 2
	}
	// Adopt every orphan below us (prctl(2) PR_SET_CHILD_SUBREAPER).
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "subreaper: %v\n", err)
		return 2
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = os.Environ()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr // files: no copying goroutines
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "subreaper: %v\n", err)
		return 2
	}
	pid := cmd.Process.Pid
	if err := os.WriteFile(os.Getenv(subreaperEnv), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "subreaper: %v\n", err)
	}
	// Lives until this process exits: forwards signals to the child.
	go func() {
		for s := range sigs {
			_ = syscall.Kill(pid, s.(syscall.Signal))
		}
	}()
	code := 0
	for {
		var ws unix.WaitStatus
		// This loop is the process's only wait4 caller (cmd.Wait is never called).
		got, err := unix.Wait4(-1, &ws, 0, nil)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil: // ECHILD: nothing left
			return code
		case got == pid && ws.Signaled():
			code = 128 + int(ws.Signal())
		case got == pid:
			code = ws.ExitStatus()
		}
	}
}
