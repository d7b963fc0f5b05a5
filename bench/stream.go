package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// streamTimeout bounds one throughput run (1 GiB at 10 MiB/s).
const streamTimeout = 2 * time.Minute

// streamPhase writes streamBytes of zeros to the container's stdout, once
// through the FIFO to an attached ctr (which discards it to /dev/null) and
// once into a file:// log, and reports the rate and the shim's CPU per GiB.
// Rounds alternate which shim goes first.
func (b *bench) streamPhase(ctx context.Context) error {
	for _, mode := range []string{"fifo", "file"} {
		var rates, cpu [2][]float64
		for r := range b.cfg.rounds {
			for _, s := range b.order(r) {
				wall, shimCPU, err := b.stream(ctx, s, mode)
				if err != nil {
					return fmt.Errorf("%s, %s: %w", s.label, mode, err)
				}
				k := b.index(s)
				gib := float64(b.cfg.streamBytes) / (1 << 30)
				rates[k] = append(rates[k], float64(b.cfg.streamBytes)/(1<<20)/wall.Seconds())
				cpu[k] = append(cpu[k], shimCPU/gib)
				b.logf("stream %s %s: %.0f MiB/s, shim CPU %.2f s", mode, s.label, rates[k][len(rates[k])-1], shimCPU)
			}
		}
		what := "through the FIFO to ctr"
		if mode == "file" {
			what = "into a file:// log"
		}
		b.res.add("stdout "+what, "MiB/s", 0, median(rates[0]), median(rates[1]), minRatio(1.5))
		b.res.add("shim CPU per GiB "+what+" (utime+stime)", "s/GiB", 3, median(cpu[0]), median(cpu[1]), maxRatio(0.3))
	}
	return nil
}

// stream runs one container that waits for a go file, writes streamBytes
// to stdout with dd in 1 MiB writes (busybox head writes 4 KiB at a time
// and tops out near 200 MiB/s, below both shims), touches a done file and waits for an end file, all
// in the shared rootfs's /tmp. The clock and the shim's CPU time run from
// go to done; the shim is still serving the container when both are read.
func (b *bench) stream(ctx context.Context, s shim, mode string) (wall time.Duration, cpu float64, err error) {
	id := b.newID("stream-"+mode, s)
	mark := func(suffix string) string { return filepath.Join(b.rootfs, "tmp", id+"."+suffix) }
	script := fmt.Sprintf(`while [ ! -e /tmp/%[1]s.go ]; do usleep 2000; done
dd if=/dev/zero bs=1048576 count=%[2]d 2>/dev/null
touch /tmp/%[1]s.done
while [ ! -e /tmp/%[1]s.end ]; do usleep 2000; done`, id, b.cfg.streamBytes>>20)
	flags := []string{"--rm"}
	logPath := filepath.Join(b.logDir, id+".log")
	if mode == "file" {
		flags = append(flags, "--log-uri", "file://"+logPath)
	}
	defer func() {
		for _, p := range []string{mark("go"), mark("done"), mark("end"), logPath} {
			_ = os.Remove(p)
		}
	}()

	cmd, cancel := b.d.command(ctx, b.runArgs(s, flags, id, "/bin/sh", "-c", script)...)
	defer cancel()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr // stdout stays nil: ctr writes it to /dev/null
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	exited := make(chan struct{})
	var waitErr error // cmd.Wait's result, read after exited is closed
	// Joined by the deferred function below, on every path.
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	defer func() {
		_ = os.WriteFile(mark("end"), nil, 0o644) // on failure: let the container finish
		<-exited
		if err == nil && waitErr != nil {
			err = fmt.Errorf("ctr run: %w: %s", waitErr, bytes.TrimSpace(stderr.Bytes()))
		}
		if err == nil {
			err = checkLog(mode, logPath, b.cfg.streamBytes)
		}
	}()

	pid, err := b.waitShim(ctx, s, id, exited)
	if err != nil {
		return 0, 0, err
	}
	before, err := readStat(pid)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	if err := os.WriteFile(mark("go"), nil, 0o644); err != nil {
		return 0, 0, err
	}
	if err := waitFile(ctx, mark("done"), exited); err != nil {
		return 0, 0, fmt.Errorf("%w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	wall = time.Since(start)
	after, err := readStat(pid)
	if err != nil {
		return 0, 0, fmt.Errorf("shim %d gone before the container exited: %w", pid, err)
	}
	return wall, after.cpu - before.cpu, nil
}

// waitShim polls until container id's task runs and returns its shim.
func (b *bench) waitShim(ctx context.Context, s shim, id string, exited <-chan struct{}) (int, error) {
	deadline := time.Now().Add(ctrTimeout)
	for time.Now().Before(deadline) {
		if pid, err := b.shimOfID(ctx, s, id); err == nil {
			return pid, nil
		}
		select {
		case <-exited:
			return 0, errors.New("ctr run exited before the task ran")
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("task %s not running after %s", id, ctrTimeout)
}

// waitFile polls every 2 ms until path exists. It fails if ctr exits first.
func waitFile(ctx context.Context, path string, exited <-chan struct{}) error {
	deadline := time.Now().Add(streamTimeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("ctr run exited before %s appeared", filepath.Base(path))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %s", filepath.Base(path), streamTimeout)
		}
	}
}

// checkLog verifies a file:// log holds every byte written.
func checkLog(mode, path string, want int64) error {
	if mode != "file" {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("file:// log: %w", err)
	}
	if fi.Size() != want {
		return fmt.Errorf("file:// log %s holds %d bytes, want %d", path, fi.Size(), want)
	}
	return nil
}
