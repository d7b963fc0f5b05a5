package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

const (
	ctrTimeout  = 2 * time.Minute
	stopTimeout = 10 * time.Second
	// runcRoot is the runc --root parent both shims default to. Every
	// containerd on the machine shares it, hence a namespace of our own.
	runcRoot = "/run/containerd/runc"
	// shimSocketDir is where containerd 1.6's and 2.x's shims put their sockets.
	shimSocketDir = "/run/containerd/s"
)

// daemon is the private containerd: own root, state, sockets and namespace.
// It finds both shims through the PATH it was started with.
type daemon struct {
	dir     string // holds everything below
	address string // grpc socket, also the shims' -address
	ns      string // the only namespace the bench uses
	fifoDir string // ctr --fifo-dir, so ctr stays out of /run/containerd/fifo
	logPath string // containerd's stdout and stderr, shim logs included
	ctrBin  string
	runc    string

	cmd     *exec.Cmd
	done    chan struct{} // closed once cmd.Wait has returned
	waitErr error         // cmd.Wait's result; read only after done is closed
}

// configTemplate keeps containerd off what the machine's own containerd
// uses. Disabled: CRI (1.6 and 2.x plugin ids), NRI (2.x: one socket per
// machine), snapshotters that cannot work here, and opt (/opt/containerd).
// Ids a version does not know are ignored.
const configTemplate = `version = 2
root = %q
state = %q
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.cri.v1.images",
  "io.containerd.cri.v1.runtime",
  "io.containerd.nri.v1.nri",
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  address = ""
  level = "info"
`

// startDaemon starts containerd with PATH path and waits until it answers.
// On error nothing is left running.
func startDaemon(ctx context.Context, dir string, t tools, path string) (_ *daemon, retErr error) {
	d := &daemon{
		dir:     dir,
		address: filepath.Join(dir, "c.sock"),
		ns:      fmt.Sprintf("leanshim-bench-%d", os.Getpid()),
		fifoDir: filepath.Join(dir, "fifo"),
		logPath: filepath.Join(dir, "containerd.log"),
		ctrBin:  t.ctr,
		runc:    t.runc,
		done:    make(chan struct{}),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if len(d.address)+len(".ttrpc") >= 100 {
		return nil, fmt.Errorf("socket path %s too long for sun_path", d.address)
	}
	config := fmt.Sprintf(configTemplate, filepath.Join(dir, "root"), filepath.Join(dir, "state"), d.address, d.address+".ttrpc")
	configPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
		return nil, err
	}
	logFile, err := os.Create(d.logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own copy
	d.cmd = exec.Command(t.containerd, "--config", configPath)
	d.cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "PATH=") }),
		"PATH="+path)
	d.cmd.Stdout, d.cmd.Stderr = logFile, logFile
	// Own process group: a ^C aimed at the bench must not reach containerd
	// before the bench has removed its containers.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	// Owned by d: stop waits for done.
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.done)
	}()
	defer func() {
		if retErr != nil {
			_ = d.terminate()
		}
	}()
	return d, d.waitReady(ctx)
}

func (d *daemon) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-d.done:
			return fmt.Errorf("containerd exited during start-up (%v):\n%s", d.waitErr, tail(d.logPath))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if conn, err := net.Dial("unix", d.address); err == nil {
			_ = conn.Close()
			return nil
		}
	}
	return fmt.Errorf("containerd socket %s not ready after 20s:\n%s", d.address, tail(d.logPath))
}

// command returns `ctr --address A -n NS args...`, bounded by ctrTimeout
// unless ctx has an earlier deadline. The caller sets its stdio.
func (d *daemon) command(ctx context.Context, args ...string) (*exec.Cmd, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, ctrTimeout)
	cmd := exec.CommandContext(ctx, d.ctrBin, append([]string{"--address", d.address, "-n", d.ns}, args...)...)
	return cmd, cancel
}

// ctr runs ctr and returns its stdout; an error carries its stderr.
func (d *daemon) ctr(ctx context.Context, args ...string) (string, error) {
	cmd, cancel := d.command(ctx, args...)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// timed runs ctr and returns how long it took, from fork to reaped exit.
func (d *daemon) timed(ctx context.Context, args ...string) (time.Duration, error) {
	start := time.Now()
	_, err := d.ctr(ctx, args...)
	return time.Since(start), err
}

// runArgs builds `run [flags] --runtime RT --fifo-dir F --rootfs ROOTFS id argv...`.
// ctr's --rootfs is a boolean: the rootfs path takes the image's place.
func (b *bench) runArgs(s shim, flags []string, id string, argv ...string) []string {
	args := append([]string{"run"}, flags...)
	args = append(args, "--runtime", s.runtime, "--fifo-dir", b.d.fifoDir, "--rootfs", b.rootfs, id)
	return append(args, argv...)
}

// taskPids returns the init pid of every task in the namespace, by id.
func (d *daemon) taskPids(ctx context.Context) (map[string]int, error) {
	out, err := d.ctr(ctx, "task", "ls")
	if err != nil {
		return nil, err
	}
	pids := map[string]int{}
	for _, line := range strings.Split(out, "\n")[1:] { // skip the header
		f := strings.Fields(line)
		if len(f) < 3 || f[2] != "RUNNING" {
			continue
		}
		var pid int
		if _, err := fmt.Sscan(f[1], &pid); err == nil && pid > 0 {
			pids[f[0]] = pid
		}
	}
	return pids, nil
}

// remove kills and deletes task and container id.
func (d *daemon) remove(ctx context.Context, id string) error {
	_, terr := d.ctr(ctx, "task", "rm", "-f", id)
	_, cerr := d.ctr(ctx, "container", "rm", id)
	if cerr != nil {
		return errors.Join(terr, cerr)
	}
	return nil
}

// purge kills and deletes every task and container in the namespace and
// returns their ids.
func (d *daemon) purge() []string {
	ctx, cancel := context.WithTimeout(context.Background(), ctrTimeout)
	defer cancel()
	out, _ := d.ctr(ctx, "container", "ls", "-q")
	ids := strings.Fields(out)
	_ = parallel(len(ids), func(i int) error { return d.remove(ctx, ids[i]) })
	return ids
}

// stop removes what is left in the namespace, stops containerd, then
// removes by hand whatever that missed: runc containers, shim processes
// (named in shimNames) and the per-namespace dirs runc never removes.
func (d *daemon) stop(shimNames []string) error {
	var errs []error
	if left := d.purge(); len(left) > 0 {
		errs = append(errs, fmt.Errorf("containers still present at shutdown: %s", strings.Join(left, ", ")))
	}
	errs = append(errs, d.terminate())
	errs = append(errs, d.killLeftovers(shimNames)...)
	dirs := []string{filepath.Join(runcRoot, d.ns), filepath.Join("/sys/fs/cgroup", d.ns)}
	cgroups, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", d.ns))
	for _, dir := range append(dirs, cgroups...) {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("namespace dir not empty after cleanup: %w", err))
		}
	}
	return errors.Join(errs...)
}

// terminate sends SIGTERM, then SIGKILL after stopTimeout, and waits.
func (d *daemon) terminate() error {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return nil
	case <-time.After(stopTimeout):
	}
	_ = d.cmd.Process.Kill()
	<-d.done
	return fmt.Errorf("containerd ignored SIGTERM for %s, killed", stopTimeout)
}

// killLeftovers deletes containers runc still knows in the namespace and
// kills shims still serving it. Only reached when containerd could not.
func (d *daemon) killLeftovers(shimNames []string) []error {
	var errs []error
	root := filepath.Join(runcRoot, d.ns)
	if out, err := exec.Command(d.runc, "--root", root, "list", "-q").Output(); err == nil {
		for _, id := range strings.Fields(string(out)) {
			errs = append(errs, fmt.Errorf("runc container %s left over, deleted", id))
			_ = exec.Command(d.runc, "--root", root, "delete", "-f", id).Run()
		}
	}
	for _, pid := range shimsOfNamespace(d.ns, shimNames) {
		sockets := listeningSockets(pid)
		errs = append(errs, fmt.Errorf("shim pid %d left over, killed", pid))
		_ = syscall.Kill(pid, syscall.SIGKILL)
		waitGone(pid, 5*time.Second)
		for _, s := range sockets {
			if strings.HasPrefix(s, shimSocketDir+"/") {
				_ = os.Remove(s)
			}
		}
	}
	return errs
}

// tail returns the last 4 KiB of the file at path.
func tail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(data) > 4096 {
		data = data[len(data)-4096:]
	}
	return string(data)
}
