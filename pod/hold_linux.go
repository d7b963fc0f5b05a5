package pod

import (
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// HolderArg0 is argv[0] of the holder, and its name in ps. When the shim
// binary is started with it (architectures without holderCode), cmd/shim's
// main runs Hold.
const HolderArg0 = "leanshim-pod"

// Hold is the holder as Go, what holderCode does: it reaps every exited
// child on SIGCHLD and returns 0 on SIGTERM or SIGINT. It costs a Go
// runtime (about 1 MiB) where holderCode costs 12 KiB.
func Hold() int {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGCHLD)
	for sig := range sigs {
		if sig != unix.SIGCHLD {
			return 0
		}
		for {
			pid, err := unix.Wait4(-1, nil, unix.WNOHANG|unix.WALL, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
	return 0
}
