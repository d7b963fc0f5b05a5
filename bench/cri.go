package main

// The pods bench's containerd: 2.4.2 with its CRI plugin, driven with
// crictl. The CRI plugin puts every pod in the containerd namespace k8s.io,
// and runc's state root /run/containerd/runc/k8s.io is shared with every
// other CRI containerd on the machine, so isolation rests on what is
// private: root, state, sockets, the shims' socket dir, the CRI plugin's
// dirs (under root and state), images, and a cgroup parent per pod named
// after this process. Ids are 64 random hex digits made by the CRI plugin.
// Cleanup goes through this daemon only (crictl, then ctr on its socket).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// criNamespace is the containerd namespace of every CRI object.
	criNamespace = "k8s.io"
	// crictlTimeout bounds one crictl call; a runp on a loaded 2-core
	// machine takes seconds.
	crictlTimeout = 2 * time.Minute
	// Handlers of the three kinds of pod, in the CRI config below.
	handlerShim  = "lean-shim" // leanshim, sandboxer = "shim": no pause container
	handlerLean  = "lean"      // leanshim, podsandbox: pause container
	handlerRuncV = "runc"      // containerd-shim-runc-v2, podsandbox: pause container
)

// criDaemon is the private containerd with the CRI plugin, and crictl set
// up to talk to it.
type criDaemon struct {
	*daemon
	crictlBin    string
	crictlConfig string
	podDir       string // pod and container configs, pod log dirs
	cgroupParent string // prefix of every pod's cgroup parent
	pods         atomic.Int64
}

// criConfigTemplate is containerd 2.4.2's config: containerd off the
// machine's paths, NRI off (its socket is machine-wide), the pause image
// pinned (never pulled), and the three handlers. restrict_oom_score_adj:
// this kernel refuses the negative score CRI asks for the pause container
// (ENVIRONMENT.md).
const criConfigTemplate = `version = 3
root = %[1]q
state = %[2]q
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.nri.v1.nri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = %[3]q

[ttrpc]
  address = "%[3]s.ttrpc"

[debug]
  address = ""
  level = "warn"

[plugins."io.containerd.shim.v1.manager"]
  socket_dir = %[4]q
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = %[5]q
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  disable_apparmor = true
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["/usr/lib/cni"]
  conf_dir = %[6]q
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.lean-shim]
  runtime_type = "io.containerd.lean.v2"
  sandboxer = "shim"
  disable_pause_image_pull = true
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.lean]
  runtime_type = "io.containerd.lean.v2"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
`

// startCRIDaemon starts containerd (t.containerd, 2.4.2) in dir with PATH
// path, imports the images and waits until the CRI plugin knows them. On
// error nothing is left running.
func startCRIDaemon(ctx context.Context, dir string, t tools, crictl, path string, imgs criImages) (_ *criDaemon, retErr error) {
	d := &criDaemon{
		daemon: &daemon{
			dir:     dir,
			address: filepath.Join(dir, "c.sock"),
			ns:      criNamespace,
			logPath: filepath.Join(dir, "containerd.log"),
			ctrBin:  t.ctr,
			runc:    t.runc,
			done:    make(chan struct{}),
		},
		crictlBin:    crictl,
		crictlConfig: filepath.Join(dir, "crictl.yaml"),
		podDir:       filepath.Join(dir, "pods"),
		cgroupParent: fmt.Sprintf("/lsbpods%dx%s", os.Getpid(), filepath.Base(filepath.Dir(dir))),
	}
	if len(d.address)+len(".ttrpc") >= 100 {
		return nil, fmt.Errorf("socket path %s too long for sun_path", d.address)
	}
	configPath := filepath.Join(dir, "config.toml")
	config := fmt.Sprintf(criConfigTemplate, filepath.Join(dir, "root"), filepath.Join(dir, "state"), d.address,
		filepath.Join(dir, "s"), pauseImageRef, filepath.Join(dir, "net.d"))
	files := []struct{ path, content string }{
		{configPath, config},
		{d.crictlConfig, fmt.Sprintf("runtime-endpoint: unix://%[1]s\nimage-endpoint: unix://%[1]s\ntimeout: %d\n",
			d.address, int(crictlTimeout.Seconds()))},
	}
	for _, sub := range []string{"net.d", "pods"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, []byte(f.content), 0o600); err != nil {
			return nil, err
		}
	}
	if err := d.start(t.containerd, configPath, path); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			_ = d.terminate()
		}
	}()
	if err := d.waitReady(ctx); err != nil {
		return nil, err
	}
	return d, d.importImages(ctx, imgs)
}

// start runs containerd in its own process group (a ^C aimed at the bench
// must not reach it before the pods are gone).
func (d *criDaemon) start(containerd, configPath, path string) error {
	logFile, err := os.Create(d.logPath)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child has its own copy
	d.cmd = exec.Command(containerd, "--config", configPath)
	d.cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "PATH=") }),
		"PATH="+path)
	d.cmd.Stdout, d.cmd.Stderr = logFile, logFile
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	go func() { // owned by d: terminate waits for done
		d.waitErr = d.cmd.Wait()
		close(d.done)
	}()
	return nil
}

// importImages imports the pause and app images and waits until the CRI
// plugin's image cache (fed by containerd's image events) knows them:
// before that a runp would try to pull the pause image.
func (d *criDaemon) importImages(ctx context.Context, imgs criImages) error {
	for _, tarball := range []string{imgs.pause, imgs.app} {
		if _, err := d.ctr(ctx, "images", "import", tarball); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, ref := range []string{pauseImageRef, appImageRef} {
		for {
			_, err := d.crictl(ctx, "inspecti", ref)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the CRI plugin does not see image %s: %w", ref, err)
			}
			if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
				return err
			}
		}
	}
	return nil
}

// crictl runs crictl against the daemon and returns its stdout without
// surrounding space; an error carries its stderr.
func (d *criDaemon) crictl(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, crictlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.crictlBin, append([]string{"--config", d.crictlConfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("crictl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// crictlJSON runs an inspect command and decodes its output into v.
func (d *criDaemon) crictlJSON(ctx context.Context, v any, args ...string) error {
	out, err := d.crictl(ctx, args...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("crictl %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// criStatus is what the bench reads of crictl inspect and inspectp.
type criStatus struct {
	Status struct {
		State string `json:"state"`
	} `json:"status"`
	Info struct {
		Pid int `json:"pid"`
	} `json:"info"`
}

// stop removes the pods crictl still lists (reporting them), whatever ctr
// still lists, stops containerd, kills what that missed among the
// processes of this daemon only (shims with its address, holders of its
// pods), and removes the pods' cgroup parents. It leaves d.dir to the
// caller, and says if a mount is still under it.
func (d *criDaemon) stop(podIDs []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var errs []error
	if out, err := d.crictl(ctx, "pods", "-q"); err == nil && out != "" {
		ids := strings.Fields(out)
		errs = append(errs, fmt.Errorf("pods still present at shutdown: %d", len(ids)))
		_ = parallelN(len(ids), 4, func(i int) error { return d.removePod(ctx, ids[i]) })
	}
	if left := d.purge(); len(left) > 0 {
		errs = append(errs, fmt.Errorf("containers still present at shutdown: %s", strings.Join(left, ", ")))
	}
	errs = append(errs, d.terminate())
	errs = append(errs, d.killLeftovers(podIDs)...)
	errs = append(errs, d.removeCgroupParents()...)
	if m := mountsUnder(d.dir); len(m) > 0 {
		for _, mnt := range slices.Backward(m) {
			_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
		errs = append(errs, fmt.Errorf("mounts left under %s, unmounted: %s", d.dir, strings.Join(m, " ")))
	}
	return errors.Join(errs...)
}

// removePod stops and removes a pod with its containers (stopp kills them).
func (d *criDaemon) removePod(ctx context.Context, id string) error {
	_, serr := d.crictl(ctx, "stopp", id)
	if _, err := d.crictl(ctx, "rmp", "-f", id); err != nil {
		return errors.Join(serr, err)
	}
	return nil
}

// killLeftovers kills the shims still serving this daemon (their argv
// names its address) and the pod holders of its pods.
func (d *criDaemon) killLeftovers(podIDs []string) []error {
	var errs []error
	for _, pid := range allPids() {
		argv := readArgv(pid)
		ours := len(argv) > 1 && strings.HasPrefix(filepath.Base(argv[0]), "containerd-shim") && slices.Contains(argv, d.address)
		ours = ours || len(argv) == 2 && argv[0] == holderArg0 && slices.Contains(podIDs, argv[1])
		if !ours {
			continue
		}
		errs = append(errs, fmt.Errorf("%s pid %d left over, killed", filepath.Base(argv[0]), pid))
		_ = syscall.Kill(pid, syscall.SIGKILL)
		waitGone(pid, 5*time.Second)
	}
	return errs
}

// removeCgroupParents removes the (empty by now) cgroup parents of this
// daemon's pods in every hierarchy.
func (d *criDaemon) removeCgroupParents() []error {
	var errs []error
	v1, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", d.cgroupParent+"-*"))
	v2, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", d.cgroupParent+"-*"))
	for _, dir := range append(v1, v2...) {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("pod cgroup parent: %w", err))
		}
	}
	return errs
}

// readArgv returns the argv of pid, nil if it is gone or a zombie.
func readArgv(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(data) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
}
