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
	dir        string // short temp dir holding everything below
	root       string // containerd root (metadata, work dirs)
	state      string // containerd state (bundles)
	address    string // grpc socket, also the shims' -address
	ns         string // the only namespace tests use on this daemon
	fifoDir    string // ctr --fifo-dir, so ctr stays out of /run/containerd/fifo
	logPath    string // containerd's stdout+stderr, shim logs included
	configPath string

	flavor    flavor // which containerd, ctr and runtime
	socketDir string // where its shims put their sockets
	subreaper bool   // containerd runs under a subreaper (see subreaper_test.go)

	cur     *instance   // the running containerd
	retired []*instance // containerds killed by killAndRestart

	finalLog string // tail of the log, kept by stop before it removes dir

	ids atomic.Int64 // for newID
}

// instance is one containerd process of a daemon (or, with a subreaper, the
// subreaper it runs under).
type instance struct {
	cmd     *exec.Cmd
	pidFile string        // with a subreaper: where it writes containerd's pid
	done    chan struct{} // closed once cmd.Wait has returned
	waitErr error         // cmd.Wait's result; read only after done is closed
}

type daemonConfig struct {
	logLevel  string
	extra     string
	flavor    flavor
	subreaper bool
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

// withFlavor picks the containerd build and runtime (default: defaultFlavor).
func withFlavor(f flavor) daemonOption {
	return func(c *daemonConfig) { c.flavor = f }
}

// withSubreaper runs containerd under a subreaper that reaps whatever it
// leaves behind, for tests that kill containerd (killAndRestart): this
// machine's pid 1 reaps no orphans (ENVIRONMENT.md), and containerd 1.6's v1
// runtime waits for a killed shim until kill(pid, 0) fails, which a zombie
// never makes it do.
func withSubreaper() daemonOption {
	return func(c *daemonConfig) { c.subreaper = true }
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
	cfg := daemonConfig{logLevel: "info", flavor: defaultFlavor()}
	for _, o := range opts {
		o(&cfg)
	}
	dir, err := os.MkdirTemp(shortTempBase(), "lsd")
	if err != nil {
		return nil, err
	}
	d := &daemon{
		dir:        dir,
		root:       filepath.Join(dir, "root"),
		state:      filepath.Join(dir, "state"),
		address:    filepath.Join(dir, "c.sock"),
		ns:         fmt.Sprintf("lst%dx%d", os.Getpid(), daemonSeq.Add(1)),
		fifoDir:    filepath.Join(dir, "fifo"),
		logPath:    filepath.Join(dir, "containerd.log"),
		configPath: filepath.Join(dir, "config.toml"),
		flavor:     cfg.flavor,
		socketDir:  socketDir,
		subreaper:  cfg.subreaper,
	}
	defer func() {
		if retErr != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	if len(d.address)+len(".ttrpc") >= 100 {
		return nil, fmt.Errorf("socket path %s too long for sun_path", d.address)
	}
	extra := cfg.extra
	if d.flavor.privateSocketDir {
		d.socketDir = filepath.Join(dir, "s")
	}
	if d.flavor.config != nil {
		extra += "\n" + d.flavor.config(d.socketDir) + "\n"
	}
	config := fmt.Sprintf(configTemplate, d.root, d.state, d.address, d.address+".ttrpc", cfg.logLevel, extra)
	if err := os.WriteFile(d.configPath, []byte(config), 0o600); err != nil {
		return nil, err
	}
	if err := d.start(); err != nil {
		return nil, err
	}
	if err := d.waitReady(); err != nil {
		_ = d.terminate()
		return nil, err
	}
	return d, nil
}

// start starts containerd (under a subreaper if d.subreaper), appending to
// the log.
func (d *daemon) start() error {
	logFile, err := os.OpenFile(d.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child has its own copy
	in := &instance{done: make(chan struct{})}
	argv := []string{d.flavor.containerd, "--config", d.configPath}
	path := suite.shimDir
	if d.flavor.binDir != "" {
		path += string(os.PathListSeparator) + d.flavor.binDir
	}
	env := withPath(os.Environ(), path+string(os.PathListSeparator)+os.Getenv("PATH"))
	if d.subreaper {
		in.pidFile = filepath.Join(d.dir, fmt.Sprintf("containerd.%d.pid", len(d.retired)))
		env = append(env, subreaperEnv+"="+in.pidFile)
		argv = append([]string{os.Args[0]}, argv...)
	}
	in.cmd = exec.Command(argv[0], argv[1:]...)
	in.cmd.Env = env
	in.cmd.Stdout, in.cmd.Stderr = logFile, logFile
	// Own process group: a ^C aimed at `go test` must not reach containerd
	// before cleanup has killed the tasks.
	in.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := in.cmd.Start(); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	// Owned by in: terminate and stop wait for done.
	go func() {
		in.waitErr = in.cmd.Wait()
		close(in.done)
	}()
	d.cur = in
	return nil
}

func withPath(env []string, path string) []string {
	env = slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "PATH=") })
	return append(env, "PATH="+path)
}

func (d *daemon) waitReady() error {
	ok := poll(daemonStartTimeout, func() bool {
		select {
		case <-d.cur.done:
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
	case <-d.cur.done:
		return fmt.Errorf("containerd exited during start-up (%v):\n%s", d.cur.waitErr, readTail(d.logPath, 0))
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

// terminate sends SIGTERM, then SIGKILL after daemonStopTimeout, and waits;
// then it waits for the subreapers of killed containerds, which exit once
// the shims they adopted have.
func (d *daemon) terminate() error {
	var errs []error
	_ = d.cur.cmd.Process.Signal(syscall.SIGTERM) // a subreaper passes it on
	select {
	case <-d.cur.done:
	case <-time.After(daemonStopTimeout):
		_ = d.cur.cmd.Process.Kill()
		<-d.cur.done
		errs = append(errs, fmt.Errorf("containerd (or, under a subreaper, a process it left) still running %s after SIGTERM, killed", daemonStopTimeout))
	}
	for _, in := range d.retired {
		select {
		case <-in.done:
		case <-time.After(daemonStopTimeout):
			_ = in.cmd.Process.Kill()
			<-in.done
			errs = append(errs, fmt.Errorf("processes left by the containerd killed at restart still running %s after the tasks were deleted", daemonStopTimeout))
		}
	}
	return errors.Join(errs...)
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

// bundleDir is where containerd puts the task bundle (PROTOCOL.md §1.2, §4.2).
func (d *daemon) bundleDir(id string) string {
	return filepath.Join(d.state, d.flavor.plugin, d.ns, id)
}

// workDir is the bundle's work dir under containerd's root.
func (d *daemon) workDir(id string) string {
	return filepath.Join(d.root, d.flavor.plugin, d.ns, id)
}
