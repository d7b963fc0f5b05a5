package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// v1Plugin is containerd 1.6's v1 runtime, which names its bundle dirs.
const v1Plugin = "io.containerd.runtime.v1.linux"

// containerd24Dir is where containerd 2.4.2's binaries are:
// $LEANSHIM_CONTAINERD24, else the repository's .cache/containerd-2.4.2/bin,
// where scripts/containerd24.sh (make containerd24) installs them. Missing
// binaries fail the test that needs them.
func containerd24Dir(tb testing.TB) string {
	tb.Helper()
	dir := os.Getenv("LEANSHIM_CONTAINERD24")
	if dir == "" {
		dir = filepath.Join("..", ".cache", "containerd-2.4.2", "bin")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		tb.Fatal(err)
	}
	for _, name := range []string{"containerd", "ctr", "containerd-shim-runc-v2"} {
		if !isExecutable(filepath.Join(dir, name)) {
			tb.Fatalf("containerd 2.4.2's %s not in %s: run `make containerd24` (scripts/containerd24.sh) or set LEANSHIM_CONTAINERD24", name, dir)
		}
	}
	return dir
}

// flavor is a containerd build and the way it runs the shim under test.
type flavor struct {
	name       string // for test names, e.g. "containerd-2.4"
	containerd string // absolute path of containerd
	ctr        string // absolute path of its ctr
	runtime    string // the runtime ctr run asks for
	plugin     string // containerd's runtime plugin id, which names the bundle and work dir parents
	// binDir, if set, goes on the daemon's PATH right after LEANSHIM_BIN, so
	// containerd resolves its own containerd-shim-runc-v2 there first.
	binDir string
	// config, if set, returns TOML for config.toml; socketDir is the daemon's
	// private shim socket dir ("" unless privateSocketDir).
	config           func(socketDir string) string
	privateSocketDir bool // configure a socket dir under the daemon's dir
	// runFlags go on every `ctr run` of d.run and d.runArgs, e.g.
	// --runtime-config-path to select crun.
	runFlags []string
}

// defaultFlavor is the suite's: the machine's containerd 1.6 with the
// runtime under test.
func defaultFlavor() flavor {
	return flavor{name: "containerd-1.6", containerd: suite.containerd, ctr: suite.ctr, runtime: suite.runtime, plugin: v2Plugin}
}

// flavors are the three daemons of this file's tests.
func flavors(tb testing.TB) []flavor {
	tb.Helper()
	return []flavor{defaultFlavor(), containerd24Flavor(tb), v1Flavor(tb)}
}

// containerd24Flavor is containerd 2.4.2 with the runtime under test, its own
// binaries first on PATH (for its containerd-shim-runc-v2) and a private
// shim socket dir, which reaches the shim as BootstrapParams.socket_dir.
func containerd24Flavor(tb testing.TB) flavor {
	tb.Helper()
	bin := containerd24Dir(tb)
	return flavor{
		name: "containerd-2.4", containerd: filepath.Join(bin, "containerd"), ctr: filepath.Join(bin, "ctr"),
		runtime: suite.runtime, plugin: v2Plugin, binDir: bin, privateSocketDir: true,
		config: func(socketDir string) string {
			return fmt.Sprintf("[plugins.\"io.containerd.shim.v1.manager\"]\n  socket_dir = %q", socketDir)
		},
	}
}

// v1Flavor is containerd 1.6's v1 runtime with the shim under test as its
// shim (or, checking the tests with containerd's own shims, Debian's).
func v1Flavor(tb testing.TB) flavor {
	tb.Helper()
	shim := suite.shimPath
	if suite.runtime != defaultRuntime {
		p, err := exec.LookPath("containerd-shim")
		if err != nil {
			tb.Fatalf("containerd-shim (containerd 1.6's v1 shim): %v", err)
		}
		shim = p
	}
	return flavor{
		name: "containerd-1.6-v1", containerd: suite.containerd, ctr: suite.ctr, runtime: v1Plugin, plugin: v1Plugin,
		config: func(string) string {
			// shim_debug: the shim's output lands in containerd's log.
			return fmt.Sprintf("[plugins.%q]\n  shim = %q\n  runtime = \"runc\"\n  shim_debug = true", v1Plugin, shim)
		},
	}
}
