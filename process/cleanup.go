package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/leanshim/leanshim/oci"
)

// defaultRuntimeRoot is where the OCI runtime keeps its state when the
// runtime options name no root, as containerd-shim-runc-v2 uses it; the
// namespace is appended, so `runc --root /run/containerd/runc/<ns> list`
// keeps working after swapping shims.
const defaultRuntimeRoot = "/run/containerd/runc"

// initPidFile is where the runtime writes the init's pid (--pid-file), in
// the bundle.
const initPidFile = "init.pid"

// NewRuntimeConfig returns the runtime config of a container of containerd
// namespace ns whose bundle is bundle: state under root/ns (defaultRuntimeRoot
// when root is ""), the runtime's JSON log in the bundle. The caller sets
// the binary and its flags.
func NewRuntimeConfig(bundle, ns, root string) RuntimeConfig {
	if root == "" {
		root = defaultRuntimeRoot
	}
	return RuntimeConfig{Root: filepath.Join(root, ns), Log: filepath.Join(bundle, "log.json")}
}

// Cleanup cleans up after the container id of namespace ns from its bundle
// alone, whether or not its shim is still alive: it force-deletes the
// container with the runtime NewInit recorded in the bundle (the defaults
// when Create never got that far), then unmounts the rootfs. It returns the
// init's exit as the shim recorded it, or, when there is none (the shim died
// while the init ran), a SIGKILL (137) at the time of the forced delete with
// the pid the runtime wrote. That Exit is valid even when err is not nil:
// err joins what could not be cleaned up or read. Cleanup is idempotent. The
// shim's delete action uses it; ctx bounds the runtime's delete.
func (f *Factory) Cleanup(ctx context.Context, bundle, id, ns string) (Exit, error) {
	var errs []error
	rc, err := loadRuntimeConfig(bundle)
	if err != nil {
		rc = NewRuntimeConfig(bundle, ns, "") // only the defaults can have been used
	}
	err = f.newRuntime(rc.oci()).Delete(ctx, id, true)
	if err != nil && !errors.Is(err, oci.ErrNotExist) { // already gone: cleanup is idempotent
		errs = append(errs, fmt.Errorf("runtime delete: %w", err))
	}
	killedAt := time.Now() // right after the forced delete, as the runc shim does
	if err := unmountRootfs(filepath.Join(bundle, "rootfs")); err != nil {
		errs = append(errs, err)
	}
	e, err := recordedExit(bundle, killedAt)
	return e, errors.Join(append(errs, err)...)
}

// recordedExit is the init's exit recorded in bundle, or, when there is none,
// a SIGKILL at killedAt with the pid the runtime wrote (0 if none). The error
// says why a record that exists could not be used.
func recordedExit(bundle string, killedAt time.Time) (Exit, error) {
	e, err := loadExit(bundle)
	if err == nil {
		return e, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		err = nil // the shim died before the init exited
	}
	e = Exit{Status: 128 + 9, At: killedAt}
	if pid, perr := readPidFile(filepath.Join(bundle, initPidFile)); perr == nil {
		e.Pid = pid
	}
	return e, err
}
