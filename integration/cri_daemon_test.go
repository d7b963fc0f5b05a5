package integration

// A private containerd with its CRI plugin on, driven with crictl.
//
// Isolation. The CRI plugin puts every pod and container in the containerd
// namespace k8s.io, so unlike the other tests these daemons cannot have a
// namespace of their own, and runc's state root /run/containerd/runc/k8s.io
// is shared with any other CRI containerd on the machine (and with each
// other). What keeps them apart:
//   - ids: the CRI plugin names every sandbox and container with 64 random
//     hex digits, so no id can collide with another daemon's;
//   - everything else is private: root, state, sockets, shim sockets (their
//     names hash this daemon's address; 2.x gets its own socket dir), the
//     CRI plugin's root and state (under containerd's), CNI dirs, images;
//   - cgroups: every pod gets a cgroup parent named after this test process,
//     so container cgroups are /sys/fs/cgroup/<ctrl>/<parent>/<id>;
//   - cleanup goes through this daemon only (crictl, then ctr on its own
//     socket), then removes the cgroup parents it made and its own dir. It
//     never touches /run/containerd/runc/k8s.io itself, except to remove it
//     if it is empty and did not exist before the CRI test started.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
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
	// criNamespace is the containerd namespace of all CRI objects.
	criNamespace = "k8s.io"
	// crictlTimeout bounds one crictl call (a RunPodSandbox under a loaded
	// 2-core machine takes a few seconds).
	crictlTimeout = 90 * time.Second
	// criStateTimeout bounds waiting for a container state the CRI plugin
	// learns asynchronously (an exit through Wait, an OOM through an event).
	criStateTimeout = 30 * time.Second
)

// criPodSeq numbers pods within this test process, for unique names and
// cgroup parents.
var criPodSeq atomic.Int64

// criDaemon is a private containerd with the CRI plugin, and crictl set up
// to talk to it.
type criDaemon struct {
	*daemon
	version      string // "1.6" or "2.4": which config layout
	handler      string // the CRI runtime handler under test: "lean" or "runc"
	crictlBin    string
	crictlConfig string // crictl's config file: endpoints and timeout
	logDir       string // pods' log directories go below
	runcLog      string // the runc wrapper of the options handler appends its argv here
	cgroupParent string // prefix of every pod's cgroup parent
	noPauseImage bool   // the pause image is not imported (withoutPauseImage)
}

// criFlavor is a containerd build whose CRI plugin the test drives.
type criFlavor struct {
	name       string // subtest name, e.g. containerd-1.6
	version    string // "1.6" or "2.4"
	containerd string
	ctr        string
	binDir     string // put on containerd's PATH after LEANSHIM_BIN (its own runc shim)
}

// criHandlers maps the runtime types the suite can test to the CRI handler
// names the daemons register for them.
var criHandlers = map[string]string{
	defaultRuntime:          "lean",
	"io.containerd.runc.v2": "runc",
}

// criOption changes what startCRIDaemon sets up.
type criOption func(*criDaemon)

// withoutPauseImage imports only the app image: a daemon whose pods need no
// pause image (the shim-sandbox handler).
func withoutPauseImage() criOption { return func(d *criDaemon) { d.noPauseImage = true } }

// startCRIDaemon starts a private containerd of flavor fl with the CRI
// plugin, imports the images and stops everything in tb.Cleanup.
func startCRIDaemon(tb testing.TB, fl criFlavor, crictl string, imgs criImages, opts ...criOption) *criDaemon {
	tb.Helper()
	handler, ok := criHandlers[suite.runtime]
	if !ok {
		tb.Fatalf("no CRI handler for runtime %s (known: lean, runc)", suite.runtime)
	}
	dir, err := os.MkdirTemp(shortTempBase(), "lsc")
	if err != nil {
		tb.Fatal(err)
	}
	d := &criDaemon{
		daemon: &daemon{
			dir:        dir,
			root:       filepath.Join(dir, "root"),
			state:      filepath.Join(dir, "state"),
			address:    filepath.Join(dir, "c.sock"),
			ns:         criNamespace,
			fifoDir:    filepath.Join(dir, "fifo"),
			logPath:    filepath.Join(dir, "containerd.log"),
			configPath: filepath.Join(dir, "config.toml"),
			socketDir:  socketDir,
			flavor: flavor{
				name: fl.name, containerd: fl.containerd, ctr: fl.ctr, runtime: suite.runtime,
				plugin: v2Plugin, binDir: fl.binDir,
			},
		},
		version:      fl.version,
		handler:      handler,
		crictlBin:    crictl,
		crictlConfig: filepath.Join(dir, "crictl.yaml"),
		logDir:       filepath.Join(dir, "logs"),
		runcLog:      filepath.Join(dir, "runc-wrapper.log"),
		cgroupParent: fmt.Sprintf("/lscri%dx%s", os.Getpid(), filepath.Base(dir)),
	}
	for _, o := range opts {
		o(d)
	}
	if fl.version != "1.6" {
		d.socketDir = filepath.Join(dir, "s") // containerd 2.x takes it from its config
	}
	if err := d.writeConfigs(); err != nil {
		_ = os.RemoveAll(dir)
		tb.Fatal(err)
	}
	if err := d.start(); err != nil {
		_ = os.RemoveAll(dir)
		tb.Fatal(err)
	}
	if err := d.waitReady(); err != nil {
		_ = d.terminate()
		_ = os.RemoveAll(dir)
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := d.stopCRI(); err != nil {
			tb.Errorf("stop containerd (CRI): %v", err)
		}
		if tb.Failed() {
			tb.Logf("containerd log (%s):\n%s", d.logPath, d.finalLog)
		}
	})
	d.importImages(tb, imgs)
	return d
}

// importImages imports both images into the daemon's k8s.io namespace and
// waits until the CRI plugin's image cache, which follows containerd's
// image events, knows them: before that, RunPodSandbox would try to pull
// the sandbox image from its (made-up) registry.
func (d *criDaemon) importImages(tb testing.TB, imgs criImages) {
	tb.Helper()
	tarballs, refs := []string{imgs.pause, imgs.app}, []string{criPauseImage, criAppImage}
	if d.noPauseImage {
		tarballs, refs = tarballs[1:], refs[1:]
	}
	for _, tarball := range tarballs {
		d.mustCtr(tb, "images", "import", tarball)
	}
	for _, ref := range refs {
		var r cmdResult
		if !poll(criStateTimeout, func() bool {
			r = d.crictl("inspecti", ref)
			return r.ok()
		}) {
			tb.Fatalf("CRI plugin does not see imported image %s: %v", ref, r)
		}
	}
}

// stopCRI removes every pod and container left (reporting them), stops
// containerd, and removes what this daemon made: mounts under and its dir,
// and the pods' cgroup parents.
func (d *criDaemon) stopCRI() error {
	var errs []error
	if left := d.purgeCRI(); len(left) > 0 {
		errs = append(errs, fmt.Errorf("still present at shutdown: %s", strings.Join(left, ", ")))
	}
	if err := d.terminate(); err != nil {
		errs = append(errs, err)
	}
	if mounts := mountsUnder(d.dir); len(mounts) > 0 {
		// Never RemoveAll across a mount: it would delete the mounted tree.
		for _, m := range slices.Backward(mounts) {
			_ = syscall.Unmount(m, syscall.MNT_DETACH)
		}
		errs = append(errs, fmt.Errorf("mounts left under %s: %s", d.dir, strings.Join(mounts, ", ")))
	}
	errs = append(errs, d.removeCgroupParents()...)
	d.finalLog = readTail(d.logPath, 0)
	if len(mountsUnder(d.dir)) == 0 {
		if err := os.RemoveAll(d.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// purgeCRI force-removes the pods crictl still lists, then whatever ctr
// still lists in k8s.io, all on this daemon only.
func (d *criDaemon) purgeCRI() []string {
	var left []string
	if r := d.crictl("pods", "-q"); r.ok() {
		for _, id := range strings.Fields(r.stdout) {
			left = append(left, "pod "+id)
			d.crictl("stopp", id)
			d.crictl("rmp", "-f", id)
		}
	}
	return append(left, d.purge()...)
}

// removeCgroupParents removes the (empty, by now) cgroup parents of this
// daemon's pods in every hierarchy.
func (d *criDaemon) removeCgroupParents() []error {
	var errs []error
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", d.cgroupParent+"-*"))
	v2, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", d.cgroupParent+"-*"))
	for _, dir := range append(dirs, v2...) {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("pod cgroup parent: %w", err))
		}
	}
	return errs
}

// shimDaemons returns the pids of the live shim processes serving this
// daemon: the shim binary under test with this daemon's -address and the
// k8s.io namespace in its argv, but not its short-lived start and delete
// actions. Zombies have no cmdline and are not counted.
func (d *criDaemon) shimDaemons() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		argv := readArgv(pid)
		if len(argv) == 0 || !isShimBinary(pid, argv[0]) ||
			flagValue(argv, "namespace") != criNamespace || flagValue(argv, "address") != d.address {
			continue
		}
		if last := argv[len(argv)-1]; last == "start" || last == "delete" {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// taskAddress is the shim address containerd uses for the task id: from
// the bundle's bootstrap.json (containerd 2.x writes it for every task),
// else from its address file (containerd 1.6: written by the shim's start).
func (d *criDaemon) taskAddress(id string) (string, error) {
	bundle := d.bundleDir(id)
	if b, err := os.ReadFile(filepath.Join(bundle, "bootstrap.json")); err == nil {
		var p struct {
			Address string `json:"address"`
		}
		if err := json.Unmarshal(b, &p); err != nil {
			return "", fmt.Errorf("%s/bootstrap.json: %w", bundle, err)
		}
		return p.Address, nil
	}
	b, err := os.ReadFile(filepath.Join(bundle, "address"))
	return string(b), err
}

// runcK8sRoot is runc's state root for the CRI namespace, shared by every
// containerd's runc shims (and leanshim's, by default).
func runcK8sRoot() string { return filepath.Join(runcRoot, criNamespace) }
