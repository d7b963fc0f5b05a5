package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// defaultSocketDir is where containerd's shims put their sockets.
const defaultSocketDir = "/run/containerd/s"

// socketAddress is containerd's naming scheme: unix://<dir>/<hex sha256 of
// <containerd address>/<namespace>/<group id>> (PROTOCOL.md §1.7).
func socketAddress(dir, containerdAddress, ns, group string) string {
	sum := sha256.Sum256([]byte(filepath.Join(containerdAddress, ns, group)))
	return "unix://" + filepath.Join(dir, hex.EncodeToString(sum[:]))
}

func socketPath(address string) string { return strings.TrimPrefix(address, "unix://") }

// errShimRunning: a live shim already serves the socket (a grouped container).
var errShimRunning = errors.New("a shim is already serving this socket")

// listen creates the shim's filesystem socket: never an abstract one
// (CVE-2020-15257), mode 0600 in a 0700 directory, so only root can connect.
// A socket left by a dead shim is replaced; a live one gives errShimRunning.
func listen(address string) (*net.UnixListener, error) {
	path := socketPath(address)
	if !strings.HasPrefix(address, "unix://") || !filepath.IsAbs(path) {
		return nil, fmt.Errorf("socket address %q: want unix:///absolute/path", address)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	for attempt := 0; ; attempt++ {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err == nil {
			l.SetUnlinkOnClose(false) // the daemon owns the path from now on
			if err := os.Chmod(path, 0o600); err != nil {
				_ = l.Close()
				return nil, fmt.Errorf("chmod socket: %w", err)
			}
			return l, nil
		}
		if !errors.Is(err, unix.EADDRINUSE) || attempt > 0 {
			return nil, fmt.Errorf("listen %s: %w", path, err)
		}
		if socketAlive(path) {
			return nil, errShimRunning
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
}

// socketAlive reports whether something accepts connections on path.
func socketAlive(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}
