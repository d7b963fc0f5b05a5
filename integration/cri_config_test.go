package integration

// The files a CRI daemon of cri_daemon_test.go starts from: containerd's
// config with the handlers under test, crictl's, the CNI network, and the
// runc wrapper and options the options handlers name.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
)

// writeConfigs writes containerd's config, crictl's, the runc wrapper the
// options handlers name as their runtime binary, and lean's options file.
func (d *criDaemon) writeConfigs() error {
	runc, err := exec.LookPath("runc")
	if err != nil {
		return err
	}
	wrapper := filepath.Join(d.dir, "runc-wrapper")
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >>%q\nexec %q \"$@\"\n", d.runcLog, runc)
	leanOptions := filepath.Join(d.dir, "lean-options.toml")
	files := []struct {
		path, content string
		mode          os.FileMode
	}{
		{d.configPath, d.containerdConfig(wrapper, leanOptions), 0o600},
		{d.crictlConfig, fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: %d\n",
			d.address, d.address, int(crictlTimeout.Seconds())), 0o600},
		{wrapper, script, 0o755},
		{leanOptions, fmt.Sprintf("BinaryName = %q\n", wrapper), 0o644},
		{filepath.Join(d.dir, "cni", "net.d", "10-leanshim-test.conflist"), d.cniConfig(), 0o644},
	}
	if err := os.MkdirAll(filepath.Join(d.dir, "cni", "net.d"), 0o755); err != nil {
		return err
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, []byte(f.content), f.mode); err != nil {
			return err
		}
	}
	return nil
}

// cniPluginDir is where Debian's containernetworking-plugins (scripts/deps.sh)
// installs the CNI plugins.
const cniPluginDir = "/usr/lib/cni"

// cniConfig is the network of pods that have one (not host network): ptp,
// a veth pair per pod, addresses from a /24 of this daemon's own (host-local
// IPAM with its state in the daemon's dir), no masquerading. The network
// teardown removes each pod's veth and route.
func (d *criDaemon) cniConfig() string {
	return fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "lst-%[1]s", "plugins": [{"type": "ptp", "ipMasq": false,
  "ipam": {"type": "host-local", "subnet": "10.213.%[2]d.0/24", "dataDir": %[3]q}}]}
`, filepath.Base(d.dir), (os.Getpid()+int(cniSubnetSeq.Add(1)))%250+1, filepath.Join(d.dir, "cni", "ipam"))
}

// cniSubnetSeq gives each daemon of this test process its own /24, and the
// pid keeps concurrent test processes mostly apart.
var cniSubnetSeq atomic.Int64

// criConfigBase is what both config layouts share: containerd off the
// machine's paths (as configTemplate, but with CRI on and NRI off, whose
// socket is machine-wide).
const criConfigBase = `version = %d
root = %q
state = %q
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.nri.v1.nri",
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

// containerdConfig returns config.toml. Handlers: lean and runc as a user
// would write them, and lean-opts and runc-opts, which name the runc
// wrapper as runtime binary the way each containerd passes options to
// such a shim: runc's own options for io.containerd.runc.v2; for other
// runtime types runtimeoptions.v1.Options, which in 1.6 carries only a
// ConfigPath (other keys are dropped) and in 2.x the options table itself
// as a TOML ConfigBody. restrict_oom_score_adj: this kernel refuses the
// negative score CRI wants for the pause container (ENVIRONMENT.md).
func (d *criDaemon) containerdConfig(wrapper, leanOptions string) string {
	var b strings.Builder
	version := 2
	if d.version != "1.6" {
		version = 3
	}
	fmt.Fprintf(&b, criConfigBase, version, d.root, d.state, d.address, d.address+".ttrpc")
	leanOpts := fmt.Sprintf("BinaryName = %q", wrapper)
	runtimes := `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes`
	if d.version == "1.6" {
		leanOpts = fmt.Sprintf("ConfigPath = %q", leanOptions)
		fmt.Fprintf(&b, `
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = %q
  conf_dir = %q
`, criPauseImage, filepath.Join(d.dir, "cni", "bin"), filepath.Join(d.dir, "cni", "net.d"))
	} else {
		runtimes = `[plugins."io.containerd.cri.v1.runtime".containerd.runtimes`
		fmt.Fprintf(&b, `
[plugins."io.containerd.shim.v1.manager"]
  socket_dir = %q
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = %q
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  disable_apparmor = true
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = [%q, %q]
  conf_dir = %q
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.lean-shim]
  runtime_type = "io.containerd.lean.v2"
  sandboxer = "shim"
  disable_pause_image_pull = true
`, d.socketDir, criPauseImage, filepath.Join(d.dir, "cni", "bin"), cniPluginDir, filepath.Join(d.dir, "cni", "net.d"))
	}
	fmt.Fprintf(&b, `
%[1]s.lean]
  runtime_type = "io.containerd.lean.v2"
%[1]s.runc]
  runtime_type = "io.containerd.runc.v2"
%[1]s.lean-opts]
  runtime_type = "io.containerd.lean.v2"
%[1]s.lean-opts.options]
  %[2]s
%[1]s.runc-opts]
  runtime_type = "io.containerd.runc.v2"
%[1]s.runc-opts.options]
  BinaryName = %[3]q
`, runtimes, leanOpts, wrapper)
	return b.String()
}
