// Command testlogger is a binary:// logger for the integration tests, run by
// the shim under test (or containerd's own) the way containerd's
// runtime/v2/logging.Run expects: fd 3 is the container's stdout, fd 4 its
// stderr, fd 5 the ready pipe, and the query of the log URI comes as
// arguments: "dir <dir>", optionally followed by "mode sigterm".
//
// It records its arguments in <dir>/args and its whole environment in
// <dir>/env, says it is ready with one byte on fd 5, copies fd 3 to
// <dir>/stdout and fd 4 to <dir>/stderr until both end, and then creates
// <dir>/done. A SIGTERM is noted in <dir>/sigterm and otherwise changes
// nothing: like logging.Run's loggers it stops at the streams' EOF. With
// "mode sigterm" it waits for SIGTERM after the EOF before it creates done
// and exits, like a logger that flushes only when told to stop.
package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "testlogger:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	waitTerm := len(args) == 4 && args[2] == "mode" && args[3] == "sigterm"
	if (len(args) != 2 && !waitTerm) || args[0] != "dir" {
		return fmt.Errorf("want arguments: dir <dir> [mode sigterm]; got %q", args)
	}
	dir := args[1]
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	termed := make(chan struct{})
	go func() { // ends with the process
		<-sigs
		_ = os.WriteFile(filepath.Join(dir, "sigterm"), nil, 0o644)
		close(termed)
	}()
	if err := os.WriteFile(filepath.Join(dir, "args"), []byte(strings.Join(args, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	env := strings.Join(os.Environ(), "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "env"), []byte(env), 0o644); err != nil {
		return err
	}
	streams := []struct {
		fd   uintptr
		name string
	}{{3, "stdout"}, {4, "stderr"}}
	errs := make([]error, len(streams))
	var wg sync.WaitGroup
	for i, s := range streams {
		src := os.NewFile(s.fd, s.name)
		dst, err := os.Create(filepath.Join(dir, s.name))
		if err != nil {
			return err
		}
		wg.Go(func() {
			_, err := io.Copy(dst, src)
			if cerr := dst.Close(); err == nil {
				err = cerr
			}
			errs[i] = err
		})
	}
	ready := os.NewFile(5, "ready")
	if _, err := ready.Write([]byte{1}); err != nil {
		return fmt.Errorf("ready: %w", err)
	}
	_ = ready.Close()
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	if waitTerm {
		<-termed
	}
	return os.WriteFile(filepath.Join(dir, "done"), nil, 0o644)
}
