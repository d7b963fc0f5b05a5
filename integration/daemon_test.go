package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	daemonStartTimeout = 20 * time.Second
	daemonStopTimeout  = 10 * time.Second
	ctrTimeout         = 60 * time.Second
	// runcRoot is the runc --root parent both runc shims default to; it is
	// shared by every containerd on the machine, hence one namespace per daemon.
	runcRoot = "/run/containerd/runc"
	// v2Plugin is the runtime plugin id naming the bundle and work dirs.
	v2Plugin = "io.containerd.runtime.v2.task"
)

// daemonSeq numbers daemons within this test process, for unique namespaces.
var daemonSeq atomic.Int64

// daemon is a containerd started by these tests, with private root, state and
// sockets, and a namespace no other daemon on the machine uses.
type daemon struct {
	dir     string // short temp dir holding everything below
	root    string // containerd root (metadata, work dirs)
	state   string // containerd state (bundles)
	address string // grpc socket, also the shims' -address
	ns      string // the only namespace tests use on this daemon
	fifoDir string // ctr --fifo-dir, so ctr stays out of /run/containerd/fifo
	logPath string // containerd's stdout+stderr, shim logs included

	cmd     *exec.Cmd
	done    chan struct{} // closed once cmd.Wait has returned
	waitErr error         // cmd.Wait's result; read only after done is closed

	finalLog string // tail of the log, kept by stop before it removes dir

	ids atomic.Int64 // for newID
}

type daemonConfig struct {
	logLevel string
	extra    string
}

// daemonOption changes the config.toml of one daemon.
type daemonOption func(*daemonConfig)

// withDebug makes containerd log at debug level, which also passes -debug to
// the shims it starts.
func withDebug() daemonOption {
	return func(c *daemonConfig) { c.logLevel = "debug" }
}

// withExtraConfig appends TOML to the generated config.toml.
func withExtraConfig(toml string) daemonOption {
	return func(c *daemonConfig) { c.extra += "\n" + toml + "\n" }
}

// configTemplate keeps containerd off everything the machine's own containerd
// uses, except what runc shims share by design (runcRoot, /run/containerd/s).
// Disabled: CRI (slow, needs CNI), snapshotters that cannot work on this
// kernel/filesystem, and the opt plugin, which would create /opt/containerd.
const configTemplate = `version = 2
root = %q
state = %q
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
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
  level = %q
%s`

// startContainerd starts a private daemon for tb and stops it in tb.Cleanup,
// printing its log if tb failed.
func startContainerd(tb testing.TB, opts ...daemonOption) *daemon {
	tb.Helper()
	d, err := newDaemon(opts...)
	if err != nil {
		tb.Fatalf("start containerd: %v", err)
	}
	tb.Cleanup(func() {
		if err := d.stop(); err != nil {
			tb.Errorf("stop containerd: %v", err)
		}
		if tb.Failed() {
			tb.Logf("containerd log (%s):\n%s", d.logPath, d.finalLog)
		}
	})
	return d
}

// sharedDaemon returns the package's daemon. If tb fails, the daemon log
// written while tb ran (other parallel tests' lines included) is printed.
func sharedDaemon(tb testing.TB) *daemon {
	tb.Helper()
	var offset int64
	if fi, err := os.Stat(shared.logPath); err == nil {
		offset = fi.Size()
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("containerd log (%s) since this test started:\n%s", shared.logPath, readTail(shared.logPath, offset))
		}
	})
	return shared
}

// newDaemon starts containerd and waits until its grpc socket accepts
// connections. On error nothing is left running.
func newDaemon(opts ...daemonOption) (_ *daemon, retErr error) {
	cfg := daemonConfig{logLevel: "info"}
	for _, o := range opts {
		o(&cfg)
	}
	dir, err := os.MkdirTemp(shortTempBase(), "lsd")
	if err != nil {
		return nil, err
	}
	d := &daemon{
		dir:     dir,
		root:    filepath.Join(dir, "root"),
		state:   filepath.Join(dir, "state"),
		address: filepath.Join(dir, "c.sock"),
		ns:      fmt.Sprintf("lst%dx%d", os.Getpid(), daemonSeq.Add(1)),
		fifoDir: filepath.Join(dir, "fifo"),
		logPath: filepath.Join(dir, "containerd.log"),
		done:    make(chan struct{}),
	}
	defer func() {
		if retErr != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	if len(d.address)+len(".ttrpc") >= 100 {
		return nil, fmt.Errorf("socket path %s too long for sun_path", d.address)
	}
	config := fmt.Sprintf(configTemplate, d.root, d.state, d.address, d.address+".ttrpc", cfg.logLevel, cfg.extra)
	configPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
		return nil, err
	}
	if err := d.start(configPath); err != nil {
		return nil, err
	}
	if err := d.waitReady(); err != nil {
		_ = d.terminate()
		return nil, err
	}
	return d, nil
}

func (d *daemon) start(configPath string) error {
	logFile, err := os.Create(d.logPath)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child has its own copy
	d.cmd = exec.Command(suite.containerd, "--config", configPath)
	d.cmd.Env = withPath(os.Environ(), suite.shimDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	d.cmd.Stdout, d.cmd.Stderr = logFile, logFile
	// Own process group: a ^C aimed at `go test` must not reach containerd
	// before cleanup has killed the tasks.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	// Owned by d: terminate waits for done.
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.done)
	}()
	return nil
}

func withPath(env []string, path string) []string {
	env = slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "PATH=") })
	return append(env, "PATH="+path)
}

func (d *daemon) waitReady() error {
	ok := poll(daemonStartTimeout, func() bool {
		select {
		case <-d.done:
			return true
		default:
		}
		conn, err := net.Dial("unix", d.address)
		if err != nil {
			return false
		}
		_ = conn.Close()
		return true
	})
	select {
	case <-d.done:
		return fmt.Errorf("containerd exited during start-up (%v):\n%s", d.waitErr, readTail(d.logPath, 0))
	default:
	}
	if !ok {
		return fmt.Errorf("containerd socket %s not ready after %s:\n%s", d.address, daemonStartTimeout, readTail(d.logPath, 0))
	}
	return nil
}

// stop removes whatever tests left in the daemon's namespace, stops the
// daemon, then removes its dirs and the per-namespace dirs runc leaves behind.
// It reports anything that had to be cleaned up forcibly.
func (d *daemon) stop() error {
	var errs []error
	if purged := d.purge(); len(purged) > 0 {
		errs = append(errs, fmt.Errorf("tasks/containers still present at shutdown: %s", strings.Join(purged, ", ")))
	}
	if err := d.terminate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, d.removeNamespaceDirs()...)
	if mounts := mountsUnder(d.dir); len(mounts) > 0 {
		// Never RemoveAll across a mount: it would delete the mounted tree.
		for _, m := range slices.Backward(mounts) {
			_ = syscall.Unmount(m, syscall.MNT_DETACH)
		}
		errs = append(errs, fmt.Errorf("mounts left under %s: %s", d.dir, strings.Join(mounts, ", ")))
	}
	d.finalLog = readTail(d.logPath, 0)
	if len(mountsUnder(d.dir)) == 0 {
		if err := os.RemoveAll(d.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// purge kills and deletes every task and container in d.ns, through containerd.
func (d *daemon) purge() []string {
	ctx := context.Background()
	var purged []string
	for _, id := range strings.Fields(d.ctrContext(ctx, "task", "ls", "-q").stdout) {
		purged = append(purged, "task "+id)
		d.ctrContext(ctx, "task", "kill", "-s", "SIGKILL", id)
		d.ctrContext(ctx, "task", "rm", "-f", id)
	}
	for _, id := range strings.Fields(d.ctrContext(ctx, "container", "ls", "-q").stdout) {
		purged = append(purged, "container "+id)
		d.ctrContext(ctx, "container", "rm", id)
	}
	return purged
}

// terminate sends SIGTERM, then SIGKILL after daemonStopTimeout, and waits.
func (d *daemon) terminate() error {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return nil
	case <-time.After(daemonStopTimeout):
	}
	_ = d.cmd.Process.Kill()
	<-d.done
	return fmt.Errorf("containerd ignored SIGTERM for %s, killed", daemonStopTimeout)
}

// removeNamespaceDirs removes the dirs runc creates per namespace and never
// removes: the runc root and the cgroup parents. They must be empty by now.
func (d *daemon) removeNamespaceDirs() []error {
	dirs := []string{filepath.Join(runcRoot, d.ns)}
	cgroups, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", d.ns))
	dirs = append(dirs, cgroups...)
	dirs = append(dirs, filepath.Join("/sys/fs/cgroup", d.ns))
	var errs []error
	for _, dir := range dirs {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("namespace dir not empty after all containers were deleted: %w", err))
		}
	}
	return errs
}

// newID returns a container id unique on d, e.g. "echo-3".
func (d *daemon) newID(prefix string) string {
	return prefix + "-" + strconv.FormatInt(d.ids.Add(1), 10)
}

// bundleDir is where containerd puts the task bundle (PROTOCOL.md §1.2).
func (d *daemon) bundleDir(id string) string {
	return filepath.Join(d.state, v2Plugin, d.ns, id)
}

// workDir is the bundle's work dir under containerd's root.
func (d *daemon) workDir(id string) string {
	return filepath.Join(d.root, v2Plugin, d.ns, id)
}

// poll calls cond every 20ms until it returns true or timeout passes, and
// reports whether it did. This is the only way tests wait for state they
// cannot be told about.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
}

// readTail returns path from offset on, at most the last 64 KiB of it.
func readTail(path string, offset int64) string {
	const limit = 64 << 10
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	if offset > int64(len(data)) {
		offset = 0
	}
	data = data[offset:]
	if len(data) > limit {
		data = append([]byte("...\n"), data[len(data)-limit:]...)
	}
	return string(data)
}
