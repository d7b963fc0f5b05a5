// Command containerd-shim-lean-v2 is leanshim: a containerd shim that runs
// containers with an OCI runtime (runc, crun) and serves containerd's task
// API over ttrpc.
//
// containerd runs it these ways (PROTOCOL.md §1.3, §4.2): with the action
// "start" (spawn the serving daemon, print its address), "delete" (clean up a
// bundle whose shim is gone), "-info" (containerd 2.x: describe the runtime),
// and with no action: the daemon itself, spawned by start with -id, or
// launched by containerd 1.6's v1 runtime with -workdir and no -id.
//
// The daemon exits by itself once it has held no container for 60 s (right
// after start, or after the last delete) without a Shutdown from containerd:
// containerd forgot it, e.g. it died between the two calls. The test suites
// shorten the 60 s with LEANSHIM_ORPHAN_GRACE=<Go duration>, a testing knob
// read once at start (orphan_linux.go).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/leanshim/leanshim/pod"
	"github.com/leanshim/leanshim/process"
)

// config is the parsed command line. Every flag containerd 1.6 and 2.x may
// pass is defined, because Go's flag package exits on an unknown one.
type config struct {
	namespace     string
	id            string
	address       string // containerd's gRPC socket path
	publishBinary string
	bundle        string
	socket        string
	debug         bool
	version       bool
	info          bool
	debugSocket   string
	// v1 runtime flags (containerd 1.6's io.containerd.runtime.v1.linux)
	workdir          string
	containerdBinary string
	runtimeRoot      string
	criu             string
	systemdCgroup    bool

	action string
}

func main() {
	// A copy of the shim that only holds a user namespace for an idmapped
	// rootfs mount (process.Factory, openUserns).
	if os.Args[0] == process.UsernsHolderArg0 {
		os.Exit(process.HoldUserns())
	}
	// A pod's namespace holder where it is not hand-assembled (pod.Hold).
	if os.Args[0] == pod.HolderArg0 {
		os.Exit(pod.Hold())
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return 2
	}
	if cfg.version {
		fmt.Fprintf(stdout, "containerd-shim-lean-v2 %s\n", version)
		return 0
	}
	if cfg.info {
		return exitCode(infoAction(stdin, stdout), stderr)
	}
	switch cfg.action {
	case "start":
		return exitCode(start(cfg, stdin, stdout), stderr)
	case "delete":
		return exitCode(deleteAction(cfg, stdout, stderr), stderr)
	case "":
		return exitCode(serve(cfg), stderr)
	}
	fmt.Fprintf(stderr, "containerd-shim-lean-v2: unknown action %q\n", cfg.action)
	return 2
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "containerd-shim-lean-v2: %v\n", err)
	return 1
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("containerd-shim-lean-v2", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.namespace, "namespace", "", "containerd namespace")
	fs.StringVar(&c.id, "id", "", "task id")
	fs.StringVar(&c.address, "address", "", "containerd gRPC socket path")
	fs.StringVar(&c.publishBinary, "publish-binary", "", "containerd binary (events publisher of the v1 runtime)")
	fs.StringVar(&c.bundle, "bundle", "", "bundle path (delete)")
	fs.StringVar(&c.socket, "socket", "", "serve on this socket path instead of fd 3")
	fs.BoolVar(&c.debug, "debug", false, "debug logging")
	fs.BoolVar(&c.version, "v", false, "print the version")
	fs.BoolVar(&c.version, "version", false, "print the version")
	fs.BoolVar(&c.info, "info", false, "print runtime info (containerd 2.x): options Any on stdin, RuntimeInfo on stdout")
	fs.StringVar(&c.debugSocket, "debug-socket", "", "ignored")
	fs.StringVar(&c.workdir, "workdir", "", "v1 runtime: work directory")
	fs.StringVar(&c.containerdBinary, "containerd-binary", "", "v1 runtime: containerd binary for publishing events")
	fs.StringVar(&c.runtimeRoot, "runtime-root", "", "v1 runtime: OCI runtime state root")
	fs.StringVar(&c.criu, "criu", "", "v1 runtime: criu binary")
	fs.StringVar(&c.criu, "criu-path", "", "v1 runtime: criu binary (the name containerd 1.6 passes)")
	fs.BoolVar(&c.systemdCgroup, "systemd-cgroup", false, "v1 runtime: systemd cgroups")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.action = fs.Arg(0)
	return c, nil
}
